"""Faster R-CNN, ResNet-50-FPN, COCO 2017, the standard 1x schedule.

90k iterations at 16 images per batch, lr 0.02 (steps at 60k and 80k), 800/1333
images, ImageNet-pretrained backbone with frozen BN and frozen stem + conv2_x.
Expected box AP on val2017: 37.9 (Detectron2), 37.4 (MMDetection); torchvision's
converted model (tools/convert_torchvision.py) scores 37.0.

ImageNet weights: torchvision's ``resnet50`` IMAGENET1K_V1 state dict (the file
``resnet50-0676ba61.pth`` of download.pytorch.org) at ``weights/``. Training
without it is an error; ``model.backbone.norm=bn`` (or ``gn``) with
``model.backbone.weights=None`` trains from scratch instead.
"""

from detect.config import Config

cfg = Config()
cfg.model.backbone.name = "resnet50"
cfg.model.backbone.weights = "weights/resnet50-0676ba61.pth"
cfg.data.train.root = "datasets/coco/train2017"
cfg.data.train.ann_file = "datasets/coco/annotations/instances_train2017.json"
cfg.data.val.root = "datasets/coco/val2017"
cfg.data.val.ann_file = "datasets/coco/annotations/instances_val2017.json"
cfg.data.val.filter_empty = False
cfg.output_dir = "output/frcnn_r50_fpn_coco"
