"""Faster R-CNN, ResNet-101 "C4", COCO train2017 -> val2017: the ResNet paper's COCO detector.

The paper reports 48.4 mAP@.5 and 27.2 mAP@[.5, .95] on COCO val, +6.0 over
VGG-16 on the standard metric. Data, anchors and schedule are
``frcnn_vgg16_coco.py``'s (the paper's 240k + 80k iterations at lr 0.001 /
0.0001, 8 images per batch); the network is ``frcnn_r101_voc.py``'s: conv1 ..
conv4_x shared, RoIPool to 14x14, conv5_x (stride 2 -> 7x7) and average pooling
per RoI, frozen BN with ImageNet statistics, stem and conv2_x frozen, weight decay 1e-4.

With the paper's own ImageNet ResNet-101 (MSRA's, as Detectron2 distributes it:
https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl) in place
of torchvision's; MSRA's network has the stride of a stage in its first 1x1 conv and
saw BGR pixels on 0..255 less the mean::

    python tools/train.py configs/frcnn_r101_coco.py model.backbone.weights=weights/R-101.pkl \\
        model.backbone.stride_in_1x1=True model.input.channel_order=bgr model.input.pixel_scale=255 \\
        'model.input.pixel_mean=[103.53,116.28,123.675]' 'model.input.pixel_std=[1.0,1.0,1.0]'
"""

from configs.frcnn_vgg16_coco import cfg
from configs.resnet101_c4 import use_resnet101_c4

use_resnet101_c4(cfg)
cfg.output_dir = "output/frcnn_r101_coco"
