"""The ResNet paper's per-RoI head for its "C4" detector: all of conv5_x, then global average pooling.

Appendix A of the ResNet paper shares conv1 .. conv4_x over the image (one map
of stride 16, :class:`detect.models.backbones.ResNetC4`), pools every RoI "before
conv5_1" and runs conv5_x and up per region, in the role of VGG-16's fc6/fc7.

Pooling size: torchvision's ``layer4`` (conv5_x) keeps the ImageNet network's
stride 2 in its first block, so RoIs are pooled to 14x14 and conv5_1 brings them
to 7x7, the size conv5_x sees in the ImageNet network (on a 224 input). This is
the standard C4 design (Detectron, Detectron2) and keeps the pretrained
conv5_x unchanged.

Shape letters: ``R`` RoIs of the batch, ``C`` trunk channels (1024 for
bottleneck ResNets, 256 for ResNet-18/34), ``S`` pooled size (14).
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn

from detect.models.backbones import _stage_channels
from detect.models.folded_bn import run_stage


class ResNetC5Head(nn.Module):
    """conv5_x of a torchvision ResNet and global average pooling: ``[R, C, S, S] -> [R, D]``.

    ``D`` (``out_dim``) is conv5_x's width: 2048 for ResNet-50/101/152, 512 for
    ResNet-18/34. Its normalisation layers are the ResNet's (frozen BN with
    ImageNet statistics in the paper's setting), and it is always trained.
    """

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        self.layer4 = resnet.layer4
        self.out_dim = _stage_channels(self.layer4)

    def forward(self, x: Tensor) -> Tensor:
        return run_stage(self.layer4, x).mean(dim=(2, 3))  # (R, C, S, S) -> (R, D, S/2, S/2) -> (R, D)
