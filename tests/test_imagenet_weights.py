"""ImageNet backbones: torchvision's ResNeXt checkpoints and MSRA-format (Caffe2) pickles give the
reference network's C2-C5 features."""

import pickle

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from detect.models.backbones import ResNetTrunk, build_resnet

LAYERS = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}


def _random_statistics(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)


def _assert_same_features(reference: nn.Module, trunk: ResNetTrunk) -> None:
    x = torch.randn(1, 3, 128, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = IntermediateLayerGetter(reference, LAYERS)(x)
        got = trunk(x)
    for name, e in expected.items():
        assert ((got[name] - e).norm() / e.norm()).item() < 1e-5, name


# resnext101_64x4d takes the same path with other group counts, at a minute of CPU here: left out
@pytest.mark.parametrize("name", ["resnext50_32x4d", "resnext101_32x8d"])
def test_torchvision_resnext_checkpoint_gives_torchvision_features(tmp_path, name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    _random_statistics(reference)
    reference.eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    trunk = ResNetTrunk(build_resnet(name, "frozen_bn", str(path)), num_stages=4, freeze_at=0).eval()
    _assert_same_features(reference, trunk)


def _caffe2_name(name: str) -> str:
    """torchvision's ResNet name -> the Caffe2 name of MSRA's pickles, folded BN (``_bn_s``, ``_bn_b``)."""
    parts = name.split(".")
    suffix = {"weight": "s", "bias": "b"}[parts[-1]]
    if parts[0] == "conv1":
        return "conv1_w"
    if parts[0] == "bn1":
        return f"res_conv1_bn_{suffix}"
    block = f"res{int(parts[0][-1]) + 1}_{parts[1]}"
    if parts[2] == "downsample":
        return f"{block}_branch1_w" if parts[3] == "0" else f"{block}_branch1_bn_{suffix}"
    branch = {"1": "2a", "2": "2b", "3": "2c"}[parts[2][-1]]
    return f"{block}_branch{branch}_w" if parts[2].startswith("conv") else f"{block}_branch{branch}_bn_{suffix}"


def test_msra_pickle_with_stride_in_1x1(tmp_path):
    """MSRA's layout (stride in conv1 of a stage's first block; BN folded into scale and shift)."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    _random_statistics(reference)
    blobs = {}
    for module_name, m in reference.named_modules():
        if isinstance(m, nn.BatchNorm2d):  # fold: the pickle holds scale and shift only
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            m.weight.data, m.bias.data = scale.detach(), (m.bias - m.running_mean * scale).detach()
            m.running_mean.zero_()
            m.running_var.fill_(1 - m.eps)
        if isinstance(m, torchvision.models.resnet.Bottleneck) and m.conv2.stride == (2, 2):
            m.conv1.stride, m.conv2.stride = (2, 2), (1, 1)
    for key, value in reference.state_dict().items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")) and not key.startswith("fc."):
            blobs[_caffe2_name(key)] = value.numpy()
    blobs["pred_w"], blobs["res2_0_branch2a_w_momentum"] = reference.fc.weight.detach().numpy(), blobs["res2_0_branch2a_w"]
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    reference.eval()
    trunk = ResNetTrunk(build_resnet("resnet50", "frozen_bn", str(path), stride_in_1x1=True), num_stages=4, freeze_at=0).eval()
    assert trunk.layer2[0].conv1.stride == (2, 2) and trunk.layer2[0].conv2.stride == (1, 1)
    _assert_same_features(reference, trunk)
    with pytest.raises(ValueError, match=r"R-50.pkl: 'fc_w' is not a ResNet weight"):
        path.write_bytes(pickle.dumps({**blobs, "fc_w": blobs["pred_w"]}, protocol=2))
        build_resnet("resnet50", "frozen_bn", str(path))
