"""Faster R-CNN, ResNet-101-FPN, COCO 2017, the 3x schedule. Expected box AP on val2017: 42.0 (Detectron2).
ImageNet weights: torchvision's ``resnet101`` IMAGENET1K_V1 (``resnet101-63fe2227.pth``) at ``weights/``.

With the paper's own ImageNet ResNet-101 (MSRA's, as Detectron2 distributes it:
https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl) in place
of torchvision's; MSRA's network has the stride of a stage in its first 1x1 conv and
saw BGR pixels on 0..255 less the mean::

    python tools/train.py configs/frcnn_r101_fpn_coco_3x.py model.backbone.weights=weights/R-101.pkl \\
        model.backbone.stride_in_1x1=True model.input.channel_order=bgr model.input.pixel_scale=255 \\
        'model.input.pixel_mean=[103.53,116.28,123.675]' 'model.input.pixel_std=[1.0,1.0,1.0]'
"""

from configs.frcnn_r50_fpn_coco_3x import cfg

cfg.model.backbone.name = "resnet101"
cfg.model.backbone.weights = "weights/resnet101-63fe2227.pth"
cfg.output_dir = "output/frcnn_r101_fpn_coco_3x"
