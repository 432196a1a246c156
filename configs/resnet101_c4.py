"""The ResNet paper's ResNet-101 detection network, shared by its VOC and COCO configs.

conv1 .. conv4_x shared (stride 16, 1024 channels); RoIPool to 14x14 "before
conv5_1", whose stride 2 brings it to 7x7; all of conv5_x and global average
pooling per RoI. BN keeps its ImageNet statistics and is frozen (a fixed affine
map); the stem and conv2_x are frozen. Weight decay 1e-4, as in the ResNet's
ImageNet training.
"""

from detect.config import Config


def use_resnet101_c4(cfg: Config) -> None:
    cfg.model.backbone.name = "resnet101"
    cfg.model.backbone.weights = "weights/resnet101-63fe2227.pth"
    cfg.model.backbone.norm = "frozen_bn"
    cfg.model.backbone.freeze_at = 2  # stem, conv2_x
    cfg.model.roi_heads.pooler_resolution = 14
    cfg.train.weight_decay = 1e-4
