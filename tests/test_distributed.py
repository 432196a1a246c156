"""Training and evaluation under torchrun: two CPU processes with the gloo backend compute what one process does.

Each run is a ResNet-18 FPN with GroupNorm (statistics per image, so batch
composition cannot matter) on one thread per process.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detect.data.build import build_dataset
from detect.data.loader import TrainingSampler
from detect.config import load_config

from training_runs import COCO8_DATA, CONFIG, REPO, TINY, assert_same_training, read_log

pytestmark = pytest.mark.slow  # nine torchrun or training processes: about 4 min on a shared, busy 2-core machine
TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
GROUPNORM = ["model.backbone.norm=gn", "model.backbone.freeze_at=0", "model.roi_heads.score_thresh=0.0", "test.batch_size=1"]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _shapes_data(shapes: Path) -> list[str]:
    return [
        f"data.train.root={shapes}/train/images", f"data.train.ann_file={shapes}/annotations/train.json",
        f"data.val.root={shapes}/val/images", f"data.val.ann_file={shapes}/annotations/val.json",
    ]


@pytest.fixture(scope="module")
def equivalent_runs(shapes, tmp_path_factory) -> dict[str, Path]:
    """The same 3 iterations in 1 process at batch 2 and in 2 processes at batch 1 each.

    The images' longer side is resized to 128 px, so every image pads to the same
    128 x 128 alone or in a batch; without aspect-ratio grouping, rank r's batch
    is image r of the single process's batch, with the same flip and colour
    jitter. The balanced samplers take the lowest-indexed candidates
    (tests/train_unshuffled.py): random sampling would draw from each process's
    own generator. In fp32: under bf16 autocast a weight gradient is rounded to
    bf16 before the processes average it, but after the batch's sum in one process.
    With SGD: AdamW divides by the root of the squared gradient, which turns
    rounding differences in near-zero gradients into whole steps.
    """
    settings = [
        *TINY, *_shapes_data(shapes), *GROUPNORM,
        "model.input.max_size=128", "data.train_max_size=128", "data.aspect_ratio_grouping=False",
        "data.color_jitter=True", "train.max_iter=3", "train.checkpoint_period=0", "train.amp=off",
        "train.optimizer=sgd", "train.base_lr=0.005", "train.warmup_iters=0", "train.tensorboard=True",
    ]
    runs = {name: tmp_path_factory.mktemp(name) for name in ("one", "two", "evaluated_by_one", "evaluated_by_two")}
    script = str(REPO / "tests" / "train_unshuffled.py")
    _run([sys.executable, script, str(CONFIG), "--output-dir", str(runs["one"]), *settings])
    _run([*TORCHRUN, script, str(CONFIG), "--output-dir", str(runs["two"]), *settings])
    test = [str(REPO / "tools" / "test.py"), str(runs["one"] / "config.py"), "--weights", str(runs["one"] / "model_final.pth")]
    _run([sys.executable, *test, "--output-dir", str(runs["evaluated_by_one"])])
    _run([*TORCHRUN, *test, "--output-dir", str(runs["evaluated_by_two"])])
    return runs


def test_two_processes_train_what_one_process_trains(equivalent_runs):
    assert_same_training(equivalent_runs["two"], equivalent_runs["one"], rel=1e-5)


def test_rank_0_logs_each_iteration_once(equivalent_runs):
    run = equivalent_runs["two"]
    lines = (run / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    (events,) = run.glob("events.out.tfevents.*")  # likewise written by rank 0 alone
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("loss/total_loss")] == [1, 2, 3]
    final_ap = json.loads((run / "metrics.json").read_text())["bbox"]["AP"]
    assert [e.value for e in accumulator.Scalars("eval/AP")] == pytest.approx([final_ap])


def test_two_processes_evaluate_what_one_process_evaluates(equivalent_runs, shapes):
    one, two = equivalent_runs["evaluated_by_one"], equivalent_runs["evaluated_by_two"]
    assert json.loads((two / "metrics.json").read_text()) == json.loads((one / "metrics.json").read_text())
    # Each process ran inference on its half; rank 0 gathered the detections of every image.
    detections = json.loads((two / "detections.json").read_text())
    assert detections == json.loads((one / "detections.json").read_text())
    per_image = Counter(d["image_id"] for d in detections)
    assert set(per_image) == {image["id"] for image in json.loads((shapes / "annotations/val.json").read_text())["images"]}


def _rank_pid(torchrun: subprocess.Popen, rank: int) -> int:
    """The process of ``rank`` among torchrun's children (loader workers are the children's children)."""
    for children in Path(f"/proc/{torchrun.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(pid)
    raise AssertionError(f"no process of rank {rank} under torchrun")


def test_sigterm_to_one_rank_stops_both_and_the_resumed_run_repeats_the_uninterrupted_one(shapes, tmp_path):
    """Every rank's random-number states and the loader workers' augmentation continue across the stop.

    Random candidate sampling, multi-scale, flip and colour augmentation and a
    loader worker per process are all on; SIGTERM reaches rank 1 only.
    """
    settings = [
        *TINY, *COCO8_DATA, *GROUPNORM, "train.max_iter=8", "train.checkpoint_period=2", "data.num_workers=1",
        "data.train_min_sizes=[112,128,144]", "data.hflip_prob=0.5", "data.color_jitter=True",
    ]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train = [*TORCHRUN, str(REPO / "tools" / "train.py"), str(CONFIG)]
    _run([*train, "--output-dir", str(straight), *settings])

    process = subprocess.Popen(
        [*train, "--output-dir", str(stopped), *settings], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    log = stopped / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it logged two iterations"
        time.sleep(0.05)
    os.kill(_rank_pid(process, 1), signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0, output[-3000:]

    lines = output.splitlines()
    (stop_line,) = [line for line in lines if line.startswith("stopped by SIGTERM after iteration ")]  # rank 0 only
    iteration = int(stop_line.split()[5].rstrip(";"))
    assert 2 <= iteration < 8 and max(read_log(stopped)) == iteration
    assert (stopped / "last_checkpoint").read_text() == f"model_{iteration:07d}.pth"
    resume = lines[lines.index(stop_line) + 1].removeprefix("resume with: ")
    expected = ["torchrun", "--nproc_per_node", "2", str(REPO / "tools" / "train.py"), str(CONFIG)]
    assert resume == shlex.join([*expected, "--output-dir", str(stopped), *settings, "--resume"])

    _run([*TORCHRUN, *shlex.split(resume)[3:]])
    assert_same_training(stopped, straight, rel=1e-6)


def test_non_finite_loss_on_one_rank_stops_every_rank_and_names_its_images(tmp_path):
    settings = [*TINY, *COCO8_DATA, *GROUPNORM, "train.max_iter=4", "data.aspect_ratio_grouping=False"]
    command = [*TORCHRUN, str(REPO / "tests" / "train_nan_on_rank_1.py"), str(CONFIG), "--output-dir", str(tmp_path), *settings]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)  # no rank hangs
    output = result.stdout + result.stderr
    assert result.returncode != 0

    # Rank 1's second batch of one image, at batch 1 per process without aspect-ratio grouping.
    cfg = load_config(CONFIG, settings)
    dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
    index = TrainingSampler(len(dataset), cfg.train.seed, rank=1, world_size=2).epoch_indices(0)[1]
    info = dataset.image_info(index)
    # Rank 0, whose losses were finite, stopped too and says why; torchrun may end rank 1 before it prints.
    (line,) = [line for line in output.splitlines() if line.startswith("[rank0]: FloatingPointError: ")]
    assert line.startswith("[rank0]: FloatingPointError: non-finite loss at iteration 2: rank 1: losses {"), line
    assert "'loss_box': nan" in line and line.count("rank ") == 1
    assert f"images {info['image_id']} ({info['file_name']})" in line
    assert not (tmp_path / "model_final.pth").exists()
