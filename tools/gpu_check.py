"""Check and measure detect on one CUDA GPU (under 8 minutes): the ``cuda`` tests, training and
inference images/s beside torchvision's model, peak memory, and the CPU loader's throughput.

    python tools/gpu_check.py                      # writes docs/gpu.md and docs/gpu.json
    python tools/gpu_check.py --toy --out /tmp/g   # every step at toy size on the CPU, in seconds

Exits 1 when a CUDA test fails (the report is written all the same), 2 without CUDA.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from detect.gpu_report import measure, write_report
from detect.throughput import FULL, TOY
from detect.tool_errors import exit_on_user_error

REPO = Path(__file__).resolve().parent.parent
TOY_LOADER = ["data.train_min_sizes=[64]", "data.train_max_size=96"]


def run_cuda_tests() -> dict[str, Any]:
    """Runs ``pytest -m cuda`` in a fresh process; its outcome and pytest's summary line."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(REPO / "tests")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|error).*?)\s*=*$", done.stdout, flags=re.MULTILINE)
    summary = found[-1] if found else f"no summary (exit status {done.returncode})"
    return {"ran": True, "returncode": done.returncode, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="tiny images, batch 2, 1 iteration, on the CPU; no CUDA tests")
    parser.add_argument("--out", help="folder for gpu.md and gpu.json (default: docs/; required with --toy)")
    args = parser.parse_args(argv)
    if args.toy and not args.out:
        parser.error("--toy figures are not the GPU's: give --out DIR so that docs/ keeps the real ones")
    with exit_on_user_error():
        if not args.toy and not torch.cuda.is_available():
            raise ValueError("gpu-check needs a CUDA GPU and torch.cuda.is_available() is False (--toy runs it on the CPU)")
        if args.toy:
            device, sizes, overrides = torch.device("cpu"), TOY, TOY_LOADER
            cuda_tests = {"ran": False, "returncode": None, "summary": "skipped: --toy runs on the CPU"}
            print("toy run on the CPU: the cuda tests are skipped, the figures are not GPU figures")
            torch.set_flush_denormal(True)  # as the trainer does on a CPU: random weights' gradients underflow
        else:
            device, sizes, overrides = torch.device("cuda"), FULL, []
            cuda_tests = run_cuda_tests()
        report = measure(sizes, device, overrides, cuda_tests)
        md, js = write_report(report, Path(args.out) if args.out else REPO / "docs")
    print(md.read_text())
    print(f"wrote {md} and {js}")
    if cuda_tests["ran"] and cuda_tests["returncode"] != 0:
        print(f"error: CUDA tests failed: {cuda_tests['summary']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
