"""Pure box math. Boxes are float ``[..., 4]`` tensors of absolute ``x1, y1, x2, y2``.

Shape letters: ``N`` images, ``G`` ground-truth boxes, ``M`` boxes to match
(anchors or proposals), ``K`` classes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
import torchvision

# exp() of a larger delta overflows the box size; the same bound as Detectron2 and torchvision.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes as deltas ``(dx, dy, dw, dh)`` relative to reference boxes.

    ``dx = wx * (gx - rx) / rw``, ``dw = ww * log(gw / rw)`` (likewise y, h), the
    Fast R-CNN parameterisation with torchvision's conventions (width = x2 - x1).
    Works on any leading shape, so whole batches are coded at once.
    """

    def __init__(self, weights: tuple[float, float, float, float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, boxes: Tensor, reference: Tensor) -> Tensor:
        """Deltas that turn ``reference [..., 4]`` into ``boxes [..., 4]``."""
        wx, wy, ww, wh = self.weights
        rw = reference[..., 2] - reference[..., 0]
        rh = reference[..., 3] - reference[..., 1]
        rx = reference[..., 0] + 0.5 * rw
        ry = reference[..., 1] + 0.5 * rh
        gw = boxes[..., 2] - boxes[..., 0]
        gh = boxes[..., 3] - boxes[..., 1]
        gx = boxes[..., 0] + 0.5 * gw
        gy = boxes[..., 1] + 0.5 * gh
        return torch.stack(
            (wx * (gx - rx) / rw, wy * (gy - ry) / rh, ww * torch.log(gw / rw), wh * torch.log(gh / rh)), dim=-1
        )

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes from ``deltas [..., K*4]`` applied to ``reference [..., 4]``; gives ``[..., K, 4]``."""
        wx, wy, ww, wh = self.weights
        deltas = deltas.unflatten(-1, (-1, 4))  # (..., K*4) -> (..., K, 4)
        reference = reference.to(deltas.dtype)
        rw = (reference[..., 2] - reference[..., 0]).unsqueeze(-1)
        rh = (reference[..., 3] - reference[..., 1]).unsqueeze(-1)
        rx = reference[..., 0].unsqueeze(-1) + 0.5 * rw
        ry = reference[..., 1].unsqueeze(-1) + 0.5 * rh
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)
        cx = dx * rw + rx
        cy = dy * rh + ry
        half_w = 0.5 * (torch.exp(dw) * rw)
        half_h = 0.5 * (torch.exp(dh) * rh)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """Clips ``boxes [N, ..., 4]`` to per-image ``image_sizes [N, 2]`` given as (h, w)."""
    shape = (boxes.shape[0],) + (1,) * (boxes.dim() - 2)
    h = image_sizes[:, 0].to(boxes.dtype).view(shape)
    w = image_sizes[:, 1].to(boxes.dtype).view(shape)
    x1 = torch.minimum(boxes[..., 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[..., 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[..., 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[..., 3].clamp(min=0), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: Tensor, min_size: float) -> Tensor:
    """Mask of boxes whose width and height are both at least ``min_size``."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou_broadcast(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1 [..., 4]`` with ``boxes2 [..., 4]``, their leading shapes broadcast.

    Not differentiable (computed in place): for matching only. The float operations
    are torchvision's ``box_iou``'s, one coordinate at a time: a third of the memory
    traffic of (..., 2) corner tensors (this is the matcher's hot loop).
    """
    area1, area2 = box_area(boxes1), box_area(boxes2)
    b1, b2 = boxes1.unbind(-1), boxes2.unbind(-1)
    w = torch.minimum(b1[2], b2[2]).sub_(torch.maximum(b1[0], b2[0])).clamp_(min=0)
    h = torch.minimum(b1[3], b2[3]).sub_(torch.maximum(b1[1], b2[1])).clamp_(min=0)
    inter = w.mul_(h)
    union = (area1 + area2).sub_(inter)
    return inter.div_(union)


def batched_pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1 [N, G, 4]`` with ``boxes2 [N, M, 4]`` (or ``[M, 4]``, shared), giving ``[N, G, M]``."""
    if boxes2.dim() == 2:
        boxes2 = boxes2.unsqueeze(0)
    return box_iou_broadcast(boxes1.unsqueeze(2), boxes2.unsqueeze(1))  # (N, G, 1, 4) with (N, 1, M, 4)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, image_index: Tensor, num_images: int, iou_thresh: float) -> Tensor:
    """NMS within each (image, group); returns kept indices, by image, then by descending score.

    Each image goes through torchvision's ``batched_nms`` on its own: that is the
    exact computation torchvision's detectors do, so results agree bit for bit.
    """
    keep = []
    for i in range(num_images):
        (idx,) = torch.where(image_index == i)
        keep.append(idx[torchvision.ops.batched_nms(boxes[idx], scores[idx], groups[idx], iou_thresh)])
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64, device=boxes.device)


def first_k_per_image(image_index: Tensor, k: int) -> Tensor:
    """Mask keeping the first ``k`` entries of each image in an image-grouped index list."""
    if image_index.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=image_index.device)
    starts = torch.ones_like(image_index, dtype=torch.bool)
    starts[1:] = image_index[1:] != image_index[:-1]
    position = torch.arange(len(image_index), device=image_index.device)
    group_start = torch.cummax(torch.where(starts, position, torch.zeros_like(position)), dim=0).values
    return (position - group_start) < k
