"""The report of ``make gpu-check``: the environment, the CUDA tests' outcome and the throughput tables.

Written as ``gpu.md`` (tables for people) and ``gpu.json`` (the same figures for
programs) into one folder, ``docs/`` for the real run.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from detect.throughput import Sizes, build_models, inference_rows, loader_rows, training_rows

SECTIONS = ("Device", "CUDA tests", "Training", "Inference", "Data loading")


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def measure(sizes: Sizes, device: torch.device, loader_overrides: list[str], cuda_tests: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the report; ``cuda_tests`` is the outcome of the ``cuda`` test subset, passed through."""
    models = build_models(sizes)
    report = {
        "environment": environment(device),
        "sizes": {"height": sizes.height, "width": sizes.width, "train_batch": sizes.train_batch,
                  "warmup": sizes.warmup, "iters": sizes.iters,
                  "jpeg": [sizes.jpeg_height, sizes.jpeg_width]},
        "cuda_tests": cuda_tests,
        "training": training_rows(models, sizes, device),
        "inference": inference_rows(models, sizes, device),
        "loader": loader_rows(sizes, loader_overrides),
    }
    report["workers_needed"] = workers_needed(report["training"], report["loader"])
    return report


def workers_needed(training: list[dict[str, Any]], loader: list[dict[str, Any]]) -> int:
    """Loader workers per training process that keep up with detect's fastest training row."""
    fastest = max(r["images_per_s"] for r in training if r["model"] == "detect")
    per_worker = min(r["images_per_s_per_worker"] for r in loader)  # the least per worker: no worker scales perfectly
    return math.ceil(fastest / per_worker)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as a page of tables."""
    env, sizes = report["environment"], report["sizes"]
    lines = [
        "# GPU check",
        "",
        "Written by `make gpu-check` (`tools/gpu_check.py`); the same figures are in `gpu.json`.",
        "",
        "## Device",
        "",
        f"- device: {env['device']}",
        f"- torch {env['torch']}, CUDA {env['cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}",
        f"- AMP `off` is float32, with TF32 matmuls {'on' if env['tf32_matmul'] else 'off'} and TF32 cuDNN "
        f"convolutions {'on' if env['tf32_cudnn'] else 'off'} (PyTorch's defaults)",
        f"- {env['cpu_cores']} CPU cores, {env['torch_threads']} torch threads",
        f"- images {sizes['height']}x{sizes['width']} (HxW), {sizes['warmup']} warm-up and {sizes['iters']} timed "
        "iterations per figure; detect's R50-FPN beside torchvision's `fasterrcnn_resnet50_fpn`, same weights",
        "",
        "## CUDA tests",
        "",
        f"`pytest -m cuda`: {report['cuda_tests']['summary']}",
        "",
        "## Training",
        "",
        f"One SGD step on {sizes['train_batch']} images; fp16 with a GradScaler. Peak memory: "
        "`torch.cuda.max_memory_allocated` over the timed steps.",
        "",
        "| model | AMP | images/s | peak memory (MiB) | loss |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["training"]:
        lines.append(f"| {r['model']} | {r['amp']} | {r['images_per_s']:.2f} | {_mb(r['peak_memory_mb'])} | {r['loss']:.3f} |")
    lines += [
        "",
        "## Inference",
        "",
        "| model | AMP | batch | images/s | peak memory (MiB) | detections/image |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report["inference"]:
        lines.append(f"| {r['model']} | {r['amp']} | {r['batch']} | {r['images_per_s']:.2f} | "
                     f"{_mb(r['peak_memory_mb'])} | {r['detections_per_image']:.0f} |")
    jpeg = "x".join(map(str, sizes["jpeg"]))
    lines += [
        "",
        "## Data loading",
        "",
        f"The training loader on the CPU: {jpeg} (HxW) JPEGs decoded and augmented as the R50-FPN config "
        "trains (shortest-edge resize, flip), sent as uint8.",
        "",
        "| workers | images/s | images/s per worker |",
        "|---:|---:|---:|",
    ]
    for r in report["loader"]:
        lines.append(f"| {r['workers']} | {r['images_per_s']:.1f} | {r['images_per_s_per_worker']:.1f} |")
    lines += [
        "",
        f"Workers per training process that keep up with detect's fastest training row: "
        f"**{report['workers_needed']}** (`data.num_workers`).",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Writes ``gpu.md`` and ``gpu.json`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "gpu.md", out_dir / "gpu.json"
    md.write_text(markdown(report))
    js.write_text(json.dumps(report, indent=2) + "\n")
    return md, js
