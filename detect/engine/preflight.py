"""What training checks before its first iteration, and the images it left out on the way.

Everything a user can get wrong outside the config (folders, annotation files,
image files, the output folder) is checked before a model is built, so a mistake
costs seconds rather than a training run.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detect.config import Config
from detect.data.build import Dataset, build_dataset
from detect.data.checks import check_image_files
from detect.engine.distributed import all_gather_objects, is_main_process
from detect.evaluation.coco import save_metrics


def check_before_training(cfg: Config, train_dataset: Dataset) -> None:
    """Checks the output folder, both splits' annotation files and image files, and the schedule.

    Raises:
        ValueError: the output folder cannot be written.
        FileNotFoundError, ImageReadError, ValueError: a folder, annotation file or
            image file of ``data.train`` or ``data.val`` is missing or unusable.
    """
    check_image_files(train_dataset, "data.train", cfg.data.bad_images)
    # Evaluation scores every image, so a bad one there is always an error.
    check_image_files(build_dataset(cfg.data.val, cfg.data, is_train=False), "data.val", "error")
    check_writable(Path(cfg.output_dir))  # last: it creates the folder
    if cfg.train.warmup_iters >= cfg.train.max_iter:
        warnings.warn(
            f"train.warmup_iters={cfg.train.warmup_iters} >= train.max_iter={cfg.train.max_iter}: the learning rate "
            "never reaches train.base_lr",
            stacklevel=2,
        )


def check_writable(folder: Path) -> None:
    """Creates ``folder`` if needed and writes (then removes) a file in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test"):
            pass
    except OSError as e:
        raise ValueError(f"output_dir = {folder}: cannot write there ({e.strerror or e})") from None


class SkippedImages:
    """The training images left out under ``data.bad_images=skip``, each named once when first met."""

    def __init__(self, bad_images: str) -> None:
        self.skip = bad_images == "skip"
        self.messages: dict[str, None] = {}  # insertion-ordered set
        self._unlogged: list[str] = []

    def __len__(self) -> int:
        return len(self.messages)

    def log_fields(self) -> dict[str, Any]:
        """For a log.jsonl record under ``skip``: the count so far and the images first met since the last record."""
        if not self.skip:
            return {}
        fields = {"skipped_images": len(self.messages), "skipped": self._unlogged}
        self._unlogged = []
        return fields

    def update(self, targets: list[dict[str, Any]]) -> None:
        """Takes note of the ``skipped`` messages of a batch's targets."""
        for target in targets:
            for message in target.get("skipped", ()):
                if message not in self.messages:
                    self.messages[message] = None
                    self._unlogged.append(message)
                    tqdm.write(f"skipped: {message}", file=sys.stderr)  # keeps a live progress bar intact

    def report(self, output_dir: Path, metrics: dict[str, Any] | None) -> None:
        """Under ``skip``, all processes' count: printed, and added to ``metrics`` and metrics.json (main process)."""
        if not self.skip:
            return
        names = set().union(*all_gather_objects(list(self.messages)))
        if not is_main_process():
            return
        if names:
            print(f"training left out {len(names)} unusable images (data.bad_images=skip), named above")
        save_metrics({"skipped_images": len(names)}, output_dir / "metrics.json")
        if metrics is not None:
            metrics["skipped_images"] = len(names)
