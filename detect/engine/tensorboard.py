"""TensorBoard event files of a training run, written beside its log.jsonl (``train.tensorboard=True``).

Optional: needs the ``tensorboard`` package (``pip install -e .[tensorboard]``); nothing
else in detect imports it. Only the main process writes. The step of every event is
the iteration. Tags:

- ``loss/<name>``: each loss term and ``total_loss``, means over the log window as in log.jsonl;
- ``train/lr``, ``train/seconds_per_iteration``, ``train/data_seconds``, ``train/memory_mb``;
- ``eval/AP``, ``eval/AP50``, ``eval/AP75``, ``eval/APs``, ``eval/APm``, ``eval/APl`` (those that
  exist, 0-100) and on VOC data ``eval/voc_mAP``, ``eval/voc_mAP_11point``;
- ``eval_per_class/<class name>``: the class's COCO AP;
- ``detections/<file name>``: the first ``NUM_IMAGES`` validation images with the
  evaluation's detections scoring at least ``SCORE_THRESH``, drawn by :mod:`detect.visualize`.

A resumed run appends a new event file to the same folder whose first event tells
TensorBoard to drop the earlier files' events from the resumed iteration on, so no step
is shown twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detect.config import Config, ConfigError
from detect.data.build import Dataset, build_dataset, dataset_classes
from detect.data.image_io import read_image
from detect.evaluation.coco import load_results
from detect.evaluation.dataset import EvaluationReport, results_to_predictions
from detect.visualize import draw_detections

NUM_IMAGES = 4
SCORE_THRESH = 0.5  # as the README's predictions.png
# log.jsonl key -> tag; loss terms go to loss/<key>, keys not listed here to train/<key>.
TRAIN_TAGS = {
    "lr": "train/lr",
    "time": "train/seconds_per_iteration",
    "data_time": "train/data_seconds",
    "memory_mb": "train/memory_mb",
}


class TensorBoardLog:
    """The event files of one run, in ``output_dir``.

    Args:
        output_dir: the run folder.
        start_iter: the iteration training starts after (0, or the resumed checkpoint's);
            events of later iterations already in ``output_dir`` are superseded.
        cfg: the run's config; its ``data.val`` gives the drawn validation images.

    Raises:
        ConfigError: the tensorboard package is not installed.
    """

    def __init__(self, output_dir: Path, start_iter: int, cfg: Config) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            message = "train.tensorboard=True needs the tensorboard package: pip install -e .[tensorboard]"
            raise ConfigError(message) from None
        self.writer = SummaryWriter(log_dir=str(output_dir), purge_step=start_iter + 1)
        self.val = build_dataset(cfg.data.val, cfg.data, is_train=False)

    def log(self, record: dict[str, Any]) -> None:
        """One log.jsonl record: its ``iteration`` is the step of every other key's scalar."""
        step = record["iteration"]
        for key, value in record.items():
            if key != "iteration":
                tag = f"loss/{key}" if "loss" in key else TRAIN_TAGS.get(key, f"train/{key}")
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # an interrupted run keeps what it logged

    def evaluation(self, iteration: int, report: EvaluationReport, eval_dir: Path) -> None:
        """The metrics of ``report`` and the validation images with the detections in ``eval_dir``."""
        bbox = report.metrics["bbox"]
        for name, value in bbox.items():
            if name != "per_class" and value is not None:
                self.writer.add_scalar(f"eval/{name}", value, iteration)
        for name in ("mAP", "mAP_11point"):
            if report.metrics.get("voc", {}).get(name) is not None:
                self.writer.add_scalar(f"eval/voc_{name}", report.metrics["voc"][name], iteration)
        for name, value in bbox["per_class"].items():
            self.writer.add_scalar(f"eval_per_class/{name}", value, iteration)
        for name, image in _draw_validation_images(self.val, load_results(eval_dir / "detections.json"), NUM_IMAGES):
            self.writer.add_image(f"detections/{name}", image, iteration, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _draw_validation_images(dataset: Dataset, results: list[dict[str, Any]], num: int) -> list[tuple[str, np.ndarray]]:
    """The first ``num`` images of ``dataset``, named by file, with ``results`` (COCO format)
    scoring at least ``SCORE_THRESH`` drawn on them: ``(file name, uint8 [H, W, 3] RGB)`` pairs."""
    infos = [dataset.image_info(i) for i in range(min(num, len(dataset)))]
    ids = {info["image_id"] for info in infos}
    predictions = results_to_predictions([r for r in results if r["image_id"] in ids and r["score"] >= SCORE_THRESH])
    names = dataset_classes(dataset)
    drawn = []
    for info in infos:
        found = predictions.get(info["image_id"], {"boxes": [], "labels": [], "scores": []})
        image = draw_detections(read_image(info["path"]), found["boxes"], found["labels"], found["scores"], names)
        drawn.append((Path(info["file_name"]).name, image))
    return drawn
