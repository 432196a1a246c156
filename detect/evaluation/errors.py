"""Per-image error analysis: what went wrong with each detection and which objects were missed.

Each detection gets one kind, decided in score order (highest first) with the greedy
matching rule of the COCO evaluator, so a true positive here is a true positive there:

- ``TRUE_POSITIVE``: IoU >= ``iou_thresh`` with a ground-truth box of the same class that no
  higher-scoring detection has claimed (the best-overlapping such box is claimed).
- ``DUPLICATE``: IoU >= ``iou_thresh`` with a same-class ground-truth box, but all such boxes
  are already claimed: the object was found, this is a second hit on it.
- ``WRONG_CLASS``: IoU >= ``iou_thresh`` with a ground-truth box of another class only: the
  right place, the wrong label.
- ``LOCALIZATION``: best IoU with a same-class ground-truth box in ``[LOCALIZATION_MIN_IOU,
  iou_thresh)``: the right object, boxed too loosely or shifted. Split off from background
  because it calls for a different fix (box regression rather than classification).
- ``BACKGROUND``: none of the above: a detection on nothing.

A ground-truth box that no detection claims as a true positive is *missed*, even when a
wrong-class or poorly localised detection lies on it.

Shapes: ``G`` ground-truth boxes, ``D`` detections. Boxes are ``x1, y1, x2, y2`` absolute pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor
from torchvision.ops import box_iou

# Below this IoU a same-class detection is not "the right object, badly boxed" but unrelated;
# 0.1 is the background threshold of the TIDE error analysis (Bolya et al., 2020).
LOCALIZATION_MIN_IOU = 0.1


class DetectionKind(str, Enum):
    TRUE_POSITIVE = "true_positive"
    DUPLICATE = "duplicate"
    WRONG_CLASS = "wrong_class"
    LOCALIZATION = "localization"
    BACKGROUND = "background"


@dataclass(frozen=True)
class ImageErrors:
    """Detections of one image with their kinds, and the ground truth with what was missed.

    Only detections scoring at least ``score_thresh`` are kept, sorted by score (highest first).

    Attributes:
        det_boxes: float ``Tensor[D, 4]``.
        det_scores: float ``Tensor[D]``, descending.
        det_labels: int64 ``Tensor[D]``, dataset category ids.
        det_kinds: the kind of each detection, aligned with ``det_boxes``.
        det_gt_index: int64 ``Tensor[D]``: the ground-truth box each detection was judged
            against (the claimed box for a true positive, the overlapped box for a duplicate,
            wrong class or localization error), or -1 for background.
        gt_boxes: float ``Tensor[G, 4]``.
        gt_labels: int64 ``Tensor[G]``, dataset category ids.
        gt_missed: bool ``Tensor[G]``: True where no detection is a true positive on the box.
    """

    det_boxes: Tensor
    det_scores: Tensor
    det_labels: Tensor
    det_kinds: tuple[DetectionKind, ...]
    det_gt_index: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor
    gt_missed: Tensor

    def count(self, kind: DetectionKind) -> int:
        return sum(k is kind for k in self.det_kinds)

    @property
    def num_true_positives(self) -> int:
        return self.count(DetectionKind.TRUE_POSITIVE)

    @property
    def num_false_positives(self) -> int:
        return len(self.det_kinds) - self.num_true_positives

    @property
    def num_missed(self) -> int:
        return int(self.gt_missed.sum())

    @property
    def error_score(self) -> int:
        """False positives plus missed objects: sort images by this, descending, to see the worst first."""
        return self.num_false_positives + self.num_missed


def classify_detections(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    det_boxes: Tensor,
    det_scores: Tensor,
    det_labels: Tensor,
    iou_thresh: float = 0.5,
    score_thresh: float = 0.0,
) -> ImageErrors:
    """Label each detection of one image with a ``DetectionKind`` and find missed ground truth.

    Args:
        gt_boxes: ``[G, 4]`` ground-truth boxes (tensor or array-like).
        gt_labels: ``[G]`` ground-truth category ids.
        det_boxes: ``[D, 4]`` detected boxes.
        det_scores: ``[D]`` detection scores.
        det_labels: ``[D]`` detected category ids.
        iou_thresh: IoU at which a detection counts as hitting a ground-truth box.
        score_thresh: detections scoring below this are dropped before matching.

    Returns:
        The classified detections and ground truth, see ``ImageErrors``.
    """
    gt_boxes = _as_boxes(gt_boxes, "gt_boxes")
    det_boxes = _as_boxes(det_boxes, "det_boxes")
    gt_labels = _as_vector(gt_labels, len(gt_boxes), "gt_labels", torch.int64)
    det_labels = _as_vector(det_labels, len(det_boxes), "det_labels", torch.int64)
    det_scores = _as_vector(det_scores, len(det_boxes), "det_scores", torch.float32)

    keep = det_scores >= score_thresh
    # A stable sort keeps equal-score detections in input order, so results are reproducible.
    order = torch.sort(det_scores[keep], descending=True, stable=True).indices
    det_boxes, det_scores, det_labels = (x[keep][order] for x in (det_boxes, det_scores, det_labels))

    iou = box_iou(det_boxes, gt_boxes)  # (D, G)
    same_class = det_labels[:, None] == gt_labels[None, :]  # (D, G)
    claimed = torch.zeros(len(gt_boxes), dtype=torch.bool)
    kinds: list[DetectionKind] = []
    gt_index = torch.full((len(det_boxes),), -1, dtype=torch.int64)
    for d in range(len(det_boxes)):
        kind, g = _judge(iou[d], same_class[d], claimed, iou_thresh)
        if kind is DetectionKind.TRUE_POSITIVE:
            claimed[g] = True
        kinds.append(kind)
        gt_index[d] = g

    return ImageErrors(
        det_boxes=det_boxes,
        det_scores=det_scores,
        det_labels=det_labels,
        det_kinds=tuple(kinds),
        det_gt_index=gt_index,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        gt_missed=~claimed,
    )


def _judge(iou: Tensor, same_class: Tensor, claimed: Tensor, iou_thresh: float) -> tuple[DetectionKind, int]:
    """Kind of one detection given its IoU with every ground-truth box, and the box it concerns (-1: none)."""
    hit = iou >= iou_thresh
    rules = (
        (DetectionKind.TRUE_POSITIVE, hit & same_class & ~claimed),
        (DetectionKind.DUPLICATE, hit & same_class),
        (DetectionKind.WRONG_CLASS, hit & ~same_class),
        (DetectionKind.LOCALIZATION, (iou >= LOCALIZATION_MIN_IOU) & same_class),
    )
    for kind, candidates in rules:
        if candidates.any():
            # The best-overlapping candidate, as in the COCO evaluator.
            return kind, int(torch.where(candidates, iou, -1.0).argmax())
    return DetectionKind.BACKGROUND, -1


def _as_boxes(boxes: Tensor, name: str) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).cpu()
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    return boxes


def _as_vector(values: Tensor, length: int, name: str, dtype: torch.dtype) -> Tensor:
    values = torch.as_tensor(values, dtype=dtype).cpu().reshape(-1)
    if len(values) != length:
        raise ValueError(f"{name} has {len(values)} entries but there are {length} boxes")
    return values
