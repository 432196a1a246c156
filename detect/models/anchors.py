"""Anchor boxes on every feature level.

Shape letters: ``A`` anchors per location, ``H, W`` a level's size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cell_anchors(sizes: list[float], aspect_ratios: list[float]) -> Tensor:
    """The ``A = len(aspect_ratios) * len(sizes)`` anchors centred on (0, 0), rounded to integers.

    Aspect ratio is height / width; an anchor keeps the area ``size ** 2``.
    Ordered ratio-major, as torchvision, so that converted RPN heads line up.
    """
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Places each level's cell anchors at every feature-map location.

    A location ``(i, j)`` of a level with stride ``s`` is shifted by ``(j*s, i*s)``.
    The stride is the padded image size divided by the level size (integer
    division), as torchvision computes it, so its trained weights see the same anchors.
    """

    def __init__(self, sizes: list[list[float]], aspect_ratios: list[float]):
        super().__init__()
        self.cell_anchors = [cell_anchors(s, aspect_ratios) for s in sizes]
        counts = {len(a) for a in self.cell_anchors}
        if len(counts) != 1:
            raise ValueError(f"every level needs the same number of anchors per location, got sizes {sizes}")
        self.num_anchors_per_location = counts.pop()

    def forward(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device) -> list[Tensor]:
        """Returns one ``[H*W*A, 4]`` tensor per level, location-major then anchor."""
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(f"{len(feature_sizes)} feature levels but anchors for {len(self.cell_anchors)}")
        anchors = []
        for (h, w), base in zip(feature_sizes, self.cell_anchors):
            stride_y, stride_x = image_size[0] // h, image_size[1] // w
            shift_y, shift_x = torch.meshgrid(
                torch.arange(h, device=device, dtype=torch.int32) * stride_y,
                torch.arange(w, device=device, dtype=torch.int32) * stride_x,
                indexing="ij",
            )
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
            anchors.append((shifts + base.to(device).view(1, -1, 4)).reshape(-1, 4))  # (H*W, A, 4) -> (H*W*A, 4)
        return anchors
