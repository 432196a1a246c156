"""ResNet blocks with their frozen BatchNorm folded into the preceding convolution.

A frozen BN is the fixed affine map ``y = x * scale + shift`` per channel. After a
convolution without bias it equals one convolution with weight ``w * scale`` and
bias ``shift``: weight-sized work instead of an activation-sized multiply and add,
forward and backward, and one activation fewer in memory. Gradients still reach
``w``. The modules are torchvision's, untouched, so state dicts keep their names
and BN buffers; only the forward computation changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d


def conv_frozen_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d, x: Tensor) -> Tensor:
    """``bn(conv(x))`` as one convolution (equal up to float rounding).

    When the weight is trained, the backward recomputes the folded weight from ``conv.weight``
    rather than keeping it: ResNet-50's trunk would otherwise hold a second copy of its
    weights (some 90 MB) from its forward to its backward.
    """
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale

    def folded_weight() -> Tensor:
        return conv.weight * scale.view(-1, 1, 1, 1)

    weight = folded_weight()
    if not (torch.is_grad_enabled() and conv.weight.requires_grad):
        return conv._conv_forward(x, weight, shift)
    version = conv.weight._version

    def pack(saved: Tensor) -> Tensor | tuple[()]:
        return () if saved is weight else saved

    def unpack(packed: Tensor | tuple[()]) -> Tensor:
        if isinstance(packed, Tensor):
            return packed
        if conv.weight._version != version:
            raise RuntimeError("a convolution weight was modified in place between the forward and the backward")
        return folded_weight()

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        return conv._conv_forward(x, weight, shift)


def has_frozen_bn(block: nn.Module) -> bool:
    """Whether ``block`` is a torchvision ResNet block whose every norm layer is frozen BN."""
    if not isinstance(block, (BasicBlock, Bottleneck)):
        return False
    norms = [block.bn1, block.bn2] + ([block.bn3] if isinstance(block, Bottleneck) else [])
    if block.downsample is not None:
        norms.append(block.downsample[1])
    return all(isinstance(n, FrozenBatchNorm2d) for n in norms)


def run_block(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` of a torchvision ResNet block, folded when its norms are frozen BN."""
    if not has_frozen_bn(block):
        return block(x)
    out = F.relu(conv_frozen_bn(block.conv1, block.bn1, x), inplace=True)
    if isinstance(block, Bottleneck):
        out = F.relu(conv_frozen_bn(block.conv2, block.bn2, out), inplace=True)
        out = conv_frozen_bn(block.conv3, block.bn3, out)
    else:
        out = conv_frozen_bn(block.conv2, block.bn2, out)
    out += x if block.downsample is None else conv_frozen_bn(block.downsample[0], block.downsample[1], x)
    return F.relu(out, inplace=True)


def run_stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    """A ResNet stage (``layer1`` .. ``layer4``), block by block."""
    for block in stage:
        x = run_block(block, x)
    return x
