"""What a training run saves so that it can continue exactly: checkpoints, the pointer to the newest, resuming.

A training checkpoint holds, beside the weights, the optimizer, schedule and
gradient-scaler states and the random-number states of every process (Python,
NumPy, torch, and CUDA's where present), in rank order. The data order and the
augmentation continue from the iteration alone (see :mod:`detect.data.loader`).
"""

from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detect.checkpoint import load_checkpoint, remove_partial_files, save_checkpoint, write_atomically
from detect.config import config_to_dict
from detect.engine.distributed import all_gather_objects, is_main_process, world_size

LAST_CHECKPOINT = "last_checkpoint"  # a text file naming the newest checkpoint of a run
PERIODIC = re.compile(r"model_(\d{7})\.pth")  # model_final.pth is not periodic


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


def save_training_checkpoint(path: Path, iteration: int, state: dict[str, Any], keep: int = 0) -> None:
    """Saves the run at ``iteration`` and points ``last_checkpoint`` at it.

    Every process must call it: each contributes its random-number states; the
    main process writes. The checkpoint is complete on disk when any process returns.

    Args:
        state: ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``cfg`` and ``device``.
        keep: periodic checkpoints to keep, newest first; 0 keeps all.
    """
    rng = all_gather_objects(rng_state(state["device"]))
    if is_main_process():
        model = state["model"]
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
                "rng": rng,
            },
        )
        write_atomically(path.parent / LAST_CHECKPOINT, lambda f: f.write(path.name.encode()))
        if keep:
            prune_checkpoints(path.parent, keep)
    if world_size() > 1:
        torch.distributed.barrier()  # no process leaves, and perhaps exits, before the file is written


def prune_checkpoints(folder: Path, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` periodic checkpoints in ``folder``; returns the deleted ones."""
    periodic = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := PERIODIC.fullmatch(p.name)))
    deleted = [p for _, p in periodic[: max(0, len(periodic) - keep)]]
    for path in deleted:
        path.unlink()
    return deleted


def resume_training(output_dir: Path, state: dict[str, Any]) -> int:
    """Loads the run's newest checkpoint into ``state``; returns the iteration to continue from (0 if none).

    Every process loads the file and restores its own random-number states.
    """
    pointer = output_dir / LAST_CHECKPOINT
    main = is_main_process()
    if not pointer.exists():
        if main:
            print(f"no checkpoint in {output_dir} to resume from; starting at iteration 0")
        return 0
    name = pointer.read_text().strip()
    checkpoint = load_checkpoint(output_dir / name)
    if "optimizer" not in checkpoint:
        raise ValueError(f"{output_dir / name} holds weights only; cannot resume training from it")
    state["model"].load_state_dict(checkpoint["model"])
    state["optimizer"].load_state_dict(checkpoint["optimizer"])
    state["scheduler"].load_state_dict(checkpoint["scheduler"])
    state["scaler"].load_state_dict(checkpoint["scaler"])
    iteration = int(checkpoint["iteration"])
    _restore_rng(checkpoint["rng"], state["device"], name)
    if main:
        for partial in remove_partial_files(output_dir):
            print(f"removed {partial.name}, a checkpoint whose writing was interrupted")
        _truncate_log(output_dir / "log.jsonl", iteration)
        print(f"resuming from {name} at iteration {iteration}")
    return iteration


def _restore_rng(states: list[dict[str, Any]] | dict[str, Any], device: torch.device, name: str) -> None:
    if isinstance(states, dict):
        states = [states]  # saved before every process's states were kept
    rank = torch.distributed.get_rank() if world_size() > 1 else 0
    if len(states) != world_size():
        # The model's sampling then draws other random numbers than an uninterrupted run would.
        warnings.warn(f"{name} was saved by {len(states)} processes, resumed by {world_size()}: "
                      "random-number states start afresh", stacklevel=3)
        return
    set_rng_state(states[rank], device)


def _truncate_log(path: Path, iteration: int) -> None:
    """Drops records past ``iteration``: the interrupted run logged them, the resumed run logs them again."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["iteration"] <= iteration]
        path.write_text("".join(line + "\n" for line in kept))


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random-number states: Python, NumPy, torch's CPU generator and ``device``'s if CUDA."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)

