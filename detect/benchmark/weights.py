"""One set of seeded random weights with a trained model's activations, in each peer's naming.

Random weights alone make a model that does other work than a trained one: with
unit BN statistics the activations grow or vanish layer by layer, the RPN's logits
are near zero (its NMS then keeps few of the anchor-like proposals) and no class
score clears the 0.05 threshold. :func:`make_realistic` fixes that on real images.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from detect.config import SHIPPED_ROOT
from detect.data.image_io import image_to_tensor, read_image, to_float_image

# Trainable ResNet stages of torchvision's fasterrcnn_resnet50_fpn: layer2..layer4, i.e. detect's freeze_at=2.
TRAINABLE_LAYERS = 3
SEED = 0
# Real photos for the calibration and the timed inputs: coco8's, in the repository.
COCO8_IMAGES = sorted(str(p) for p in (SHIPPED_ROOT / "tests" / "data" / "coco8" / "images").glob("*.jpg"))
NUM_CLASSES = 91  # torchvision's COCO predictor: background and category ids 1..90
# Standard deviation of the RPN's objectness logits, its box deltas, and the class logits after
# calibration: sharp enough that proposals rank like a trained RPN's and detections clear 0.05.
RPN_LOGIT_STD = 2.5
RPN_DELTA_STD = 0.3
CLASS_LOGIT_STD = 3.0
# Added to the background logit: a trained classifier calls most proposals background
# (here about 3 in 4 at 320x512; without it every proposal had a class above 0.05).
BACKGROUND_LOGIT = 9.0


def read_images(paths: list[str], size: tuple[int, int]) -> list[Tensor]:
    """RGB float ``[3, H, W]`` images in 0..1, each resized (bilinear) to exactly ``size``."""
    images = []
    for path in paths:
        image = to_float_image(image_to_tensor(read_image(path)))
        images.append(F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1))
    return images


def build_torchvision(seed: int, **kwargs) -> FasterRCNN:
    """torchvision's fasterrcnn_resnet50_fpn with frozen BN and 3 trainable stages, seeded.

    ``fasterrcnn_resnet50_fpn(weights=None)`` would build plain BatchNorm and train all
    stages (its choice for a backbone without ImageNet weights); this is the same
    network as with COCO weights. ``kwargs`` go to ``FasterRCNN`` (sizes, top-k, thresholds).
    """
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=TRAINABLE_LAYERS)
    return FasterRCNN(backbone, num_classes=NUM_CLASSES, **kwargs)


@torch.no_grad()
def standardise_frozen_bn(bn: nn.Module, x: Tensor, generator: torch.Generator) -> None:
    """Sets a frozen BN's (torchvision's or Detectron2's) running statistics to those of its input
    ``x [N, C, H, W]``, and its scale and shift to random values in 0.5..1.5 and -0.2..0.2."""
    bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    bn.running_var.copy_(x.var(dim=(0, 2, 3)))
    bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) + 0.5)
    bn.bias.copy_((torch.rand(bn.bias.shape, generator=generator) - 0.5) * 0.4)


@torch.no_grad()
def make_realistic(model: FasterRCNN, images: list[Tensor], seed: int) -> None:
    """Sets every frozen BN from its input's statistics on ``images``, then scales the heads' outputs.

    One forward pass of torchvision's ``model`` (eval mode): each BN, when first called,
    takes its input's per-channel mean and variance as running statistics, so that it
    standardises, and a random scale in 0.5..1.5 and shift in -0.2..0.2 (so that the
    channels differ, as trained ones do). The FPN's output convs are scaled to a unit
    spread, the RPN's and the predictor's last layers to the spreads above, on the same pass;
    then the background logit is raised by BACKGROUND_LOGIT.
    """
    generator = torch.Generator().manual_seed(seed)
    hooks = []

    def standardise(bn: FrozenBatchNorm2d, args: tuple) -> None:
        standardise_frozen_bn(bn, args[0], generator)

    def scale_to(layer: nn.Module, std: float):
        def hook(_, args: tuple) -> None:
            factor = std / layer(args[0]).std()
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)

        return hook

    targets = [(bn, standardise) for bn in model.modules() if isinstance(bn, FrozenBatchNorm2d)]
    # unit-spread FPN levels, as trained ones have: else the coarse levels' RPN logits saturate the sigmoid
    targets += [(block[0], scale_to(block[0], 1.0)) for block in model.backbone.fpn.layer_blocks]
    predictor = model.roi_heads.box_predictor
    targets += [
        (model.rpn.head.cls_logits, scale_to(model.rpn.head.cls_logits, RPN_LOGIT_STD)),
        (model.rpn.head.bbox_pred, scale_to(model.rpn.head.bbox_pred, RPN_DELTA_STD)),
        (predictor.cls_score, scale_to(predictor.cls_score, CLASS_LOGIT_STD)),
    ]
    for module, fn in targets:
        hooks.append(module.register_forward_pre_hook(_once(fn)))
    was_training = model.training
    model.eval()
    model(images)
    model.train(was_training)
    for h in hooks:
        h.remove()
    predictor.cls_score.bias[0] += BACKGROUND_LOGIT


def _once(fn):
    """A forward pre-hook that calls ``fn`` on the first call only (the RPN head runs once per level)."""
    done = []

    def hook(module: nn.Module, args: tuple) -> None:
        if not done:
            done.append(True)
            fn(module, args)

    return hook


def detectron2_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's fasterrcnn_resnet50_fpn state dict in Detectron2's names and layouts.

    Detectron2's predictor has the background last and no background box deltas
    (torchvision: first, with deltas); its 90 classes are torchvision's 1..90.
    """
    converted = {}
    for name, value in state.items():
        new = _detectron2_name(name)
        if new is None:
            raise ValueError(f"{name!r} is not a weight of torchvision's fasterrcnn_resnet50_fpn")
        converted[new] = value
    order = torch.cat([torch.arange(1, NUM_CLASSES), torch.tensor([0])])
    for kind in ("weight", "bias"):
        cls = f"roi_heads.box_predictor.cls_score.{kind}"
        converted[cls] = converted[cls][order]
        deltas = f"roi_heads.box_predictor.bbox_pred.{kind}"
        converted[deltas] = converted[deltas][4:]
    return converted


