"""COCO box evaluation: the official results format, pycocotools' metrics, metrics.json.

The library speaks ``x1, y1, x2, y2`` absolute-pixel boxes and the dataset's own
category ids (COCO: 1..90 with gaps). This module is the evaluator edge where
boxes become COCO's ``[x, y, w, h]``. Metrics are on the 0-100 scale.

Names used below: ``T`` IoU thresholds (0.50:0.05:0.95), ``R`` recall
thresholds (0:0.01:1), ``K`` categories, ``A`` area ranges (all, small,
medium, large), ``M`` max detections per image (1, 10, 100). pycocotools'
accumulated ``precision`` array has shape ``(T, R, K, A, M)`` and holds -1
where a category has no ground truth.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six of COCOeval.stats


@dataclass(frozen=True)
class CocoMetrics:
    """The outcome of one COCO box evaluation.

    Attributes:
        stats: ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``APs``, ``APm``,
            ``APl`` on 0-100, all at maxDets 100. ``None`` where pycocotools
            reports -1, i.e. no ground truth falls in that area range.
        per_class: class name -> AP (IoU 0.50:0.95, area all, maxDets 100) on
            0-100. Classes without ground truth have no AP and are omitted.
        summary: pycocotools' 12-line printed summary, captured as text.
        curves: precision-recall curves, see :func:`precision_recall_curves`.
    """

    stats: dict[str, Optional[float]]
    per_class: dict[str, float]
    summary: str
    curves: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The ``{"bbox": {...}}`` section of metrics.json (no curves, no summary)."""
        return {"bbox": {**self.stats, "per_class": dict(self.per_class)}}


def to_coco_results(predictions: Mapping[Union[int, str], Mapping[str, Tensor]]) -> list[dict[str, Any]]:
    """Detections in the official COCO results format.

    Args:
        predictions: image id -> torchvision-style prediction with ``boxes``
            float ``Tensor[N, 4]`` (x1, y1, x2, y2, absolute pixels), ``scores``
            ``Tensor[N]`` and ``labels`` int64 ``Tensor[N]`` holding the
            dataset's own category ids.

    Returns:
        One dict per detection: ``image_id``, ``category_id``, ``bbox`` as
        ``[x, y, w, h]`` floats and ``score``. Ordered by ascending image id,
        then by the detection's index within its image.

    Raises:
        ValueError: a prediction lacks a key, has mismatched shapes, or holds a
            non-finite value or a box with x2 < x1 or y2 < y1.
    """
    results = []
    for image_id in sorted(predictions):
        boxes, scores, labels = _check_prediction(image_id, predictions[image_id])
        # float64 so that w = x2 - x1 of float32 corners is exact.
        xyxy = boxes.detach().cpu().double()
        xywh = torch.cat((xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]), dim=1)  # (N, 4)
        rows = zip(xywh.tolist(), scores.detach().cpu().tolist(), labels.detach().cpu().tolist())
        for box, score, label in rows:
            results.append({"image_id": _json_id(image_id), "category_id": int(label), "bbox": box, "score": float(score)})
    return results


def _json_id(image_id: Union[int, str]) -> Union[int, str]:
    """VOC's ids are names such as "000005" and stay strings; others are integers."""
    return image_id if isinstance(image_id, str) else int(image_id)


