"""Model input and output in pixels: normalise, resize, pad; map detections back.

Training images are used at the size they come in (the data pipeline draws the
training scale); at test time each image is resized so that its shorter side is
``min_size`` and its longer side at most ``max_size``, exactly as torchvision does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ImageBatch:
    """``tensors [N, 3, H, W]`` padded; ``image_sizes [N, 2]`` (h, w) after resizing,
    before padding; ``original_sizes [N, 2]`` (h, w) as given."""

    tensors: Tensor
    image_sizes: Tensor
    original_sizes: Tensor

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensors.shape[-2]), int(self.tensors.shape[-1])


class ImageTransform(nn.Module):
    """Args:
        min_size, max_size: test-time resizing.
        size_divisible: the padded batch's height and width are multiples of it.
        pixel_mean, pixel_std: per channel, in ``channel_order`` and on the ``pixel_scale`` range.
        channel_order: ``"rgb"``, or ``"bgr"`` for networks trained on BGR images
            (MSRA's and Detectron2's); the input images are always RGB.
        pixel_scale: images (0..1) are multiplied by it before normalising (255 for Detectron2's).
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        size_divisible: int,
        pixel_mean: list[float],
        pixel_std: list[float],
        channel_order: str = "rgb",
        pixel_scale: float = 1.0,
    ):
        super().__init__()
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"unknown channel order {channel_order!r}; known: 'rgb', 'bgr'")
        self.min_size = min_size
        self.max_size = max_size
        self.size_divisible = size_divisible
        self.bgr = channel_order == "bgr"
        self.pixel_scale = pixel_scale
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    def forward(self, images: list[Tensor], boxes: list[Tensor] | None = None) -> tuple[ImageBatch, list[Tensor] | None]:
        """Normalises, resizes (at test time) and pads; scales ``boxes`` with their images."""
        resized = []
        for image in images:
            h, w = image.shape[-2:]
            image = self.normalize(image)
            if not self.training:
                scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
                image = F.interpolate(
                    image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
                )[0]
            resized.append(image)
        device = images[0].device
        image_sizes = torch.tensor([i.shape[-2:] for i in resized], dtype=torch.int64, device=device)
        original_sizes = torch.tensor([i.shape[-2:] for i in images], dtype=torch.int64, device=device)
        if boxes is not None and not self.training:
            boxes = [rescale(b, o, s) for b, o, s in zip(boxes, original_sizes, image_sizes)]
        return ImageBatch(self._pad(resized), image_sizes, original_sizes), boxes

    def normalize(self, image: Tensor) -> Tensor:
        """RGB ``[3, H, W]`` in 0..1 -> the network's input channels, scaled and standardised."""
        if self.bgr:
            image = image.flip(0)
        if self.pixel_scale != 1.0:
            image = image * self.pixel_scale
        return (image - self.pixel_mean) / self.pixel_std

    def _pad(self, images: list[Tensor]) -> Tensor:
        stride = self.size_divisible
        h = int(math.ceil(max(i.shape[-2] for i in images) / stride) * stride)
        w = int(math.ceil(max(i.shape[-1] for i in images) / stride) * stride)
        batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
        for i, image in enumerate(images):
            batch[i, :, : image.shape[-2], : image.shape[-1]].copy_(image)
        return batch



def rescale(boxes: Tensor, from_size: Tensor, to_size: Tensor) -> Tensor:
    """Maps ``boxes [..., 4]`` from an image of ``from_size`` (h, w) to one of ``to_size``."""
    ratio = to_size.to(torch.float32) / from_size.to(torch.float32)  # (ry, rx)
    return boxes * ratio[[1, 0, 1, 0]]
