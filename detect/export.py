"""Taking a trained detector out of Python: ONNX, ``torch.export`` programs, and their parity.

The exported model is :class:`DeployableDetector`: one float image ``[3, H, W]`` in 0..1
of any size in, ``boxes [D, 4]`` (pixels of that image), ``scores [D]`` and ``labels [D]``
(the dataset's category ids) out, by descending score: the eager model's contract for one image.

It runs the model's own modules (transform's normalisation, backbone, RPN head, anchors,
RoI pooler, box head, predictor) and re-expresses, for a single image, the three steps
whose eager form cannot be traced with a symbolic image size or a data-dependent number
of boxes: the resize (Python ``min`` over sizes), NMS (torchvision's ``batched_nms``
branches on the box count) and the per-image top-k (``cummax`` has no ONNX operator).

Shape letters: ``R`` anchors of one image, ``P`` proposals, ``K`` foreground classes, ``D`` detections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from detect.box_ops import clip_boxes, nonempty
from detect.models.faster_rcnn import FasterRCNN
from detect.models.transform import rescale


class DeployableDetector(nn.Module):
    """A :class:`FasterRCNN` in evaluation mode as a single-image function of tensors only.

    Args:
        model: the detector; its weights are shared, not copied.
    """

    def __init__(self, model: FasterRCNN):
        super().__init__()
        self.model = model.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``image [3, H, W]`` float in 0..1 -> ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``."""
        m = self.model
        x, size = self._resize_and_pad(image)
        if m.backbone_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = m.backbone(x)
        proposals = self._proposals([features[n] for n in m.rpn_features], x.shape[-2:], size)
        heads = m.roi_heads
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)  # (P, 5): image 0
        logits, deltas = heads.predictor(heads.box_head(heads.pooler([features[n] for n in m.roi_features], rois)))
        boxes, scores, labels = self._detections(logits, deltas, proposals, size, x.shape[-2:])
        original = torch.tensor(image.shape[-2:], device=image.device)
        return rescale(boxes, size[0], original), scores, m.categories.to_id(labels)

    def _resize_and_pad(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised, resized as :class:`ImageTransform` does at test time, padded: ``[1, 3, H', W']``,
        and the resized size ``[1, 2]`` (h, w) before padding."""
        t = self.model.transform
        h, w = image.shape[-2:]
        scale = torch.sym_min(t.min_size / torch.sym_min(h, w), t.max_size / torch.sym_max(h, w))
        # interpolate's recompute_scale_factor=True: the output size is floor(size * scale) (> 0: trunc is floor)
        out_h, out_w = torch.sym_int(h * scale), torch.sym_int(w * scale)
        x = (image - t.pixel_mean) / t.pixel_std
        x = F.interpolate(x[None], size=(out_h, out_w), mode="bilinear", align_corners=False)
        stride = t.size_divisible
        x = F.pad(x, (0, (out_w + stride - 1) // stride * stride - out_w, 0, (out_h + stride - 1) // stride * stride - out_h))
        return x, torch.tensor([[out_h, out_w]], device=image.device)

    def _proposals(self, features: list[Tensor], padded_size: tuple[int, int], image_size: Tensor) -> Tensor:
        """The RPN's test-time proposals ``[P, 4]`` of the one image (see :meth:`RPN._proposals`)."""
        rpn = self.model.rpn
        logits, deltas = rpn.head(features)  # (1, R), (1, R, 4)
        level_anchors = rpn.anchor_generator([f.shape[-2:] for f in features], padded_size, logits.device)
        boxes, scores, levels = [], [], []
        offset = 0
        for level, anchors in enumerate(level_anchors):
            size = anchors.shape[0]  # not len(): that would fix the image size
            top = logits[0, offset : offset + size].topk(torch.sym_min(rpn.pre_nms_topk[1], size))
            idx = top.indices
            boxes.append(rpn.box_coder.decode(deltas[0, offset + idx], anchors[idx]).squeeze(-2))  # (k, 1, 4) -> (k, 4)
            scores.append(torch.sigmoid(top.values))
            levels.append(torch.full_like(idx, level))
            offset += size
        boxes, scores, levels = _keep(clip_boxes(torch.cat(boxes)[None], image_size)[0], torch.cat(scores), torch.cat(levels), rpn.min_box_size)
        kept = _batched_nms(boxes, scores, levels, rpn.nms_thresh, padded_size)[: rpn.post_nms_topk[1]]
        return boxes[kept]

    def _detections(
        self, logits: Tensor, deltas: Tensor, proposals: Tensor, size: Tensor, padded_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class-specific boxes, scores and predictor indices 1..K after NMS (see :meth:`RoIHeads._detect`)."""
        heads = self.model.roi_heads
        num_outputs = logits.shape[1]
        scores = F.softmax(logits, dim=-1)[:, 1:].reshape(-1)  # (P, K) -> (P*K)
        boxes = clip_boxes(heads.box_coder.decode(deltas, proposals)[:, 1:].reshape(1, -1, 4), size)[0]  # (P*K, 4)
        labels = torch.arange(1, num_outputs, device=logits.device).expand_as(logits[:, 1:]).reshape(-1)
        high = scores > heads.score_thresh
        boxes, scores, labels = boxes[high], scores[high], labels[high]
        boxes, scores, labels = _keep(boxes, scores, labels, 1e-2)
        kept = _batched_nms(boxes, scores, labels, heads.nms_thresh, padded_size)[: heads.detections_per_image]
        return boxes[kept], scores[kept], labels[kept]


def _keep(boxes: Tensor, scores: Tensor, groups: Tensor, min_size: float) -> tuple[Tensor, Tensor, Tensor]:
    keep = nonempty(boxes, min_size)
    return boxes[keep], scores[keep], groups[keep]


def _batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_thresh: float, image_size: tuple[int, int]) -> Tensor:
    """NMS within each group by torchvision's coordinate trick, with a shift that needs no
    reduction over the boxes (they lie within ``image_size``): kept indices by descending score."""
    shift = groups.to(boxes.dtype) * (torch.sym_max(*image_size) + 1)
    return torchvision.ops.nms(boxes + shift[:, None], scores, iou_thresh)
