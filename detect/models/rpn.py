"""Region proposal network: objectness and box deltas per anchor, proposals, losses.

Shape letters: ``N`` images, ``L`` levels, ``A`` anchors per location,
``R`` anchors of all levels of one image, ``G`` ground-truth boxes (padded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.box_ops import BoxCoder, batched_nms, clip_boxes, first_k_per_image, nonempty
from detect.models.anchors import AnchorGenerator
from detect.models.matcher import BalancedSampler, Matcher
from detect.models.targets import GroundTruth

# (ground truth, anchor) pairs matched at once: bounds the matcher's memory (some 100 bytes a pair at its peak).
MAX_PAIRS = 1 << 20
# Ground-truth boxes per image from which anchors are matched pair by pair. At 800x1333 pairs
# took 0.95 s against the dense IoU matrix's 2.5 s at 1000 boxes, before PAIR_MIN_IOU left out
# most pairs; at 10 boxes both take some 25 ms (the dense matrix was faster on a loaded
# machine), so the well-tested dense path stays.
SPARSE_MATCH_MIN_GT = 32


class _ReLUMaskingGradientInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.mark_dirty(x)
        out = x.relu_()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad)


def relu_masking_gradient_in_place(x: Tensor) -> Tensor:
    """``F.relu(x, inplace=True)`` whose backward zeroes the incoming gradient in place.

    torch's ReLU backward writes a new gradient: at the RPN head's P2 (137 MB for two
    800x1333 images) that new tensor is the training step's peak. The incoming gradient
    must have no other reader: here it is the sibling convs' fresh input gradient.
    """
    return _ReLUMaskingGradientInPlace.apply(x)


class RPNHead(nn.Module):
    """A shared 3x3 conv + ReLU, then sibling 1x1 convs for objectness (A) and deltas (4A)."""

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        for layer in (self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Returns objectness ``[N, R]`` and deltas ``[N, R, 4]`` over all levels."""
        # The sibling convs run as one: a single reader of ``t`` gets one gradient, where two
        # readers' gradients would be summed into a third activation-sized tensor.
        weight = torch.cat([self.objectness.weight, self.deltas.weight])
        bias = torch.cat([self.objectness.bias, self.deltas.bias])
        num_anchors = self.objectness.out_channels
        logits, deltas = [], []
        for x in features:
            t = self.conv(x)
            t = relu_masking_gradient_in_place(t) if torch.is_grad_enabled() else t.relu_()
            n, _, h, w = t.shape
            objectness, box_deltas = F.conv2d(t, weight, bias).split([num_anchors, 4 * num_anchors], dim=1)
            logits.append(objectness.permute(0, 2, 3, 1).reshape(n, -1))  # (N, A, H, W) -> (N, H*W*A)
            # (N, A*4, H, W) -> (N, A, 4, H, W) -> (N, H, W, A, 4) -> (N, H*W*A, 4)
            deltas.append(box_deltas.reshape(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        # Box math and losses in float32 also under bf16/fp16 autocast: 2 px steps at 256-512 px in bf16.
        return torch.cat(logits, dim=1).float(), torch.cat(deltas, dim=1).float()


@dataclass(frozen=True)
class Proposals:
    """Proposals of a batch, flat: ``boxes [P, 4]`` of image ``image_index [P]``, grouped by image."""

    boxes: Tensor
    image_index: Tensor


class RPN(nn.Module):
    """Region proposal network over one or more feature levels.

    Args:
        head: computes objectness and deltas per anchor.
        anchor_generator: anchors per level.
        matcher, sampler: label anchors against ground truth and draw the loss batch.
        pre_nms_topk, post_nms_topk: ``(train, test)``; pre per level and image, post per image.
        nms_thresh: IoU threshold of the NMS among proposals of one level.
        min_box_size: proposals smaller than this (in resized-image pixels) are dropped.
        smooth_l1_beta: of the box loss.
        nms_on_logits: NMS ranks proposals by objectness logit rather than probability,
            whose float32 sigmoid ties high-scoring proposals at 1.0.
    """

    def __init__(
        self,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        matcher: Matcher,
        sampler: BalancedSampler,
        pre_nms_topk: tuple[int, int],
        post_nms_topk: tuple[int, int],
        nms_thresh: float,
        min_box_size: float,
        smooth_l1_beta: float,
        nms_on_logits: bool = False,
    ):
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.smooth_l1_beta = smooth_l1_beta
        self.nms_on_logits = nms_on_logits

    def forward(
        self, features: list[Tensor], image_sizes: Tensor, padded_size: tuple[int, int], gt: GroundTruth | None
    ) -> tuple[Proposals, dict[str, Tensor]]:
        """Returns proposals in resized-image coordinates and, with ``gt``, the RPN losses."""
        logits, deltas = self.head(features)
        feature_sizes = [f.shape[-2:] for f in features]
        level_anchors = self.anchor_generator(feature_sizes, padded_size, logits.device)
        anchors = torch.cat(level_anchors)  # (R, 4)
        level_sizes = [len(a) for a in level_anchors]
        proposals = self._proposals(logits.detach(), deltas.detach(), anchors, level_sizes, image_sizes)
        losses = {}
        if gt is not None:
            if gt.boxes.shape[1] >= SPARSE_MATCH_MIN_GT:
                # Only the anchors near each ground-truth box: work that grows with the boxes' area, not R * G.
                image_of, gt_of = torch.where(gt.valid)
                flat_gt = gt.boxes[image_of, gt_of]

                def pairs(min_iou: float):
                    return self.anchor_generator.overlapping(flat_gt, feature_sizes, padded_size, MAX_PAIRS, min_iou)

                matched_gt, labels = self.matcher.match_pairs(gt.boxes, gt.valid, anchors, pairs)
            else:
                matched_gt, labels = self.matcher(gt.boxes, gt.valid, anchors)
            losses = self._losses(logits, deltas, anchors, gt, matched_gt, labels)
        return proposals, losses

    def _proposals(
        self, logits: Tensor, deltas: Tensor, anchors: Tensor, level_sizes: list[int], image_sizes: Tensor
    ) -> Proposals:
        num_images = logits.shape[0]
        pre_topk = self.pre_nms_topk[0 if self.training else 1]
        post_topk = self.post_nms_topk[0 if self.training else 1]
        # Top-k per level, all images at once: (N, R) -> (N, sum_l k_l).
        top_idx, top_level = [], []
        offset = 0
        for level, size in enumerate(level_sizes):
            k = min(pre_topk, size)
            idx = logits[:, offset : offset + size].topk(k, dim=1).indices + offset
            top_idx.append(idx)
            top_level.append(torch.full_like(idx, level))
            offset += size
        idx = torch.cat(top_idx, dim=1)
        levels = torch.cat(top_level, dim=1)
        scores = logits.gather(1, idx)
        if not self.nms_on_logits:
            scores = torch.sigmoid(scores)
        sel_deltas = deltas.gather(1, idx[..., None].expand(-1, -1, 4))
        boxes = self.box_coder.decode(sel_deltas, anchors[idx]).squeeze(-2)  # (N, K, 1, 4) -> (N, K, 4)
        boxes = clip_boxes(boxes, image_sizes)
        keep = nonempty(boxes, self.min_box_size)
        image_index = torch.arange(num_images, device=boxes.device)[:, None].expand_as(levels)
        boxes, scores, levels, image_index = boxes[keep], scores[keep], levels[keep], image_index[keep]
        kept = batched_nms(boxes, scores, levels, image_index, num_images, self.nms_thresh)
        kept = kept[first_k_per_image(image_index[kept], post_topk)]
        return Proposals(boxes=boxes[kept], image_index=image_index[kept])

    def _losses(
        self, logits: Tensor, deltas: Tensor, anchors: Tensor, gt: GroundTruth, matched_gt: Tensor, labels: Tensor
    ) -> dict[str, Tensor]:
        pos, neg = self.sampler(labels)
        num_sampled = (pos.sum() + neg.sum()).clamp(min=1)  # on the device: no host sync
        sampled = pos | neg
        loss_cls = F.binary_cross_entropy_with_logits(logits[sampled], pos[sampled].to(logits.dtype), reduction="sum")
        img, anchor_idx = torch.where(pos)
        targets = self.box_coder.encode(gt.boxes[img, matched_gt[img, anchor_idx]], anchors[anchor_idx])
        loss_box = F.smooth_l1_loss(deltas[img, anchor_idx], targets, beta=self.smooth_l1_beta, reduction="sum")
        return {"loss_rpn_cls": loss_cls / num_sampled, "loss_rpn_box": loss_box / num_sampled}
