"""The measurements of one peer in one mode, in a fresh process: ``python -m detect.benchmark.worker SPEC OUT``.

Times are medians over ``repeats`` calls after ``warmup`` calls (``time.perf_counter``).
Stage boundaries are the calls of the peer's backbone, RPN, RoI heads and predictor
(forward hooks that only read the clock). Memory: the resident set's high-water mark
(VmHWM) during one more call, reset just before it through /proc/self/clear_refs, after
freed heap memory went back to the system (malloc_trim); reported as that peak and as
its increase over the resident set just before the call.
"""

from __future__ import annotations

import ctypes
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detect.benchmark.peers import Work, build_peer
from detect.benchmark.weights import read_images
from detect.engine.inference import autocast

# mode -> (autocast, channels-last); None: the layout the peer picks itself (detect: channels-last
# on the CPU, place_model; torchvision and Detectron2: NCHW)
MODES = {"fp32": ("off", None), "fp32-cl": ("off", True), "bf16-cl": ("bf16", True)}
INFERENCE_STAGES = ("preprocess", "backbone", "rpn", "roi_head", "postprocess")
TRAIN_STAGES = ("forward", "backward", "optimizer")
LEARNING_RATE = 1e-6  # tiny: the weights stay realistic over the repeats


class StageClock:
    """The time at which each stage of a call begins, from hooks on the peer's stage modules."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.marks: dict[str, float] = {}
        begins = {"backbone": "backbone", "rpn": "rpn", "roi_heads": "roi_head"}
        for module_name, stage in begins.items():
            modules[module_name].register_forward_pre_hook(lambda *_, stage=stage: self.mark(stage))
        modules["predictor"].register_forward_hook(lambda *_: self.mark("postprocess"))

    def mark(self, stage: str) -> None:
        self.marks.setdefault(stage, time.perf_counter())  # the first call: the end of training's forward has more

    def time(self, fn: Callable[[], Any]) -> dict[str, float]:
        """Seconds per inference stage of one call of ``fn``; they sum to the call's time."""
        self.marks.clear()
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        bounds = [start, *(self.marks[s] for s in INFERENCE_STAGES[1:]), end]
        return {stage: b - a for stage, a, b in zip(INFERENCE_STAGES, bounds, bounds[1:])}


