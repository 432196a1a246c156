"""Ground truth of a batch, padded to a common box count so that all images are matched at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GroundTruth:
    """``boxes [N, G, 4]`` in resized-image pixels, ``labels [N, G]`` predictor indices 1..K,
    ``valid [N, G]`` False on padding."""

    boxes: Tensor
    labels: Tensor
    valid: Tensor

    @staticmethod
    def pad(boxes: list[Tensor], labels: list[Tensor]) -> "GroundTruth":
        num_images = len(boxes)
        # At least one (invalid) slot, so that indexing matched ground truth works on box-less batches.
        num_gt = max(1, max((len(b) for b in boxes), default=0))
        device = boxes[0].device if boxes else torch.device("cpu")
        padded_boxes = torch.zeros((num_images, num_gt, 4), device=device)
        padded_labels = torch.zeros((num_images, num_gt), dtype=torch.int64, device=device)
        valid = torch.zeros((num_images, num_gt), dtype=torch.bool, device=device)
        for i, (b, l) in enumerate(zip(boxes, labels)):
            padded_boxes[i, : len(b)] = b
            padded_labels[i, : len(l)] = l
            valid[i, : len(b)] = True
        return GroundTruth(padded_boxes, padded_labels, valid)
