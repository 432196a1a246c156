"""detect.export and tools/export.py: the ONNX file (in onnxruntime) and the torch.export program
give the eager model's detections on real images of three sizes, for an FPN and a C4 detector.

The models are ResNet-18 detectors trained for a few steps on coco8 images in the test, at
128-213 px, with the score threshold lowered so that every image has detections to compare.
"""

import importlib.util
import json
import re
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F

from conftest import DATA, REPO
from detect.checkpoint import save_checkpoint
from detect.config import load_config
from detect.export import ExportedDetector, check_parity, export_detector, match_detections
from detect.models import build_model

SMALL = [
    "model.backbone.name=resnet18",
    "model.backbone.weights=None",
    "model.backbone.norm=bn",
    "model.backbone.freeze_at=0",
    "model.input.min_size=128",
    "model.input.max_size=213",
    "model.rpn.pre_nms_topk_test=200",
    "model.rpn.post_nms_topk_test=100",
    "model.rpn.batch_size_per_image=64",
    "model.roi_heads.batch_size_per_image=64",
    "model.roi_heads.detections_per_image=50",
    "model.roi_heads.score_thresh=0.01",
    "model.roi_heads.nms_thresh=0.8",  # overlapping detections kept: more to compare
]
DESIGNS = {
    "fpn": ("configs/quickstart_shapes.py", ["model.fpn.out_channels=64", "model.roi_heads.fc_dim=128"]),
    # RoIAlign: the config's RoIPool has no ONNX translation (test_roi_pool_to_onnx_is_a_one_line_error)
    "c4": ("configs/frcnn_r101_voc.py", ["model.roi_heads.pooler_resolution=8", "model.roi_heads.pooler_type=align"]),
}
# (h, w) of the three images the parity is checked on: landscape, portrait, wide.
SIZES = [(480, 640), (400, 300), (240, 480)]

pytestmark = pytest.mark.usefixtures("one_thread")


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three coco8 photographs resized to the three ``SIZES``."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for name, (h, w) in zip(["000000000009.jpg", "000000000049.jpg", "000000000061.jpg"], SIZES):
        path = folder / f"{h}x{w}.jpg"
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(DATA / "coco8" / "images" / name)), (w, h)))
        paths.append(path)
    return paths


def train_briefly(design: str, coco8: dict, path: Path) -> list:
    """Trains ``design`` for 20 steps on four coco8 images at 128 px and saves it to ``path``.

    The class logits are then scaled up and the background's lowered, so that the briefly
    trained head's scores spread over 0..1 and every image has detections above the threshold. Returns the config
    file and overrides.
    """
    config, extra = DESIGNS[design]
    overrides = [*SMALL, *extra, f"model.classes={coco8['categories']!r}"]
    torch.manual_seed(0)
    model = build_model(load_config(REPO / config, overrides)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, targets = [], []
    for image, target in zip(coco8["images"][:4], coco8["targets"][:4]):
        scale = 128 / min(image.shape[-2:])
        images.append(F.interpolate(image[None], scale_factor=scale, mode="bilinear")[0])
        targets.append({"boxes": target["boxes"] * scale, "labels": target["labels"]})
    for step in range(20):
        i = 2 * (step % 2)
        losses = model(images[i : i + 2], targets[i : i + 2])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    with torch.no_grad():
        model.roi_heads.predictor.cls_score.weight.mul_(4.0)
        model.roi_heads.predictor.cls_score.bias[0] -= 3.0  # background
    save_checkpoint(path, {"model": model.state_dict(), "classes": model.categories.to_dict(), "config": None})
    return [REPO / config, *overrides]


@pytest.fixture(scope="module", params=list(DESIGNS))
def exported(request, coco8, tmp_path_factory) -> dict:
    """A briefly trained ``design``, exported to ONNX and to a torch.export program from one trace."""
    root = tmp_path_factory.mktemp(request.param)
    weights = root / "model.pth"
    config, *overrides = train_briefly(request.param, coco8, weights)
    model = build_model(load_config(config, [*overrides, f"model.weights={weights}"])).eval()
    files = {"onnx": root / "model.onnx", "export": root / "model.pt2"}
    export_detector(model, files)
    return {"design": request.param, "model": model, "files": files, "config": config, "overrides": overrides, "weights": weights}


def read_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "export"])
def test_exported_file_matches_eager_on_three_sizes(exported, images, fmt):
    runner = ExportedDetector(exported["files"][fmt])
    assert runner.categories == exported["model"].categories
    results = [check_parity(exported["model"], runner, read_rgb(path), path.name, repeats=1) for path in images]
    for parity in results:
        print(f"{exported['design']} {fmt} {parity}")
        assert parity.ok and parity.eager == parity.exported, parity
        assert parity.eager >= 3, parity  # the comparison has substance
    assert sum(p.eager for p in results) >= 10


