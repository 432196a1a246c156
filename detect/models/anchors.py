"""Anchor boxes on every feature level.

Shape letters: ``A`` anchors per location, ``H, W`` a level's size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from detect.box_ops import box_area


def cell_anchors(sizes: list[float], aspect_ratios: list[float], rounded: bool = True) -> Tensor:
    """The ``A = len(aspect_ratios) * len(sizes)`` anchors centred on (0, 0), ``[A, 4]`` float32.

    Aspect ratio is height / width; an anchor keeps the area ``size ** 2``.
    Ordered ratio-major, as torchvision, so that converted RPN heads line up.
    ``rounded``: corners rounded to integers, computed in float32 as torchvision
    does; otherwise exact corners, computed in float64 and then cast (Detectron2's anchors).
    """
    dtype = torch.float32 if rounded else torch.float64
    scales = torch.as_tensor(sizes, dtype=dtype)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    return anchors.round() if rounded else anchors.float()


ANCHOR_CACHE_SIZE = 8


class AnchorGenerator(nn.Module):
    """Places each level's cell anchors at every feature-map location.

    A location ``(i, j)`` of a level with stride ``s`` is shifted by ``(j*s, i*s)``.
    Without ``strides``, a level's stride is the padded image size divided by the
    level size (integer division), as torchvision computes it, so its trained
    weights see the same anchors; with ``strides`` (one per level) it is fixed, as
    in Detectron2, which matters when the image is not padded to a multiple of it.
    """

    def __init__(
        self, sizes: list[list[float]], aspect_ratios: list[float], rounded: bool = True, strides: list[int] | None = None
    ):
        super().__init__()
        self.cell_anchors = [cell_anchors(s, aspect_ratios, rounded) for s in sizes]
        counts = {len(a) for a in self.cell_anchors}
        if len(counts) != 1:
            raise ValueError(f"every level needs the same number of anchors per location, got sizes {sizes}")
        if strides is not None and len(strides) != len(sizes):
            raise ValueError(f"{len(strides)} anchor strides for {len(sizes)} levels of anchor sizes")
        self.num_anchors_per_location = counts.pop()
        self.strides = strides
        # (feature sizes, padded image size, device) -> anchors; a few entries cover the
        # sizes of a multi-scale schedule (4 MB each at 800x1333).
        self._cache: OrderedDict[tuple, list[Tensor]] = OrderedDict()

    def forward(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device) -> list[Tensor]:
        """Returns one ``[H*W*A, 4]`` tensor per level, location-major then anchor.

        The tensors are cached per sizes and device (the same objects are returned
        again): do not modify them in place.
        """
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(f"{len(feature_sizes)} feature levels but anchors for {len(self.cell_anchors)}")
        if torch.compiler.is_compiling():  # traced with symbolic sizes: a cache key would fix them
            return self._anchors(feature_sizes, image_size, device)
        key = (tuple(tuple(int(d) for d in size) for size in feature_sizes), tuple(int(d) for d in image_size), torch.device(device))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        anchors = self._anchors(feature_sizes, image_size, device)
        self._cache[key] = anchors
        if len(self._cache) > ANCHOR_CACHE_SIZE:
            self._cache.popitem(last=False)
        return anchors

    def _level_strides(self, level: int, feature_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
        if self.strides is None:
            return image_size[0] // feature_size[0], image_size[1] // feature_size[1]
        return self.strides[level], self.strides[level]

    def _anchors(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], device: torch.device) -> list[Tensor]:
        anchors = []
        for level, ((h, w), base) in enumerate(zip(feature_sizes, self.cell_anchors)):
            stride_y, stride_x = self._level_strides(level, (h, w), image_size)
            shift_y, shift_x = torch.meshgrid(
                torch.arange(h, device=device, dtype=torch.int32) * stride_y,
                torch.arange(w, device=device, dtype=torch.int32) * stride_x,
                indexing="ij",
            )
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
            anchors.append((shifts + base.to(device).view(1, -1, 4)).reshape(-1, 4))  # (H*W, A, 4) -> (H*W*A, 4)
        return anchors

    def overlapping(
        self,
        boxes: Tensor,
        feature_sizes: list[tuple[int, int]],
        image_size: tuple[int, int],
        max_pairs: int,
        min_area_ratio: float = 0.0,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Pairs of a box and an anchor that may overlap: all pairs of IoU > 0, and some of IoU 0.

        Args:
            boxes: ``[K, 4]``.
            feature_sizes, image_size: as for :meth:`forward`, whose anchor indices the pairs use.
            max_pairs: pairs per group yielded (exceeded only by a single box's own pairs).
            min_area_ratio: pairs whose smaller area is less than this fraction of the larger
                are left out: their IoU, at most that fraction, is below it.

        Yields:
            groups of ``(box_index [P], anchor_index [P])``, each group holding all pairs of its boxes.
        """
        device = boxes.device
        rects = []  # per level: first row, rows, first column, columns (each [K, A]), width, index offset
        offset = 0
        box_areas = box_area(boxes)[:, None]  # (K, 1)
        for level, ((h, w), base) in enumerate(zip(feature_sizes, self.cell_anchors)):
            stride_y, stride_x = self._level_strides(level, (h, w), image_size)
            base = base.to(device)
            # Column j overlaps [x1, x2] when j * s + a_x1 < x2 and j * s + a_x2 > x1: floor/ceil keep a superset.
            j0 = torch.floor((boxes[:, None, 0] - base[:, 2]) / stride_x).clamp(0, w - 1)
            j1 = torch.ceil((boxes[:, None, 2] - base[:, 0]) / stride_x).clamp(0, w - 1)
            i0 = torch.floor((boxes[:, None, 1] - base[:, 3]) / stride_y).clamp(0, h - 1)
            i1 = torch.ceil((boxes[:, None, 3] - base[:, 1]) / stride_y).clamp(0, h - 1)
            anchor_areas = box_area(base)  # (A,)
            similar = torch.minimum(box_areas, anchor_areas) >= min_area_ratio * torch.maximum(box_areas, anchor_areas)
            rows = (i1 - i0 + 1).long() * similar  # no rows: no pairs of this box and cell anchor
            rects.append((i0.long(), rows, j0.long(), (j1 - j0 + 1).long(), w, offset))
            offset += h * w * len(base)
        num_anchors = self.num_anchors_per_location
        per_box = sum((rows * cols).sum(dim=1) for _, rows, _, cols, _, _ in rects)  # (K,)
        bounds = _groups(per_box.tolist(), max_pairs)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            box_index, anchor_index = [], []
            for i0, rows, j0, cols, w, offset in rects:
                i0, rows, j0, cols = (t[start:stop].flatten() for t in (i0, rows, j0, cols))
                counts = rows * cols  # (k*A,) one rectangle of locations per box and cell anchor
                rect = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
                local = torch.arange(len(rect), device=device) - (torch.cumsum(counts, 0) - counts)[rect]
                i = i0[rect] + local // cols[rect]
                j = j0[rect] + local % cols[rect]
                box_index.append(start + rect // num_anchors)
                anchor_index.append(offset + (i * w + j) * num_anchors + rect % num_anchors)
            yield torch.cat(box_index), torch.cat(anchor_index)


def _groups(sizes: list[int], budget: int) -> list[int]:
    """Bounds of consecutive groups of items whose sizes add up to at most ``budget`` (or one item)."""
    bounds, total = [0], 0
    for index, size in enumerate(sizes):
        if total and total + size > budget:
            bounds.append(index)
            total = 0
        total += size
    if bounds[-1] != len(sizes):
        bounds.append(len(sizes))
    return bounds
