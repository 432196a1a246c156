"""tools/gpu_check.py: its toy run on the CPU writes every section with sane figures; without CUDA it
refuses in one line."""

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from detect.gpu_report import SECTIONS, workers_needed

TOOL = REPO / "tools" / "gpu_check.py"


def test_workers_needed_keeps_up_with_detects_fastest_row():
    training = [{"model": "detect", "images_per_s": 100.0}, {"model": "detect", "images_per_s": 60.0},
                {"model": "torchvision", "images_per_s": 500.0}]  # not detect's: does not count
    loader = [{"images_per_s_per_worker": 30.0}, {"images_per_s_per_worker": 26.0}]
    assert workers_needed(training, loader) == 4  # ceil(100 / 26)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path_factory.mktemp("gpu")
    done = subprocess.run([sys.executable, str(TOOL), "--toy", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def test_toy_run_says_the_cuda_tests_are_skipped(toy):
    done, report, _ = toy
    assert "the cuda tests are skipped" in done.stdout
    assert report["cuda_tests"] == {"ran": False, "returncode": None, "summary": "skipped: --toy runs on the CPU"}
    assert report["environment"]["device_type"] == "cpu" and report["environment"]["torch"] == torch.__version__


def test_toy_page_has_every_section_and_a_row_per_figure(toy):
    _, report, page = toy
    headings = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert headings == list(SECTIONS)
    table_rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| model") and not line.startswith("| workers")]
    assert len(table_rows) == len(report["training"]) + len(report["inference"]) + len(report["loader"])


def test_toy_figures_cover_both_models_and_are_sane(toy):
    _, report, _ = toy
    # On the CPU: float32 and bf16 (fp16 autocast is CUDA's); batch 2 of 64x96 images.
    assert {(r["model"], r["amp"]) for r in report["training"]} == {(m, a) for m in ("torchvision", "detect") for a in ("off", "bf16")}
    for r in report["training"]:
        assert r["batch"] == 2 and 0 < r["images_per_s"] < math.inf and r["peak_memory_mb"] is None
        assert 0 < r["loss"] < 100  # four losses of a random network: finite, of order one each
    assert {(r["model"], r["amp"], r["batch"]) for r in report["inference"]} == {
        (m, a, b) for m in ("torchvision", "detect") for a in ("off", "bf16") for b in (1, 2)
    }
    for r in report["inference"]:
        assert 0 < r["images_per_s"] < math.inf and 0 <= r["detections_per_image"] <= 100
    assert [r["workers"] for r in report["loader"]] == [1, 2, 4]
    for r in report["loader"]:
        assert r["images_per_s_per_worker"] == pytest.approx(r["images_per_s"] / r["workers"]) and r["images_per_s"] > 0
    assert report["workers_needed"] == workers_needed(report["training"], report["loader"]) >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_the_real_run_refuses_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "error: gpu-check needs a CUDA GPU and torch.cuda.is_available() is False (--toy runs it on the CPU)\n"
    assert not list(tmp_path.iterdir())

