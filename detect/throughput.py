"""Images per second of training, inference and data loading: the figures of ``make gpu-check``.

detect's R50-FPN and torchvision's ``fasterrcnn_resnet50_fpn`` are measured with
the CPU benchmark's weights (:mod:`detect.benchmark.weights`: seeded, with a trained
model's activations, frozen BatchNorm, stem and res2 frozen), on coco8's photos. Each timing follows warm-up iterations (cuDNN's algorithm search, the
allocator's first blocks) and is bracketed by ``torch.cuda.synchronize``, since
CUDA work is queued and would otherwise be timed only as far as it was launched.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from detect.benchmark.peers import CONFIG, Work, build_peer
from detect.benchmark.suite import realistic_weights
from detect.benchmark.weights import COCO8_IMAGES, read_images
from detect.benchmark.worker import random_targets
from detect.config import load_config
from detect.data.build import build_dataset
from detect.data.image_io import write_image
from detect.data.loader import build_train_loader, stop_workers

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
LOADER_BATCH = 2  # images per batch while timing the loader; its figure is per image
CALIBRATION_SIZE = (320, 512)  # the frozen-BN statistics are measured at this size, as in the CPU benchmark


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is.

    Attributes:
        height, width: the images the models train and infer on, already at the
            models' input size (so the models do not resize them).
        train_batch: images per training step.
        infer_batches: batch sizes of the inference timings.
        warmup, iters: untimed and timed iterations of every timing.
        jpeg_height, jpeg_width: the generated JPEGs the loader decodes and augments.
        loader_images: JPEGs generated; loader_batches: batches timed per worker count.
        loader_workers: worker counts timed.
        proposals, rois: RPN proposals kept per image and RoIs sampled per training
            image, for both models; None keeps the configs' 1000-2000 and 512.
    """

    height: int
    width: int
    train_batch: int
    infer_batches: tuple[int, ...]
    warmup: int
    iters: int
    jpeg_height: int
    jpeg_width: int
    loader_images: int
    loader_batches: int
    loader_workers: tuple[int, ...]
    proposals: int | None = None
    rois: int | None = None


FULL = Sizes(800, 1333, 8, (1, 8), warmup=3, iters=10, jpeg_height=480, jpeg_width=640,
             loader_images=32, loader_batches=40, loader_workers=(1, 2, 4))
TOY = Sizes(64, 96, 2, (1, 2), warmup=1, iters=1, jpeg_height=48, jpeg_width=64,
            loader_images=4, loader_batches=2, loader_workers=(1, 2, 4), proposals=50, rois=32)


def amp_modes(device: torch.device) -> tuple[str, ...]:
    """fp16 autocast is a CUDA feature (on the CPU it runs many times slower than float32)."""
    return ("off", "fp16", "bf16") if device.type == "cuda" else ("off", "bf16")


def build_models(sizes: Sizes) -> dict[str, nn.Module]:
    """``{"torchvision": ..., "detect": ...}`` on the CPU, with the benchmark's realistic weights
    (:mod:`detect.benchmark.weights`), taking images of ``sizes`` at that size."""
    counts = {}
    if sizes.proposals:
        counts.update({f"{n}_nms_topk_{s}": sizes.proposals for n in ("pre", "post") for s in ("train", "test")})
    if sizes.rois:
        counts["roi_batch_size_per_image"] = sizes.rois
    work = Work.from_detect_config(**counts)
    calibration = (min(sizes.height, CALIBRATION_SIZE[0]), min(sizes.width, CALIBRATION_SIZE[1]))
    state = realistic_weights(work, COCO8_IMAGES, calibration)
    models = {}
    for name in ("torchvision", "detect"):
        peer = build_peer(name, state, work)
        peer.set_size(sizes.height, sizes.width)
        models[name] = peer.model
    return models


