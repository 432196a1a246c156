"""The benchmark's JSON as markdown tables: one per mode, peers side by side."""

from __future__ import annotations

from detect.benchmark.worker import INFERENCE_STAGES, TRAIN_STAGES


def _cell(entry: dict | None, key: str = "seconds", digits: int = 3) -> str:
    return "-" if entry is None else f"{entry[key]:.{digits}f}"


def markdown(result: dict) -> str:
    """Markdown tables of ``result`` (what ``detect.benchmark.suite.run_benchmark`` returns)."""
    host = result["host"]
    plan = result["plan"]
    lines = [
        f"{host['cpu']}, {host['torch_threads']} threads (avx512_bf16: {host['avx512_bf16']}, amx_bf16: {host['amx_bf16']}); "
        f"torch {host['torch']}, torchvision {host['torchvision']}, detectron2 {host['detectron2'] or 'absent'}. "
        f"Median of {plan['repeats']} after {plan['warmup']} warm-up; memory: peak resident set of the peer's own process (MiB).",
    ]
    for mode, figures in result["modes"].items():
        peers = list(figures)
        rows = []
        for size, entry in figures[peers[0]]["inference"].items():
            row = lambda key, digits=3, size=size: [_cell(figures[p]["inference"].get(size), key, digits) for p in peers]  # noqa: E731
            rows.append((f"inference {size}, s/image", row("seconds")))
            rows += [(f"&nbsp;&nbsp;{stage}", [_cell({"s": figures[p]["inference"][size]["stages"][stage]}, "s") for p in peers]) for stage in INFERENCE_STAGES]
            rows.append((f"&nbsp;&nbsp;peak memory, MiB", row("peak_rss_mib", 0)))
            rows.append((f"&nbsp;&nbsp;proposals / detections", [f"{figures[p]['inference'][size]['proposals']} / {figures[p]['inference'][size]['detections']}" for p in peers]))
        for group, label in (("train", "train step {} (batch {}), s"), ("gt_boxes", "train step, {} GT boxes/image, s"), ("batch_size", "train step, batch {}, s")):
            for key in figures[peers[0]][group]:
                args = (key, plan["train_batch"]) if group == "train" else (key,)
                entries = [figures[p][group][key] for p in peers]
                rows.append((label.format(*args), [_cell(e) for e in entries]))
                if group == "train":
                    rows += [(f"&nbsp;&nbsp;{stage}", [_cell(e["stages"], stage) for e in entries]) for stage in TRAIN_STAGES]
                rows.append(("&nbsp;&nbsp;peak memory, MiB", [_cell(e, "peak_rss_mib", 0) for e in entries]))
        lines += ["", f"**{mode}** (GT scaling at {'x'.join(map(str, plan['gt_size']))}, batch {plan['train_batch']}; "
                  f"batch scaling at {'x'.join(map(str, plan['batch_size_size']))})", "",
                  "| | " + " | ".join(peers) + " |", "|---" * (len(peers) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    lines.append("")
    for mode, pairs in result["agreement"].items():
        for pair, sizes in pairs.items():
            for size, a in sizes.items():
                lines.append(f"{mode} {size} {pair}: {a['detections'][0]} and {a['detections'][1]} detections, "
                             f"{a['matched'][0]} and {a['matched'][1]} matched by the other (IoU > {a['min_iou']}, "
                             f"score within {a['score_tol']})")
    return "\n".join(lines)