def test_match_detections_needs_label_iou_and_score():
    a = {"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 4), "scores": torch.tensor([0.9, 0.9, 0.9, 0.9]),
         "labels": torch.tensor([1, 2, 1, 1])}
    # the same box and score; another label; a box shifted 1 px (IoU 0.980); a score 2e-3 lower
    b = {"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 3 + [[1.0, 0.0, 101.0, 100.0]]),
         "scores": torch.tensor([0.9, 0.9, 0.898, 0.9]), "labels": torch.tensor([1, 2, 1, 1])}
    assert match_detections(a, b).tolist() == [True, True, True, True]  # a's label-1 boxes all match b[0]
    assert match_detections(b, a).tolist() == [True, True, False, False]
    assert match_detections(b, {k: v[:0] for k, v in a.items()}).tolist() == [False] * 4


def test_torchscript_and_roi_pool_to_onnx_are_one_line_errors(tmp_path, capsys):
    cfg = load_config(REPO / "configs/frcnn_r101_voc.py", SMALL)  # the paper's RoIPool
    model = build_model(cfg)
    weights = tmp_path / "model.pth"
    save_checkpoint(weights, {"model": model.state_dict(), "classes": model.categories.to_dict(), "config": None})
    tool = load_tool("export")
    cases = [("torchscript", "model.pt", "cannot export to 'torchscript'"), ("onnx", "model.onnx", "cannot export to onnx: .*RoIPool")]
    for fmt, name, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.main([str(REPO / "configs/frcnn_r101_voc.py"), "--weights", str(weights), "--format", fmt,
                       "--output", str(tmp_path / name), *SMALL])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert len(err.strip().splitlines()) == 1 and re.match(f"error: {expected}", err), err
        assert not (tmp_path / name).exists()


@pytest.mark.slow
def test_predict_tool_runs_the_onnx_file_like_the_checkpoint(exported, images, tmp_path):
    predict = load_tool("predict")
    # Batches of one, as the exported file runs: padding to a batch's largest image changes the proposals.
    common = ["--input", *map(str, images), "--score-thresh", "0.05", "--batch-size", "1"]
    assert predict.main(["--model", str(exported["files"]["onnx"]), *common, "--output-dir", str(tmp_path / "onnx")]) == 0
    assert predict.main([str(exported["config"]), "--weights", str(exported["weights"]), *common,
                         "--output-json", str(tmp_path / "eager.json"), *exported["overrides"], "train.amp=off"]) == 0
    onnx_records = json.loads((tmp_path / "onnx" / "predictions.json").read_text())
    eager_records = json.loads((tmp_path / "eager.json").read_text())
    assert [r["file"] for r in onnx_records] == [r["file"] for r in eager_records] == list(map(str, images))
    assert sum(len(r["detections"]) for r in eager_records) >= 5
    for got, expected in zip(onnx_records, eager_records):
        a, b = (_as_tensors(r["detections"]) for r in (got, expected))
        assert match_detections(a, b).all() and match_detections(b, a).all() and len(got["detections"]) == len(expected["detections"])
        assert [d["name"] for d in got["detections"]] == [exported["model"].categories.name(d["label"]) for d in got["detections"]]
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.jpg")) == sorted(p.name for p in images)  # drawn


def _as_tensors(detections: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor([d["box"] for d in detections]).reshape(-1, 4),
        "scores": torch.tensor([d["score"] for d in detections]),
        "labels": torch.tensor([d["label"] for d in detections], dtype=torch.int64),
    }
