"""Faster R-CNN, ResNet-101-FPN, COCO 2017, the 1x schedule.

As configs/frcnn_r50_fpn_coco.py with a ResNet-101 trunk. Expected box AP on
val2017: 39.4 (MMDetection 1x); 42.0 with the 3x schedule
(configs/frcnn_r101_fpn_coco_3x.py, Detectron2). ImageNet weights: torchvision's
``resnet101`` IMAGENET1K_V1 (``resnet101-63fe2227.pth``) at ``weights/``.
"""

from configs.frcnn_r50_fpn_coco import cfg

cfg.model.backbone.name = "resnet101"
cfg.model.backbone.weights = "weights/resnet101-63fe2227.pth"
cfg.output_dir = "output/frcnn_r101_fpn_coco"
