"""detect.models.folded_bn: a frozen BN folded into its convolution computes what conv + BN
compute, forward and backward, for every torchvision ResNet block kind."""

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from detect.models.folded_bn import conv_frozen_bn, has_frozen_bn, run_block


def _randomise_frozen_bn(module: nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.shape[0]
            m.weight.copy_(0.5 + torch.rand(c, generator=generator))
            m.bias.copy_(torch.rand(c, generator=generator) - 0.5)
            m.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(c, generator=generator))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_frozen_bn_equals_conv_then_bn_forward_and_backward(bias, channels_last):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=bias)
    bn = FrozenBatchNorm2d(16)
    _randomise_frozen_bn(bn, g)
    x = torch.randn(2, 8, 13, 11, generator=g)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(2, 16, 7, 6, generator=g)

    results = []
    for run in (lambda t: bn(conv(t)), lambda t: conv_frozen_bn(conv, bn, t)):
        conv.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = run(xi)
        y.backward(grad_out)
        grads = [xi.grad, conv.weight.grad] + ([conv.bias.grad] if bias else [])
        results.append((y.detach(), grads))
    (expected, expected_grads), (got, got_grads) = results
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for e, g_ in zip(expected_grads, got_grads):
        torch.testing.assert_close(g_, e, rtol=1e-5, atol=1e-5)
    if channels_last:  # the folded weight keeps the layout oneDNN was given
        assert got.is_contiguous(memory_format=torch.channels_last)


def _blocks() -> dict[str, nn.Module]:
    down = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), FrozenBatchNorm2d(cout))
    return {
        "bottleneck": Bottleneck(32, 8, norm_layer=FrozenBatchNorm2d),
        "bottleneck_down": Bottleneck(16, 8, stride=2, downsample=down(16, 32), norm_layer=FrozenBatchNorm2d),
        "resnext_down": Bottleneck(16, 8, stride=2, downsample=down(16, 32), groups=4, base_width=16, norm_layer=FrozenBatchNorm2d),
        "basic_down": BasicBlock(16, 32, stride=2, downsample=down(16, 32), norm_layer=FrozenBatchNorm2d),
    }


@pytest.mark.parametrize("kind", list(_blocks()))
def test_run_block_equals_torchvision_block(kind):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    block = _blocks()[kind]
    _randomise_frozen_bn(block, g)
    assert has_frozen_bn(block)
    x = torch.randn(2, block.conv1.in_channels, 10, 12, generator=g)
    results = []
    for run in (block, lambda t: run_block(block, t)):
        block.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = run(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results.append([y.detach(), xi.grad] + [p.grad for p in block.parameters()])
    for e, g_ in zip(*results):
        torch.testing.assert_close(g_, e, rtol=1e-5, atol=1e-5)


def test_blocks_with_trainable_bn_run_unfolded():
    block = Bottleneck(32, 8)  # nn.BatchNorm2d: batch statistics in training, nothing to fold
    assert not has_frozen_bn(block)
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(run_block(block, x), block(x), rtol=0, atol=0)


def test_conv_frozen_bn_backward_refolds_the_current_weight():
    """The folded weight is recomputed for the backward, not kept: a weight changed in place
    after the forward would give wrong gradients, so it is an error, as autograd makes it."""
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = FrozenBatchNorm2d(6)
    _randomise_frozen_bn(bn, g)
    x = torch.randn(1, 4, 5, 5, generator=g, requires_grad=True)
    y = conv_frozen_bn(conv, bn, x)
    with torch.no_grad():
        conv.weight.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified in place between the forward and the backward"):
        y.sum().backward()
