"""detect.models.backbones: ImageNet weights load into torchvision's exact features; strides,
channels and frozen parameters of every backbone."""

import pytest
import torch
import torchvision
from torch import nn

from detect.config import Config, apply_overrides
from detect.models import build_model
from detect.models.backbones import ResNetFPN, ResNetTrunk, build_resnet

CHANNELS = {
    "resnet18": [64, 128, 256, 512],  # BasicBlock: 64 * 2**i
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],  # Bottleneck: 4 * 64 * 2**i
    "resnet101": [256, 512, 1024, 2048],
    "resnet152": [256, 512, 1024, 2048],
}


def _imagenet_like_state_dict(name: str, seed: int) -> tuple[nn.Module, dict]:
    """A torchvision ResNet with random weights and random BatchNorm statistics (so that loading
    them matters), in eval mode, and its state dict."""
    torch.manual_seed(seed)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return reference, reference.state_dict()


def _reference_features(resnet: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    out = []
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        x = stage(x)
        out.append(x)
    return out


def _trunk_from_config(name: str, path) -> nn.Module:
    """The detector's trunk, with the weights given by the config key (frozen BN, the default)."""
    cfg = Config()
    overrides = [f"model.backbone.name={name}", f"model.backbone.weights={path}", "model.classes={1: 'a'}"]
    apply_overrides(cfg, overrides + ["model.roi_heads.fc_dim=16"])
    return build_model(cfg).backbone.body


def _trunk_from_build_resnet(name: str, path) -> nn.Module:
    return ResNetTrunk(build_resnet(name, "frozen_bn", str(path)), num_stages=4, freeze_at=2)


@pytest.mark.parametrize(
    "name, seed, build", [("resnet50", 0, _trunk_from_config), ("resnet101", 1, _trunk_from_build_resnet)]
)
def test_imagenet_weights_give_torchvision_features(tmp_path, name, seed, build):
    reference, state = _imagenet_like_state_dict(name, seed)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    trunk = build(name, path).eval()

    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = _reference_features(reference, x)
        got = trunk(x)
    assert list(got) == ["c2", "c3", "c4", "c5"]
    for level, e in zip(got, expected):
        g = got[level]
        assert g.shape == e.shape
        relative = (g - e).norm() / e.norm()
        assert relative < 1e-5, f"{name} {level}: relative error {relative:.2e}"


@pytest.mark.parametrize("name", list(CHANNELS))
def test_trunk_strides_and_channels(name):
    torch.manual_seed(0)
    trunk = ResNetTrunk(build_resnet(name, "frozen_bn", None), num_stages=4, freeze_at=0).eval()
    assert trunk.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}
    assert list(trunk.channels.values()) == CHANNELS[name]
    with torch.no_grad():
        features = trunk(torch.zeros(1, 3, 32, 64))
    for (level, f), channels in zip(features.items(), CHANNELS[name]):
        stride = trunk.strides[level]
        assert f.shape == (1, channels, 32 // stride, 64 // stride), level


def test_fpn_levels_strides_and_channels():
    torch.manual_seed(0)
    backbone = ResNetFPN(ResNetTrunk(build_resnet("resnet18", "bn", None), 4, freeze_at=0), out_channels=256).eval()
    assert backbone.out_channels == 256
    assert backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    with torch.no_grad():
        features = backbone(torch.zeros(2, 3, 128, 192))
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    for level, f in features.items():
        stride = backbone.strides[level]
        assert f.shape == (2, 256, 128 // stride, 192 // stride), level


@pytest.mark.parametrize(
    "freeze_at, frozen_prefixes",
    [
        (0, ()),
        (1, ("conv1.", "bn1.")),  # the stem
        (2, ("conv1.", "bn1.", "layer1.")),  # stem + conv2_x
        (3, ("conv1.", "bn1.", "layer1.", "layer2.")),
        (5, ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")),  # everything
    ],
)
def test_freeze_at_freezes_exactly_the_stated_parameters(freeze_at, frozen_prefixes):
    trunk = ResNetTrunk(build_resnet("resnet18", "bn", None), 4, freeze_at=freeze_at)
    frozen = {n for n, p in trunk.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in trunk.named_parameters() if n.startswith(frozen_prefixes)}
    assert frozen == expected
    assert all(n.startswith(("conv1.", "bn1.", "layer")) for n, _ in trunk.named_parameters())


def test_weights_of_a_shallower_resnet_name_the_file(tmp_path):
    # ResNet-50 weights into ResNet-101: every shape fits, layer3.6 .. layer3.22 are missing.
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=f"{path} does not fit ResNet: missing .*layer3.6"):
        build_resnet("resnet101", "frozen_bn", str(path))


def test_weights_with_other_shapes_name_the_file(tmp_path):
    # ResNet-18 weights into ResNet-50: same key names for conv1, layer*.0.conv1, fc, ... but other shapes.
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=f"{path} does not fit ResNet"):
        build_resnet("resnet50", "frozen_bn", str(path))


def test_missing_weights_file_names_it(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match=f"backbone weights not found: {path}"):
        build_resnet("resnet18", "frozen_bn", str(path))


def test_group_norm_with_imagenet_weights_is_an_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="norm=frozen_bn or bn"):
        build_resnet("resnet18", "gn", str(path))


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="'resnet19'.*resnet18, resnet34, resnet50, resnet101, resnet152"):
        build_resnet("resnet19", "bn", None)
    with pytest.raises(ValueError, match="'syncbn'.*frozen_bn, bn, gn"):
        build_resnet("resnet18", "syncbn", None)
