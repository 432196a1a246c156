"""PASCAL VOC box evaluation: the devkit's per-class AP, in the 11-point and area forms.

Follows the matching rules of the official devkit (and py-faster-rcnn's
``voc_eval.py``), on the library's continuous ``x1, y1, x2, y2`` boxes. VOC's
1-based pixel corners became ``(xmin - 1, ymin - 1, xmax, ymax)`` at the dataset
edge, so IoU here is the plain one, without the devkit's ``+ 1`` on widths.

Per class:

1. All detections of the class, over all images, are sorted by score,
   descending. The sort is stable: tied scores keep input order, i.e. the
   iteration order of ``predictions`` and then the index within an image.
   (py-faster-rcnn's ``np.argsort(-confidence)`` uses numpy's default,
   unstable sort, so its tie order is unspecified; MATLAB's ``sort`` in the
   devkit is stable.)
2. Each detection takes the ground truth box of its class in its image with
   the largest IoU, matched or not (the first one on IoU ties). If that IoU is
   strictly greater than ``iou_thresh`` (the devkit's ``ovmax > ovthresh``): a
   difficult box makes the detection neither TP nor FP; an unmatched box makes
   it a TP and marks the box matched; a matched box makes it a FP (duplicate).
   Otherwise, including an image without such boxes, it is a FP.
3. recall = TP / (non-difficult ground truth boxes), precision = TP / (TP + FP),
   both cumulative along the sorted detections.

A class without non-difficult ground truth has no recall and so no AP: it is
reported with ``AP`` and ``AP_11point`` ``None`` and left out of the means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
from torch import Tensor

ImageId = Union[int, str]

_TP, _FP, _IGNORED = 1, 0, -1


@dataclass(frozen=True)
class _Detections:
    """All detections in input order; ``D`` detections."""

    image_ids: list[ImageId]  # (D,)
    boxes: np.ndarray  # (D, 4) float64 x1, y1, x2, y2
    scores: np.ndarray  # (D,) float64
    labels: np.ndarray  # (D,) int64


def evaluate_voc(
    ground_truth: Mapping[ImageId, Mapping[str, Tensor]],
    predictions: Mapping[ImageId, Mapping[str, Tensor]],
    class_names: Mapping[int, str],
    iou_thresh: float = 0.5,
) -> dict[str, Any]:
    """Per-class VOC AP and its mean over the classes that have ground truth.

    Args:
        ground_truth: image id -> ``boxes`` float ``[M, 4]`` (x1, y1, x2, y2),
            ``labels`` int ``[M]`` (the dataset's category ids) and optionally
            ``difficult`` bool ``[M]`` (all False when absent). Every evaluated
            image must be here, also those without objects.
        predictions: image id -> ``boxes`` ``[N, 4]``, ``scores`` ``[N]``,
            ``labels`` ``[N]``. Images may be missing or have N = 0.
        class_names: category id -> name; the classes to evaluate.
        iou_thresh: a detection needs IoU strictly above this to match.

    Returns:
        ``{"mAP": float | None, "mAP_11point": float | None,
        "per_class": {name: {"AP": float | None, "AP_11point": float | None,
        "num_gt": int}}}`` on 0-100, ``per_class`` in ascending category id.
        ``AP`` is the area under the precision envelope (VOC2010+),
        ``AP_11point`` the mean of the best precision at recall >= 0, 0.1, ..,
        1 (VOC2007). ``num_gt`` counts non-difficult boxes. A class with
        ``num_gt == 0`` has AP ``None``; a mean is ``None`` when no class has
        ground truth.

    Raises:
        ValueError: malformed inputs, labels missing from ``class_names``, or
            predictions for images that ``ground_truth`` lacks.
    """
    if not 0.0 <= iou_thresh < 1.0:
        raise ValueError(f"iou_thresh must be in [0, 1), got {iou_thresh}")
    unknown = [image_id for image_id in predictions if image_id not in ground_truth]
    if unknown:
        raise ValueError(f"predictions for {len(unknown)} images missing from the ground truth: {unknown[:10]}")
    targets = {image_id: _check_target(image_id, t, class_names) for image_id, t in ground_truth.items()}
    detections = _gather_detections(predictions, class_names)

    per_class = {}
    for class_id in sorted(class_names):
        ap, ap_11point, num_gt = _evaluate_class(class_id, targets, detections, iou_thresh)
        per_class[str(class_names[class_id])] = {"AP": ap, "AP_11point": ap_11point, "num_gt": num_gt}
    return {
        "mAP": _mean([c["AP"] for c in per_class.values()]),
        "mAP_11point": _mean([c["AP_11point"] for c in per_class.values()]),
        "per_class": per_class,
    }


def _as_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


def _as_boxes(value: Any) -> np.ndarray:
    boxes = _as_numpy(value).astype(np.float64)
    # An image without boxes often comes as shape [0] rather than [0, 4].
    return boxes.reshape(0, 4) if boxes.size == 0 else boxes


def _check_labels(labels: np.ndarray, class_names: Mapping[int, str], where: str) -> None:
    unknown = sorted(set(labels.tolist()) - set(class_names))
    if unknown:
        raise ValueError(f"{where}: labels {unknown} are not among the class ids {sorted(class_names)}")


def _check_target(
    image_id: ImageId, target: Mapping[str, Tensor], class_names: Mapping[int, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> boxes ``(M, 4)`` float64, labels ``(M,)`` int64, difficult ``(M,)`` bool."""
    where = f"ground truth of image {image_id!r}"
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"{where}: expected keys boxes, labels (and optionally difficult), got {sorted(target)}")
    boxes = _as_boxes(target["boxes"])
    labels = _as_numpy(target["labels"]).astype(np.int64)
    num = labels.shape[0] if labels.ndim == 1 else -1
    difficult = _as_numpy(target["difficult"]).astype(bool) if "difficult" in target else np.zeros(num, bool)
    if boxes.shape != (num, 4) or difficult.shape != (num,):
        raise ValueError(
            f"{where}: expected boxes [M, 4], labels [M], difficult [M], got "
            f"{list(boxes.shape)}, {list(labels.shape)}, {list(difficult.shape)}"
        )
    _check_boxes(boxes, where)
    _check_labels(labels, class_names, where)
    return boxes, labels, difficult


