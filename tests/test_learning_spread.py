"""tools/learning_spread.py: fresh processes per seed and thread count, and the min / median / max table."""

import importlib.util
import json
import subprocess
import sys

import torch

from conftest import LEARNING_MAX_THREADS, REPO

spec = importlib.util.spec_from_file_location("learning_spread", REPO / "tools/learning_spread.py")
learning_spread = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_spread)


def test_learning_cpu_caps_the_threads_and_metrics_record_seed_and_threads(learning_seed, learning_cpu, learning_metrics):
    """What the spread script reads back: run in a process of its own, it sees that process's seed and threads."""
    assert torch.get_num_threads() == learning_cpu <= LEARNING_MAX_THREADS
    learning_metrics.update(seed_seen=learning_seed, threads_seen=torch.get_num_threads())


def test_summarize_gives_min_median_max_per_test_and_measurement():
    records = [
        {"test": "a", "seed": 0, "threads": 1, "AP": 80.0, "loss": 0.5},
        {"test": "a", "seed": 1, "threads": 1, "AP": 90.0, "loss": 0.25},
        {"test": "a", "seed": 0, "threads": 2, "AP": 70.0, "loss": 0.75},
        {"test": "a", "seed": 1, "threads": 2, "AP": 95.0, "loss": 1.0},
        {"test": "b", "seed": 3, "threads": 2, "AP": 10.0},
    ]
    summary = learning_spread.summarize(records)
    assert summary["a"]["AP"] == {"min": 70.0, "median": 85.0, "max": 95.0, "runs": 4, "seeds": [0, 1], "threads": [1, 2]}
    assert summary["a"]["loss"] == {"min": 0.25, "median": 0.625, "max": 1.0, "runs": 4, "seeds": [0, 1], "threads": [1, 2]}
    assert summary["b"] == {"AP": {"min": 10.0, "median": 10.0, "max": 10.0, "runs": 1, "seeds": [3], "threads": [2]}}
    table = learning_spread.format_table(summary).splitlines()
    assert table[2] == "| a | AP | 70 | 85 | 95 | 4 | 0,1 | 1,2 |"
    assert len(table) == 2 + 3


def test_script_runs_each_seed_and_thread_count_in_a_fresh_process(tmp_path):
    node = "tests/test_learning_spread.py::test_learning_cpu_caps_the_threads_and_metrics_record_seed_and_threads"
    out = tmp_path / "spread"
    command = [sys.executable, REPO / "tools/learning_spread.py", node, "--seeds", "3", "--threads", "1", "2"]
    subprocess.run([*command, "--jobs", "2", "--output-dir", out], check=True, cwd=tmp_path, stdout=subprocess.DEVNULL)
    runs = sorted((r["seed"], r["threads"], r["seed_seen"], r["threads_seen"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()))
    assert runs == [(3, 1, 3, 1), (3, 2, 3, 2)]
    spread = json.loads((out / "spread.json").read_text())[node]
    assert spread["threads_seen"] == {"min": 1, "median": 1.5, "max": 2, "runs": 2, "seeds": [3], "threads": [1, 2]}
    assert (out / "spread.md").read_text().count(f"| {node} |") == 4  # seconds, cpu_seconds, seed_seen, threads_seen
