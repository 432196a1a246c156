"""Faster R-CNN, VGG-16, PASCAL VOC 07+12 trainval -> VOC 2007 test: the ResNet paper's VGG-16 baseline.

The paper reports 73.2 mAP (VOC07 11-point metric); PyTorch reproductions get
about 75 with 07+12. This file holds the settings both VOC baselines share;
``frcnn_r101_voc.py`` swaps the network.

Model (py-faster-rcnn's ``VGG16/faster_rcnn_end2end``): conv1_1 .. conv5_3
shared (stride 16), conv1_x and conv2_x frozen (``freeze_at=2``); RPN on conv5_3
with 9 anchors (128, 256, 512 x ratios 0.5, 1, 2), IoU >= 0.7 positive and
< 0.3 negative, 256 anchors per image, up to half positive, NMS 0.7 and
12000 / 2000 proposals before / after NMS in training, 6000 / 300 at test;
RoI max pooling (RoIPool) to 7x7, fc6 and fc7 with dropout 0.5, 128 RoIs per
image at 25% foreground (IoU >= 0.5); test NMS 0.3. Smooth L1 as in
py-faster-rcnn: sigma 3 in the RPN (beta 1/9), sigma 1 in Fast R-CNN (beta 1).
Background RoIs are those with IoU in [0, 0.5), the later py-faster-rcnn
setting, instead of the first paper's [0.1, 0.5).

Schedule. py-faster-rcnn trains on 1 image per iteration at lr 0.001 (momentum
0.9, weight decay 5e-4, none on biases), 70k iterations with a step at 50k on
VOC07 trainval; for 07+12 (16551 images) we take the common 110k iterations
with a step at 80k (tf-faster-rcnn, ruotianluo/pytorch-faster-rcnn), about 6.6
epochs. Here a batch holds 8 images, so with the linear scaling rule:
lr 8 x 0.001 = 0.008, 110k / 8 = 13750 iterations, step at 80k / 8 = 10000,
plus a 500-iteration linear warm-up that the original did not need at 1/8 the lr.
Caffe's doubled learning rate for biases is not reproduced.
Training scale 600 (longer side at most 1000), horizontal flip, aspect-ratio
grouping; test at the same scale.

ImageNet weights: torchvision's ``vgg16`` state dict
(``torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()``, the file
``vgg16-397923af.pth`` of download.pytorch.org) at ``weights/``; its
``classifier.0`` / ``classifier.3`` become fc6 / fc7.
"""

from detect.config import Config
from detect.data.voc import VOC_CLASSES

cfg = Config()
cfg.model.classes = {i + 1: name for i, name in enumerate(VOC_CLASSES)}  # ids 1..20, the dataset's

cfg.model.backbone.name = "vgg16"
cfg.model.backbone.weights = "weights/vgg16-397923af.pth"
cfg.model.backbone.freeze_at = 2  # conv1_x, conv2_x
cfg.model.fpn.enabled = False
cfg.model.input.min_size = 600
cfg.model.input.max_size = 1000
cfg.model.input.size_divisible = 16

cfg.model.anchors.sizes = [[128.0, 256.0, 512.0]]
cfg.model.anchors.aspect_ratios = [0.5, 1.0, 2.0]
cfg.model.rpn.fg_iou_thresh = 0.7
cfg.model.rpn.bg_iou_thresh = 0.3
cfg.model.rpn.batch_size_per_image = 256
cfg.model.rpn.positive_fraction = 0.5
cfg.model.rpn.pre_nms_topk_train = 12000
cfg.model.rpn.post_nms_topk_train = 2000
cfg.model.rpn.pre_nms_topk_test = 6000
cfg.model.rpn.post_nms_topk_test = 300
cfg.model.rpn.nms_thresh = 0.7
cfg.model.rpn.smooth_l1_beta = 1.0 / 9

cfg.model.roi_heads.fg_iou_thresh = 0.5
cfg.model.roi_heads.bg_iou_thresh = 0.5
cfg.model.roi_heads.batch_size_per_image = 128
cfg.model.roi_heads.positive_fraction = 0.25
cfg.model.roi_heads.pooler_type = "pool"
cfg.model.roi_heads.pooler_resolution = 7
cfg.model.roi_heads.smooth_l1_beta = 1.0
cfg.model.roi_heads.nms_thresh = 0.3
cfg.model.roi_heads.score_thresh = 0.05
cfg.model.roi_heads.detections_per_image = 100

cfg.data.train.type = "voc"
cfg.data.train.root = "datasets/VOCdevkit"
cfg.data.train.sets = ["2007/trainval", "2012/trainval"]
cfg.data.val.type = "voc"
cfg.data.val.root = "datasets/VOCdevkit"
cfg.data.val.sets = ["2007/test"]
cfg.data.val.filter_empty = False
cfg.data.train_min_sizes = [600]
cfg.data.train_max_size = 1000
cfg.data.hflip_prob = 0.5
cfg.data.aspect_ratio_grouping = True

cfg.train.batch_size = 8
cfg.train.base_lr = 0.008
cfg.train.max_iter = 13750
cfg.train.steps = [10000]
cfg.train.gamma = 0.1
cfg.train.warmup_iters = 500
cfg.train.momentum = 0.9
cfg.train.weight_decay = 5e-4
cfg.train.weight_decay_bias = 0.0
cfg.train.checkpoint_period = 2500
cfg.output_dir = "output/frcnn_vgg16_voc"
