"""Faster R-CNN, ResNet-101 "C4", COCO train2017 -> val2017: the ResNet paper's COCO detector.

The paper reports 48.4 mAP@.5 and 27.2 mAP@[.5, .95] on COCO val, +6.0 over
VGG-16 on the standard metric. Data, anchors and schedule are
``frcnn_vgg16_coco.py``'s (the paper's 240k + 80k iterations at lr 0.001 /
0.0001, 8 images per batch); the network is ``frcnn_r101_voc.py``'s: conv1 ..
conv4_x shared, RoIPool to 14x14, conv5_x (stride 2 -> 7x7) and average pooling
per RoI, frozen BN with ImageNet statistics, stem and conv2_x frozen, weight decay 1e-4.
"""

from configs.frcnn_vgg16_coco import cfg

cfg.model.backbone.name = "resnet101"
cfg.model.backbone.weights = "weights/resnet101-63fe2227.pth"
cfg.model.backbone.norm = "frozen_bn"
cfg.model.backbone.freeze_at = 2  # stem, conv2_x
cfg.model.roi_heads.pooler_resolution = 14
cfg.train.weight_decay = 1e-4
cfg.output_dir = "output/frcnn_r101_coco"
