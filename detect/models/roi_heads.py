"""Per-RoI box head: sample RoIs, classify and refine them, post-process detections.

Shape letters: ``N`` images, ``R`` RoIs of the batch, ``K`` foreground classes,
``D`` box-head feature size, ``G`` ground-truth boxes per image (padded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.box_ops import BoxCoder, batched_nms, clip_boxes, first_k_per_image, nonempty
from detect.models.matcher import BalancedSampler, Matcher
from detect.models.poolers import RoIPooler
from detect.models.rpn import Proposals
from detect.models.targets import GroundTruth


class TwoFCHead(nn.Module):
    """Flatten, then two fully connected layers with ReLU (the FPN paper's box head)."""

    def __init__(self, in_channels: int, resolution: int, fc_dim: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * resolution**2, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.out_dim = fc_dim
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class BoxPredictor(nn.Module):
    """Sibling layers: ``K + 1`` class logits and class-specific deltas ``(K + 1) * 4``."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, (num_classes + 1) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # float32 for the box math and losses, also under autocast
        return self.cls_score(x).float(), self.bbox_pred(x).float()


@dataclass(frozen=True)
class Detections:
    """Detections of a batch, flat and grouped by image: ``boxes [D, 4]`` (resized-image
    pixels), ``scores [D]``, ``labels [D]`` predictor indices 1..K, ``image_index [D]``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    image_index: Tensor


class RoIHeads(nn.Module):
    """Fast R-CNN head over RPN proposals.

    Args:
        pooler: pools a fixed-size feature per RoI.
        box_head: ``[R, C, S, S] -> [R, D]``.
        predictor: ``[R, D] -> ([R, K + 1], [R, (K + 1) * 4])``.
        matcher, sampler: label proposals (ground truth added) and draw the loss batch.
        bbox_reg_weights: box coder weights of the deltas.
        smooth_l1_beta: of the box loss.
        score_thresh, nms_thresh, detections_per_image: post-processing.
        min_box_size: detections narrower or lower than this (resized-image pixels) are dropped.
    """

    def __init__(
        self,
        pooler: RoIPooler,
        box_head: nn.Module,
        predictor: BoxPredictor,
        matcher: Matcher,
        sampler: BalancedSampler,
        bbox_reg_weights: tuple[float, float, float, float],
        smooth_l1_beta: float,
        score_thresh: float,
        nms_thresh: float,
        detections_per_image: int,
        min_box_size: float = 1e-2,
    ):
        super().__init__()
        self.pooler = pooler
        self.box_head = box_head
        self.predictor = predictor
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = BoxCoder(tuple(bbox_reg_weights))
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.min_box_size = min_box_size

    def forward(
        self, features: list[Tensor], proposals: Proposals, image_sizes: Tensor, gt: GroundTruth | None
    ) -> tuple[Detections | None, dict[str, Tensor]]:
        if gt is not None:
            boxes, image_index, labels, targets = self._sample(proposals, gt)
        else:
            boxes, image_index = proposals.boxes, proposals.image_index
        rois = torch.cat([image_index[:, None].to(boxes.dtype), boxes], dim=1)  # (R, 5)
        logits, deltas = self.predictor(self.box_head(self.pooler(features, rois)))
        if gt is not None:
            return None, self._losses(logits, deltas, labels, targets)
        return self._detect(logits, deltas, boxes, image_index, image_sizes), {}

    @torch.no_grad()
    def _sample(self, proposals: Proposals, gt: GroundTruth) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Adds ground truth to the proposals, matches and samples them, all images at once.

        Returns the sampled boxes ``[R, 4]``, their image index ``[R]``, class
        labels ``[R]`` (0 background) and regression targets ``[R, 4]``.
        """
        candidates, valid = _pad_by_image(proposals, gt.boxes.shape[0])
        candidates = torch.cat([candidates, gt.boxes], dim=1)  # (N, P + G, 4)
        valid = torch.cat([valid, gt.valid], dim=1)
        matched_gt, match_labels = self.matcher(gt.boxes, gt.valid, candidates, valid)
        pos, neg = self.sampler(match_labels)
        image_index, box_index = torch.where(pos | neg)
        boxes = candidates[image_index, box_index]
        matched = matched_gt[image_index, box_index]
        labels = torch.where(pos[image_index, box_index], gt.labels[image_index, matched], 0)
        targets = self.box_coder.encode(gt.boxes[image_index, matched], boxes)
        return boxes, image_index, labels, targets

    def _losses(self, logits: Tensor, deltas: Tensor, labels: Tensor, targets: Tensor) -> dict[str, Tensor]:
        loss_cls = F.cross_entropy(logits, labels)
        (pos,) = torch.where(labels > 0)
        pos_deltas = deltas.view(len(deltas), -1, 4)[pos, labels[pos]]  # (R, (K+1)*4) -> (R, K+1, 4) -> (P, 4)
        loss_box = F.smooth_l1_loss(pos_deltas, targets[pos], beta=self.smooth_l1_beta, reduction="sum")
        return {"loss_cls": loss_cls, "loss_box": loss_box / max(1, labels.numel())}

    def _detect(self, logits: Tensor, deltas: Tensor, rois: Tensor, image_index: Tensor, image_sizes: Tensor) -> Detections:
        num_rois, num_outputs = logits.shape
        scores = F.softmax(logits, dim=-1)[:, 1:]  # background dropped: (R, K)
        boxes = self.box_coder.decode(deltas, rois)[:, 1:]  # (R, K, 4)
        boxes = clip_boxes(boxes, image_sizes[image_index])
        labels = torch.arange(1, num_outputs, device=logits.device).expand(num_rois, -1)
        image_index = image_index[:, None].expand(-1, num_outputs - 1)
        boxes, scores, labels, image_index = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1), image_index.reshape(-1)
        keep = (scores > self.score_thresh) & nonempty(boxes, self.min_box_size)
        boxes, scores, labels, image_index = boxes[keep], scores[keep], labels[keep], image_index[keep]
        kept = batched_nms(boxes, scores, labels, image_index, len(image_sizes), self.nms_thresh)
        kept = kept[first_k_per_image(image_index[kept], self.detections_per_image)]
        return Detections(boxes[kept], scores[kept], labels[kept], image_index[kept])


def _pad_by_image(proposals: Proposals, num_images: int) -> tuple[Tensor, Tensor]:
    """Flat proposals grouped by image -> ``[N, P, 4]`` and a validity mask ``[N, P]``."""
    image_index = proposals.image_index
    counts = torch.bincount(image_index, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(len(image_index), device=image_index.device) - starts[image_index]
    width = int(counts.max()) if num_images else 0
    boxes = proposals.boxes.new_zeros((num_images, width, 4))
    valid = torch.zeros((num_images, width), dtype=torch.bool, device=image_index.device)
    boxes[image_index, position] = proposals.boxes
    valid[image_index, position] = True
    return boxes, valid