def _check_boxes(boxes: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2:] < boxes[:, :2]).any(axis=1)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: invalid box {boxes[index].tolist()} at index {index} (expected x1 <= x2, y1 <= y2)")


def _gather_detections(
    predictions: Mapping[ImageId, Mapping[str, Tensor]], class_names: Mapping[int, str]
) -> _Detections:
    image_ids: list[ImageId] = []
    boxes, scores, labels = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros(0, np.int64)]
    for image_id, prediction in predictions.items():
        where = f"prediction for image {image_id!r}"
        if any(key not in prediction for key in ("boxes", "scores", "labels")):
            raise ValueError(f"{where}: expected keys boxes, scores, labels, got {sorted(prediction)}")
        image_scores = _as_numpy(prediction["scores"]).astype(np.float64)
        image_labels = _as_numpy(prediction["labels"]).astype(np.int64)
        image_boxes = _as_boxes(prediction["boxes"])
        num = image_scores.shape[0] if image_scores.ndim == 1 else -1
        if image_scores.shape != (num,) or image_labels.shape != (num,) or image_boxes.shape != (num, 4):
            raise ValueError(
                f"{where}: expected boxes [N, 4], scores [N], labels [N], got "
                f"{list(image_boxes.shape)}, {list(image_scores.shape)}, {list(image_labels.shape)}"
            )
        if not np.isfinite(image_scores).all():
            raise ValueError(f"{where}: non-finite score at index {int(np.flatnonzero(~np.isfinite(image_scores))[0])}")
        _check_boxes(image_boxes, where)
        _check_labels(image_labels, class_names, where)
        image_ids.extend([image_id] * num)
        boxes.append(image_boxes)
        scores.append(image_scores)
        labels.append(image_labels)
    return _Detections(image_ids, np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels))


