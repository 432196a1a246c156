"""Comparing finished runs with the ResNet paper's detection results (its Tables 7 and 8).

A run folder, as ``tools/train.py`` leaves it, holds ``config.py`` (the resolved
config) and ``metrics.json`` (``{"bbox": {"AP", "AP50", ...}}`` on 0-100, plus
``"voc": {"mAP", "mAP_11point", ...}`` on VOC data). From the config we name the
backbone ("VGG-16", "ResNet-101" for the paper's C4 design, "ResNet-50-FPN") and
the benchmark (VOC 2007 test with 07+12 training, VOC 2012 test with 07++12,
COCO val, or other data named by its path). Runs are grouped by benchmark into one Markdown table each, with
the paper's numbers beside the run's, and a bar chart of the same numbers.

Names used below: a *run* is one folder; a *benchmark* is the data a run is
scored on; a *metric key* is a name in :attr:`RunResult.values` (``mAP_11point``,
``mAP_area``, ``AP50``, ``AP``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from detect.config import Config, load_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class RunError(ValueError):
    """A run folder that cannot be read: missing files or metrics."""


@dataclass(frozen=True)
class Metric:
    """One number of a table: its header, its key in RunResult.values, and
    whether the paper reports it (then a paper column follows)."""

    header: str
    key: str
    paper: bool


@dataclass(frozen=True)
class Benchmark:
    """The data a run is scored on.

    Attributes:
        name: the section title, e.g. "VOC 2007 test (07+12)".
        kind: "voc" or "coco": which metrics.json section holds the numbers.
        training_data, test_data: Table 7's row labels, e.g. "07+12", "VOC 07 test".
        metrics: the table's numeric columns, the compared one first.
        paper: backbone label -> metric key -> the paper's value; empty when
            the paper did not use this data.
    """

    name: str
    kind: str
    training_data: str
    test_data: str
    metrics: tuple[Metric, ...]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)


# The paper's VOC07 numbers predate the area metric (VOC2010+), so they are
# compared with the VOC2007 11-point one; the VOC 2012 test server scores with area.
VOC07_METRICS = (Metric("mAP (%)", "mAP_11point", True), Metric("mAP, area (%)", "mAP_area", False))
VOC12_METRICS = (Metric("mAP (%)", "mAP_area", True), Metric("mAP, 11-point (%)", "mAP_11point", False))
COCO_METRICS = (Metric("mAP@.5 (%)", "AP50", True), Metric("mAP@[.5, .95] (%)", "AP", True))

VOC07_07_12 = Benchmark(
    "VOC 2007 test (07+12)", "voc", "07+12", "VOC 07 test", VOC07_METRICS,
    {"VGG-16": {"mAP_11point": 73.2}, "ResNet-101": {"mAP_11point": 76.4}},
)
VOC12_07_12 = Benchmark(
    "VOC 2012 test (07++12)", "voc", "07++12", "VOC 12 test", VOC12_METRICS,
    {"VGG-16": {"mAP_area": 70.4}, "ResNet-101": {"mAP_area": 73.8}},
)
COCO_VAL = Benchmark(
    "COCO val", "coco", "COCO train", "COCO val", COCO_METRICS,
    {"VGG-16": {"AP50": 41.5, "AP": 21.2}, "ResNet-101": {"AP50": 48.4, "AP": 27.2}},
)
KNOWN_BENCHMARKS = (VOC07_07_12, VOC12_07_12, COCO_VAL)

# (train sets, val sets) of the paper's two VOC protocols.
VOC_PROTOCOLS = {
    (frozenset({"2007/trainval", "2012/trainval"}), frozenset({"2007/test"})): VOC07_07_12,
    (frozenset({"2007/trainval", "2007/test", "2012/trainval"}), frozenset({"2012/test"})): VOC12_07_12,
}
BASELINE, CHALLENGER = "VGG-16", "ResNet-101"  # the pair whose gain the paper reports
MISSING = "—"
TITLE_FONT_SIZE = 10  # points, of a chart panel's title


@dataclass(frozen=True)
class RunResult:
    """One run folder, read.

    Attributes:
        path: the folder as given.
        backbone: e.g. "VGG-16", "ResNet-101", "ResNet-50-FPN".
        benchmark: what it was scored on.
        values: metric key -> value on 0-100, None where the evaluation had none.
    """

    path: str
    backbone: str
    benchmark: Benchmark
    values: dict[str, Optional[float]]


def backbone_label(cfg: Config) -> str:
    """The row label: VGG-16, ResNet-101 (the paper's single stride-16 "C4" trunk), ResNet-50-FPN, ..."""
    name = cfg.model.backbone.name
    if name == "vgg16":
        return "VGG-16"
    if name.startswith("resnet") and name[len("resnet"):].isdigit():
        label = f"ResNet-{name[len('resnet'):]}"
        return f"{label}-FPN" if cfg.model.fpn.enabled else label
    return name


def identify_benchmark(cfg: Config) -> Benchmark:
    """The paper's benchmark this config is scored on, else one named by its val data path."""
    val, train = cfg.data.val, cfg.data.train
    if val.type == "voc":
        known = VOC_PROTOCOLS.get((frozenset(train.sets), frozenset(val.sets)))
        if known:
            return known
        name = f"{val.root} {'+'.join(val.sets)}"
        return Benchmark(name, "voc", "+".join(train.sets), "+".join(val.sets), VOC07_METRICS)
    if val.type == "coco":
        if Path(val.ann_file).name == "instances_val2017.json":
            return COCO_VAL
        return Benchmark(val.ann_file, "coco", train.ann_file, val.ann_file, COCO_METRICS)
    raise RunError(f"data.val.type {val.type!r} is neither 'voc' nor 'coco'")


def read_run(run_dir: str | os.PathLike) -> RunResult:
    """Reads ``run_dir/config.py`` and ``run_dir/metrics.json``.

    Raises:
        RunError: the folder, a file, or a metrics section is missing or unreadable;
            the message names the folder and the file.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunError(f"run folder not found: {folder}")
    missing = [name for name in ("config.py", "metrics.json") if not (folder / name).is_file()]
    if missing:
        raise RunError(f"run folder {folder} has no {' and no '.join(missing)} "
                       "(tools/train.py writes config.py at the start and metrics.json after the final evaluation)")
    try:
        cfg = load_config(folder / "config.py", check_device=False)  # a run made on another machine
    except Exception as e:  # the file is Python: any error means it is not a readable run config
        raise RunError(f"{folder / 'config.py'}: cannot be loaded: {e}") from None
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{folder / 'metrics.json'}: not valid JSON: {e}") from None
    try:
        benchmark = identify_benchmark(cfg)
    except RunError as e:
        raise RunError(f"{folder / 'config.py'}: {e}") from None
    values = _metric_values(metrics, benchmark.kind, folder / "metrics.json")
    return RunResult(str(run_dir), backbone_label(cfg), benchmark, values)


def _metric_values(metrics: Any, kind: str, path: Path) -> dict[str, Optional[float]]:
    if kind == "voc":
        section, names = "voc", {"mAP_11point": "mAP_11point", "mAP_area": "mAP"}
    else:
        section, names = "bbox", {"AP50": "AP50", "AP": "AP"}
    if not isinstance(metrics, dict) or not isinstance(metrics.get(section), dict):
        raise RunError(f"{path}: has no {section!r} section; a {kind.upper()} evaluation writes one "
                       f"(found sections: {sorted(metrics) if isinstance(metrics, dict) else type(metrics).__name__})")
    values = {}
    for key, name in names.items():
        value = metrics[section].get(name, None)
        if value is not None and not isinstance(value, (int, float)):
            raise RunError(f"{path}: {section}.{name} must be a number or null, got {value!r}")
        values[key] = None if value is None else float(value)
    return values


def read_runs(run_dirs: Sequence[str | os.PathLike]) -> list[RunResult]:
    """All runs, or a RunError naming every unreadable one."""
    runs, problems = [], []
    for run_dir in run_dirs:
        try:
            runs.append(read_run(run_dir))
        except RunError as e:
            problems.append(str(e))
    if problems:
        raise RunError("\n".join(problems))
    if not runs:
        raise RunError("no run folders given")
    return runs


def group_by_benchmark(runs: Sequence[RunResult]) -> list[tuple[Benchmark, list[RunResult]]]:
    """The paper's benchmarks first, in its order, then the others in order of appearance."""
    groups: dict[tuple[str, str], tuple[Benchmark, list[RunResult]]] = {}
    for run in runs:
        groups.setdefault((run.benchmark.kind, run.benchmark.name), (run.benchmark, []))[1].append(run)
    order = {(b.kind, b.name): i for i, b in enumerate(KNOWN_BENCHMARKS)}
    return sorted(groups.values(), key=lambda group: order.get((group[0].kind, group[0].name), len(order)))


@dataclass(frozen=True)
class Gain:
    """ResNet-101 over VGG-16 on one metric: ``absolute`` in points, ``relative`` in %."""

    absolute: float
    relative: float

    @staticmethod
    def of(baseline: Optional[float], challenger: Optional[float]) -> Optional[Gain]:
        if baseline is None or challenger is None:
            return None
        return Gain(challenger - baseline, 100.0 * (challenger - baseline) / baseline if baseline else math.nan)

    def __str__(self) -> str:
        relative = "n/a" if math.isnan(self.relative) else f"{self.relative:+.1f}%"
        return f"{self.absolute:+.1f} ({relative})"


def mean_value(runs: Sequence[RunResult], backbone: str, key: str) -> Optional[float]:
    """The mean of ``key`` over the runs with this backbone (several seeds give several runs)."""
    values = [r.values[key] for r in runs if r.backbone == backbone and r.values.get(key) is not None]
    return sum(values) / len(values) if values else None


GainPair = tuple[Optional[Gain], Optional[Gain]]  # (the runs' gain, the paper's gain)


def gains(benchmark: Benchmark, runs: Sequence[RunResult]) -> Optional[dict[str, GainPair]]:
    """Metric key -> (the runs' gain, the paper's gain), or None without both a VGG-16 and a ResNet-101 run."""
    backbones = {r.backbone for r in runs}
    if not {BASELINE, CHALLENGER} <= backbones:
        return None
    result = {}
    for metric in benchmark.metrics:
        ours = Gain.of(mean_value(runs, BASELINE, metric.key), mean_value(runs, CHALLENGER, metric.key))
        paper = Gain.of(_paper_value(benchmark, BASELINE, metric.key), _paper_value(benchmark, CHALLENGER, metric.key))
        result[metric.key] = (ours, paper)
    return result


def _paper_value(benchmark: Benchmark, backbone: str, key: str) -> Optional[float]:
    return benchmark.paper.get(backbone, {}).get(key)


def _cell(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.1f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def benchmark_table(benchmark: Benchmark, runs: Sequence[RunResult]) -> str:
    """One Markdown table: a row per run, the paper's number beside each compared
    metric, and a last row with ResNet-101's gain over VGG-16 when both were run."""
    voc = benchmark.kind == "voc"
    header = ["method"] + (["training data", "test data"] if voc else [])
    for metric in benchmark.metrics:
        header += [metric.header] + (["paper"] if metric.paper else [])
    header.append("run")
    rows = []
    for run in runs:
        row = [run.backbone] + ([benchmark.training_data, benchmark.test_data] if voc else [])
        for metric in benchmark.metrics:
            row.append(_cell(run.values.get(metric.key)))
            if metric.paper:
                row.append(_cell(_paper_value(benchmark, run.backbone, metric.key)))
        rows.append(row + [f"`{run.path}`"])
    gain = gains(benchmark, runs)
    if gain:
        counts = [sum(r.backbone == b for r in runs) for b in (BASELINE, CHALLENGER)]
        label = f"{CHALLENGER} over {BASELINE}"
        if counts != [1, 1]:
            label += f" (means of {counts[0]} and {counts[1]} runs)"
        row = [label] + (["", ""] if voc else [])
        for metric in benchmark.metrics:
            ours, paper = gain[metric.key]
            row.append(MISSING if ours is None else str(ours))
            if metric.paper:
                row.append(MISSING if paper is None else str(paper))
        rows.append(row + [""])
    return _markdown(header, rows)


def _notes(benchmark: Benchmark) -> str:
    if benchmark.kind == "voc":
        first, second = benchmark.metrics
        return (f"{first.header}: the {_metric_name(first.key)}, the one compared with the paper; "
                f"{second.header}: the {_metric_name(second.key)}.")
    return "COCO box AP from pycocotools: mAP@.5 at IoU 0.5, mAP@[.5, .95] averaged over IoU 0.5:0.05:0.95."


def _metric_name(key: str) -> str:
    return {"mAP_11point": "VOC2007 11-point metric", "mAP_area": "area metric of VOC2010 and later"}[key]


def build_report(runs: Sequence[RunResult]) -> str:
    """The Markdown report: one section and table per benchmark."""
    parts = ["# Detection results and the ResNet paper (He et al., CVPR 2016, Tables 7 and 8)", ""]
    for benchmark, members in group_by_benchmark(runs):
        parts += [f"## {benchmark.name}", "", benchmark_table(benchmark, members), "", _notes(benchmark)]
        if not benchmark.paper:
            parts.append(f"Not a benchmark of the paper: no paper numbers ({MISSING}).")
        parts.append("")
    return "\n".join(parts)


def write_chart(runs: Sequence[RunResult], path: str | os.PathLike) -> None:
    """Writes :func:`chart_figure` of ``runs`` as a PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    chart_figure(runs).savefig(path, dpi=100)


def chart_figure(runs: Sequence[RunResult]) -> Figure:
    """A matplotlib ``Figure`` with one panel per benchmark and compared metric: per run, a bar
    of its number and one of the paper's number for its backbone (where the paper has one)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no display
    from matplotlib.figure import Figure

    panels = [(b, m, members) for b, members in group_by_benchmark(runs) for m in b.metrics if m.paper]
    width = max(4.0, 1.2 * max(len(members) for _, _, members in panels) + 1.5)
    figure = Figure(figsize=(width, 3.2 * len(panels)), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (benchmark, metric, members) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, index + 1)
        labels = _bar_labels(members)
        ours = [run.values.get(metric.key) for run in members]
        paper = [_paper_value(benchmark, run.backbone, metric.key) for run in members]
        positions = range(len(members))
        if any(v is not None for v in paper):
            _bars(axes, [p - 0.2 for p in positions], ours, 0.4, "this toolkit", "tab:blue")
            _bars(axes, [p + 0.2 for p in positions], paper, 0.4, "paper", "tab:gray")
        else:
            _bars(axes, list(positions), ours, 0.5, "this toolkit", "tab:blue")
        axes.set_xticks(list(positions), labels, fontsize=8)
        axes.set_ylabel(metric.header)
        axes.set_ylim(0, max([v for v in ours + paper if v is not None] + [1.0]) * 1.2)
        # A benchmark named by its data path can be wider than the figure: wrapped, not cut off.
        axes.set_title(_wrap(f"{benchmark.name}: {metric.header}", _chars_per_line(width, TITLE_FONT_SIZE)),
                       fontsize=TITLE_FONT_SIZE)
        axes.legend(fontsize=8, loc="upper left")
    return figure



def _chars_per_line(width_inches: float, font_size: float) -> int:
    """Characters that fit across a figure: a DejaVu Sans character is at most about 0.7 em wide on average."""
    return max(10, int(width_inches * 72 / (0.7 * font_size)))


def _wrap(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters, broken after spaces or slashes
    (paths have no spaces); a single longer piece is cut."""
    pieces = re.findall(r"[^ /]*[ /]?", text)[:-1]  # each piece keeps the separator that ends it
    lines = [""]
    for piece in pieces:
        if len(lines[-1]) + len(piece.rstrip()) > width and lines[-1]:
            lines.append("")
        lines[-1] += piece
        while len(lines[-1]) > width:
            lines[-1:] = [lines[-1][:width], lines[-1][width:]]
    return "\n".join(line.rstrip() for line in lines)


def _bar_labels(runs: Sequence[RunResult]) -> list[str]:
    """The backbone, plus the folder name where one backbone has several runs."""
    repeated = {r.backbone for r in runs if sum(o.backbone == r.backbone for o in runs) > 1}
    return [f"{r.backbone}\n{Path(r.path).name}" if r.backbone in repeated else r.backbone for r in runs]


def _bars(axes: Any, positions: list[float], values: list[Optional[float]], width: float, label: str,
          colour: str) -> None:
    """Bars where there is a value: a missing number draws nothing rather than a zero."""
    kept = [(p, v) for p, v in zip(positions, values) if v is not None]
    bars = axes.bar([p for p, _ in kept], [v for _, v in kept], width=width, label=label, color=colour)
    axes.bar_label(bars, [_cell(v) for _, v in kept], fontsize=8)
