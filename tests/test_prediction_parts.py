"""tools/predict.py over several processes: torchrun's ranks split the files, rank 0 merges
their parts into the JSON one process writes, and --resume skips files already done."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO
from detect.checkpoint import save_checkpoint
from detect.config import load_config
from detect.models import build_model
from detect.prediction_parts import parts_dir
from test_predict import CLASSES, CONFIG, TINY, noise_image, predict_tool

W, H = 160, 120


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Five images, a three-frame video between them, one unreadable file, and tiny weights."""
    root = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(1)
    folder = root / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "d.png", "e.jpg", "f.jpg"):
        cv2.imwrite(str(folder / name), noise_image(rng))
    (folder / "broken.jpg").write_bytes(b"not a JPEG")
    writer = cv2.VideoWriter(str(folder / "c.avi"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for _ in range(3):
        writer.write(noise_image(rng))
    writer.release()
    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, [*TINY, f"model.classes={CLASSES!r}"]))
    with torch.no_grad():  # random features score as objects
        model.roi_heads.predictor.cls_score.bias[0] = -3.0
    weights = root / "tiny.pth"
    save_checkpoint(weights, {"model": model.state_dict(), "classes": model.categories.to_dict(), "config": None})
    return {"root": root, "folder": folder, "weights": weights}


def args(inputs: dict, json_path: Path, *extra: str) -> list[str]:
    # Batches of one: each image's detections do not depend on what it is batched with.
    return [CONFIG, "--weights", str(inputs["weights"]), "--input", str(inputs["folder"]), "--output-json", str(json_path),
            "--batch-size", "1", "--score-thresh", "0.2", *extra, *TINY]


@pytest.fixture(scope="module")
def one_process(inputs) -> list:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun processes below
    try:
        assert predict_tool.main(args(inputs, inputs["root"] / "one.json")) == 1  # broken.jpg skipped
    finally:
        torch.set_num_threads(threads)
    return json.loads((inputs["root"] / "one.json").read_text())


@pytest.mark.slow
def test_two_torchrun_processes_merge_to_one_process_output(inputs, one_process):
    json_path = inputs["root"] / "two.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--nproc_per_node", "2", str(REPO / "tools/predict.py"), *args(inputs, json_path)]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]  # rank 0 reports the skipped file
    assert "broken.jpg" in result.stderr
    merged = json.loads(json_path.read_text())
    assert merged == one_process
    # images in input order, then the video's frames
    assert [(Path(r["file"]).name, r.get("frame")) for r in merged] == [
        ("a.jpg", None), ("b.jpg", None), ("d.png", None), ("e.jpg", None), ("f.jpg", None),
        ("c.avi", 0), ("c.avi", 1), ("c.avi", 2),
    ]
    assert sum(len(r["detections"]) for r in merged) > 0
    assert not parts_dir(json_path).exists()


def test_resume_keeps_the_parts_of_a_killed_run_and_predicts_the_rest(inputs, one_process):
    json_path = inputs["root"] / "resumed.json"
    folder = parts_dir(json_path)
    folder.mkdir()
    # A killed run finished b.jpg (its record marked so that a recomputation would show) and
    # was cut off while writing d.png's line.
    done = dict(one_process[1], detections=[], marker="from the part")
    (folder / "rank1.jsonl").write_text(
        json.dumps({"file": done["file"], "records": [done], "skipped": None}) + "\n" + '{"file": "' + one_process[2]["file"]
    )
    assert predict_tool.main(args(inputs, json_path, "--resume")) == 1
    merged = json.loads(json_path.read_text())
    assert merged[1] == done
    assert merged[:1] + merged[2:] == one_process[:1] + one_process[2:]
    assert not folder.exists()


def test_without_resume_old_parts_are_discarded(inputs, one_process):
    json_path = inputs["root"] / "fresh.json"
    folder = parts_dir(json_path)
    folder.mkdir()
    stale = dict(one_process[0], marker="stale")
    (folder / "rank0.jsonl").write_text(json.dumps({"file": stale["file"], "records": [stale], "skipped": None}) + "\n")
    assert predict_tool.main(args(inputs, json_path)) == 1
    assert json.loads(json_path.read_text()) == one_process