def _evaluate_class(
    class_id: int,
    targets: Mapping[ImageId, tuple[np.ndarray, np.ndarray, np.ndarray]],
    detections: _Detections,
    iou_thresh: float,
) -> tuple[Optional[float], Optional[float], int]:
    """-> (AP, AP_11point, num_gt) of one class; the APs are None without ground truth."""
    gt = {}  # image id -> (boxes (G, 4), difficult (G,)) of this class
    for image_id, (boxes, labels, difficult) in targets.items():
        keep = labels == class_id
        gt[image_id] = (boxes[keep], difficult[keep])
    num_gt = int(sum(int((~difficult).sum()) for _, difficult in gt.values()))
    if num_gt == 0:
        return None, None, 0

    index = np.flatnonzero(detections.labels == class_id)
    order = index[np.argsort(-detections.scores[index], kind="stable")]
    outcomes = _match(order, detections, gt, iou_thresh)
    outcomes = outcomes[outcomes != _IGNORED]  # they change neither TP nor FP counts
    tp = np.cumsum(outcomes == _TP)
    fp = np.cumsum(outcomes == _FP)
    recall = tp / num_gt
    precision = tp / (tp + fp)
    return 100.0 * _ap_area(recall, precision), 100.0 * _ap_11point(recall, precision), num_gt


def _match(
    order: np.ndarray,
    detections: _Detections,
    gt: Mapping[ImageId, tuple[np.ndarray, np.ndarray]],
    iou_thresh: float,
) -> np.ndarray:
    """The outcome (_TP, _FP or _IGNORED) of each detection in ``order``, greedily."""
    matched = {image_id: np.zeros(len(difficult), bool) for image_id, (_, difficult) in gt.items()}
    outcomes = np.empty(len(order), np.int64)
    for rank, d in enumerate(order):
        image_id = detections.image_ids[d]
        gt_boxes, difficult = gt[image_id]
        if len(gt_boxes) == 0:
            outcomes[rank] = _FP
            continue
        ious = _iou(detections.boxes[d], gt_boxes)
        best = int(np.argmax(ious))  # first of equal maxima, as the devkit
        if ious[best] <= iou_thresh:
            outcomes[rank] = _FP
        elif difficult[best]:
            outcomes[rank] = _IGNORED
        elif matched[image_id][best]:
            outcomes[rank] = _FP
        else:
            outcomes[rank] = _TP
            matched[image_id][best] = True
    return outcomes


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box ``(4,)`` with ``(G, 4)`` boxes -> ``(G,)``; 0 for two empty boxes."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _ap_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC2010+), on 0-1."""
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([0.0], precision, [0.0]))
    p = np.maximum.accumulate(p[::-1])[::-1]  # best precision at this recall or beyond
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _ap_11point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007: mean over t = 0, 0.1, .., 1 of the best precision at recall >= t, on 0-1.

    The thresholds are k * 0.1, as the devkit's ``0:0.1:1`` and py-faster-rcnn's
    ``np.arange(0, 1.1, 0.1)`` compute them: 3 * 0.1 is 0.30000000000000004, so a
    recall of exactly 3/10 does not reach that point, in the official numbers too.
    """
    total = 0.0
    for k in range(11):
        reached = precision[recall >= k * 0.1]
        total += float(reached.max()) if reached.size else 0.0
    return total / 11


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def format_voc_table(metrics: Mapping[str, Any]) -> str:
    """A printable per-class table and the two mAP lines of :func:`evaluate_voc` output."""

    def cell(value: Optional[float]) -> str:
        return "absent" if value is None else f"{value:.2f}"

    per_class = metrics["per_class"]
    width = max([len("class")] + [len(name) for name in per_class])
    lines = [f"{'class':<{width}}  {'AP':>7}  {'AP_11pt':>7}  {'num_gt':>6}"]
    for name, entry in per_class.items():
        lines.append(f"{name:<{width}}  {cell(entry['AP']):>7}  {cell(entry['AP_11point']):>7}  {entry['num_gt']:>6}")
    lines.append(f"mAP (area, VOC2010+):    {cell(metrics['mAP'])}")
    lines.append(f"mAP (11-point, VOC2007): {cell(metrics['mAP_11point'])}")
    return "\n".join(lines)
