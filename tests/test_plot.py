"""tools/plot.py on a real (tiny) training run, and detect.plots on hand-made inputs."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from detect.plots import CURVE_HEIGHT, FIGURE_WIDTH, bar_chart_height, per_class_ap, plot_pr_curves, read_log

REPO = Path(__file__).parent.parent
TRAIN_OVERRIDES = [
    "model.fpn.out_channels=64",
    "model.input.min_size=128",
    "model.input.max_size=160",
    "data.train_min_sizes=[128]",
    "data.train_max_size=160",
    "model.roi_heads.score_thresh=0.0",  # an untrained model's scores are low; keep its detections
    "train.max_iter=4",
    "train.batch_size=2",
    "train.warmup_iters=2",
    "train.log_period=1",
    "train.device=cpu",
    "data.num_workers=0",
    "test.batch_size=3",
]


def train_tiny_run(base: Path) -> Path:
    """A 4-iteration quick-start run on 4 training and 3 validation shapes images, made once per session.

    Returns the run folder: config.py, log.jsonl, model_final.pth, detections.json, metrics.json, pr_curves.json.
    """
    data, run = base / "tiny_shapes", base / "tiny_run"
    if (run / "pr_curves.json").is_file():
        return run
    subprocess.run([sys.executable, "datasets/make_shapes.py", "--out", str(data), "--train", "4", "--val", "3"],
                   cwd=REPO, check=True, capture_output=True)
    paths = [
        f"data.train.root={data / 'train' / 'images'}",
        f"data.train.ann_file={data / 'annotations' / 'train.json'}",
        f"data.val.root={data / 'val' / 'images'}",
        f"data.val.ann_file={data / 'annotations' / 'val.json'}",
    ]
    subprocess.run([sys.executable, "tools/train.py", "configs/quickstart_shapes.py", "--output-dir", str(run),
                    *paths, *TRAIN_OVERRIDES], cwd=REPO, check=True, capture_output=True)
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.getbasetemp())


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG that decodes and is not a single flat colour."""
    image = cv2.imread(str(path))
    assert image is not None, f"{path} does not decode"
    assert image.std() > 0, f"{path} is blank"
    return image.shape[1], image.shape[0]


def test_plot_tool_writes_every_plot_of_a_run(tiny_run, tmp_path):
    load_tool("plot").main([str(tiny_run), "--output-dir", str(tmp_path)])
    classes = len(json.loads((tiny_run / "metrics.json").read_text())["bbox"]["per_class"])
    assert png_size(tmp_path / "losses.png") == (FIGURE_WIDTH, CURVE_HEIGHT)
    assert png_size(tmp_path / "lr.png") == (FIGURE_WIDTH, CURVE_HEIGHT)
    assert png_size(tmp_path / "pr_curves.png") == (FIGURE_WIDTH, CURVE_HEIGHT)
    assert png_size(tmp_path / "per_class_ap.png") == (FIGURE_WIDTH, bar_chart_height(classes))


def test_plot_tool_without_evaluation_plots_the_log_only(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text((tiny_run / "log.jsonl").read_text())
    load_tool("plot").main([str(run)])
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["losses.png", "lr.png"]


def test_plot_tool_without_a_log_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool("plot").main([str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.strip().count("\n") == 0 and "log.jsonl" in err


def test_read_log_keeps_the_last_record_of_an_iteration_a_resumed_run_repeats(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [{"iteration": 1, "lr": 0.1}, {"iteration": 2, "lr": 0.2}, {"iteration": 2, "lr": 0.25}, {"iteration": 3, "lr": 0.3}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert [r["lr"] for r in read_log(path)] == [0.1, 0.25, 0.3]
    path.write_text('{"iteration": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_log(path)


def test_per_class_ap_is_sorted_best_first():
    metrics = {"bbox": {"AP": 50.0, "per_class": {"cat": 10.0, "dog": 70.0, "bird": 10.0}}}
    assert list(per_class_ap(metrics).items()) == [("dog", 70.0), ("bird", 10.0), ("cat", 10.0)]
    with pytest.raises(ValueError, match="per_class"):
        per_class_ap({"voc": {}})


def test_pr_curves_reject_a_curve_of_the_wrong_length(tmp_path):
    curves = {"recall": [0.0, 0.5, 1.0], "per_class": {"cat": {"precision_iou50": [1.0, 0.5], "precision": [1, 1, 1]}}}
    with pytest.raises(ValueError, match="'cat'.*3 values"):
        plot_pr_curves(curves, tmp_path / "pr.png")
