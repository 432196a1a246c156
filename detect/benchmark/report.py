"""The benchmark's JSON as markdown tables: one per mode, peers side by side."""

from __future__ import annotations

from detect.benchmark.worker import INFERENCE_STAGES, TRAIN_STAGES

INDENT = "&nbsp;&nbsp;"
MODE_TITLES = {
    "fp32": "each peer in the layout it picks itself: detect channels-last (its default on the CPU), torchvision and Detectron2 NCHW",
    "fp32-cl": "every peer channels-last (model and image converted by its user)",
    "bf16-cl": "bf16 autocast, every peer channels-last",
}
Row = tuple[str, list[str]]


def _memory(entry: dict) -> str:
    return f"{entry['peak_rss_mib']:.0f} (+{entry['peak_rss_increase_mib']:.0f})"


def _rows(title: str, entries: list[dict], stages: tuple[str, ...]) -> list[Row]:
    """The median seconds of one measurement, of its stages, and its peak memory, one entry per peer."""
    rows = [(title, [f"{e['seconds']:.3f}" for e in entries])]
    rows += [(INDENT + stage, [f"{e['stages'][stage]:.3f}" for e in entries]) for stage in stages]
    return rows + [(INDENT + "peak memory (increase), MiB", [_memory(e) for e in entries])]


def _table(figures: dict, plan: dict) -> list[str]:
    peers = list(figures)
    rows: list[Row] = []
    for size in figures[peers[0]]["inference"]:
        entries = [figures[p]["inference"][size] for p in peers]
        rows += _rows(f"inference {size}, s/image", entries, INFERENCE_STAGES)
        rows.append((INDENT + "proposals / detections", [f"{e['proposals']} / {e['detections']}" for e in entries]))
    for size in figures[peers[0]]["train"]:
        rows += _rows(f"train step {size} (batch {plan['train_batch']}), s", [figures[p]["train"][size] for p in peers], TRAIN_STAGES)
    for count in figures[peers[0]]["gt_boxes"]:
        rows += _rows(f"train step, {count} GT boxes/image, s", [figures[p]["gt_boxes"][count] for p in peers], ())
    for batch in figures[peers[0]]["batch_size"]:
        rows += _rows(f"train step, batch {batch}, s", [figures[p]["batch_size"][batch] for p in peers], ())
    header = ["| | " + " | ".join(peers) + " |", "|---" * (len(peers) + 1) + "|"]
    return header + [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]


def markdown(result: dict) -> str:
    """Markdown tables of ``result`` (what ``detect.benchmark.suite.run_benchmark`` returns)."""
    host, plan = result["host"], result["plan"]
    gt_size, batch_size = ("x".join(map(str, plan[key])) for key in ("gt_size", "batch_size_size"))
    lines = [
        f"{host['cpu']}, {host['torch_threads']} threads (avx512_bf16: {host['avx512_bf16']}, "
        f"amx_bf16: {host['amx_bf16']}); torch {host['torch']}, torchvision {host['torchvision']}, "
        f"detectron2 {host['detectron2'] or 'absent'}. Median of {plan['repeats']} after {plan['warmup']} "
        "warm-up; memory: peak resident set of the peer's own process during one call, and its increase "
        "over the resident set before the call.",
    ]
    for mode, figures in result["modes"].items():
        scaling = f" (GT boxes at {gt_size}, batch {plan['train_batch']}; batch sizes at {batch_size})" if mode in plan["scaling_modes"] else ""
        lines += ["", f"**{mode}**: {MODE_TITLES[mode]}{scaling}", ""]
        lines += _table(figures, plan)
    lines.append("")
    for mode, pairs in result["agreement"].items():
        for pair, sizes in pairs.items():
            for size, a in sizes.items():
                lines.append(
                    f"{mode} {size} {pair}: {a['detections'][0]} and {a['detections'][1]} detections, "
                    f"{a['matched'][0]} and {a['matched'][1]} matched by the other "
                    f"(same label, IoU > {a['min_iou']}, score within {a['score_tol']})"
                )
    return "\n".join(lines)
