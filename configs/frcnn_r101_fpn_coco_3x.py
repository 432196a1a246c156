"""Faster R-CNN, ResNet-101-FPN, COCO 2017, the 3x schedule. Expected box AP on val2017: 42.0 (Detectron2).

ImageNet weights: torchvision's ``resnet101`` IMAGENET1K_V1 (``resnet101-63fe2227.pth``) at ``weights/``.
"""

from configs.frcnn_r50_fpn_coco_3x import cfg

cfg.model.backbone.name = "resnet101"
cfg.model.backbone.weights = "weights/resnet101-63fe2227.pth"
cfg.output_dir = "output/frcnn_r101_fpn_coco_3x"
