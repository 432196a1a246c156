"""Training-time augmentation over ``(rgb, boxes, labels)``.

A transform is any callable ``(rgb, boxes, labels) -> (rgb, boxes, labels)``:

- ``rgb``: ``uint8 (H, W, 3)``;
- ``boxes``: ``float32 (N, 4)`` absolute pixel ``x1, y1, x2, y2`` (albumentations' ``pascal_voc``);
- ``labels``: ``(N,)`` category ids.

It must keep every box, in order, so that per-box fields a dataset keeps aside
(VOC's ``difficult``) stay aligned; :func:`run_transforms` checks this.

Test time has no transform: the model resizes its inputs itself.
"""

from __future__ import annotations

from typing import Callable

import albumentations as A
import cv2
import numpy as np
import torch

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def resized_shape(height: int, width: int, short_size: int, max_size: int) -> tuple[int, int]:
    """Output ``(h, w)`` of a shortest-edge resize with the longer side capped.

    ``scale = min(short_size / shorter side, max_size / longer side)``, rounded to
    the nearest pixel, as in Detectron2's ``ResizeShortestEdge``.
    """
    scale = min(short_size / min(height, width), max_size / max(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


class TrainTransforms:
    """Shortest-edge resize to a size drawn from ``min_sizes``, horizontal flip, optional colour jitter.

    Random draws come from torch's generator, which ``DataLoader`` seeds
    differently in each worker (and reproducibly from its own ``generator``).
    Albumentations keeps a private generator that would be copied identically
    into every worker, so it is reseeded from torch's on every call.
    """

    def __init__(self, min_sizes: list[int], max_size: int, hflip_prob: float, color_jitter: bool) -> None:
        if not min_sizes or min(min_sizes) <= 0 or max_size <= 0:
            raise ValueError(f"resize sizes must be positive, got min_sizes={min_sizes}, max_size={max_size}")
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        self.min_sizes = list(min_sizes)
        self.max_size = max_size
        steps: list[A.BasicTransform] = [A.HorizontalFlip(p=hflip_prob)]
        if color_jitter:
            steps.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.5))
        # Flip and colour never move a box out of the image, so nothing should be
        # filtered; min_visibility / min_area stay 0 and run_transforms checks it.
        self.pipeline = A.Compose(steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))

    def __call__(
        self, rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = rgb.shape[:2]
        short_size = self.min_sizes[int(torch.randint(len(self.min_sizes), ()))]
        new_h, new_w = resized_shape(height, width, short_size, self.max_size)
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        # Scale by the rounded output size, so boxes follow the pixels exactly.
        scale = np.array([new_w / width, new_h / height] * 2, dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale
        labels = np.asarray(labels)
        # float32 rounding may push a border box a hair past the edge, which albumentations rejects.
        boxes = np.minimum(boxes, np.array([new_w, new_h] * 2, dtype=np.float32))
        self.pipeline.set_random_seed(int(torch.randint(2**31 - 1, ())))
        out = self.pipeline(image=rgb, bboxes=boxes, labels=labels)
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return out["image"], out_boxes, np.asarray(out["labels"], dtype=labels.dtype)


def build_train_transforms(min_sizes: list[int], max_size: int, hflip_prob: float, color_jitter: bool) -> Transform:
    """The training transform; see :class:`TrainTransforms`."""
    return TrainTransforms(min_sizes, max_size, hflip_prob, color_jitter)


def run_transforms(
    transforms: Transform, rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray, record: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Applies ``transforms`` and checks that it kept every box.

    Args:
        record: names the image in errors, e.g. ``"instances.json image id 9"``.
    """
    rgb, out_boxes, out_labels = transforms(rgb, boxes, labels)
    if len(out_boxes) != len(boxes) or len(out_labels) != len(labels):
        raise ValueError(
            f"{record}: transform {type(transforms).__name__} returned {len(out_boxes)} boxes and "
            f"{len(out_labels)} labels for {len(boxes)} input boxes; transforms must keep every box"
        )
    return rgb, out_boxes, out_labels
