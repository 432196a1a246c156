"""tools/train.py, tools/test.py and tools/evaluate.py run as a user runs them, on coco8.

coco8 keeps COCO's non-contiguous category ids (1..90 with gaps), so these tests
check that detections.json speaks the dataset's ids and that metrics.json holds
exactly what pycocotools computes from it.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

REPO = Path(__file__).parent.parent
COCO8 = REPO / "tests" / "data" / "coco8"
ANN = COCO8 / "annotations.json"
CONFIG = "configs/quickstart_shapes.py"
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
DATA = [
    f"data.train.root={COCO8}/images",
    f"data.train.ann_file={ANN}",
    f"data.val.root={COCO8}/images",
    f"data.val.ann_file={ANN}",
    "data.num_workers=0",
]
TINY_MODEL = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=64",
    "model.roi_heads.fc_dim=128",
    "model.input.min_size=128",
    "model.input.max_size=160",
    "model.rpn.pre_nms_topk_test=100",
    "model.rpn.post_nms_topk_test=50",
    "train.device=cpu",
]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    # One thread: on a shared, busy CPU it is several times faster than two.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(
        [sys.executable, f"tools/{tool}", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _coco_stats(detections: list[dict], ann_file: Path = ANN) -> dict:
    """pycocotools alone, as its README uses it: the first six stats on 0-100, None for -1."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        evaluator = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: None if value == -1 else 100 * value for name, value in zip(STATS, evaluator.stats)}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("train_tool")
    _ok(
        _run(
            "train.py", CONFIG, "--output-dir", run, *DATA, *TINY_MODEL,
            "train.max_iter=2", "train.batch_size=2", "train.checkpoint_period=0", "train.log_period=1",
            "data.train_min_sizes=[128]", "data.train_max_size=160",
            "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=100",
        )
    )
    return run


@pytest.fixture(scope="module")
def tested(run) -> Path:
    """tools/test.py on coco8 with every detection kept (score_thresh=0): a barely trained model still finds boxes."""
    output = run / "test"
    _ok(_run("test.py", CONFIG, "--weights", run / "model_final.pth", "--output-dir", output,
             *DATA, *TINY_MODEL, "model.roi_heads.score_thresh=0.0"))
    return output


def test_train_tool_writes_a_run_folder(run):
    names = {p.name for p in run.iterdir()}
    assert {"config.py", "log.jsonl", "last_checkpoint", "model_final.pth", "detections.json", "metrics.json"} <= names
    iterations = [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert iterations == [1, 2]


def test_test_tool_detections_use_the_dataset_category_ids(tested):
    detections = json.loads((tested / "detections.json").read_text())
    categories = {c["id"] for c in json.loads(ANN.read_text())["categories"]}
    image_ids = {i["id"] for i in json.loads(ANN.read_text())["images"]}
    assert len(detections) > 0
    assert {d["category_id"] for d in detections} <= categories
    # With 80 classes and everything kept, ids above 80 appear: contiguous indices never reach them.
    assert max(d["category_id"] for d in detections) > 80
    assert {d["image_id"] for d in detections} <= image_ids


def test_test_tool_metrics_are_pycocotools_numbers(tested):
    # Two iterations leave AP at 0; non-zero numbers are compared in test_evaluate_tool_on_partly_right_detections.
    detections = json.loads((tested / "detections.json").read_text())
    metrics = json.loads((tested / "metrics.json").read_text())["bbox"]
    assert {name: metrics[name] for name in STATS} == _coco_stats(detections)


def test_evaluate_tool_gives_the_test_tool_metrics(tested, tmp_path):
    _ok(_run("evaluate.py", CONFIG, "--detections", tested / "detections.json", "--output-dir", tmp_path, *DATA))
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads((tested / "metrics.json").read_text())


def test_evaluate_tool_on_partly_right_detections(tmp_path):
    """Non-zero AP, and None for APl: ground truth without large objects, each found, some shifted or mislabelled."""
    ann = json.loads(ANN.read_text())
    ann["annotations"] = [a for a in ann["annotations"] if a["area"] < 96**2]  # COCO's "large" starts at 96^2
    ann_file = tmp_path / "no_large.json"
    ann_file.write_text(json.dumps(ann))
    detections = []
    for i, a in enumerate(ann["annotations"]):
        x, y, w, h = a["bbox"]
        if i % 3 == 1:
            x += 0.3 * w  # IoU 0.54: right at AP50, wrong at AP75
        category = 90 if i % 5 == 4 else a["category_id"]
        score = 1.0 - i / 1000
        detections.append({"image_id": a["image_id"], "category_id": category, "bbox": [x, y, w, h], "score": score})
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))

    _ok(_run("evaluate.py", CONFIG, "--detections", path, *DATA, f"data.val.ann_file={ann_file}"))

    metrics = json.loads((tmp_path / "metrics.json").read_text())["bbox"]  # default: beside the detections
    expected = _coco_stats(detections, ann_file)
    assert {name: metrics[name] for name in STATS} == expected
    assert 0 < expected["AP"] < expected["AP50"] < 100
    assert expected["APl"] is None


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_train_tool_unknown_key_suggests_the_right_one(tmp_path):
    line = _one_line_error(_run("train.py", CONFIG, "--output-dir", tmp_path, "train.max_itr=3"))
    assert "train.max_itr" in line
    assert "train.max_iter" in line


def test_test_tool_missing_weights_names_the_file(tmp_path):
    missing = tmp_path / "no_such_model.pth"
    line = _one_line_error(_run("test.py", CONFIG, "--weights", missing, "--output-dir", tmp_path, *DATA))
    assert str(missing) in line


def test_evaluate_tool_record_without_bbox_names_the_file_and_record(tmp_path):
    path = tmp_path / "detections.json"
    good = {"image_id": 9, "category_id": 1, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.9}
    path.write_text(json.dumps([good, good, {"image_id": 9, "category_id": 1, "score": 0.5}]))
    line = _one_line_error(_run("evaluate.py", CONFIG, "--detections", path, *DATA))
    assert str(path) in line
    assert "record 2" in line
    assert "bbox" in line