def _detectron2_name(name: str) -> str | None:
    if m := re.fullmatch(r"backbone\.body\.(conv1\.weight|bn1\.(\w+))", name):
        return "backbone.bottom_up.stem.conv1." + ("weight" if m[2] is None else f"norm.{m[2]}")
    if m := re.fullmatch(r"backbone\.body\.layer([1-4])\.(\d+)\.(conv[123]\.weight|bn([123])\.(\w+)|downsample\.([01])\.(\w+))", name):
        block = f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}"
        if m[4]:
            return f"{block}.conv{m[4]}.norm.{m[5]}"
        if m[6]:
            return f"{block}.shortcut.{'weight' if m[6] == '0' else 'norm.' + m[7]}"
        return f"{block}.{m[3]}"
    if m := re.fullmatch(r"backbone\.fpn\.(inner|layer)_blocks\.([0-3])\.0\.(weight|bias)", name):
        return f"backbone.fpn_{'lateral' if m[1] == 'inner' else 'output'}{int(m[2]) + 2}.{m[3]}"
    rpn = {"conv.0.0": "conv", "cls_logits": "objectness_logits", "bbox_pred": "anchor_deltas"}
    if m := re.fullmatch(r"rpn\.head\.(conv\.0\.0|cls_logits|bbox_pred)\.(weight|bias)", name):
        return f"proposal_generator.rpn_head.{rpn[m[1]]}.{m[2]}"
    if m := re.fullmatch(r"roi_heads\.box_head\.fc([67])\.(weight|bias)", name):
        return f"roi_heads.box_head.fc{int(m[1]) - 5}.{m[2]}"
    if re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", name):
        return name
    return None
