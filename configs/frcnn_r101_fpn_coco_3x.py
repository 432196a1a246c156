"""Faster R-CNN, ResNet-101-FPN, COCO 2017, the 3x schedule. Expected box AP on val2017: 42.0 (Detectron2)."""

from configs.frcnn_r50_fpn_coco_3x import cfg

cfg.model.backbone.name = "resnet101"
cfg.output_dir = "output/frcnn_r101_fpn_coco_3x"
