"""The ResNet paper's two detectors: VGG-16 and ResNet "C4", each with one stride-16 map.

Parameter counts are derived here from the layer shapes, independently of the
code under test; weights loaded through ``model.backbone.weights`` must give
torchvision's own outputs.
"""

import pytest
import torch
import torchvision
from torchvision.ops import roi_align, roi_pool

from conftest import REPO
from detect import build_model, load_config
from detect.config import ConfigError
from detect.models.c4 import ResNetC5Head
from detect.models.vgg import VGG16BoxHead, VGG16Trunk

VOC_CLASSES = 20
# Small test images and few proposals: conv5_x per RoI is the costly part of C4 on a CPU.
SMALL_INPUT = ["model.input.min_size=320", "model.input.max_size=480", "model.rpn.post_nms_topk_test=50"]


def conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def linear(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


# VGG-16's 13 convs, block by block: (in, out) channels, all 3x3 with bias.
VGG16_BLOCKS = [
    [(3, 64), (64, 64)],
    [(64, 128), (128, 128)],
    [(128, 256), (256, 256), (256, 256)],
    [(256, 512), (512, 512), (512, 512)],
    [(512, 512), (512, 512), (512, 512)],
]


def vgg16_block_params(block: int) -> int:
    return sum(conv(i, o, 3, bias=True) for i, o in VGG16_BLOCKS[block])


def bottleneck_stage_params(c_in: int, width: int, blocks: int) -> int:
    """Convs of a ResNet bottleneck stage (no biases; frozen BN has no parameters).

    First block: 1x1 reduce, 3x3, 1x1 expand to 4 * width, 1x1 projection shortcut.
    """
    out = 4 * width
    first = conv(c_in, width, 1, False) + conv(width, width, 3, False) + conv(width, out, 1, False) + conv(c_in, out, 1, False)
    rest = conv(out, width, 1, False) + conv(width, width, 3, False) + conv(width, out, 1, False)
    return first + (blocks - 1) * rest


def rpn_head_params(channels: int, anchors: int) -> int:
    return conv(channels, channels, 3, True) + conv(channels, anchors, 1, True) + conv(channels, 4 * anchors, 1, True)


def predictor_params(dim: int, num_classes: int) -> int:
    return linear(dim, num_classes + 1) + linear(dim, 4 * (num_classes + 1))


def count(module: torch.nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """A seeded torchvision VGG-16 and the detector loaded from its state dict file."""
    torch.manual_seed(0)
    reference = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(reference.state_dict(), path)
    cfg = load_config(REPO / "configs/frcnn_vgg16_voc.py", [f"model.backbone.weights={path}", *SMALL_INPUT])
    return reference, build_model(cfg).eval()


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A seeded torchvision ResNet-50 with non-trivial BN statistics, and the C4 detector loaded from it."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(1.0, 2.0)
    path = tmp_path_factory.mktemp("resnet") / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    cfg = load_config(REPO / "configs/frcnn_r50_c4_voc.py", [f"model.backbone.weights={path}", *SMALL_INPUT])
    return reference, build_model(cfg).eval()


def test_vgg16_parameter_counts(vgg):
    _, model = vgg
    frozen = vgg16_block_params(0) + vgg16_block_params(1)  # freeze_at=2: conv1_x, conv2_x
    trainable_trunk = sum(vgg16_block_params(b) for b in range(2, 5))
    box_head = linear(512 * 7 * 7, 4096) + linear(4096, 4096)  # fc6, fc7
    rpn = rpn_head_params(512, 9)
    predictor = predictor_params(4096, VOC_CLASSES)
    print(
        f"\nvgg16: trunk frozen {frozen:,} trainable {trainable_trunk:,}; fc6+fc7 {box_head:,}; "
        f"rpn {rpn:,}; predictor {predictor:,}; model trainable {count(model, True):,} frozen {count(model, False):,}"
    )
    assert isinstance(model.backbone, VGG16Trunk) and isinstance(model.roi_heads.box_head, VGG16BoxHead)
    assert count(model.backbone, False) == frozen == 260_160
    assert count(model.backbone, True) == trainable_trunk == 14_454_528
    assert count(model.roi_heads.box_head, True) == box_head == 119_545_856
    assert count(model.rpn, True) == rpn
    assert count(model, True) == trainable_trunk + box_head + rpn + predictor
    assert count(model, False) == frozen


def test_resnet101_c4_parameter_counts():
    cfg = load_config(REPO / "configs/frcnn_r101_voc.py", ["model.backbone.weights=None"])
    model = build_model(cfg)
    stem = conv(3, 64, 7, False)
    conv2 = bottleneck_stage_params(64, 64, 3)
    conv3 = bottleneck_stage_params(256, 128, 4)
    conv4 = bottleneck_stage_params(512, 256, 23)
    conv5 = bottleneck_stage_params(1024, 512, 3)
    rpn = rpn_head_params(1024, 9)
    predictor = predictor_params(2048, VOC_CLASSES)
    print(
        f"\nresnet101 C4: trunk frozen (stem, conv2_x) {stem + conv2:,} trainable (conv3_x, conv4_x) "
        f"{conv3 + conv4:,}; conv5_x head {conv5:,}; rpn {rpn:,}; predictor {predictor:,}; "
        f"model trainable {count(model, True):,} frozen {count(model, False):,}"
    )
    assert isinstance(model.roi_heads.box_head, ResNetC5Head) and model.roi_heads.box_head.out_dim == 2048
    assert count(model.backbone, False) == stem + conv2 == 222_400
    assert count(model.backbone, True) == conv3 + conv4 == 27_230_208
    assert count(model.roi_heads.box_head, True) == conv5 == 14_942_208
    assert count(model, True) == conv3 + conv4 + conv5 + rpn + predictor
    assert count(model, False) == stem + conv2
    # BN is a fixed affine map: ImageNet statistics and scale/shift as buffers, never trained.
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("design, channels", [("vgg", 512), ("resnet", 1024)])
def test_trunk_has_stride_16(design, channels, request):
    _, model = request.getfixturevalue(design)
    (name,) = model.rpn_features
    assert model.roi_features == [name] and model.backbone.strides == {name: 16}
    with torch.no_grad():
        feature = model.backbone(torch.rand(1, 3, 320, 480))[name]
    assert feature.shape == (1, channels, 20, 30) and model.backbone.out_channels == channels


def test_vgg16_weights_give_torchvision_outputs(vgg):
    reference, model = vgg
    torch.manual_seed(1)
    x = torch.randn(1, 3, 160, 224)
    rois = torch.randn(6, 512, 7, 7).relu()
    with torch.no_grad():
        conv5_3 = reference.features[:30](x)  # without the fifth max-pool
        fc7 = reference.classifier[:6](rois.flatten(1))  # fc6, ReLU, dropout, fc7, ReLU, dropout (eval: identity)
        got_conv5_3 = model.backbone(x)["conv5"]
        got_fc7 = model.roi_heads.box_head(rois)
    assert rel_err(got_conv5_3, conv5_3) < 1e-5
    assert rel_err(got_fc7, fc7) < 1e-5


def test_resnet_c4_weights_give_torchvision_outputs(resnet):
    reference, model = resnet
    torch.manual_seed(1)
    x = torch.randn(1, 3, 160, 224)
    rois = torch.randn(6, 1024, 14, 14).relu()
    with torch.no_grad():
        stem = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        conv4 = reference.layer3(reference.layer2(reference.layer1(stem)))
        conv5 = torch.flatten(reference.avgpool(reference.layer4(rois)), 1)
        got_conv4 = model.backbone(x)["c4"]
        got_conv5 = model.roi_heads.box_head(rois)
    assert got_conv5.shape == (6, 2048)
    assert rel_err(got_conv4, conv4) < 1e-5
    assert rel_err(got_conv5, conv5) < 1e-5


@pytest.mark.parametrize("design", ["vgg", "resnet"])
def test_eval_output_format(design, request, coco8):
    _, model = request.getfixturevalue(design)
    images = coco8["images"][:2]
    predictor = model.roi_heads.predictor.cls_score
    saved = predictor.weight.detach().clone()
    with torch.no_grad():
        predictor.weight.mul_(50.0)  # confident random scores, so that some pass the 0.05 threshold
        outputs = model(images)
        predictor.weight.copy_(saved)
    assert isinstance(outputs, list) and len(outputs) == len(images)
    assert sum(len(o["boxes"]) for o in outputs) > 0
    for image, out in zip(images, outputs):
        assert set(out) == {"boxes", "scores", "labels"}
        n = len(out["boxes"])
        assert out["boxes"].shape == (n, 4) and out["boxes"].dtype == torch.float32
        assert out["scores"].shape == (n,) and out["labels"].shape == (n,) and out["labels"].dtype == torch.int64
        assert n <= 100 and ((out["scores"] > 0.05) & (out["scores"] <= 1)).all()
        h, w = image.shape[-2:]
        boxes = out["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert set(out["labels"].tolist()) <= set(range(1, VOC_CLASSES + 1))


def _small_c4(*overrides: str):
    base = ["model.backbone.name=resnet18", "model.backbone.weights=None", "model.backbone.norm=bn", *SMALL_INPUT]
    return build_model(load_config(REPO / "configs/frcnn_r101_voc.py", [*base, *overrides]))


def test_pooler_type_selects_roi_pool_or_roi_align():
    torch.manual_seed(0)
    feature = torch.randn(2, 256, 20, 30)
    rois = torch.tensor([[0, 10.0, 20.0, 200.0, 150.0], [1, 0.0, 0.0, 479.0, 319.0], [1, 33.0, 47.0, 90.0, 61.0]])
    pooled = _small_c4().roi_heads.pooler([feature], rois)  # the paper configs use RoIPool
    assert torch.equal(pooled, roi_pool(feature, rois, 14, 1 / 16))
    aligned = _small_c4("model.roi_heads.pooler_type=align").roi_heads.pooler([feature], rois)
    torch.testing.assert_close(aligned, roi_align(feature, rois, 14, 1 / 16, sampling_ratio=2))  # up to summation order
    assert not torch.allclose(aligned, pooled)


def test_c4_training_step_trains_conv5_head_not_frozen_stages(coco8):
    torch.manual_seed(0)
    model = _small_c4(f"model.classes={coco8['categories']}").train()
    images = [torch.nn.functional.interpolate(i[None], scale_factor=0.25)[0] for i in coco8["images"][:2]]
    targets = [{"boxes": t["boxes"] * 0.25, "labels": t["labels"]} for t in coco8["targets"][:2]]
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    trunk = model.backbone.body
    assert trunk.conv1.weight.grad is None and trunk.layer1[0].conv1.weight.grad is None  # freeze_at=2
    assert trunk.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_head.layer4[0].conv1.weight.grad.abs().sum() > 0


def test_design_errors_name_the_key():
    vgg = REPO / "configs/frcnn_vgg16_voc.py"
    with pytest.raises(ValueError, match="model.fpn.enabled=False"):
        build_model(load_config(vgg, ["model.fpn.enabled=True"]))
    with pytest.raises(ValueError, match="pooler_resolution=7"):
        build_model(load_config(vgg, ["model.roi_heads.pooler_resolution=14"]))
    with pytest.raises(ValueError, match="no normalisation layers"):
        build_model(load_config(vgg, ["model.backbone.norm=gn"]))
    with pytest.raises(ValueError, match="'vgg19' is not one of 'resnet18'.*'vgg16'"):
        build_model(load_config(vgg, ["model.backbone.name=vgg19"]))
    with pytest.raises(ValueError, match="freeze_at for the C4 design must be in 0..4"):
        _small_c4("model.backbone.freeze_at=5")
    with pytest.raises(ValueError, match="anchors.sizes has 5 levels, the backbone 1"):
        _small_c4("model.anchors.sizes=[[32], [64], [128], [256], [512]]")


def test_paper_configs_load():
    for name in ["vgg16_voc", "r101_voc", "r50_c4_voc", "vgg16_coco", "r101_coco"]:
        cfg = load_config(REPO / f"configs/frcnn_{name}.py")
        assert not cfg.model.fpn.enabled and cfg.model.roi_heads.pooler_type == "pool"
        assert cfg.model.input.min_size == 600 and cfg.model.input.max_size == 1000
        assert (cfg.model.rpn.pre_nms_topk_train, cfg.model.rpn.post_nms_topk_train) == (12000, 2000)
        assert (cfg.model.rpn.pre_nms_topk_test, cfg.model.rpn.post_nms_topk_test) == (6000, 300)
        assert cfg.model.roi_heads.batch_size_per_image == 128 and cfg.model.roi_heads.nms_thresh == 0.3
        assert cfg.model.roi_heads.pooler_resolution == (7 if "vgg" in name else 14)
    with pytest.raises(ConfigError):
        load_config(REPO / "configs/frcnn_r101_voc.py", ["model.backbone.depth=101"])
