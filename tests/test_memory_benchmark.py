"""tools/benchmark_data_memory.py at a tiny scale: the synthetic json and the figures' structure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from detect.data.memory_benchmark import FULL_ANNOTATIONS, FULL_IMAGES, checkout_version, write_synthetic_coco

ROOT = Path(__file__).resolve().parent.parent


def test_synthetic_json_is_coco_shaped_and_seeded(tmp_path: Path) -> None:
    written = write_synthetic_coco(tmp_path / "a.json", scale=0.002, seed=4)
    write_synthetic_coco(tmp_path / "b.json", scale=0.002, seed=4)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    data = json.loads((tmp_path / "a.json").read_text())
    assert written == {"images": round(FULL_IMAGES * 0.002), "annotations": round(FULL_ANNOTATIONS * 0.002),
                       "bytes": (tmp_path / "a.json").stat().st_size}
    assert len(data["images"]) == written["images"] and len(data["annotations"]) == written["annotations"]
    assert len({im["id"] for im in data["images"]}) == written["images"]
    assert len(data["categories"]) == 80 and max(c["id"] for c in data["categories"]) == 90
    images = {im["id"]: im for im in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        image = images[ann["image_id"]]
        assert 0 <= x and x + w <= image["width"] + 0.01 and 0 <= y and y + h <= image["height"] + 0.01
        if ann["iscrowd"]:
            assert ann["segmentation"]["size"] == [image["height"], image["width"]]
        else:
            xs, ys = ann["segmentation"][0][0::2], ann["segmentation"][0][1::2]
            assert 6 <= len(xs) <= 60 and min(xs) >= x - 0.01 and max(ys) <= y + h + 0.01
    assert 0 < Counter(a["iscrowd"] for a in data["annotations"])[1] < 0.05 * len(data["annotations"])
    # The file's size per annotation is train2017's (448 MB for 860k annotations) within a factor of 1.5.
    assert 350 < written["bytes"] / written["annotations"] < 800


def test_tool_reports_build_and_worker_memory(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    command = [sys.executable, str(ROOT / "tools" / "benchmark_data_memory.py"), "--scale", "0.001",
               "--workers", "2", "--items", "5", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    report = json.loads(out.read_text())
    assert report["synthetic"]["images"] == round(FULL_IMAGES * 0.001) and report["code"] == checkout_version(ROOT)
    assert 0 < report["items"] <= report["synthetic"]["images"]
    assert report["build_s"] > 0 and report["build_cpu_s"] > 0
    assert report["rss_after_build_mb"] == report["rss_baseline_mb"] + report["rss_dataset_mb"]
    assert report["peak_rss_mb"] >= report["rss_after_build_mb"] > 0
    for key in ("workers", "worker_baseline"):
        assert [w["worker"] for w in report[key]] == [0, 1]
        for worker in report[key]:
            assert worker["items_read"] == (5 if key == "workers" else 0)
            assert 0 < worker["uss_mb"] <= worker["pss_mb"] <= worker["rss_mb"]
            assert 0 < worker["uss_after_gc_mb"] <= worker["pss_after_gc_mb"] <= worker["rss_after_gc_mb"]
            # Forked as training forks them (gc frozen): ~6 MB of own memory after a full collection,
            # ~96 MB without the freeze; the target is 50 MB per worker.
            assert worker["uss_after_gc_mb"] < 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "0"], "--scale 0.0: expected a fraction in (0, 1]"),
        (["--scale", "0.001", "--workers", "0"], "--workers 0 --items 200: both must be at least 1"),
    ],
)
def test_tool_refuses_bad_values(args: list[str], message: str) -> None:
    command = [sys.executable, str(ROOT / "tools" / "benchmark_data_memory.py"), *args]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(message)
