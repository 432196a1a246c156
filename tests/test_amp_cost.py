"""tools/amp_cost.py: both precisions per seed, evaluated both ways, and the paired differences."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import REPO
from test_tools_train_test import DATA, TINY_MODEL

spec = importlib.util.spec_from_file_location("amp_cost", REPO / "tools/amp_cost.py")
amp_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(amp_cost)


def _runs(ap: dict[int, tuple[float, float, float, float]]) -> dict:
    """Per seed: AP of (bf16 training: bf16, fp32 eval), (fp32 training: bf16, fp32 eval)."""
    keys = ("train_bf16/eval_bf16", "train_bf16/eval_off", "train_off/eval_bf16", "train_off/eval_off")
    return {seed: {k: {"AP": v, "AP50": 0.0} for k, v in zip(keys, values)} for seed, values in ap.items()}


def test_summary_pairs_each_seed_and_gives_the_standard_error():
    summary = amp_cost.summarize(_runs({1: (50.0, 51.0, 54.0, 53.0), 2: (60.0, 60.5, 56.0, 56.0), 3: (55.0, 55.0, 55.5, 55.0)}))
    # fast mode minus float32, seed by seed: 50-53 = -3, 60-56 = 4, 55-55 = 0; mean 1/3
    fast = summary["fast_mode_minus_float32"]
    assert fast["n"] == 3 and fast["mean"] == pytest.approx(1 / 3)
    sd = math.sqrt(((-3 - 1 / 3) ** 2 + (4 - 1 / 3) ** 2 + (0 - 1 / 3) ** 2) / 2)
    assert fast["sd"] == pytest.approx(sd) and fast["standard_error"] == pytest.approx(sd / math.sqrt(3))
    # bf16 minus float32 evaluation of each of the six models: -1, 1, -0.5, 0, 0, 0.5
    inference = summary["bf16_minus_float32_inference_same_model"]
    assert inference["n"] == 6 and inference["mean"] == pytest.approx(0.0)
    assert summary["bf16_training"]["mean"] == pytest.approx(55.0) and summary["float32_training"]["mean"] == pytest.approx(54.666667)
    table = amp_cost.format_table(summary).splitlines()
    assert table[2] == "| 1 | 50.00 | 51.00 | 53.00 | 54.00 | -3.00 |"
    assert "mean 0.33 AP, sd 3.51, standard error 2.03 (n = 3)" in table[-3]


def test_one_seed_has_no_standard_error():
    summary = amp_cost.summarize(_runs({7: (50.0, 50.0, 49.0, 49.0)}))
    assert summary["fast_mode_minus_float32"] == {"n": 1, "mean": 1.0, "sd": None, "standard_error": None}
    assert "sd -, standard error - (n = 1)" in amp_cost.format_table(summary)


def test_script_trains_both_precisions_evaluates_both_ways_and_reruns_nothing(tmp_path):
    out = tmp_path / "amp_cost"
    train = [
        *DATA, *TINY_MODEL, "train.max_iter=1", "train.batch_size=2", "train.checkpoint_period=0",
        "data.train_min_sizes=[128]", "data.train_max_size=160",
        "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=100",
    ]
    command = [sys.executable, "tools/amp_cost.py", "configs/quickstart_shapes.py", "--seeds", "3", "--output-dir", str(out),
               "--eval-override", "model.roi_heads.score_thresh=0.0", "--eval-override", "model.roi_heads.detections_per_image=3", *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    for train_amp in ("bf16", "off"):
        config = (out / f"seed3_{train_amp}" / "config.py").read_text()
        assert f"cfg.train.amp = '{train_amp}'" in config and "cfg.train.seed = 3" in config
        for eval_amp in ("bf16", "off"):
            evaluation = out / f"seed3_{train_amp}" / f"eval_{eval_amp}"
            assert (evaluation / "metrics.json").is_file()
            per_image = Counter(d["image_id"] for d in json.loads((evaluation / "detections.json").read_text()))
            assert sorted(per_image.values()) == [3] * 8  # the evaluation overrides reached tools/test.py
    runs = json.loads((out / "runs.json").read_text())
    stored = json.loads((out / "seed3_off" / "eval_bf16" / "metrics.json").read_text())["bbox"]
    assert runs["3"]["train_off/eval_bf16"]["AP"] == stored["AP"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fast_mode_minus_float32"]["mean"] == pytest.approx(runs["3"]["train_bf16/eval_bf16"]["AP"] - runs["3"]["train_off/eval_off"]["AP"])
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "tools/train.py" not in again.stdout and "tools/test.py" not in again.stdout


def test_a_failing_training_stops_the_study_with_the_tool_named(tmp_path):
    command = [sys.executable, "tools/amp_cost.py", "configs/quickstart_shapes.py", "--seeds", "0", "--output-dir", str(tmp_path), "train.no_such_key=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "no_such_key" in result.stderr and "tools/train.py exited with status" in result.stderr
    assert not (tmp_path / "summary.json").exists()
    repeated = subprocess.run([*command[:5], "0", "--output-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert repeated.returncode == 2 and "--seeds repeats a seed: [0, 0]" in repeated.stderr
