"""Evaluating detections on the dataset they were made for: COCO AP, and for VOC also the devkit's AP."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor

from detect.data.coco import CocoDetection
from detect.data.voc import VOCDetection, coco_image_id, voc_to_coco
from detect.evaluation.coco import evaluate_coco
from detect.evaluation.voc import evaluate_voc, format_voc_table

Dataset = Union[CocoDetection, VOCDetection]


@dataclass(frozen=True)
class EvaluationReport:
    """``metrics``: the content of metrics.json; ``text``: what a person reads;
    ``curves``: precision-recall curves (see detect.evaluation.coco.precision_recall_curves)."""

    metrics: dict[str, Any]
    text: str
    curves: dict[str, Any]


def evaluate_detections(dataset: Dataset, results: list[dict[str, Any]]) -> EvaluationReport:
    """Scores COCO-format ``results`` (the dataset's image and category ids) against ``dataset``.

    Detections of categories the dataset does not have are left out, as
    COCO's evaluation does (a model may know more classes than the data).
    """
    known = set(dataset.categories)
    results = [r for r in results if r["category_id"] in known]
    names = dict(sorted(dataset.categories.items()))
    if isinstance(dataset, VOCDetection):
        return _evaluate_voc(dataset, results, names)
    coco = evaluate_coco(dataset.load_coco(), results, names)
    return EvaluationReport(coco.to_json(), coco.summary, coco.curves)


def _evaluate_voc(dataset: VOCDetection, results: list[dict[str, Any]], names: dict[int, str]) -> EvaluationReport:
    ground_truth = {dataset.image_info(i)["image_id"]: dataset.annotations(i) for i in range(len(dataset))}
    voc = evaluate_voc(ground_truth, results_to_predictions(results), names)
    as_coco = [{**r, "image_id": coco_image_id(r["image_id"])} for r in results]
    coco = evaluate_coco(voc_to_coco(dataset), as_coco, names)
    metrics = {**coco.to_json(), "voc": voc}
    return EvaluationReport(metrics, format_voc_table(voc) + "\n\nCOCO-style AP:\n" + coco.summary, coco.curves)


def results_to_predictions(results: list[dict[str, Any]]) -> dict[Union[int, str], dict[str, Tensor]]:
    """COCO-format records -> per-image ``boxes`` (x1, y1, x2, y2), ``scores``, ``labels``."""
    grouped: dict[Union[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        grouped[r["image_id"]].append(r)
    predictions = {}
    for image_id, records in grouped.items():
        xywh = torch.tensor([r["bbox"] for r in records], dtype=torch.float64)
        boxes = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), dim=1).float()
        predictions[image_id] = {
            "boxes": boxes,
            "scores": torch.tensor([r["score"] for r in records], dtype=torch.float32),
            "labels": torch.tensor([r["category_id"] for r in records], dtype=torch.int64),
        }
    return predictions
