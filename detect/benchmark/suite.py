"""The whole benchmark: weights, one fresh process per peer and mode, and the detect-torchvision agreement."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision

import detect
from detect.benchmark import weights as realistic
from detect.benchmark.peers import PEERS, Torchvision, Work
from detect.benchmark.worker import MODES
from detect.export import match_detections

# (min IoU, max score gap) for "the same detection" as torchvision's, per peer and mode: bf16
# rounds logits to ~3 digits; Detectron2's unrounded anchors move its boxes slightly.
AGREEMENT = {
    ("detect", "fp32"): (0.99, 1e-3),
    ("detect", "fp32-cl"): (0.99, 1e-3),
    ("detect", "bf16-cl"): (0.9, 0.05),
    ("detectron2", "fp32"): (0.9, 0.05),
    ("detectron2", "fp32-cl"): (0.9, 0.05),
    ("detectron2", "bf16-cl"): (0.9, 0.05),
}


@dataclass(frozen=True)
class Plan:
    """Sizes (H, W), counts and repeats of one run."""

    inference_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(800, 1333), (320, 512)])
    train_sizes: list[tuple[int, int]] = field(default_factory=lambda: [(800, 1333), (320, 512)])
    train_batch: int = 2
    train_gt_boxes: int = 10  # per image; COCO averages 7.3
    gt_counts: list[int] = field(default_factory=lambda: [10, 100, 1000])
    gt_size: tuple[int, int] = (800, 1333)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4])
    batch_size_size: tuple[int, int] = (320, 512)
    scaling_modes: list[str] = field(default_factory=lambda: ["fp32"])  # modes measured at every GT count and batch size
    warmup: int = 1
    repeats: int = 3
    work: dict = field(default_factory=dict)  # overrides of detect's config values (Work's fields)


# Every step at toy size, with the RoI head's 1024-wide FC layers fed fewer boxes
# (128x192 images keep fewer than 1000 proposals after NMS anyway).
TOY = Plan(
    inference_sizes=[(128, 192)],
    train_sizes=[(96, 128)],
    train_batch=1,
    train_gt_boxes=2,
    gt_counts=[2, 20],
    gt_size=(96, 128),
    batch_sizes=[1, 2],
    batch_size_size=(96, 128),
    warmup=0,
    repeats=1,
    scaling_modes=list(MODES),
    work={"post_nms_topk_test": 100, "post_nms_topk_train": 200, "roi_batch_size_per_image": 64},
)


def detectron2_version() -> str | None:
    if importlib.util.find_spec("detectron2") is None:
        return None
    import detectron2

    return detectron2.__version__


def host_info() -> dict:
    """CPU model, its bf16 and AMX flags, the thread count and the library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    flags = set(fields.get("flags\t\t", "").split())
    return {
        "cpu": fields.get("model name\t", platform.processor()).strip(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2": detectron2_version(),
    }


def realistic_weights(work: Work, image_paths: list[str], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """torchvision's seeded model, made realistic on the images at ``size`` (see weights.make_realistic)."""
    peer = Torchvision(None, work)
    peer.set_size(*size)
    realistic.make_realistic(peer.model, realistic.read_images(image_paths, size), realistic.SEED)
    return peer.model.state_dict()


def agreement(expected: dict, got: dict, min_iou: float, score_tol: float) -> dict:
    """How many of each side's detections the other has (same label, IoU above ``min_iou``, score within ``score_tol``)."""
    got_matched = match_detections(got, expected, min_iou, score_tol)
    expected_matched = match_detections(expected, got, min_iou, score_tol)
    return {
        "detections": [len(expected["boxes"]), len(got["boxes"])],
        "matched": [int(expected_matched.sum()), int(got_matched.sum())],
        "min_iou": min_iou,
        "score_tol": score_tol,
        "agree": bool(expected_matched.all() and got_matched.all() and len(expected["boxes"]) > 0),
    }


def _run_worker(spec: dict, stem: Path) -> tuple[dict, dict]:
    """One peer in one mode in a fresh process (detect imported from where this process has it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(detect.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    spec_path, out = stem.with_suffix(".spec.json"), stem.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "detect.benchmark.worker", str(spec_path), str(out)], check=True, env=env)
    return json.loads(out.read_text()), torch.load(out.with_suffix(".pt"))


def run_benchmark(plan: Plan, image_paths: list[str], peers: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """``peers`` (default: all importable here) in every mode, each in its own process; the JSON-ready result."""
    work = Work.from_detect_config(**plan.work)
    if peers is None:
        peers = [p for p in PEERS if p != "detectron2" or detectron2_version() is not None]
    if unknown := set(peers) - set(PEERS):
        raise ValueError(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    if "detectron2" in peers and detectron2_version() is None:
        raise ValueError(f"peer detectron2: {sys.executable} cannot import detectron2")
    if "torchvision" not in peers:
        raise ValueError("the peers must include torchvision, the reference the others' detections are checked against")
    peers = [p for p in PEERS if p in peers]
    calibration_size = min(plan.inference_sizes)
    log(f"calibrating the weights on {len(image_paths)} images at {calibration_size[0]}x{calibration_size[1]}")
    result = {
        "host": host_info(),
        "plan": dataclasses.asdict(plan),
        "work": {**work.as_dict(), "source": "detect's configs/frcnn_r50_fpn_coco.py (torchvision's defaults); torchvision and Detectron2 set to these"},
        "inputs": "the same images for every peer, resized (bilinear) to the test size beforehand; torchvision and detect "
        "run their identity-scale resize (min_size, max_size = the image's)",
        "weights": {
            "how": "torchvision's fasterrcnn_resnet50_fpn seeded; frozen BN set from real images, FPN levels, RPN and class "
            "logits scaled (detect/benchmark/weights.py); converted to detect and Detectron2",
            "seed": realistic.SEED,
            "calibration_images": len(image_paths),
            "calibration_size": calibration_size,
            **{k.lower(): getattr(realistic, k) for k in ("RPN_LOGIT_STD", "RPN_DELTA_STD", "CLASS_LOGIT_STD", "BACKGROUND_LOGIT")},
        },
        "memory": "VmHWM of the peer's process during one call, reset before it; peak_rss_mib absolute, peak_rss_increase_mib over the resident set before the call",
        "detectron2": "included" if "detectron2" in peers else (
            "absent: not asked for" if detectron2_version() else "absent: detectron2 is not importable by this Python"
        ),
        "modes": {},
        "agreement": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        weights_path = Path(tmp) / "weights.pt"
        torch.save(realistic_weights(work, image_paths, calibration_size), weights_path)
        base = {**dataclasses.asdict(plan), "weights": str(weights_path), "images": image_paths, "work": work.as_dict(), "seed": realistic.SEED}
        detections = {}
        for mode in MODES:
            figures, detections[mode] = {}, {}
            for peer in peers:
                log(f"{mode}: {peer}")
                spec = {**base, "peer": peer, "mode": mode}
                figures[peer], detections[mode][peer] = _run_worker(spec, Path(tmp) / f"{peer}-{mode}")
            result["modes"][mode] = figures
            result["agreement"][mode] = {
                f"torchvision-{peer}": {
                    size: agreement(detections[mode]["torchvision"][size], d, *AGREEMENT[peer, mode])
                    for size, d in detections[mode][peer].items()
                }
                for peer in peers
                if peer != "torchvision"
            }
        for size, a in result["agreement"]["fp32"].get("torchvision-detect", {}).items():
            if not a["agree"]:
                log(f"warning: at {size} detect's fp32 detections differ from torchvision's; the times compare different work")
        # bf16 against fp32 of the same weights: how far bf16 rounding alone moves each peer's detections
        result["agreement"]["fp32 vs bf16-cl"] = {
            f"torchvision-{peer}": {
                size: agreement(detections["fp32"]["torchvision"][size], d, *AGREEMENT["detect", "bf16-cl"])
                for size, d in detections["bf16-cl"][peer].items()
            }
            for peer in peers
        }
    return result