def synthetic_batch(sizes: Sizes, count: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """``count`` of coco8's photos at the models' input size, 4 random boxes each, on the CPU."""
    generator = torch.Generator().manual_seed(0)
    paths = [COCO8_IMAGES[i % len(COCO8_IMAGES)] for i in range(count)]
    images = read_images(paths, (sizes.height, sizes.width))
    return images, [random_targets(4, sizes.height, sizes.width, generator) for _ in images]


def _autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp], enabled=amp != "off")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> tuple[float, float | None, Any]:
    """Seconds per call of ``step`` after ``warmup`` calls, peak CUDA memory (MiB) of the timed calls, last result."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        result = step()
    _synchronize(device)
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return seconds, peak, result


def training_rows(models: dict[str, nn.Module], sizes: Sizes, device: torch.device) -> list[dict[str, Any]]:
    """Training images/s and peak memory of each model under each AMP mode (fp16 with a GradScaler).

    Every timing starts from the same weights; only the measured model is on the device.
    """
    images, targets = synthetic_batch(sizes, sizes.train_batch)
    images = [i.to(device) for i in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    rows = []
    for amp in amp_modes(device):
        for name, model in models.items():
            initial = {k: v.clone() for k, v in model.state_dict().items()}
            seconds, peak, loss = _time_training(model.to(device).train(), images, targets, device, amp, sizes)
            rows.append({"model": name, "amp": amp, "batch": sizes.train_batch, "images_per_s": sizes.train_batch / seconds,
                         "peak_memory_mb": peak, "loss": loss})
            model.load_state_dict(initial)
            _release(model)
    return rows


def _time_training(model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], device: torch.device,
                   amp: str, sizes: Sizes) -> tuple[float, float | None, float]:
    """Seconds per SGD step, peak memory (MiB), last loss; the optimizer's state is freed on return."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> Tensor:
        with _autocast(device, amp):
            losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        return total.detach()

    seconds, peak, loss = _timed(step, device, sizes.warmup, sizes.iters)
    return seconds, peak, float(loss)


def inference_rows(models: dict[str, nn.Module], sizes: Sizes, device: torch.device) -> list[dict[str, Any]]:
    """Inference images/s and peak memory of each model at each batch size and AMP mode."""
    images = [i.to(device) for i in synthetic_batch(sizes, max(sizes.infer_batches))[0]]
    rows = []
    for name, model in models.items():
        model.to(device).eval()
        for amp in amp_modes(device):
            for batch in sizes.infer_batches:

                @torch.inference_mode()
                def step(model: nn.Module = model, amp: str = amp, batch: int = batch) -> int:
                    with _autocast(device, amp):
                        return sum(len(d["boxes"]) for d in model(images[:batch]))

                seconds, peak, found = _timed(step, device, sizes.warmup, sizes.iters)
                rows.append({"model": name, "amp": amp, "batch": batch, "images_per_s": batch / seconds,
                             "peak_memory_mb": peak, "detections_per_image": found / batch})
        _release(model)
    return rows


def _release(model: nn.Module) -> None:
    model.to("cpu")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_jpeg_dataset(root: Path, sizes: Sizes) -> Path:
    """``sizes.loader_images`` COCO-style JPEGs (smooth colours, 3 boxes each) and their instances json."""
    rng = np.random.default_rng(0)
    h, w = sizes.jpeg_height, sizes.jpeg_width
    images, annotations = [], []
    for i in range(sizes.loader_images):
        coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        rgb = np.clip(smooth + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)  # some texture, as photos have
        write_image(root / "images" / f"{i:06d}.jpg", rgb)
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "height": h, "width": w})
        for j in range(3):
            x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            bbox = [x, y, rng.uniform(4, w / 2), rng.uniform(4, h / 2)]
            annotations.append({"id": 3 * i + j + 1, "image_id": i + 1, "category_id": 1, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
    ann_file = root / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "thing"}]}))
    return ann_file


def loader_rows(sizes: Sizes, overrides: list[str]) -> list[dict[str, Any]]:
    """Training-loader images/s (JPEG decode + the config's augmentation) for each worker count, on the CPU.

    Args:
        overrides: applied to the R50-FPN config, e.g. smaller ``data.train_min_sizes`` for a toy run.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = write_jpeg_dataset(Path(tmp), sizes)
        cfg = load_config(CONFIG, [f"data.train.root={tmp}/images", f"data.train.ann_file={ann_file}", *overrides])
        dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
        for workers in sizes.loader_workers:
            loader = build_train_loader(dataset, LOADER_BATCH, workers, aspect_ratio_grouping=False, seed=0)
            batches = iter(loader)
            try:
                next(batches)  # the workers have started and filled their queues
                start = time.perf_counter()
                for _ in range(sizes.loader_batches):
                    next(batches)
                seconds = time.perf_counter() - start
            finally:
                stop_workers(batches)
            per_s = sizes.loader_batches * LOADER_BATCH / seconds
            rows.append({"workers": workers, "images_per_s": per_s, "images_per_s_per_worker": per_s / workers})
    return rows
