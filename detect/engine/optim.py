"""The optimizer (SGD or AdamW) with per-group weight decay, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from detect.config import LR_SCHEDULES, OPTIMIZERS, TrainConfig

NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW; norm scales/shifts and biases get their own weight decay."""
    groups: dict[str, list[nn.Parameter]] = {"norm": [], "bias": [], "weight": []}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            kind = "norm" if isinstance(module, NORM_TYPES) else "bias" if name == "bias" else "weight"
            groups[kind].append(param)
    decay = {"norm": cfg.weight_decay_norm, "bias": cfg.weight_decay_bias, "weight": cfg.weight_decay}
    param_groups = [{"params": params, "weight_decay": decay[kind]} for kind, params in groups.items() if params]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.base_lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.base_lr)
    raise ValueError(f"unknown train.optimizer {cfg.optimizer!r}; known: {', '.join(map(repr, OPTIMIZERS))}")


def lr_factor(cfg: TrainConfig, iteration: int) -> float:
    """Multiplier of ``base_lr`` at ``iteration``: linear warm-up times step or cosine decay."""
    if cfg.lr_schedule == "step":
        decay = cfg.gamma ** sum(iteration >= s for s in cfg.steps)
    elif cfg.lr_schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(iteration, cfg.max_iter) / cfg.max_iter))
    else:
        raise ValueError(f"unknown train.lr_schedule {cfg.lr_schedule!r}; known: {', '.join(map(repr, LR_SCHEDULES))}")
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        decay *= cfg.warmup_factor * (1 - alpha) + alpha
    return decay


def build_lr_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(cfg, 0)  # fail on a bad schedule name now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it))
