"""Plots of a training run: losses and learning rate over iterations, per-class AP, precision-recall curves.

Inputs are the files a run folder holds (see :mod:`detect.engine.trainer`): ``log.jsonl``,
and after evaluation ``metrics.json`` and ``pr_curves.json``. Every figure is
``FIGURE_WIDTH`` pixels wide and written as PNG with matplotlib's Agg backend, so
plotting needs no display.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: no display needed, and no GUI event loop
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 100
FIGURE_WIDTH = 800  # pixels; heights are below
CURVE_HEIGHT = 500
BAR_HEIGHT_PER_CLASS = 18  # the per-class AP chart grows with the class count
MIN_BAR_CHART_HEIGHT = 300
MAX_LEGEND_CLASSES = 20  # beyond this a legend hides the curves; only the mean is labelled


def read_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """The records of a ``log.jsonl``, by iteration.

    A resumed run appends iterations it had already logged before its last
    checkpoint; the later record of an iteration wins.

    Raises:
        ValueError: the file is missing, empty, or has a line that is not a JSON
            object with an ``iteration``; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training log not found")
    by_iteration: dict[int, dict[str, float]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {number} is not valid JSON: {e}") from None
        if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
            raise ValueError(f"{path}: line {number} lacks an integer 'iteration': {line[:100]}")
        by_iteration[record["iteration"]] = record
    if not by_iteration:
        raise ValueError(f"{path}: no records")
    return [by_iteration[i] for i in sorted(by_iteration)]


def _figure(height: int, panels: int = 1) -> tuple[plt.Figure, Sequence[plt.Axes]]:
    fig, axes = plt.subplots(1, panels, figsize=(FIGURE_WIDTH / DPI, height / DPI), dpi=DPI, squeeze=False)
    return fig, list(axes[0])


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Writes at exactly the figure's size (no tight bounding box, which would change it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _iteration_axis(ax: plt.Axes) -> None:
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_losses(records: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    """Each ``loss_*`` and ``total_loss`` against iteration, on a log scale (losses span decades)."""
    names = sorted({k for r in records for k in r if k.startswith("loss_")}) + ["total_loss"]
    fig, (ax,) = _figure(CURVE_HEIGHT)
    for name in names:
        points = [(r["iteration"], r[name]) for r in records if name in r and r[name] > 0]
        if points:
            iterations, values = zip(*points)
            ax.plot(iterations, values, label=name, linewidth=2.0 if name == "total_loss" else 1.2,
                    color="black" if name == "total_loss" else None)
    ax.set_yscale("log")
    _iteration_axis(ax)
    ax.set_ylabel("loss")
    ax.set_title("training losses")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_lr(records: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    fig, (ax,) = _figure(CURVE_HEIGHT)
    ax.plot([r["iteration"] for r in records], [r["lr"] for r in records])
    _iteration_axis(ax)
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate schedule")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def per_class_ap(metrics: Mapping[str, Any], where: str = "metrics") -> dict[str, float]:
    """``metrics.json``'s per-class COCO AP (IoU 0.50:0.95, 0-100), highest first."""
    try:
        values = metrics["bbox"]["per_class"]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: no bbox.per_class section") from None
    return dict(sorted(values.items(), key=lambda item: (-item[1], item[0])))


def bar_chart_height(num_classes: int) -> int:
    return max(MIN_BAR_CHART_HEIGHT, 120 + BAR_HEIGHT_PER_CLASS * num_classes)


def plot_per_class_ap(ap: Mapping[str, float], path: str | os.PathLike) -> Path:
    """Horizontal bars, best class on top, with the mean AP marked."""
    fig, (ax,) = _figure(bar_chart_height(len(ap)))
    names, values = list(ap), list(ap.values())
    positions = range(len(names))
    ax.barh(positions, values, color="tab:blue")
    ax.set_yticks(list(positions), names, fontsize=8 if len(names) > 30 else 10)
    ax.invert_yaxis()  # the best class first, reading down
    ax.set_xlim(0, 100)
    if values:
        mean = sum(values) / len(values)
        ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.1f}")
        ax.legend(loc="lower right")
    ax.set_xlabel("AP (IoU 0.50:0.95)")
    ax.set_title("per-class AP")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def plot_pr_curves(curves: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Two panels, precision against recall per class: at IoU 0.5, and averaged over IoU 0.50:0.95.

    Args:
        curves: as written to ``pr_curves.json`` by
            :func:`detect.evaluation.coco.precision_recall_curves`.
    """
    recall, per_class = curves.get("recall"), curves.get("per_class")
    if not isinstance(recall, list) or not isinstance(per_class, dict):
        raise ValueError("precision-recall curves need 'recall' (a list) and 'per_class' (an object)")
    for name, curve in per_class.items():
        for key in ("precision_iou50", "precision"):
            if not isinstance(curve, dict) or not isinstance(curve.get(key), list) or len(curve[key]) != len(recall):
                raise ValueError(f"class {name!r}: expected '{key}' with {len(recall)} values, one per recall threshold")
    fig, axes = _figure(CURVE_HEIGHT, panels=2)
    panels = (("precision_iou50", "IoU 0.5"), ("precision", "mean over IoU 0.50:0.95"))
    for ax, (key, title) in zip(axes, panels):
        label_each = len(per_class) <= MAX_LEGEND_CLASSES
        for name, curve in per_class.items():
            ax.plot(recall, curve[key], linewidth=1.0, alpha=0.8, label=name if label_each else None)
        if per_class:
            mean = [sum(c[key][i] for c in per_class.values()) / len(per_class) for i in range(len(recall))]
            ax.plot(recall, mean, color="black", linewidth=2.5, label="mean")
            ax.legend(fontsize=7, ncol=math.ceil((len(per_class) + 1) / 12) if label_each else 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_run(run_dir: str | os.PathLike, output_dir: str | os.PathLike) -> list[Path]:
    """Every plot a run folder's files allow; returns the PNGs written.

    ``losses.png`` and ``lr.png`` from ``log.jsonl`` (required); ``per_class_ap.png``
    when there is a ``metrics.json`` and ``pr_curves.png`` when there is a ``pr_curves.json``.
    """
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    records = read_log(run_dir / "log.jsonl")
    written = [plot_losses(records, output_dir / "losses.png"), plot_lr(records, output_dir / "lr.png")]
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        ap = per_class_ap(_read_json(metrics_path), str(metrics_path))
        written.append(plot_per_class_ap(ap, output_dir / "per_class_ap.png"))
    curves_path = run_dir / "pr_curves.json"
    if curves_path.is_file():
        try:
            written.append(plot_pr_curves(_read_json(curves_path), output_dir / "pr_curves.png"))
        except ValueError as e:
            raise ValueError(f"{curves_path}: {e}") from None
    return written


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
