"""Checkpoint files: written atomically, self-describing, checked on load.

A checkpoint is a dict with ``format``, ``model`` (state dict), ``classes``
({category id: name}), ``config`` (the resolved config as a dict) and, for
training checkpoints, ``iteration``, ``optimizer``, ``scheduler``, ``scaler``
and ``rng`` so that training resumes exactly where it stopped.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "detect/1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing or not a detect checkpoint."""


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Writes to a temporary file beside ``path`` and renames it, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **checkpoint}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
