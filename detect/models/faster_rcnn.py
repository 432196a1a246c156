"""The detector: input transform -> backbone -> RPN -> RoI heads -> detections.

Called like torchvision's detection models: ``model(images, targets)`` with
``images`` a list of float ``[3, H, W]`` tensors in 0..1 and targets a list of
dicts with ``boxes [G, 4]`` (x1, y1, x2, y2, pixels) and ``labels [G]`` (the
dataset's category ids). Training returns the losses ``loss_rpn_cls``,
``loss_rpn_box``, ``loss_cls``, ``loss_box``; evaluation returns per image a
dict of ``boxes`` (original-image pixels), ``scores`` and ``labels`` (category ids).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detect.categories import CategoryMap
from detect.models.roi_heads import Detections, RoIHeads
from detect.models.rpn import RPN
from detect.models.targets import GroundTruth
from detect.models.transform import ImageBatch, ImageTransform, rescale


class FasterRCNN(nn.Module):
    """Faster R-CNN over built parts.

    Args:
        transform: normalises, resizes (test time) and pads images.
        backbone: images -> ``dict[str, Tensor]`` of feature maps.
        rpn: proposals from ``rpn_features``.
        roi_heads: detections from ``roi_features`` and the proposals.
        categories: the dataset category ids and names the predictor's outputs stand for.
    """

    def __init__(
        self,
        transform: ImageTransform,
        backbone: nn.Module,
        rpn: RPN,
        roi_heads: RoIHeads,
        rpn_features: list[str],
        roi_features: list[str],
        categories: CategoryMap,
    ):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.rpn_features = rpn_features
        self.roi_features = roi_features
        self.categories = categories

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        _check_images(images)
        if self.training:
            if targets is None:
                raise ValueError("training needs targets: a list of dicts with 'boxes' and 'labels'")
            _check_targets(targets, len(images))
        boxes = [t["boxes"] for t in targets] if self.training else None
        batch, boxes = self.transform(images, boxes)
        gt = None
        if self.training:
            labels = [self._to_index(t["labels"], i) for i, t in enumerate(targets)]
            gt = GroundTruth.pad(boxes, labels)
        x = batch.tensors
        if self.backbone_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.backbone(x)
        proposals, rpn_losses = self.rpn([features[n] for n in self.rpn_features], batch.image_sizes, batch.padded_size, gt)
        detections, head_losses = self.roi_heads([features[n] for n in self.roi_features], proposals, batch.image_sizes, gt)
        if self.training:
            return {**rpn_losses, **head_losses}
        return self._per_image(detections, batch)

    @property
    def backbone_channels_last(self) -> bool:
        weight = next(self.backbone.parameters())
        return weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    def _to_index(self, category_ids: Tensor, target_index: int) -> Tensor:
        try:
            return self.categories.to_index(category_ids)
        except ValueError as e:
            raise ValueError(f"target at index {target_index}: {e}") from None

    def _per_image(self, detections: Detections, batch: ImageBatch) -> list[dict[str, Tensor]]:
        results = []
        for i in range(len(batch.image_sizes)):
            mask = detections.image_index == i
            results.append(
                {
                    "boxes": rescale(detections.boxes[mask], batch.image_sizes[i], batch.original_sizes[i]),
                    "scores": detections.scores[mask],
                    "labels": self.categories.to_id(detections.labels[mask]),
                }
            )
        return results


def _check_images(images: list[Tensor]) -> None:
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError("images must be a non-empty list of [3, H, W] float tensors")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image at index {i}: expected a float tensor [3, H, W] in 0..1, got {shape}")


def _check_targets(targets: list[dict[str, Tensor]], num_images: int) -> None:
    if not isinstance(targets, (list, tuple)):
        raise ValueError(f"targets must be a list of dicts with 'boxes' and 'labels', got {type(targets).__name__}")
    if len(targets) != num_images:
        raise ValueError(f"{num_images} images but {len(targets)} targets")
    for i, target in enumerate(targets):
        if not isinstance(target, dict):
            raise ValueError(f"target at index {i}: expected a dict with 'boxes' and 'labels', got {type(target).__name__}")
        boxes, labels = target.get("boxes"), target.get("labels")
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            raise ValueError(f"target at index {i}: 'boxes' must be a float tensor [G, 4], got {getattr(boxes, 'shape', boxes)}")
        if not isinstance(labels, Tensor) or labels.shape != boxes.shape[:1] or labels.is_floating_point():
            raise ValueError(f"target at index {i}: 'labels' must be an integer tensor [{len(boxes)}], got {getattr(labels, 'shape', labels)}")
    boxes = torch.cat([t["boxes"] for t in targets])
    bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bad.any():  # one host sync for the batch
        j = int(torch.where(bad)[0][0])
        for i, target in enumerate(targets):
            if j < len(target["boxes"]):
                raise ValueError(
                    f"target at index {i}: box {j} {target['boxes'][j].tolist()} must be finite with x2 > x1 and y2 > y1"
                )
            j -= len(target["boxes"])