def medians(fn: Callable[[], dict[str, float]], warmup: int, repeats: int) -> dict[str, Any]:
    """``fn`` returns its stage times; the median total and the median of each stage."""
    for _ in range(warmup):
        fn()
    runs = [fn() for _ in range(repeats)]
    return {
        "seconds": statistics.median(sum(r.values()) for r in runs),
        "stages": {stage: statistics.median(r[stage] for r in runs) for stage in runs[0]},
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory(fn: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Peak resident memory of one call of ``fn`` (MiB), and what it returned."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    result = fn()
    peak = _status_kb("VmHWM")
    return {"peak_rss_mib": peak / 1024, "peak_rss_increase_mib": (peak - before) / 1024}, result


def random_targets(count: int, h: int, w: int, generator: torch.Generator) -> dict[str, Tensor]:
    """``count`` boxes of 8 px to 40 % of the image a side, inside it, with labels 1..90."""
    size = torch.tensor([w, h], dtype=torch.float32)
    wh = 8 + torch.rand(count, 2, generator=generator) * (0.4 * size - 8)
    xy = torch.rand(count, 2, generator=generator) * (size - wh)
    return {"boxes": torch.cat([xy, xy + wh], dim=1), "labels": torch.randint(1, 91, (count,), generator=generator)}


def _layout(image: Tensor, channels_last: bool | None) -> Tensor:
    """Channels-last storage for a ``[3, H, W]`` image: its channels innermost, as a decoded HWC image."""
    return image.permute(1, 2, 0).contiguous().permute(2, 0, 1) if channels_last else image


def proposal_count(output: tuple) -> int:
    """The number of proposals of a one-image batch, from the output of a peer's RPN."""
    proposals = output[0]  # detect: Proposals of all images; torchvision: boxes per image; Detectron2: Instances per image
    return len(proposals.boxes if hasattr(proposals, "boxes") else proposals[0])


def run(spec: dict) -> tuple[dict, dict]:
    """All measurements of ``spec["peer"]`` in ``spec["mode"]``; the figures and the detections by size."""
    torch.manual_seed(spec["seed"])
    amp, channels_last = MODES[spec["mode"]]
    cpu = torch.device("cpu")
    peer = build_peer(spec["peer"], torch.load(spec["weights"]), Work(**spec["work"]))
    model = peer.model
    if channels_last:
        model.to(memory_format=torch.channels_last)
    clock = StageClock(peer.stage_modules())
    counts: list[int] = []
    peer.stage_modules()["rpn"].register_forward_hook(lambda _, __, output: counts.append(proposal_count(output)))
    results: dict[str, Any] = {"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    detections = {}

    model.eval()
    results["inference"] = {}
    for h, w in spec["inference_sizes"]:
        image = _layout(read_images(spec["images"][:1], (h, w))[0], channels_last)
        peer.set_size(h, w)

        def infer(image: Tensor = image) -> list[dict[str, Tensor]]:
            with torch.inference_mode(), autocast(cpu, amp):
                return peer.infer([image])

        figures = medians(lambda: clock.time(infer), spec["warmup"], spec["repeats"])
        memory, output = peak_memory(infer)
        output = {k: v.float() if v.is_floating_point() else v for k, v in output[0].items()}
        detections[f"{h}x{w}"] = output
        results["inference"][f"{h}x{w}"] = {**figures, **memory, "proposals": counts[-1], "detections": len(output["boxes"])}

    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, momentum=0.9)
    generator = torch.Generator().manual_seed(spec["seed"])

    def train(batch: int, h: int, w: int, gt: int) -> dict[str, Any]:
        paths = [spec["images"][i % len(spec["images"])] for i in range(batch)]
        images = [_layout(i, channels_last) for i in read_images(paths, (h, w))]
        targets = [random_targets(gt, h, w, generator) for _ in images]
        peer.set_size(h, w)

        def step() -> dict[str, float]:
            start = time.perf_counter()
            with autocast(cpu, amp):
                loss = peer.losses(images, targets)
            forward = time.perf_counter()
            loss.backward()
            backward = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return {"forward": forward - start, "backward": backward - forward, "optimizer": time.perf_counter() - backward}

        figures = medians(step, spec["warmup"], spec["repeats"])
        memory, _ = peak_memory(step)
        return {**figures, **memory}

    batch, gt = spec["train_batch"], spec["train_gt_boxes"]
    results["train"] = {f"{h}x{w}": train(batch, h, w, gt) for h, w in spec["train_sizes"]}
    results["gt_boxes"], results["batch_size"] = {}, {}
    if spec["mode"] in spec["scaling_modes"]:

        def train_once(b: int, h: int, w: int, n: int) -> dict[str, Any]:
            """A step already measured in ``results["train"]`` is not measured again."""
            same = b == batch and n == gt and f"{h}x{w}" in results["train"]
            return results["train"][f"{h}x{w}"] if same else train(b, h, w, n)

        h, w = spec["gt_size"]
        results["gt_boxes"] = {str(n): train_once(batch, h, w, n) for n in spec["gt_counts"]}
        h, w = spec["batch_size_size"]
        results["batch_size"] = {str(b): train_once(b, h, w, gt) for b in spec["batch_sizes"]}
    return results, detections


def main() -> None:
    spec_path, out_path = sys.argv[1:3]
    spec = json.loads(Path(spec_path).read_text())
    results, detections = run(spec)
    torch.save(detections, Path(out_path).with_suffix(".pt"))
    Path(out_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
