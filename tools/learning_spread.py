"""The spread of learning tests' metrics over seeds and thread counts, each run in a fresh process.

    python tools/learning_spread.py tests/test_learning.py tests/test_c4_learning.py \\
        --seeds 0 1 2 3 4 --threads 1 2 --jobs 2 --output-dir output/learning_spread

Every (seed, thread count) is one fresh ``pytest`` process over the given tests, as
``make test`` runs them, with ``DETECT_LEARNING_SEED``, ``OMP_NUM_THREADS`` and
``DETECT_LEARNING_METRICS`` set; the tests' ``learning_metrics`` fixture
(tests/conftest.py) appends one JSON line per test. Writes ``metrics.jsonl`` (the
runs), ``spread.json`` and ``spread.md`` (min / median / max per test and metric) and
prints the table. A learning threshold belongs clearly below its metric's minimum.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUN_KEYS = ("test", "seed", "threads")  # what identifies a run; every other key is a measurement


def run_one(tests: list[str], seed: int, threads: int, metrics_file: Path, timeout: float) -> tuple[int, int, int]:
    """Runs ``tests`` in a fresh pytest process; returns (seed, threads, exit status)."""
    env = {
        **os.environ,
        "DETECT_LEARNING_SEED": str(seed),
        "DETECT_LEARNING_METRICS": str(metrics_file),
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    try:
        status = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        status = -1
    return seed, threads, status


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{test: {measurement: {min, median, max, runs, seeds, threads}}}`` over the records' numeric values."""
    values: dict[str, dict[str, list[tuple[float, int, int]]]] = {}
    for record in records:
        for key, value in record.items():
            if key not in RUN_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(record["test"], {}).setdefault(key, []).append((value, record["seed"], record["threads"]))
    return {
        test: {
            key: {
                "min": min(v for v, _, _ in runs),
                "median": statistics.median(v for v, _, _ in runs),
                "max": max(v for v, _, _ in runs),
                "runs": len(runs),
                "seeds": sorted({s for _, s, _ in runs}),
                "threads": sorted({t for _, _, t in runs}),
            }
            for key, runs in measurements.items()
        }
        for test, measurements in values.items()
    }


def format_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A Markdown table: one row per test and measurement."""
    lines = ["| test | measurement | min | median | max | runs | seeds | threads |", "|---|---|---|---|---|---|---|---|"]
    for test, measurements in summary.items():
        for key, s in measurements.items():
            seeds = ",".join(map(str, s["seeds"]))
            threads = ",".join(map(str, s["threads"]))
            lines.append(f"| {test} | {key} | {s['min']:.4g} | {s['median']:.4g} | {s['max']:.4g} | {s['runs']} | {seeds} | {threads} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tests", nargs="+", help="pytest files or node ids, relative to the repository")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="pytest processes at once")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    parser.add_argument("--output-dir", type=Path, default=Path("output/learning_spread"))
    args = parser.parse_args()

    args.output_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = (args.output_dir / "metrics.jsonl").resolve()
    metrics_file.unlink(missing_ok=True)
    runs = list(itertools.product(args.seeds, args.threads))
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_one, args.tests, seed, threads, metrics_file, args.timeout) for seed, threads in runs]
        for done, job in enumerate(jobs, 1):
            seed, threads, status = job.result()
            outcome = {0: "passed", -1: "timed out"}.get(status, f"failed (exit status {status})")
            print(f"[{done}/{len(runs)}] seed={seed} threads={threads}: {outcome}", flush=True)

    records = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
    summary = summarize(records)
    (args.output_dir / "spread.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = format_table(summary)
    (args.output_dir / "spread.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
