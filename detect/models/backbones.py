"""Backbones on torchvision's ResNet definitions, with or without an FPN.

Contract: a backbone maps images ``[N, 3, H, W]`` to a ``dict[str, Tensor]`` of
feature maps and states ``out_channels`` (all levels) and ``strides`` (per name).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from detect.config import RESNET_NAMES
from detect.models.detectron2_compat import imagenet_resnet_state_dict
from detect.models.folded_bn import conv_frozen_bn, run_stage

RESNETS = {name: getattr(torchvision.models, name) for name in RESNET_NAMES}
STAGES = ("layer1", "layer2", "layer3", "layer4")  # conv2_x .. conv5_x, strides 4 .. 32


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """``frozen_bn``: a fixed affine map (pretrained statistics); ``bn``; ``gn``: 32 groups."""
    layers = {
        "frozen_bn": FrozenBatchNorm2d,
        "bn": nn.BatchNorm2d,
        "gn": lambda channels: nn.GroupNorm(32, channels),
    }
    if kind not in layers:
        raise ValueError(f"unknown norm {kind!r}; known: {', '.join(layers)}")
    return layers[kind]


def build_resnet(name: str, norm: str, weights: str | None, stride_in_1x1: bool = False) -> torchvision.models.ResNet:
    """torchvision's ResNet or ResNeXt, He-initialised, or loaded from an ImageNet checkpoint file.

    ``weights``: torchvision's ``.pth`` state dict, or a Detectron2 ``.pkl`` (MSRA's
    ``R-50.pkl``, ``R-101.pkl``, FAIR's ``X-101-32x8d.pkl``). ``stride_in_1x1``
    moves the stride of each downsampling bottleneck from its 3x3 conv to its
    first 1x1 conv, the layout of MSRA's original ResNets.
    """
    if name not in RESNETS:
        raise ValueError(f"unknown ResNet {name!r}; known: {', '.join(RESNETS)}")
    resnet = RESNETS[name](weights=None, norm_layer=norm_layer(norm))
    if stride_in_1x1:
        _move_stride_to_1x1(resnet)
    if weights:
        if norm == "gn":
            raise ValueError("ImageNet weights come with BatchNorm; use model.backbone.norm=frozen_bn or bn")
        load_imagenet_weights(resnet, weights, ignore_prefixes=())
    return resnet


def _move_stride_to_1x1(resnet: torchvision.models.ResNet) -> None:
    for stage in STAGES:
        block = getattr(resnet, stage)[0]
        if not isinstance(block, torchvision.models.resnet.Bottleneck):
            raise ValueError("model.backbone.stride_in_1x1 needs bottleneck blocks (ResNet-50 and deeper)")
        block.conv1.stride, block.conv2.stride = block.conv2.stride, block.conv1.stride


def load_imagenet_weights(model: nn.Module, path: str, ignore_prefixes: tuple[str, ...]) -> None:
    """Loads an ImageNet checkpoint into ``model``, strictly: torchvision's plain state dict
    (``.pth``), or for a ResNet a Detectron2 pickle (``.pkl``, see :mod:`detect.models.detectron2_compat`).

    ``ignore_prefixes`` names checkpoint entries that have no counterpart (e.g. a classifier).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    if path.endswith(".pkl"):
        state = imagenet_resnet_state_dict(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ: another depth or width
        raise ValueError(f"{path} does not fit {type(model).__name__}: {str(e).splitlines()[1].strip()} ...") from None
    # Detectron2's ImageNet pickles may lack the ImageNet classifier, which no detector uses.
    missing = [
        k for k in result.missing_keys if not k.endswith("num_batches_tracked") and not (path.endswith(".pkl") and k.startswith("fc."))
    ]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit {type(model).__name__}: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
        )


class ResNetTrunk(nn.Module):
    """Stem and the first ``num_stages`` stages of a torchvision ResNet.

    Returns ``{"c2": .., "c3": .., "c4": .., "c5": ..}`` (strides 4, 8, 16, 32) up
    to ``num_stages``. ``freeze_at`` = 1 freezes the stem, 2 the stem and conv2_x, ...
    """

    def __init__(self, resnet: torchvision.models.ResNet, num_stages: int, freeze_at: int):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.stage_names = STAGES[:num_stages]
        for name in self.stage_names:
            setattr(self, name, getattr(resnet, name))
        self.out_names = [f"c{i + 2}" for i in range(num_stages)]
        self.strides = {name: 2 ** (i + 2) for i, name in enumerate(self.out_names)}
        self.channels = {name: _stage_channels(getattr(self, stage)) for name, stage in zip(self.out_names, self.stage_names)}
        if freeze_at >= 1:
            self.conv1.requires_grad_(False)
            self.bn1.requires_grad_(False)
        for stage in self.stage_names[: max(0, freeze_at - 1)]:
            getattr(self, stage).requires_grad_(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if isinstance(self.bn1, FrozenBatchNorm2d):
            x = conv_frozen_bn(self.conv1, self.bn1, x)
        else:
            x = self.bn1(self.conv1(x))
        x = self.maxpool(self.relu(x))
        out = {}
        for name, stage in zip(self.out_names, self.stage_names):
            x = run_stage(getattr(self, stage), x)
            out[name] = x
        return out


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).weight.shape[0]


class ResNetFPN(nn.Module):
    """ResNet trunk + FPN: ``p2 .. p5`` from C2-C5 and ``p6`` by stride-2 subsampling of P5."""

    def __init__(self, trunk: ResNetTrunk, out_channels: int):
        super().__init__()
        self.body = trunk
        self.fpn = FeaturePyramidNetwork(
            [trunk.channels[n] for n in trunk.out_names], out_channels, extra_blocks=LastLevelMaxPool()
        )
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.out_channels = out_channels
        self.strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.fpn(OrderedDict(self.body(x)))
        return dict(zip(self.strides, features.values()))


class ResNetC4(nn.Module):
    """The ResNet paper's shared trunk for detection: conv1 .. conv4_x, one map of stride 16."""

    def __init__(self, trunk: ResNetTrunk):
        super().__init__()
        self.body = trunk
        self.out_channels = trunk.channels["c4"]
        self.strides = {"c4": 16}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"c4": self.body(x)["c4"]}
