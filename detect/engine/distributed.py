"""torch.distributed under torchrun: process group set-up, the data-parallel model, gathering results."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# BatchNorm whose running statistics each process updates from its own share of the batch.
LOCAL_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """Joins the process group torchrun describes; returns ``(rank, world_size, local_rank)``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, 0
    local_rank = int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), world_size, local_rank


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (a one-element list without a process group)."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def reduce_over_processes(tensor: Tensor, op: dist.ReduceOp.RedOpType) -> Tensor:
    """``tensor`` reduced in place with ``op`` over all processes (unchanged in a single process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op)
    return tensor


def distributed_model(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """Wraps ``model`` for data-parallel training, after :func:`batchnorm_for_ddp`."""
    model, sync_buffers = batchnorm_for_ddp(model, device.type)
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=sync_buffers
    )


def batchnorm_for_ddp(model: nn.Module, device_type: str) -> tuple[nn.Module, bool]:
    """Makes BatchNorm synchronised where PyTorch can; says whether buffers need broadcasting every step.

    On CUDA, BatchNorm becomes SyncBatchNorm: statistics over the batch of all
    processes, the same on each. PyTorch has no SyncBatchNorm on the CPU: there
    each process normalises its own share, and rank 0's running statistics must
    be broadcast before every forward. Frozen BatchNorm and GroupNorm buffers
    never change, and SyncBatchNorm's are the same everywhere, so then buffers
    are broadcast only once, when DDP starts.

    Returns:
        The model (the same object unless it is itself a BatchNorm layer; parameters
        and buffers stay the same objects) and whether to broadcast buffers every step.
    """
    if device_type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, any(isinstance(m, LOCAL_BATCHNORM) and m.track_running_stats for m in model.modules())


def broadcast_batchnorm_statistics(model: nn.Module) -> None:
    """Gives every process rank 0's BatchNorm running statistics, so all evaluate rank 0's model.

    DDP broadcasts them before a forward, and that forward then updates each
    process's copy from its own share.
    """
    if world_size() == 1:
        return
    for module in model.modules():
        if isinstance(module, LOCAL_BATCHNORM) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                dist.broadcast(buffer, 0)


def resume_command(argv: list[str]) -> str:
    """The command line that continues the run this process belongs to: its own with ``--resume``.

    Args:
        argv: this process's ``sys.argv``, the script first.
    """
    args = [*argv, "--resume"] if "--resume" not in argv else list(argv)
    if "TORCHELASTIC_RUN_ID" not in os.environ:  # not started by torchrun
        return shlex.join([sys.executable, *args])
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", "1"))
    launcher = ["torchrun", "--nproc_per_node", os.environ["LOCAL_WORLD_SIZE"]]
    if nodes > 1:
        return shlex.join([*launcher, "--nnodes", str(nodes)]) + " <rendezvous options> " + shlex.join(args) + " (on every node)"
    return shlex.join([*launcher, *args])
