"""The training loop: SGD iterations, logging, checkpoints, evaluation, resuming."""

from __future__ import annotations

import json
import math
import random
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from detect.config import Config, save_config
from detect.data.build import build_dataset, dataset_classes
from detect.data.image_io import to_float_image
from detect.data.loader import DetectionDataset, build_train_loader, start_workers, stop_workers
from detect.engine.distributed import (
    all_gather_objects,
    broadcast_batchnorm_statistics,
    distributed_model,
    init_distributed,
    is_main_process,
    reduce_over_processes,
    world_size,
)
from detect.engine.inference import autocast, evaluate_model
from detect.engine.optim import build_lr_scheduler, build_optimizer
from detect.engine.preflight import SkippedImages, check_before_training
from detect.engine.resume import checkpoint_name, resume_training, save_training_checkpoint
from detect.engine.tensorboard import TensorBoardLog
from detect.models import build_model, place_model
from detect.models.build import require_backbone_weights


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, resume: bool = False) -> dict[str, Any] | None:
    """Trains ``cfg``'s model on ``cfg.data.train`` and evaluates it on ``cfg.data.val``.

    Writes into ``cfg.output_dir``: ``config.py`` (resolved), ``log.jsonl``,
    checkpoints (``model_final.pth`` at the end) and ``metrics.json``; with
    ``train.tensorboard``, TensorBoard event files (``detect.engine.tensorboard``).

    Returns:
        The final metrics on the main process, else None.

    Raises:
        TrainingStopped: on SIGTERM or SIGINT, once every process has finished its
            step and the checkpoint of that iteration is saved.
        FloatingPointError: on every process when a loss is not finite on any.
    """
    output_dir = Path(cfg.output_dir)
    device = resolve_device(cfg.train.device)
    rank, num_processes, local_rank = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if cfg.train.batch_size % num_processes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} does not split over {num_processes} processes")
    if cfg.train.keep_checkpoints < 0:
        raise ValueError(f"train.keep_checkpoints must be 0 (keep all) or positive, got {cfg.train.keep_checkpoints}")
    seed_everything(cfg.train.seed + rank)
    if device.type == "cpu":
        # Gradients of a network trained from scratch underflow into denormals, which x86 CPUs
        # compute many times slower; measured: fp32 steps varied 2.5-8.5 s, flushed a steady 2.5 s.
        torch.set_flush_denormal(True)

    require_backbone_weights(cfg.model)
    dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
    check_before_training(cfg, dataset)
    model = place_model(build_model(cfg, dataset_classes(dataset)), device, cfg.train.channels_last)
    cfg.model.classes = model.categories.to_dict()  # the saved config then builds this model alone
    optimizer = build_optimizer(cfg.train, model)
    scheduler = build_lr_scheduler(cfg.train, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    state = {
        "model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "cfg": cfg, "device": device,
        "dataset": dataset,
        "skipped": SkippedImages(cfg.data.bad_images),  # data.bad_images=skip: named, counted, reported
    }

    start_iter = resume_training(output_dir, state) if resume else 0
    if is_main_process():
        save_config(cfg, output_dir / "config.py")
    ddp_model: nn.Module = distributed_model(model, device) if num_processes > 1 else model

    loader = build_train_loader(
        dataset, cfg.train.batch_size // num_processes, cfg.data.num_workers, cfg.data.aspect_ratio_grouping,
        cfg.train.seed, start_batch=start_iter, pin_memory=device.type == "cuda",
    )
    state["board"] = TensorBoardLog(output_dir, start_iter, cfg) if cfg.train.tensorboard and is_main_process() else None
    with StopSignals() as stop:
        _loop(ddp_model, loader, start_iter, output_dir, state, stop)

    save_training_checkpoint(output_dir / "model_final.pth", cfg.train.max_iter, state)
    broadcast_batchnorm_statistics(model)
    report = evaluate_model(model, cfg, output_dir, device)
    metrics = report.metrics if report else None
    state["skipped"].report(output_dir, metrics)
    if state["board"]:
        state["board"].evaluation(cfg.train.max_iter, report, output_dir)
        state["board"].close()
    return metrics


class TrainingStopped(Exception):
    """Training stopped on SIGTERM or SIGINT, after saving a checkpoint that ``--resume`` continues from."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} after iteration {iteration}; saved {checkpoint}")


class StopSignals:
    """Within ``with``, SIGTERM and SIGINT are noted in ``received`` rather than ending the process.

    The loop then saves and stops after its step. A second such signal acts as
    usual. Handlers can only be set in the main thread; elsewhere nothing changes.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = 0  # the signal's number; 0 while none came
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _loop(ddp_model: nn.Module, loader, start_iter: int, output_dir: Path, state: dict, stop: StopSignals) -> None:
    cfg: Config = state["cfg"]
    device: torch.device = state["device"]
    params = [p for p in ddp_model.parameters() if p.requires_grad]
    main = is_main_process()
    log = (output_dir / "log.jsonl").open("a") if main else None
    bar = tqdm(total=cfg.train.max_iter, initial=start_iter, desc="train", unit="it", disable=not main, dynamic_ncols=True)
    ddp_model.train()
    batches = start_workers(loader)
    window = LossWindow()
    try:
        for iteration in range(start_iter, cfg.train.max_iter):
            tick = time.perf_counter()
            images, targets = next(batches)
            state["skipped"].update(targets)
            image_ids = [t["image_id"] for t in targets]
            images, targets = batch_to_device(images, targets, device)
            data_time = time.perf_counter() - tick
            lr = state["optimizer"].param_groups[0]["lr"]  # the rate this iteration's update uses
            losses = _step(ddp_model, images, targets, state, params)
            done = iteration + 1
            values = torch.stack([v.detach().float() for v in losses.values()])
            nonfinite, signum = _agree(values, stop.received)
            if nonfinite:
                _raise_non_finite(done, losses, image_ids, state["dataset"])
            window.add(losses.keys(), values, time.perf_counter() - tick, data_time)
            if done % cfg.train.log_period == 0 or done == cfg.train.max_iter or signum:
                record = {**_log_record(done, window.means(), lr, device), **state["skipped"].log_fields()}
                if main:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if state["board"]:
                        state["board"].log(record)
                    bar.set_postfix(loss=f"{record['total_loss']:.3f}", lr=f"{record['lr']:.2g}")
            bar.update(1)
            if signum and done < cfg.train.max_iter:
                path = output_dir / checkpoint_name(done)
                save_training_checkpoint(path, done, state, cfg.train.keep_checkpoints)
                raise TrainingStopped(signum, done, path)
            if cfg.train.checkpoint_period and done % cfg.train.checkpoint_period == 0 and done < cfg.train.max_iter:
                save_training_checkpoint(output_dir / checkpoint_name(done), done, state, cfg.train.keep_checkpoints)
            if cfg.train.eval_period and done % cfg.train.eval_period == 0 and done < cfg.train.max_iter:
                broadcast_batchnorm_statistics(state["model"])
                report = evaluate_model(state["model"], cfg, output_dir / f"eval_{done:07d}", device)
                if state["board"]:
                    state["board"].evaluation(done, report, output_dir / f"eval_{done:07d}")
                ddp_model.train()
    finally:
        stop_workers(batches)
        bar.close()
        if log:
            log.close()


def batch_to_device(images: list[Tensor], targets: list[dict[str, Any]], device: torch.device) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """A loader's batch as the model trains on it: float images, and boxes and labels, on ``device``."""
    # From pinned memory on CUDA these copies do not wait for the previous step; uint8 is a
    # quarter of the bytes, and the conversion to float runs on the device.
    images = [to_float_image(i.to(device, non_blocking=True)) for i in images]
    return images, [{k: t[k].to(device, non_blocking=True) for k in ("boxes", "labels")} for t in targets]


def _step(ddp_model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], state: dict, params: list[Tensor]) -> dict[str, Tensor]:
    """One SGD update on a batch; returns the losses."""
    cfg: Config = state["cfg"]
    optimizer, scaler = state["optimizer"], state["scaler"]
    with autocast(state["device"], cfg.train.amp):
        losses = ddp_model(images, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(sum(losses.values())).backward()
    if cfg.train.clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    state["scheduler"].step()
    return losses


def _agree(losses: Tensor, signum: int) -> tuple[bool, int]:
    """Whether any process's ``losses`` are non-finite, and a stop signal any process received (0: none).

    One all-reduce a step, so that every process stops at the same iteration:
    a signal may reach one process only, and a process that left alone would
    leave the others waiting in the next collective. Reading its result is the
    loop's one wait for the device per step (under fp16, GradScaler.step reads
    its inf check too); the status is built on the device, since a blocking copy
    from the host would be another.
    """
    status = torch.zeros(2, dtype=torch.int64, device=losses.device)
    status[0] = (~torch.isfinite(losses)).any()
    status[1] = signum
    nonfinite, signum = reduce_over_processes(status, dist.ReduceOp.MAX).tolist()
    return bool(nonfinite), signum


class LossWindow:
    """The losses and times of the iterations since the last log record, kept where they were computed.

    Losses are summed on their device and averaged over processes only when
    logged, so an iteration waits for no other process on their account.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sums: Tensor | None = None
        self.times: list[tuple[float, float]] = []

    def add(self, names: Iterable[str], values: Tensor, step_time: float, data_time: float) -> None:
        self.names = list(names)
        self.sums = values if self.sums is None else self.sums + values
        self.times.append((step_time, data_time))

    def means(self) -> dict[str, float]:
        """Each loss averaged over the window's iterations and all processes, ``total_loss``, this
        process's mean ``time`` and ``data_time``; then empties the window."""
        assert self.sums is not None, "no iteration since the last record"
        sums = reduce_over_processes(self.sums.clone(), dist.ReduceOp.SUM) / (len(self.times) * world_size())
        means = dict(zip(self.names, sums.tolist()))
        means["total_loss"] = sum(means.values())
        means["time"] = sum(t for t, _ in self.times) / len(self.times)
        means["data_time"] = sum(d for _, d in self.times) / len(self.times)
        self.sums, self.times = None, []
        return means


def _raise_non_finite(iteration: int, losses: dict[str, Tensor], image_ids: list[Any], dataset: DetectionDataset) -> None:
    """Raises on every process, naming each process's non-finite losses and its batch's images."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    problem = None
    if not all(math.isfinite(v) for v in values.values()):
        file_names = {}
        for index in range(len(dataset)):
            info = dataset.image_info(index)
            file_names[info["image_id"]] = info["file_name"]
        images = ", ".join(f"{i} ({file_names[i]})" for i in image_ids)
        where = f"rank {dist.get_rank()}: " if world_size() > 1 else ""
        problem = f"{where}losses {values}, images {images}"
    problems = "; ".join(p for p in all_gather_objects(problem) if p)
    raise FloatingPointError(
        f"non-finite loss at iteration {iteration}: {problems}; lower train.base_lr or set train.clip_grad_norm"
    )


def _log_record(iteration: int, means: dict[str, float], lr: float, device: torch.device) -> dict[str, float]:
    record = {"iteration": iteration, "lr": lr, **means}
    if device.type == "cuda":
        record["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        record["memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return record
