"""Galleries for looking at data and results: a dataset's ground truth, and a model's errors worst first.

Galleries are lists of ``(file name, uint8 (H, W, 3) RGB)`` pairs, drawn with
:mod:`detect.visualize`; writing them is :func:`write_gallery`. File names start
with the item's rank or index (``003_000000000036.jpg``), so that a file browser
lists them in order and images of the same name from different folders stay apart.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from detect.data.build import Dataset, dataset_classes
from detect.data.image_io import read_image, write_image
from detect.evaluation.dataset import results_to_predictions
from detect.evaluation.errors import DetectionKind, ImageErrors, classify_detections
from detect.visualize import draw_detections, draw_errors, make_grid

Gallery = list[tuple[str, np.ndarray]]
MAX_CELL = 400  # longest side of a contact-sheet cell, pixels


def _gallery_name(rank: int, file_name: str) -> str:
    return f"{rank:03d}_{Path(file_name).name}"


def draw_ground_truth(dataset: Dataset, num: int) -> Gallery:
    """The first ``num`` items of ``dataset`` with their ground-truth boxes, named by class.

    Items are drawn as the dataset yields them, i.e. after its transforms when it has
    any, so a dataset built for training shows what the model is trained on.
    """
    names = dataset_classes(dataset)
    gallery = []
    for index in range(min(num, len(dataset))):
        image, target = dataset[index]
        drawn = draw_detections(image, target["boxes"], target["labels"], class_names=names)
        gallery.append((_gallery_name(index, dataset.image_info(index)["file_name"]), drawn))
    return gallery


@dataclass(frozen=True)
class RankedImage:
    """One image's error analysis; ``index`` is its position in the dataset."""

    index: int
    image_id: Union[int, str]
    file_name: str
    errors: ImageErrors


def rank_errors(dataset: Dataset, results: list[dict[str, Any]], iou_thresh: float, score_thresh: float) -> list[RankedImage]:
    """Classifies the detections of every image of ``dataset``; the worst images first.

    Images are ordered by ``ImageErrors.error_score`` (false positives plus missed
    objects), descending; ties keep the dataset order.

    Args:
        results: COCO-format detections (``detections.json``) with the dataset's image ids.
        iou_thresh, score_thresh: as in :func:`detect.evaluation.errors.classify_detections`.

    Raises:
        ValueError: a detection names an image the dataset lacks.
    """
    predictions = results_to_predictions(results)
    known = {dataset.image_info(i)["image_id"] for i in range(len(dataset))}
    unknown = sorted((str(i) for i in set(predictions) - known))
    if unknown:
        raise ValueError(f"detections refer to {len(unknown)} image ids the dataset lacks, e.g. {', '.join(unknown[:5])}")
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    ranked = []
    for index in range(len(dataset)):
        info, target = dataset.image_info(index), dataset.annotations(index)
        det = predictions.get(info["image_id"], empty)
        errors = classify_detections(
            target["boxes"], target["labels"], det["boxes"], det["scores"], det["labels"], iou_thresh, score_thresh
        )
        ranked.append(RankedImage(index, info["image_id"], info["file_name"], errors))
    ranked.sort(key=lambda r: -r.errors.error_score)  # sort is stable: ties keep the dataset order
    return ranked


def draw_ranked_errors(dataset: Dataset, ranked: Sequence[RankedImage], num: int) -> Gallery:
    """The first ``num`` of ``ranked`` drawn with ``draw_errors``, named by rank."""
    names = dataset_classes(dataset)
    gallery = []
    for rank, item in enumerate(ranked[:num]):
        rgb = read_image(dataset.image_info(item.index)["path"])
        gallery.append((_gallery_name(rank, item.file_name), draw_errors(rgb, item.errors, names)))
    return gallery


def error_summary(dataset: Dataset, ranked: Sequence[RankedImage], num_listed: int) -> dict[str, Any]:
    """Counts per error kind, overall and per class, and the ``num_listed`` worst images (JSON-ready).

    A detection counts for the class it predicted; a missed object for its true class.
    """
    names = dataset_classes(dataset)
    kinds = [k.value for k in DetectionKind] + ["missed"]
    total: Counter[str] = Counter()
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    for item in ranked:
        e = item.errors
        for kind, label in zip(e.det_kinds, e.det_labels.tolist()):
            total[kind.value] += 1
            per_class[names.get(label, str(label))][kind.value] += 1
        for label in e.gt_labels[e.gt_missed].tolist():
            total["missed"] += 1
            per_class[names.get(label, str(label))]["missed"] += 1
    return {
        "images": len(ranked),
        "detections": sum(len(r.errors.det_kinds) for r in ranked),
        "ground_truth": sum(len(r.errors.gt_labels) for r in ranked),
        "counts": {k: total[k] for k in kinds},
        "per_class": {name: {k: per_class[name][k] for k in kinds} for name in names.values() if name in per_class},
        "worst": [
            {
                "rank": rank,
                "file": _gallery_name(rank, r.file_name),
                "image_id": r.image_id,
                "error_score": r.errors.error_score,
                "false_positives": r.errors.num_false_positives,
                "missed": r.errors.num_missed,
            }
            for rank, r in enumerate(ranked[:num_listed])
        ],
    }


def contact_sheet(gallery: Gallery) -> np.ndarray:
    """The gallery's images on one near-square grid, cells no larger than ``MAX_CELL`` pixels a side."""
    if not gallery:
        raise ValueError("nothing to put on a contact sheet: the gallery is empty")
    images = [image for _, image in gallery]
    cell_h, cell_w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    scale = min(1.0, MAX_CELL / max(cell_h, cell_w))
    cols = math.ceil(math.sqrt(len(images)))
    return make_grid(images, cols, cell_size=(max(1, round(cell_h * scale)), max(1, round(cell_w * scale))))


def write_gallery(gallery: Gallery, output_dir: Path) -> list[Path]:
    """Writes each image under ``output_dir`` by its name; returns the paths."""
    paths = []
    for name, image in gallery:
        write_image(output_dir / name, image)
        paths.append(output_dir / name)
    return paths
