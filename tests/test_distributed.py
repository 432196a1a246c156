"""Training and evaluation under torchrun: two CPU processes with the gloo backend."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import DATA, REPO

COCO8 = DATA / "coco8"


@pytest.mark.slow
def test_torchrun_two_processes_train_and_gather_every_image(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [
        str(torchrun), "--nproc_per_node", "2", str(REPO / "tools/train.py"), str(REPO / "configs/quickstart_shapes.py"),
        "--output-dir", str(tmp_path),
        f"data.train.root={COCO8 / 'images'}", f"data.train.ann_file={COCO8 / 'annotations.json'}",
        f"data.val.root={COCO8 / 'images'}", f"data.val.ann_file={COCO8 / 'annotations.json'}",
        "train.max_iter=4", "train.batch_size=4", "train.log_period=1", "data.num_workers=0", "test.batch_size=2",
        "model.input.min_size=128", "model.input.max_size=160", "data.train_min_sizes=[128]", "data.train_max_size=160",
        "model.roi_heads.score_thresh=0.0", "train.tensorboard=True",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]  # written by rank 0 only
    (events,) = tmp_path.glob("events.out.tfevents.*")  # likewise
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("loss/total_loss")] == [1, 2, 3, 4]
    final_ap = json.loads((tmp_path / "metrics.json").read_text())["bbox"]["AP"]
    assert [e.value for e in accumulator.Scalars("eval/AP")] == pytest.approx([final_ap])
    # Each process ran inference on its half; rank 0 gathered detections for all 8 images.
    detections = json.loads((tmp_path / "detections.json").read_text())
    expected_ids = {image["id"] for image in json.loads((COCO8 / "annotations.json").read_text())["images"]}
    per_image = Counter(d["image_id"] for d in detections)
    assert set(per_image) == expected_ids
    assert max(per_image.values()) <= 100  # model.roi_heads.detections_per_image
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "model_final.pth").exists()
