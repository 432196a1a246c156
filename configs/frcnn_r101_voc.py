"""Faster R-CNN, ResNet-101 "C4", PASCAL VOC 07+12 trainval -> VOC 2007 test: the ResNet paper's detector.

The paper reports 76.4 mAP (VOC07 11-point metric), +3.2 over VGG-16 with
everything else equal; PyTorch reproductions get about 79 with 07+12.

Everything but the network is ``frcnn_vgg16_voc.py`` (read its docstring for the
RPN, Fast R-CNN, data and schedule settings and their mapping to 8 images per
batch: lr 0.008, 13750 iterations, step at 10000). The network, after Appendix A:
conv1 .. conv4_x shared (stride 16, 1024 channels); RoIPool to 14x14 "before
conv5_1", whose stride 2 brings it to 7x7; all of conv5_x and global average
pooling per RoI (2048-d) in place of fc6/fc7; then the sibling class and box
layers. BN keeps its ImageNet statistics and is frozen (a fixed affine map),
and the stem and conv2_x are frozen (``freeze_at=2``). Weight decay 1e-4, as in
the ResNet's ImageNet training and the ResNet-101 Faster R-CNN reproductions.

ImageNet weights: torchvision's ``resnet101`` IMAGENET1K_V1 state dict (the
file ``resnet101-63fe2227.pth`` of download.pytorch.org) at ``weights/``.

With the paper's own ImageNet ResNet-101 (MSRA's, as Detectron2 distributes it:
https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl) in place
of torchvision's; MSRA's network has the stride of a stage in its first 1x1 conv and
saw BGR pixels on 0..255 less the mean::

    python tools/train.py configs/frcnn_r101_voc.py model.backbone.weights=weights/R-101.pkl \\
        model.backbone.stride_in_1x1=True model.input.channel_order=bgr model.input.pixel_scale=255 \\
        'model.input.pixel_mean=[103.53,116.28,123.675]' 'model.input.pixel_std=[1.0,1.0,1.0]'
"""

from configs.frcnn_vgg16_voc import cfg
from configs.resnet101_c4 import use_resnet101_c4

use_resnet101_c4(cfg)
cfg.output_dir = "output/frcnn_r101_voc"
