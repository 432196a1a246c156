"""VGG-16 for Faster R-CNN: the 13 conv layers as the shared trunk, fc6/fc7 per RoI.

This is the VGG-16 baseline of the Faster R-CNN and ResNet papers (py-faster-rcnn's
``VGG16/faster_rcnn_end2end``): conv1_1 .. conv5_3 without the last max-pool
(one map of stride 16, 512 channels), RoI pooling to 7x7 on conv5_3, then
ImageNet's fc6 and fc7 (4096 each, ReLU, dropout 0.5) in front of the sibling
class and box layers.

Shape letters: ``N`` images, ``R`` RoIs of the batch, ``S`` pooled size (7).
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

from detect.models.backbones import load_imagenet_weights

# Index ranges of torchvision's vgg16().features per conv block (conv layers, ReLUs
# and the block's closing max-pool). Index 30, the fifth max-pool, is left out.
VGG16_BLOCKS = ((0, 5), (5, 10), (10, 17), (17, 24), (24, 30))
VGG16_DROPOUT = 0.5  # py-faster-rcnn's drop6 / drop7 and torchvision's classifier


def build_vgg16(weights: str | None) -> torchvision.models.VGG:
    """torchvision's VGG-16 (no BatchNorm), He-initialised, or loaded from an ImageNet checkpoint file.

    torchvision already initialises the convs with He's fan-out normal; its
    fully connected layers get N(0, 0.01), which stalls a 16-layer plain network
    trained from scratch, so fc6 and fc7 get He's fan-in normal here too.
    """
    vgg = torchvision.models.vgg16(weights=None)
    for fc in (vgg.classifier[0], vgg.classifier[3]):
        nn.init.kaiming_normal_(fc.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(fc.bias)
    if weights:
        load_imagenet_weights(vgg, weights, ignore_prefixes=())
    return vgg


class VGG16Trunk(nn.Module):
    """conv1_1 .. conv5_3 of VGG-16: images ``[N, 3, H, W]`` -> ``{"conv5": [N, 512, H/16, W/16]}``.

    ``freeze_at`` counts frozen conv blocks from the input, with the same numbers
    as for ResNet (1: conv1_x, 2: conv1_x and conv2_x, ... 5: all 13 convs).
    The default 2 freezes conv1_1 .. conv2_2, as py-faster-rcnn does for VGG-16.
    The parameter names are torchvision's ``features.<i>`` indices.
    """

    def __init__(self, vgg: torchvision.models.VGG, freeze_at: int):
        super().__init__()
        if not 0 <= freeze_at <= len(VGG16_BLOCKS):
            raise ValueError(f"model.backbone.freeze_at for vgg16 must be in 0..{len(VGG16_BLOCKS)}, got {freeze_at}")
        self.body = vgg.features[: VGG16_BLOCKS[-1][1]]
        for start, end in VGG16_BLOCKS[:freeze_at]:
            self.body[start:end].requires_grad_(False)
        self.out_channels = 512
        self.strides = {"conv5": 16}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"conv5": self.body(x)}


class VGG16BoxHead(nn.Module):
    """fc6 and fc7 of VGG-16 per RoI: ``[R, 512, 7, 7] -> [R, 4096]``.

    Dropout after each ReLU is active in training only, as in the original; the
    layers are the ImageNet classifier's ``classifier.0`` and ``classifier.3``.
    """

    def __init__(self, vgg: torchvision.models.VGG, dropout: float = VGG16_DROPOUT):
        super().__init__()
        self.fc6 = vgg.classifier[0]
        self.fc7 = vgg.classifier[3]
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.in_features = self.fc6.in_features
        self.out_dim = self.fc7.out_features

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (R, 512, 7, 7) -> (R, 25088)
        if x.shape[1] != self.in_features:
            raise ValueError(f"VGG-16's fc6 takes 512x7x7 = {self.in_features} inputs per RoI, got {x.shape[1]}")
        x = self.dropout(self.relu(self.fc6(x)))
        return self.dropout(self.relu(self.fc7(x)))
