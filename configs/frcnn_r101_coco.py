"""Faster R-CNN, ResNet-101 "C4", COCO train2017 -> val2017: the ResNet paper's COCO detector.

The paper reports 48.4 mAP@.5 and 27.2 mAP@[.5, .95] on COCO val, +6.0 over
VGG-16 on the standard metric. Data, anchors and schedule are
``frcnn_vgg16_coco.py``'s (the paper's 240k + 80k iterations at lr 0.001 /
0.0001, 8 images per batch); the network is ``frcnn_r101_voc.py``'s: conv1 ..
conv4_x shared, RoIPool to 14x14, conv5_x (stride 2 -> 7x7) and average pooling
per RoI, frozen BN with ImageNet statistics, stem and conv2_x frozen, weight decay 1e-4.
"""

from configs.frcnn_vgg16_coco import cfg
from configs.resnet101_c4 import use_resnet101_c4

use_resnet101_c4(cfg)
cfg.output_dir = "output/frcnn_r101_coco"
