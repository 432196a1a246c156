"""The training loop: SGD iterations, logging, checkpoints, evaluation, resuming."""

from __future__ import annotations

import json
import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from detect.checkpoint import load_checkpoint, save_checkpoint
from detect.config import Config, config_to_dict, save_config
from detect.data.build import build_dataset, dataset_classes
from detect.data.loader import build_train_loader
from detect.engine.distributed import init_distributed, is_main_process, world_size
from detect.engine.inference import autocast, evaluate_model
from detect.engine.optim import build_lr_scheduler, build_optimizer
from detect.models import FasterRCNN, build_model
from detect.models.build import require_backbone_weights

LAST_CHECKPOINT = "last_checkpoint"  # a text file naming the newest checkpoint of a run


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
    checkpoints (``model_final.pth`` at the end) and ``metrics.json``.

    Returns:
        The final metrics on the main process, else None.
    """
    output_dir = Path(cfg.output_dir)
    device = resolve_device(cfg.train.device)
    rank, num_processes, local_rank = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if cfg.train.batch_size % num_processes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} does not split over {num_processes} processes")
    seed_everything(cfg.train.seed + rank)
    if device.type == "cpu":
        # Gradients of a network trained from scratch underflow into denormals, which x86 CPUs
        # compute many times slower; measured: fp32 steps varied 2.5-8.5 s, flushed a steady 2.5 s.
        torch.set_flush_denormal(True)

    require_backbone_weights(cfg.model)
    dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
    model = build_model(cfg, dataset_classes(dataset)).to(device)
    cfg.model.classes = model.categories.to_dict()  # the saved config then builds this model alone
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.train, model)
    scheduler = build_lr_scheduler(cfg.train, optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")

    start_iter = _resume(output_dir, model, optimizer, scheduler, scaler) if resume else 0
    if is_main_process():
        save_config(cfg, output_dir / "config.py")
    ddp_model: nn.Module = model
    if num_processes > 1:
        ddp_model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    loader = build_train_loader(
        dataset, cfg.train.batch_size // num_processes, cfg.data.num_workers, cfg.data.aspect_ratio_grouping,
        cfg.train.seed, start_batch=start_iter,
    )
    state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "cfg": cfg}
    _loop(ddp_model, loader, device, start_iter, output_dir, state)

    if is_main_process():
        _save(output_dir / "model_final.pth", cfg.train.max_iter, state)
    report = evaluate_model(model, cfg, output_dir, device)
    return report.metrics if report else None


def _loop(ddp_model: nn.Module, loader, device: torch.device, start_iter: int, output_dir: Path, state: dict) -> None:
    cfg: Config = state["cfg"]
    optimizer, scheduler, scaler = state["optimizer"], state["scheduler"], state["scaler"]
    params = [p for p in ddp_model.parameters() if p.requires_grad]
    main = is_main_process()
    log = (output_dir / "log.jsonl").open("a") if main else None
    bar = tqdm(total=cfg.train.max_iter, initial=start_iter, desc="train", unit="it", disable=not main, dynamic_ncols=True)
    ddp_model.train()
    batches = iter(loader)
    window: list[dict[str, float]] = []
    for iteration in range(start_iter, cfg.train.max_iter):
        tick = time.perf_counter()
        images, targets = next(batches)
        images = [i.to(device, non_blocking=True) for i in images]
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
        data_time = time.perf_counter() - tick
        lr = optimizer.param_groups[0]["lr"]  # the rate this iteration's update uses
        with autocast(device, cfg.train.amp):
            losses = ddp_model(images, targets)
        total = sum(losses.values())
        _check_finite(losses, iteration + 1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if cfg.train.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        window.append({**_mean_over_processes(losses), "time": time.perf_counter() - tick, "data_time": data_time})
        done = iteration + 1
        if main and (done % cfg.train.log_period == 0 or done == cfg.train.max_iter):
            record = _log_record(done, window, lr, device)
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{record['total_loss']:.3f}", lr=f"{record['lr']:.2g}")
            window.clear()
        bar.update(1)
        if main and cfg.train.checkpoint_period and done % cfg.train.checkpoint_period == 0 and done < cfg.train.max_iter:
            _save(output_dir / f"model_{done:07d}.pth", done, state)
        if cfg.train.eval_period and done % cfg.train.eval_period == 0 and done < cfg.train.max_iter:
            evaluate_model(state["model"], cfg, output_dir / f"eval_{done:07d}", device)
            ddp_model.train()
    bar.close()
    if log:
        log.close()


def _check_finite(losses: dict[str, Tensor], iteration: int) -> None:
    if not all(torch.isfinite(v).all() for v in losses.values()):
        values = {k: float(v.detach()) for k, v in losses.items()}
        raise FloatingPointError(f"non-finite loss at iteration {iteration}: {values}; lower train.base_lr or set train.clip_grad_norm")


def _mean_over_processes(losses: dict[str, Tensor]) -> dict[str, float]:
    values = torch.stack([v.detach().float() for v in losses.values()])
    if world_size() > 1:
        dist.all_reduce(values)
        values /= world_size()
    means = dict(zip(losses, values.tolist()))
    means["total_loss"] = sum(means.values())
    return means


def _log_record(iteration: int, window: list[dict[str, float]], lr: float, device: torch.device) -> dict[str, float]:
    record = {"iteration": iteration, "lr": lr}
    for key in window[0]:
        record[key] = sum(w[key] for w in window) / len(window)
    if device.type == "cuda":
        record["memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        record["memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return record


def _save(path: Path, iteration: int, state: dict) -> None:
    model: FasterRCNN = state["model"]
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "classes": model.categories.to_dict(),
            "config": config_to_dict(state["cfg"]),
            "iteration": iteration,
            "optimizer": state["optimizer"].state_dict(),
            "scheduler": state["scheduler"].state_dict(),
            "scaler": state["scaler"].state_dict(),
            "rng": _rng_state(),
        },
    )
    (path.parent / LAST_CHECKPOINT).write_text(path.name)


def _resume(output_dir: Path, model: nn.Module, optimizer, scheduler, scaler) -> int:
    """Loads the run's newest checkpoint; returns the iteration to continue from (0 if there is none)."""
    pointer = output_dir / LAST_CHECKPOINT
    if not pointer.exists():
        print(f"no checkpoint in {output_dir} to resume from; starting at iteration 0")
        return 0
    checkpoint = load_checkpoint(output_dir / pointer.read_text().strip())
    if "optimizer" not in checkpoint:
        raise ValueError(f"{pointer.read_text().strip()} holds weights only; cannot resume training from it")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    _set_rng_state(checkpoint["rng"])
    _truncate_log(output_dir / "log.jsonl", int(checkpoint["iteration"]))
    print(f"resuming from {pointer.read_text().strip()} at iteration {checkpoint['iteration']}")
    return int(checkpoint["iteration"])


def _truncate_log(path: Path, iteration: int) -> None:
    """Drops records past ``iteration``: the interrupted run logged them, the resumed run logs them again."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["iteration"] <= iteration]
        path.write_text("".join(line + "\n" for line in kept))


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
