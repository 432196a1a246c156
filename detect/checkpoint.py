"""Checkpoint files: written atomically, self-describing, checked on load.

A checkpoint is a dict with ``format``, ``model`` (state dict), ``classes``
({category id: name}), ``config`` (the resolved config as a dict) and, for
training checkpoints, ``iteration``, ``optimizer``, ``scheduler``, ``scaler``
and ``rng`` so that training resumes exactly where it stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

FORMAT = "detect/1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing or not a detect checkpoint."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Writes ``checkpoint`` to ``path`` atomically (see :func:`write_atomically`)."""
    write_atomically(path, lambda f: torch.save({"format": FORMAT, **checkpoint}, f))


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write`` on a temporary file beside ``path``, then renames it to ``path``.

    A process killed meanwhile, even by SIGKILL, leaves the previous ``path``
    whole; only the temporary ``.NAME.PID.tmp`` remains (see
    :func:`remove_partial_files`). The file gets the mode the umask gives, as
    every other output does.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Deletes what writers killed in :func:`write_atomically` left in ``folder``; returns those files."""
    partial = sorted(Path(folder).glob(".*.*.tmp"))
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a detect checkpoint (no format {FORMAT!r}); "
            "convert torchvision detection checkpoints with tools/convert_torchvision.py"
        )
    for key in ("model", "classes"):
        if key not in checkpoint:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return checkpoint
