"""Matching boxes to ground truth, and balanced sampling of the matches.

Shape letters: ``N`` images, ``G`` ground-truth boxes per image (padded),
``M`` boxes to label per image (anchors or proposals, padded).
Labels: 1 foreground, 0 background, -1 ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from collections.abc import Callable, Iterable

from detect.box_ops import batched_pairwise_iou, box_iou_broadcast

# IoU elements computed at once: bounds memory whatever the number of ground-truth boxes.
IOU_CHUNK_ELEMENTS = 1 << 22
# match_pairs packs a ground-truth index below an IoU's float bits in one int64.
_INDEX_BITS = (1 << 31) - 1
# match_pairs first matches only the pairs whose IoU can reach this; at 800x1333 with 1000
# random boxes per image that leaves out most pairs (large boxes against small anchors).
PAIR_MIN_IOU = 1 / 16

PairGroups = Iterable[tuple[Tensor, Tensor]]


class Matcher:
    """Assigns each box the ground truth of highest IoU, then labels it by thresholds.

    IoU >= ``fg_thresh``: foreground; < ``bg_thresh``: background; between: ignored.
    With ``allow_low_quality_matches`` every ground-truth box also makes
    foreground of the boxes it overlaps most (ties included), so that no object
    is left without a positive anchor; those boxes keep their own best match, as
    in torchvision and Detectron2. A ground-truth box overlapping nothing (IoU 0)
    makes no such match.

    The IoU matrix is never held whole: ground truth is processed in chunks with
    running maxima, so memory stays at ``O(N * M)`` plus one chunk, and each IoU is
    computed once (a chunk's ground truth has its best IoU, for low-quality matches, in that chunk).
    """

    def __init__(self, fg_thresh: float, bg_thresh: float, allow_low_quality_matches: bool):
        if bg_thresh > fg_thresh:
            raise ValueError(f"bg_thresh {bg_thresh} must not exceed fg_thresh {fg_thresh}")
        self.fg_thresh = fg_thresh
        self.bg_thresh = bg_thresh
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(
        self, gt_boxes: Tensor, gt_valid: Tensor, boxes: Tensor, boxes_valid: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Matches boxes to ground truth.

        Args:
            gt_boxes: ``[N, G, 4]``; gt_valid: ``[N, G]`` bool, False on padding.
            boxes: ``[N, M, 4]``, or ``[M, 4]`` shared by all images (anchors).
            boxes_valid: ``[N, M]`` bool, False on padding (labelled -1).

        Returns:
            matched_gt ``[N, M]`` int64 index into G (0 where there is no match) and
            labels ``[N, M]`` int8.
        """
        num_images, num_gt = gt_valid.shape
        num_boxes = boxes.shape[-2]
        device = gt_boxes.device
        best_iou = torch.full((num_images, num_boxes), -1.0, device=device)
        matched_gt = torch.zeros((num_images, num_boxes), dtype=torch.int64, device=device)
        low_quality = torch.zeros((num_images, num_boxes), dtype=torch.bool, device=device)
        chunk = max(1, IOU_CHUNK_ELEMENTS // max(1, num_images * num_boxes))
        for start in range(0, num_gt, chunk):
            iou = self._iou(gt_boxes, gt_valid, boxes, boxes_valid, start, start + chunk)  # (N, g, M)
            chunk_best, chunk_arg = iou.max(dim=1)
            better = chunk_best > best_iou  # strict: the lower gt index wins ties, like argmax
            best_iou = torch.where(better, chunk_best, best_iou)
            matched_gt = torch.where(better, chunk_arg + start, matched_gt)
            if self.allow_low_quality_matches and num_boxes:
                # A chunk holds whole rows of ground truth, so their best IoU is final here:
                # the boxes that reach it, for ground truth that overlaps anything (2 matches no IoU).
                gt_best = iou.max(dim=2, keepdim=True).values  # (N, g, 1)
                low_quality |= (iou == gt_best.masked_fill(gt_best <= 0, 2.0)).any(dim=1)

        return matched_gt, self._labels(best_iou, low_quality, boxes_valid)

    def match_pairs(
        self, gt_boxes: Tensor, gt_valid: Tensor, boxes: Tensor, pairs: Callable[[float], PairGroups]
    ) -> tuple[Tensor, Tensor]:
        """What ``self(gt_boxes, gt_valid, boxes)`` returns for boxes shared by all images, from
        the pairs that may overlap only: for anchors and many ground-truth boxes.

        Args:
            gt_boxes, gt_valid: as for ``__call__``.
            boxes: ``[M, 4]``, shared by all images.
            pairs: ``pairs(min_iou)`` gives groups of ``(gt index [P], box index [P])`` pairs,
                the gt index into the valid ground truth in row-major order (``gt_boxes[gt_valid]``);
                every pair left out has IoU below ``min_iou`` (0: IoU 0), and a group holds all
                pairs of its ground truth.

        Returns:
            matched_gt ``[N, M]`` and labels ``[N, M]``: the labels equal ``__call__``'s, and so
            does matched_gt wherever the best IoU reaches ``PAIR_MIN_IOU`` (every box labelled 1).
        """
        # A pair left out could only change a label below bg_thresh or a ground truth's best IoU.
        min_iou = PAIR_MIN_IOU if self.bg_thresh >= PAIR_MIN_IOU else 0.0
        matched_gt, labels, gt_best = self._match_pairs(gt_boxes, gt_valid, boxes, pairs(min_iou))
        if min_iou > 0 and self.allow_low_quality_matches and bool((gt_best < min_iou).any()):
            matched_gt, labels, _ = self._match_pairs(gt_boxes, gt_valid, boxes, pairs(0.0))
        return matched_gt, labels

    def _match_pairs(self, gt_boxes: Tensor, gt_valid: Tensor, boxes: Tensor, pair_groups: PairGroups) -> tuple[Tensor, Tensor, Tensor]:
        """match_pairs over the given pairs only; also the best IoU of each valid ground truth among them."""
        num_images, num_boxes = gt_valid.shape[0], boxes.shape[0]
        device = gt_boxes.device
        image_of, gt_of = torch.where(gt_valid)
        flat_gt = gt_boxes[image_of, gt_of]
        # Best match of each (image, box) as one int64: the IoU's float bits (ordered like the
        # values, IoU >= 0) above the complement of the gt index, so that the largest key is
        # the highest IoU and, among equal IoUs, the lowest gt index (argmax's choice).
        key = torch.zeros(num_images * num_boxes, dtype=torch.int64, device=device)
        low_quality = torch.zeros(num_images * num_boxes, dtype=torch.bool, device=device)
        gt_best = torch.zeros(len(flat_gt), device=device)
        for gt_index, box_index in pair_groups:
            iou = box_iou_broadcast(flat_gt[gt_index], boxes[box_index])
            slot = image_of[gt_index] * num_boxes + box_index
            key.scatter_reduce_(0, slot, (iou.view(torch.int32).long() << 32) | (_INDEX_BITS - gt_of[gt_index]), "amax")
            gt_best.scatter_reduce_(0, gt_index, iou, "amax")
            if self.allow_low_quality_matches:  # the group's ground truth has all its pairs: its best IoU is final
                best = gt_best[gt_index]
                low_quality[slot[(iou == best) & (best > 0)]] = True
        paired = key != 0
        best_iou = torch.where(paired, (key >> 32).int().view(torch.float32), 0.0).view(num_images, num_boxes)
        best_iou[~gt_valid.any(dim=1)] = -1.0  # as __call__: only padding to match
        matched_gt = torch.where(paired, _INDEX_BITS - (key & _INDEX_BITS), 0).view(num_images, num_boxes)
        matched_gt[best_iou <= 0] = 0  # argmax of all-zero IoUs: the first ground truth
        return matched_gt, self._labels(best_iou, low_quality.view(num_images, num_boxes), None), gt_best

    def _labels(self, best_iou: Tensor, low_quality: Tensor, boxes_valid: Tensor | None) -> Tensor:
        labels = torch.full(best_iou.shape, -1, dtype=torch.int8, device=best_iou.device)
        labels[best_iou >= self.fg_thresh] = 1
        labels[(best_iou < self.bg_thresh)] = 0
        labels[low_quality] = 1
        if boxes_valid is not None:
            labels[~boxes_valid] = -1
        return labels

    @staticmethod
    def _iou(gt_boxes, gt_valid, boxes, boxes_valid, start, stop) -> Tensor:
        iou = batched_pairwise_iou(gt_boxes[:, start:stop], boxes)
        iou.masked_fill_(~gt_valid[:, start:stop, None], -1.0)
        if boxes_valid is not None:
            iou.masked_fill_(~boxes_valid[:, None, :], -1.0)
        return iou


class BalancedSampler:
    """Draws up to ``batch_size_per_image`` labelled boxes per image, at most
    ``positive_fraction`` of them foreground, the rest filled with background.

    ``shuffle=False`` takes the lowest-indexed candidates instead of random ones,
    which makes training deterministic for tests.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, shuffle: bool = True):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.shuffle = shuffle

    def __call__(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Args: labels ``[N, M]`` (1, 0, -1). Returns: positive and negative masks ``[N, M]``."""
        is_pos = labels == 1
        is_neg = labels == 0
        max_pos = int(self.batch_size_per_image * self.positive_fraction)
        num_pos = is_pos.sum(dim=1).clamp(max=max_pos)
        num_neg = is_neg.sum(dim=1).clamp(max=self.batch_size_per_image - num_pos)
        return self._pick(is_pos, num_pos), self._pick(is_neg, num_neg)

    def _pick(self, candidates: Tensor, counts: Tensor) -> Tensor:
        num_images, num_boxes = candidates.shape
        # A bound known on the host rather than counts.max() (a device sync); the first
        # counts[i] of the k lowest priorities are the same whatever k >= counts[i].
        k = min(self.batch_size_per_image, num_boxes) if num_images else 0
        picked = torch.zeros_like(candidates)
        if k == 0:
            return picked
        if self.shuffle:
            priority = torch.rand(candidates.shape, device=candidates.device)
        else:
            priority = torch.arange(num_boxes, device=candidates.device, dtype=torch.float32).expand(num_images, -1)
        priority = priority.masked_fill(~candidates, float("inf"))
        chosen = priority.topk(k, dim=1, largest=False).indices  # (N, k), lowest priority first
        keep = torch.arange(k, device=candidates.device)[None, :] < counts[:, None]
        picked.scatter_(1, chosen, keep)
        return picked
