"""detect.engine.tensorboard: a run's event files read back with TensorBoard's own reader.

One run on coco8 with an evaluation every 2 iterations is stopped in iteration 5, one
iteration after its iteration-3 checkpoint, and resumed with ``tools/train.py --resume
--tensorboard``. The events must hold each step once: the resumed run's iteration 4 and
evaluation at 4 replace the stopped run's.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detect.config import ConfigError, load_config
from detect.data.image_io import read_image
from detect.engine import tensorboard
from detect.engine.trainer import train
from detect.models.faster_rcnn import FasterRCNN
from detect.visualize import draw_detections

REPO = Path(__file__).parent.parent
COCO8 = REPO / "tests" / "data" / "coco8"
CONFIG = REPO / "configs" / "quickstart_shapes.py"
SETTINGS = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=64",
    "model.roi_heads.fc_dim=128",
    "model.input.min_size=128",
    "model.input.max_size=160",
    "model.rpn.pre_nms_topk_train=200",
    "model.rpn.post_nms_topk_train=100",
    "model.rpn.pre_nms_topk_test=100",
    "model.rpn.post_nms_topk_test=50",
    "model.roi_heads.batch_size_per_image=64",
    "data.train_min_sizes=[128]",
    "data.train_max_size=160",
    f"data.train.root={COCO8 / 'images'}",
    f"data.train.ann_file={COCO8 / 'annotations.json'}",
    f"data.val.root={COCO8 / 'images'}",
    f"data.val.ann_file={COCO8 / 'annotations.json'}",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.device=cpu",
    "train.amp=off",
    "train.channels_last=False",
    "train.max_iter=6",
    "train.log_period=1",
    "train.checkpoint_period=3",
    "train.eval_period=2",
    "test.batch_size=4",
]
LOSSES = ["loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "total_loss"]
TRAIN_TAGS = ["train/lr", "train/seconds_per_iteration", "train/data_seconds", "train/memory_mb"]
EVAL_STEPS = [2, 4, 6]  # every 2 iterations, the last one being the final evaluation


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The stopped and resumed run's folder; detections are drawn from score 0 so that the images show boxes."""
    output = tmp_path_factory.mktemp("tensorboard_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared, busy CPU one thread is several times faster than two
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(tensorboard, "SCORE_THRESH", 0.0)
        forward, calls = FasterRCNN.forward, []

        def stopped_in_iteration_5(self, *args, **kwargs):
            calls.append(self.training)
            if calls.count(True) == 5 and self.training:
                raise KeyboardInterrupt
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(FasterRCNN, "forward", stopped_in_iteration_5)
        with pytest.raises(KeyboardInterrupt):
            train(load_config(CONFIG, [*SETTINGS, "train.tensorboard=True", f"output_dir={output}"]))
    torch.set_num_threads(threads)
    assert (output / "last_checkpoint").read_text() == "model_0000003.pth"
    assert len(list(output.glob("events.out.tfevents.*"))) == 1

    # The resumed run draws from SCORE_THRESH's own value: it runs in a fresh process.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    resumed = subprocess.run(
        [sys.executable, "tools/train.py", str(CONFIG), "--output-dir", str(output), "--resume", "--tensorboard",
         *SETTINGS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def events(run) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})  # 0: keep every event
    accumulator.Reload()
    return accumulator


def _steps(events: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in events.Scalars(tag)]


def test_every_logged_scalar_is_there_once_per_iteration(run, events):
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # the stopped run's and the resumed run's
    for tag in [f"loss/{name}" for name in LOSSES] + TRAIN_TAGS:
        assert _steps(events, tag) == [1, 2, 3, 4, 5, 6], tag


def test_scalars_are_the_log_records(run, events):
    """log.jsonl holds iterations 1-3 of the stopped run and 4-6 of the resumed one: so must the events."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5, 6]
    keys = [(name, f"loss/{name}") for name in LOSSES] + [("lr", "train/lr"), ("memory_mb", "train/memory_mb")]
    for key, tag in keys:
        logged = [event.value for event in events.Scalars(tag)]
        assert logged == pytest.approx([r[key] for r in records], rel=1e-6), tag  # float32 in the events


def test_each_evaluation_has_its_metrics_and_per_class_ap(run, events):
    for step in EVAL_STEPS:
        folder = run if step == 6 else run / f"eval_{step:07d}"
        bbox = json.loads((folder / "metrics.json").read_text())["bbox"]
        for name in ("AP", "AP50", "AP75"):
            (event,) = [e for e in events.Scalars(f"eval/{name}") if e.step == step]
            assert event.value == pytest.approx(bbox[name], rel=1e-6, abs=1e-6)
        assert bbox["per_class"], "coco8's classes have ground truth"
        for name, value in bbox["per_class"].items():
            (event,) = [e for e in events.Scalars(f"eval_per_class/{name}") if e.step == step]
            assert event.value == pytest.approx(value, rel=1e-6, abs=1e-6)
    for tag in ("eval/AP", "eval/AP50", "eval/AP75"):
        assert _steps(events, tag) == EVAL_STEPS


def test_images_are_the_evaluations_detections_drawn(run, events):
    """Each image event is the validation image with that evaluation's detections.json drawn by draw_detections."""
    annotations = json.loads((COCO8 / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    first = sorted(annotations["images"], key=lambda i: i["id"])[: tensorboard.NUM_IMAGES]  # the dataset's order
    assert sorted(events.Tags()["images"]) == sorted(f"detections/{image['file_name']}" for image in first)
    drew_boxes = False
    for step in EVAL_STEPS:
        folder = run if step == 6 else run / f"eval_{step:07d}"
        detections = json.loads((folder / "detections.json").read_text())
        for image in first:
            (event,) = [e for e in events.Images(f"detections/{image['file_name']}") if e.step == step]
            logged = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
            mine = [d for d in detections if d["image_id"] == image["id"] and d["score"] >= threshold(step)]
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]
            expected = draw_detections(
                read_image(COCO8 / "images" / image["file_name"]), np.array(boxes).reshape(-1, 4),
                [d["category_id"] for d in mine], [d["score"] for d in mine], names,
            )
            np.testing.assert_array_equal(logged, expected)
            drew_boxes |= bool(mine)
    assert drew_boxes


def threshold(step: int) -> float:
    """Evaluation 2 ran in the stopped run, drawn from score 0; 4 and 6 in the resumed one, from SCORE_THRESH."""
    return 0.0 if step == 2 else tensorboard.SCORE_THRESH


def test_plot_tool_works_without_the_tensorboard_package(run, tmp_path):
    blocked = (
        "import runpy, sys; sys.modules['tensorboard'] = None; import detect.engine; "
        f"sys.argv = ['tools/plot.py', {str(run)!r}, '--output-dir', {str(tmp_path)!r}]; "
        "runpy.run_path('tools/plot.py', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", blocked], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "losses.png").stat().st_size > 1000


def test_missing_package_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match=r"pip install -e \.\[tensorboard\]"):
        tensorboard.TensorBoardLog(tmp_path, 0, load_config(CONFIG, SETTINGS))
