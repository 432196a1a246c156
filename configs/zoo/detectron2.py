"""Detectron2's Faster R-CNN recipe (its ``Base-RCNN-FPN`` / ``Base-RCNN-C4`` configs) in detect's options.

Each difference from detect's defaults is an option of an existing part:
BGR 0..255 pixels with Detectron2's mean and std (the model's input stays RGB
in 0..1), the stride in the first 1x1 conv of MSRA's ResNets, aligned RoIAlign
with adaptive sampling, exact (unrounded) anchors at the backbone's nominal
strides, proposals ranked by objectness logit, no minimum size for detections, and for C4: 15 anchors on one map,
6000 proposals before NMS, 14x14 pooling, res5 (stride 2) and mean pooling per
RoI, no padding. Class order and Detectron2's contiguous indices are handled by
``tools/convert_detectron2.py``, which writes the weights these configs load.
"""

from detect.config import Config

PIXEL_MEAN_BGR = [103.530, 116.280, 123.675]
MSRA_PIXEL_STD = [1.0, 1.0, 1.0]  # MSRA's Caffe ResNets saw mean-subtracted 0..255 pixels
FAIR_PIXEL_STD = [57.375, 57.120, 58.395]  # FAIR's ResNeXt: the ImageNet std on 0..255, BGR
BACKBONES = {  # Detectron2 name -> (torchvision name, ImageNet file, pixel std, stride in the 1x1 conv)
    "R_50": ("resnet50", "weights/R-50.pkl", MSRA_PIXEL_STD, True),
    "R_101": ("resnet101", "weights/R-101.pkl", MSRA_PIXEL_STD, True),
    "X_101_32x8d": ("resnext101_32x8d", "weights/X-101-32x8d.pkl", FAIR_PIXEL_STD, False),
}
SCHEDULES = {"1x": (90000, [60000, 80000]), "3x": (270000, [210000, 250000])}


def use_detectron2_input(cfg: Config, pixel_std: list[float]) -> None:
    """Networks trained on BGR 0..255 pixels (MSRA's and FAIR's ImageNet files, Detectron2's models)."""
    cfg.model.input.channel_order = "bgr"
    cfg.model.input.pixel_scale = 255.0
    cfg.model.input.pixel_mean = list(PIXEL_MEAN_BGR)
    cfg.model.input.pixel_std = list(pixel_std)


def detectron2_config(name: str) -> Config:
    """The config of Detectron2's ``faster_rcnn_{name}``, e.g. ``"R_50_FPN_1x"``, ``"X_101_32x8d_FPN_3x"``."""
    backbone, design, schedule = name.rsplit("_", 2)
    tv_name, imagenet, pixel_std, stride_in_1x1 = BACKBONES[backbone]
    cfg = Config()
    m = cfg.model
    m.backbone.name = tv_name
    m.backbone.weights = imagenet
    m.backbone.stride_in_1x1 = stride_in_1x1
    use_detectron2_input(cfg, pixel_std)
    m.anchors.rounded = False
    m.anchors.nominal_strides = True
    m.rpn.min_box_size = 1e-6  # Detectron2 keeps every proposal of positive width and height
    m.rpn.smooth_l1_beta = 0.0
    m.rpn.nms_on_logits = True
    m.roi_heads.pooler_aligned = True
    m.roi_heads.pooler_sampling_ratio = 0
    m.roi_heads.smooth_l1_beta = 0.0
    m.roi_heads.min_box_size = 0.0
    if design == "FPN":
        m.rpn.post_nms_topk_train = 1000
    else:
        m.fpn.enabled = False
        m.input.size_divisible = 1
        m.anchors.sizes = [[32.0, 64.0, 128.0, 256.0, 512.0]]
        m.rpn.pre_nms_topk_train, m.rpn.post_nms_topk_train = 12000, 2000
        m.rpn.pre_nms_topk_test, m.rpn.post_nms_topk_test = 6000, 1000
        m.roi_heads.pooler_resolution = 14
    cfg.train.max_iter, cfg.train.steps = SCHEDULES[schedule]
    cfg.data.train_min_sizes = [640, 672, 704, 736, 768, 800]
    cfg.data.train.root = "datasets/coco/train2017"
    cfg.data.train.ann_file = "datasets/coco/annotations/instances_train2017.json"
    cfg.data.val.root = "datasets/coco/val2017"
    cfg.data.val.ann_file = "datasets/coco/annotations/instances_val2017.json"
    cfg.data.val.filter_empty = False
    cfg.output_dir = f"output/d2_faster_rcnn_{name}"
    return cfg
