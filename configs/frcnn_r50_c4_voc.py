"""Faster R-CNN, ResNet-50 "C4", PASCAL VOC 07+12 -> VOC 2007 test: ``frcnn_r101_voc.py`` at depth 50.

Not in the paper; a cheaper run of the same design (conv1 .. conv4_x shared,
conv5_x per RoI), e.g. to check a pipeline before the ResNet-101 run.
ImageNet weights: torchvision's ``resnet50`` IMAGENET1K_V1 (``resnet50-0676ba61.pth``).
"""

from configs.frcnn_r101_voc import cfg

cfg.model.backbone.name = "resnet50"
cfg.model.backbone.weights = "weights/resnet50-0676ba61.pth"
cfg.output_dir = "output/frcnn_r50_c4_voc"