def _check_prediction(image_id: int, prediction: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    missing = [key for key in ("boxes", "scores", "labels") if key not in prediction]
    if missing:
        raise ValueError(f"prediction for image {image_id!r} lacks {missing}; expected keys boxes, scores, labels")
    boxes, scores, labels = prediction["boxes"], prediction["scores"], prediction["labels"]
    n = boxes.shape[0] if boxes.ndim == 2 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4 or tuple(scores.shape) != (n,) or tuple(labels.shape) != (n,):
        raise ValueError(
            f"prediction for image {image_id!r}: expected boxes [N, 4], scores [N], labels [N], got "
            f"{list(boxes.shape)}, {list(scores.shape)}, {list(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"prediction for image {image_id!r}: labels must be integer category ids, got {labels.dtype}")
    bad = ~torch.isfinite(boxes).all(dim=1) | ~torch.isfinite(scores) | (boxes[:, 2:] < boxes[:, :2]).any(dim=1)
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(
            f"prediction for image {image_id!r}: invalid detection at index {index}: box "
            f"{boxes[index].tolist()} score {float(scores[index])} (expected finite x1 <= x2, y1 <= y2)"
        )
    return boxes, scores, labels


def load_results(path: Union[str, Path]) -> list[dict[str, Any]]:
    """Reads and checks a COCO box results file (a JSON list of detections).

    Raises:
        ValueError: the file is not a JSON list, or a record lacks a field or
            holds an invalid value; the message names the file and record index.
    """
    with open(path) as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of detections, got {type(records).__name__}")
    if records and isinstance(records[0], dict) and "detections" in records[0] and "image_id" not in records[0]:
        raise ValueError(
            f"{path}: not in COCO results format but tools/predict.py's format (image files, not dataset image "
            f"ids); give the detections.json that tools/test.py and tools/train.py write{_nearby_detections(path)}"
        )
    for index, record in enumerate(records):
        _check_record(record, f"{path}: record {index}")
    return records


def _nearby_detections(path: Union[str, Path]) -> str:
    """``", e.g. <run>/detections.json"`` when the folder of ``path`` or its parent has one."""
    folder = Path(path).resolve().parent
    for candidate in (folder / "detections.json", folder.parent / "detections.json"):
        if candidate.is_file():
            return f", e.g. {candidate}"
    return ""


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
    image_id = record.get("image_id")
    if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
        raise ValueError(f"{where}: field 'image_id' must be an integer or a string, got {image_id!r}")
    category_id = record.get("category_id")
    if not isinstance(category_id, int) or isinstance(category_id, bool):
        raise ValueError(f"{where}: field 'category_id' must be an integer, got {category_id!r}")
    score = record.get("score")
    if not _is_finite_number(score):
        raise ValueError(f"{where}: field 'score' must be a finite number, got {score!r}")
    bbox = record.get("bbox")
    valid_bbox = isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite_number(v) for v in bbox)
    if not valid_bbox or bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where}: field 'bbox' must be [x, y, w, h] finite numbers with w, h >= 0, got {bbox!r}")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evaluate_coco(
    coco_gt: COCO,
    results: Sequence[Mapping[str, Any]],
    class_names: Optional[Mapping[int, str]] = None,
) -> CocoMetrics:
    """Runs pycocotools' box evaluation over every image of ``coco_gt``.

    Args:
        coco_gt: the ground truth. Every image in it is evaluated, so restrict
            it to the images that were run through the model.
        results: detections in the COCO results format (see
            :func:`to_coco_results`, :func:`load_results`); not mutated. May be
            empty, which gives AP 0.
        class_names: category id -> name used for ``per_class`` and curves;
            by default the names in ``coco_gt``. Must cover every category of
            ``coco_gt``.

    Returns:
        The metrics, the printed summary and the precision-recall curves.

    Raises:
        ValueError: a record is malformed, or refers to an image or category
            that ``coco_gt`` lacks.
    """
    names = _class_names(coco_gt, class_names)
    for index, record in enumerate(results):
        _check_record(record, f"results[{index}]")
    _check_ids(coco_gt, results)

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress chatter
        coco_dt = _load_detections(coco_gt, results)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.summarize()

    stats = {name: _percent(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}
    return CocoMetrics(
        stats=stats,
        per_class=_per_class_ap(coco_eval, names),
        summary=summary.getvalue(),
        curves=precision_recall_curves(coco_eval, names),
    )


def _class_names(coco_gt: COCO, class_names: Optional[Mapping[int, str]]) -> dict[int, str]:
    gt_names = {int(c["id"]): str(c["name"]) for c in coco_gt.loadCats(coco_gt.getCatIds())}
    if class_names is None:
        return gt_names
    missing = sorted(set(gt_names) - set(class_names))
    if missing:
        raise ValueError(f"class_names lacks the ground truth's category ids {missing}")
    return {i: str(class_names[i]) for i in gt_names}


def _check_ids(coco_gt: COCO, results: Sequence[Mapping[str, Any]]) -> None:
    for field, known, what in (
        ("image_id", set(coco_gt.getImgIds()), "images"),
        ("category_id", set(coco_gt.getCatIds()), "categories"),
    ):
        unknown = sorted({r[field] for r in results} - known)
        if unknown:
            shown = ", ".join(str(i) for i in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise ValueError(f"results refer to {len(unknown)} {field}s not among the ground truth's {what}: {shown}")


def _load_detections(coco_gt: COCO, results: Sequence[Mapping[str, Any]]) -> COCO:
    if results:
        # loadRes adds area, id, iscrowd and segmentation to each record: copy them.
        return coco_gt.loadRes([dict(r) for r in results])
    # loadRes indexes results[0], so an empty list needs a hand-built detections set.
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def _percent(value: float) -> Optional[float]:
    """pycocotools' 0-1 value -> 0-100; its -1 ("no ground truth") -> None."""
    return None if value < 0 else 100.0 * float(value)


def _per_class_ap(coco_eval: COCOeval, names: Mapping[int, str]) -> dict[str, float]:
    precision = _precision_all_area(coco_eval)  # (T, R, K)
    per_class = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        if values.size:  # empty: no ground truth for this class
            per_class[names[category_id]] = 100.0 * float(np.mean(values))
    return per_class


def _precision_all_area(coco_eval: COCOeval) -> np.ndarray:
    """The accumulated precision at area "all" and maxDets 100, shape ``(T, R, K)``."""
    if not coco_eval.eval or "precision" not in coco_eval.eval:
        raise ValueError("COCOeval has no accumulated results: call evaluate() and accumulate() first")
    params = coco_eval.params
    area = params.areaRngLbl.index("all")
    max_dets = params.maxDets.index(100)
    return coco_eval.eval["precision"][:, :, :, area, max_dets]


def precision_recall_curves(
    coco_eval: COCOeval, class_names: Optional[Mapping[int, str]] = None
) -> dict[str, Any]:
    """Per-class precision-recall curves from an accumulated ``COCOeval``.

    Args:
        coco_eval: after ``evaluate()`` and ``accumulate()``.
        class_names: category id -> name; by default the ground truth's names.

    Returns:
        A JSON-serialisable dict::

            {"recall": [0.0, 0.01, ..., 1.0],                 # the R thresholds
             "per_class": {name: {"precision_iou50": [...],   # R values, IoU 0.5
                                  "precision": [...]}}}       # R values, mean over IoU 0.50:0.95

        Precision is on 0-1 at area "all" and maxDets 100; the area under
        ``precision`` is the class's AP. Classes without ground truth are omitted.
    """
    names = _class_names(coco_eval.cocoGt, class_names)
    precision = _precision_all_area(coco_eval)  # (T, R, K)
    iou50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
    curves = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        if (precision[:, :, k] <= -1).all():  # no ground truth for this class
            continue
        curves[names[category_id]] = {
            "precision_iou50": precision[iou50, :, k].tolist(),
            "precision": precision[:, :, k].mean(axis=0).tolist(),
        }
    return {"recall": coco_eval.params.recThrs.tolist(), "per_class": curves}


def save_metrics(metrics: Union[CocoMetrics, Mapping[str, Any]], path: Union[str, Path]) -> None:
    """Merges metrics into the JSON file ``path`` (usually ``<run>/metrics.json``).

    Top-level keys of ``metrics`` replace those already in the file and others
    are kept, so a COCO evaluation (``"bbox"``) and a VOC one (``"voc"``) can
    share a file. The file is replaced atomically, so a crash never leaves it
    half written.

    Args:
        metrics: a :class:`CocoMetrics` (saved as ``{"bbox": ...}``) or any
            mapping of section name -> JSON-serialisable values.
        path: the JSON file to create or update.

    Raises:
        ValueError: ``metrics`` holds NaN or infinity (not valid JSON), or the
            existing file is not a JSON object.
    """
    path = Path(path)
    sections = metrics.to_json() if isinstance(metrics, CocoMetrics) else dict(metrics)
    merged: dict[str, Any] = {}
    if path.exists():
        with open(path) as f:
            try:
                merged = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: existing metrics file is not valid JSON: {e}") from None
        if not isinstance(merged, dict):
            raise ValueError(f"{path}: existing metrics file must hold a JSON object, got {type(merged).__name__}")
    merged.update(sections)
    try:
        text = json.dumps(merged, indent=2, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"metrics for {path} hold NaN or infinity, which JSON cannot store: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the metrics from other users
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
