"""Detectron2 pickles: the restricted unpickler, the model-zoo name mapping, class order, errors.

The Detectron2-format dicts here are written out by hand from Detectron2's naming
(``backbone.bottom_up.res2.0.conv1.norm.weight``, ``roi_heads.box_predictor.cls_score``);
Detectron2 itself is not needed.
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from detect import build_model, load_config
from detect.checkpoint import save_checkpoint
from detect.models.anchors import cell_anchors
from detect.models.detectron2_compat import UnsafePickleError, convert_model_zoo, load_pickle

R50_BLOCKS = (3, 4, 6, 3)


class _RunsACommand:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _resnet(prefix: str, stages: range, blocks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Detectron2 names and shapes of a ResNet-50's stem (with ``stages`` from 2) and bottleneck stages."""
    arrays = {}

    def conv_norm(name: str, out_ch: int, in_ch: int, k: int) -> None:
        arrays[f"{prefix}{name}.weight"] = np.zeros((out_ch, in_ch, k, k), np.float32)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            arrays[f"{prefix}{name}.norm.{stat}"] = np.zeros(out_ch, np.float32)

    if 2 in stages:
        conv_norm("stem.conv1", 64, 3, 7)
    for stage in stages:
        width = 64 * 2 ** (stage - 2)
        in_ch = 64 if stage == 2 else width * 2
        for b in range(blocks[stage - 2]):
            conv_norm(f"res{stage}.{b}.conv1", width, in_ch if b == 0 else 4 * width, 1)
            conv_norm(f"res{stage}.{b}.conv2", width, width, 3)
            conv_norm(f"res{stage}.{b}.conv3", 4 * width, width, 1)
            if b == 0:
                conv_norm(f"res{stage}.{b}.shortcut", 4 * width, in_ch, 1)
    return arrays


def _heads(num_anchors: int, in_ch: int, box_dim: int, num_classes: int) -> dict[str, np.ndarray]:
    arrays = {}

    def layer(name: str, shape: tuple[int, ...]) -> None:
        arrays[f"{name}.weight"] = np.zeros(shape, np.float32)
        arrays[f"{name}.bias"] = np.zeros(shape[0], np.float32)

    layer("proposal_generator.rpn_head.conv", (in_ch, in_ch, 3, 3))
    layer("proposal_generator.rpn_head.objectness_logits", (num_anchors, in_ch, 1, 1))
    layer("proposal_generator.rpn_head.anchor_deltas", (4 * num_anchors, in_ch, 1, 1))
    layer("roi_heads.box_predictor.cls_score", (num_classes + 1, box_dim))
    layer("roi_heads.box_predictor.bbox_pred", (4 * num_classes, box_dim))
    return arrays


def r50_fpn(num_classes: int = 80) -> dict[str, np.ndarray]:
    arrays = _resnet("backbone.bottom_up.", range(2, 6), R50_BLOCKS)
    for level, channels in zip(range(2, 6), (256, 512, 1024, 2048)):
        arrays[f"backbone.fpn_lateral{level}.weight"] = np.zeros((256, channels, 1, 1), np.float32)
        arrays[f"backbone.fpn_output{level}.weight"] = np.zeros((256, 256, 3, 3), np.float32)
        arrays[f"backbone.fpn_lateral{level}.bias"] = arrays[f"backbone.fpn_output{level}.bias"] = np.zeros(256, np.float32)
    arrays["roi_heads.box_head.fc1.weight"] = np.zeros((1024, 256 * 7 * 7), np.float32)
    arrays["roi_heads.box_head.fc2.weight"] = np.zeros((1024, 1024), np.float32)
    arrays["roi_heads.box_head.fc1.bias"] = arrays["roi_heads.box_head.fc2.bias"] = np.zeros(1024, np.float32)
    return {**arrays, **_heads(3, 256, 1024, num_classes)}


def r50_c4(num_classes: int = 80) -> dict[str, np.ndarray]:
    arrays = {**_resnet("backbone.", range(2, 5), R50_BLOCKS), **_resnet("roi_heads.", range(5, 6), R50_BLOCKS)}
    return {**arrays, **_heads(15, 1024, 2048, num_classes)}


