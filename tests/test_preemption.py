"""Runs that survive preemption: SIGTERM saves and stops, SIGKILL during a save loses nothing, old checkpoints go.

Each run is tools/train.py in its own process (a ResNet-18 FPN on coco8 at
112-144 px, one thread, one loader worker, flip/scale/colour augmentation), so
that signals reach it as a cluster's would, and is compared with one run that
was never interrupted.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detect.checkpoint import load_checkpoint

from training_runs import COCO8_DATA, CONFIG, REPO, TINY, assert_same_training, read_log

SETTINGS = [
    *TINY, *COCO8_DATA,
    "train.max_iter=10", "train.checkpoint_period=2", "train.keep_checkpoints=2", "model.roi_heads.score_thresh=0.0",
    "data.num_workers=1", "data.train_min_sizes=[112,128,144]", "data.hflip_prob=0.5", "data.color_jitter=True",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.slow  # five training processes: 2.5 min on a shared, busy 2-core machine (33 s of CPU)


def _train_command(output_dir: Path, script: Path = REPO / "tools" / "train.py") -> list[str]:
    return [sys.executable, str(script), str(CONFIG), "--output-dir", str(output_dir), *SETTINGS]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight")
    result = _run(_train_command(run))
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_keep_checkpoints_keeps_the_newest_periodic_ones(straight):
    # Periodic checkpoints came at 2, 4, 6 and 8; train.keep_checkpoints=2 leaves 6 and 8 beside the final one.
    assert sorted(p.name for p in straight.glob("*.pth")) == ["model_0000006.pth", "model_0000008.pth", "model_final.pth"]
    assert not list(straight.glob(".*.tmp"))


def test_sigterm_saves_stops_and_resumes_to_the_uninterrupted_run(straight, tmp_path):
    """SIGTERM to the whole process group (training process and loader worker), as a cluster sends it."""
    process = subprocess.Popen(
        _train_command(tmp_path), cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    log = tmp_path / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it logged two iterations"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    lines = stderr.splitlines()
    stopped = next(line for line in lines if line.startswith("stopped by SIGTERM after iteration "))
    iteration = int(stopped.split()[5].rstrip(";"))
    checkpoint = tmp_path / f"model_{iteration:07d}.pth"
    assert 2 <= iteration < 10 and stopped.endswith(f"saved {checkpoint}")
    assert (tmp_path / "last_checkpoint").read_text() == checkpoint.name
    assert load_checkpoint(checkpoint)["iteration"] == iteration
    assert max(read_log(tmp_path)) == iteration  # the stop logged the iterations since the last record
    assert not (tmp_path / "model_final.pth").exists()
    resume = lines[lines.index(stopped) + 1]
    assert resume == "resume with: " + shlex.join([*_train_command(tmp_path), "--resume"])

    result = _run(shlex.split(resume.removeprefix("resume with: ")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {checkpoint.name} at iteration {iteration}" in result.stdout
    assert_same_training(tmp_path, straight)


def test_sigkill_while_saving_leaves_the_previous_checkpoint_to_resume_from(straight, tmp_path):
    killed = _run(_train_command(tmp_path, REPO / "tests" / "train_killed_while_saving.py"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    # Killed halfway through writing the iteration-4 checkpoint: only its temporary file exists, half written.
    (partial,) = tmp_path.glob(".model_0000004.pth.*.tmp")
    assert partial.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert load_checkpoint(tmp_path / "model_0000002.pth")["iteration"] == 2

    resumed = _run([*_train_command(tmp_path), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"removed {partial.name}" in resumed.stdout
    assert "resuming from model_0000002.pth at iteration 2" in resumed.stdout
    assert not partial.exists()
    assert_same_training(tmp_path, straight)