def _numbered(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Fills row i of ``arrays[name]`` with i, so that reordering shows."""
    value = arrays[name]
    value[...] = np.arange(len(value), dtype=np.float32).reshape(-1, *[1] * (value.ndim - 1))
    return value


def test_pickle_that_runs_a_command_is_refused(tmp_path):
    evil = _RunsACommand()
    evil.marker = tmp_path / "ran"
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": evil}}))
    with pytest.raises(UnsafePickleError) as e:
        load_pickle(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and "posix.system" in message
    assert not evil.marker.exists()
    # the tool: one line, exit status 2, and still nothing run
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/convert_detectron2.py"), str(path), str(tmp_path / "out.pth")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
    assert not evil.marker.exists() and not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_of_numpy_arrays_is_read(tmp_path, protocol):
    data = {"model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(0.5)}, "__author__": "x", "n": [1, (2, 3)]}
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded["model"]["a"], data["model"]["a"])
    assert loaded["model"]["b"] == 0.5 and loaded["__author__"] == "x" and loaded["n"] == [1, (2, 3)]


def test_fpn_names_shapes_and_class_order(tmp_path):
    arrays = r50_fpn()
    rng = np.random.default_rng(0)
    shortcut_var = arrays["backbone.bottom_up.res3.0.shortcut.norm.running_var"] = rng.random(512, dtype=np.float32)
    lateral = arrays["backbone.fpn_lateral4.weight"] = rng.random((256, 1024, 1, 1), dtype=np.float32)
    fc2 = arrays["roi_heads.box_head.fc2.weight"] = rng.random((1024, 1024), dtype=np.float32)
    cls_score = _numbered(arrays, "roi_heads.box_predictor.cls_score.weight")
    bbox_pred = _numbered(arrays, "roi_heads.box_predictor.bbox_pred.bias")
    objectness = _numbered(arrays, "proposal_generator.rpn_head.objectness_logits.bias")
    checkpoint, arch = convert_model_zoo({"model": arrays}, "m.pkl")
    assert arch == "R_50_FPN"
    model = checkpoint["model"]
    torch.testing.assert_close(model["backbone.body.layer2.0.downsample.1.running_var"], torch.from_numpy(shortcut_var))
    torch.testing.assert_close(model["backbone.fpn.inner_blocks.2.0.weight"], torch.from_numpy(lateral))
    torch.testing.assert_close(model["roi_heads.box_head.fc7.weight"], torch.from_numpy(fc2))
    # background: Detectron2's last row (80) becomes row 0; class rows 0..79 become 1..80
    assert model["roi_heads.predictor.cls_score.weight"][:, 0].tolist() == [80.0, *range(80)]
    assert cls_score.shape == (81, 1024)
    # class-specific deltas: 4 zero rows for the background, then Detectron2's 320 rows in order
    assert model["roi_heads.predictor.bbox_pred.bias"].tolist() == [0.0] * 4 + bbox_pred.tolist()
    # one anchor size per FPN level: the RPN rows keep their order
    assert model["rpn.head.objectness.bias"].tolist() == objectness.tolist() == [0.0, 1.0, 2.0]
    # contiguous index i is the (i+1)-th COCO category id: 0 -> 1 person, 79 -> 90 toothbrush
    classes = checkpoint["classes"]
    assert len(classes) == 80 and classes[1] == "person" and classes[90] == "toothbrush" and 12 not in classes
    # every tensor has the name and shape the zoo config's model expects
    path = tmp_path / "converted.pth"
    save_checkpoint(path, checkpoint)
    cfg = load_config(REPO / "configs/zoo/d2_faster_rcnn_R_50_FPN_1x.py", [f"model.weights={path}"])
    detector = build_model(cfg)
    assert detector.categories.ids[0] == 1 and detector.categories.ids[-1] == 90


def test_c4_rpn_rows_follow_the_anchor_order(tmp_path):
    arrays = r50_c4()
    objectness = _numbered(arrays, "proposal_generator.rpn_head.objectness_logits.bias")
    deltas = _numbered(arrays, "proposal_generator.rpn_head.anchor_deltas.bias")
    res5 = arrays["roi_heads.res5.2.conv3.norm.bias"] = np.random.default_rng(0).random(2048, dtype=np.float32)
    checkpoint, arch = convert_model_zoo({"model": arrays}, "m.pkl")
    assert arch == "R_50_C4"
    model = checkpoint["model"]
    # Detectron2's anchor s * 3 + r (size s, ratio r) becomes detect's r * 5 + s
    assert model["rpn.head.objectness.bias"].tolist() == [0, 3, 6, 9, 12, 1, 4, 7, 10, 13, 2, 5, 8, 11, 14]
    assert model["rpn.head.deltas.bias"][4:8].tolist() == deltas[12:16].tolist()  # detect's anchor 1 is Detectron2's 3
    assert objectness.shape == (15,)
    # ... and that is the same anchor: detect's anchor 1 is size 64 at ratio 0.5, Detectron2's 3 = 1 * 3 + 0
    x1, y1, x2, y2 = cell_anchors([32.0, 64.0, 128.0, 256.0, 512.0], [0.5, 1.0, 2.0], rounded=False)[1].tolist()
    assert (x2 - x1) * (y2 - y1) == pytest.approx(64.0**2) and (y2 - y1) / (x2 - x1) == pytest.approx(0.5)
    torch.testing.assert_close(model["roi_heads.box_head.layer4.2.bn3.bias"], torch.from_numpy(res5))
    path = tmp_path / "converted.pth"
    save_checkpoint(path, checkpoint)
    cfg = load_config(REPO / "configs/zoo/d2_faster_rcnn_R_50_C4_1x.py", [f"model.weights={path}"])
    build_model(cfg)  # strict: every name and shape fits


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.update({"roi_heads.mask_head.mask_fcn1.weight": np.zeros((256, 256, 3, 3), np.float32)}), "is a Mask R-CNN"),
        (lambda a: a.update({"roi_heads.box_head.conv1.weight": np.zeros((256, 256, 3, 3), np.float32)}), "roi_heads.box_head.conv1.weight"),
        (lambda a: a.update({"roi_heads.box_predictor.bbox_pred.weight": np.zeros((4, 1024), np.float32)}), "only class-specific"),
        (lambda a: a.pop("backbone.bottom_up.res2.0.conv1.norm.running_var"), "no running statistics"),
        (lambda a: a.update({"backbone.bottom_up.res2.0.conv1.weight": np.zeros((64, 64, 1, 1), np.int64)}), "is not a float array"),
    ],
)
def test_other_models_fail_with_one_line(edit, message):
    arrays = r50_fpn()
    edit(arrays)
    with pytest.raises(ValueError, match=message) as e:
        convert_model_zoo({"model": arrays}, "model_final.pkl")
    assert str(e.value).startswith("model_final.pkl: ") and "\n" not in str(e.value)


def test_retinanet_and_non_checkpoints_are_named():
    with pytest.raises(ValueError, match="is a RetinaNet"):
        convert_model_zoo({"model": {"head.cls_subnet.0.weight": np.zeros((1,), np.float32)}}, "r.pkl")
    with pytest.raises(ValueError, match=r"r.pkl: not a Detectron2 checkpoint.*\['blobs'\]"):
        convert_model_zoo({"blobs": {}}, "r.pkl")


@pytest.mark.parametrize(
    "name, backbone, fpn, max_iter",
    [
        ("R_50_C4_1x", "resnet50", False, 90000),
        ("R_50_FPN_1x", "resnet50", True, 90000),
        ("R_50_C4_3x", "resnet50", False, 270000),
        ("R_50_FPN_3x", "resnet50", True, 270000),
        ("R_101_C4_3x", "resnet101", False, 270000),
        ("R_101_FPN_3x", "resnet101", True, 270000),
        ("X_101_32x8d_FPN_3x", "resnext101_32x8d", True, 270000),
    ],
)
def test_zoo_configs(name, backbone, fpn, max_iter):
    cfg = load_config(REPO / f"configs/zoo/d2_faster_rcnn_{name}.py")
    m = cfg.model
    assert (m.backbone.name, m.fpn.enabled, cfg.train.max_iter) == (backbone, fpn, max_iter)
    assert m.backbone.stride_in_1x1 == name.startswith("R_")  # MSRA's ResNets; FAIR's ResNeXt has it in the 3x3
    assert m.input.channel_order == "bgr" and m.input.pixel_scale == 255.0
    assert m.roi_heads.pooler_resolution == (7 if fpn else 14) and m.roi_heads.pooler_aligned
    assert m.rpn.pre_nms_topk_test == (1000 if fpn else 6000)
