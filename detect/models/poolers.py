"""Pooling a fixed-size feature for every RoI, from the FPN level that suits its size.

Shape letters: ``R`` RoIs of the whole batch, ``C`` channels, ``S`` output size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from detect.box_ops import box_area
from detect.config import POOLER_TYPES


def assign_fpn_levels(boxes: Tensor, min_level: int, max_level: int, canonical_size: float = 224.0, canonical_level: int = 4) -> Tensor:
    """Level of each box by the FPN paper's rule ``floor(k0 + log2(sqrt(area) / 224))``.

    Returns indices ``0 .. max_level - min_level`` into the pooled levels. The
    small epsilon keeps boxes of exactly canonical size on level k0, as torchvision does.
    """
    size = torch.sqrt(box_area(boxes))
    level = torch.floor(canonical_level + torch.log2(size / canonical_size) + torch.tensor(1e-6, dtype=size.dtype))
    return (level.clamp(min=min_level, max=max_level) - min_level).to(torch.int64)


class RoIPooler(nn.Module):
    """RoIAlign (or RoIPool) over one or several feature levels.

    Args:
        output_size: ``S``.
        strides: stride of each pooled level, fine to coarse (powers of two for several levels).
        sampling_ratio: RoIAlign's sampling points per bin side (0: adaptive).
        aligned: RoIAlign's half-pixel correction.
        pool_type: ``"align"`` or ``"pool"`` (max pooling, as in the ResNet paper).
    """

    def __init__(self, output_size: int, strides: list[int], sampling_ratio: int, aligned: bool, pool_type: str):
        super().__init__()
        if pool_type not in POOLER_TYPES:
            raise ValueError(f"unknown RoI pooler type {pool_type!r}; known: {', '.join(map(repr, POOLER_TYPES))}")
        self.output_size = output_size
        self.scales = [1.0 / s for s in strides]
        self.min_level = int(math.log2(strides[0]))
        self.max_level = int(math.log2(strides[-1]))
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.pool_type = pool_type

    def forward(self, features: list[Tensor], rois: Tensor) -> Tensor:
        """Args: features per level ``[N, C, H, W]``; rois ``[R, 5]`` as (image index, x1, y1, x2, y2).
        Returns ``[R, C, S, S]``."""
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])
        levels = assign_fpn_levels(rois[:, 1:], self.min_level, self.max_level)
        # every RoI has a level: each row is written once below. shape[0], not len(): traceable
        out = rois.new_empty((rois.shape[0], features[0].shape[1], self.output_size, self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            (idx,) = torch.where(levels == level)
            out[idx] = self._pool(feature, rois[idx], scale).to(out.dtype)
        return out

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        # Pooled in float32, as torchvision's autocast rules for its RoI ops do. Boxes must
        # never be cast to a bf16 feature's dtype: in bf16 a corner at x = 1290.6 is 1288.
        feature, rois = feature.float(), rois.float()
        if self.pool_type == "pool":
            return roi_pool(feature, rois, self.output_size, scale)
        if feature.device.type == "cpu" and not torch.compiler.is_compiling():  # export: torchvision's op, which ONNX knows
            return roi_align_gather(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)


GATHER_TAPS_PER_CALL = 1 << 22  # index and weight entries of one embedding_bag call: about 50 MB


def roi_align_gather(feature: Tensor, rois: Tensor, output_size: int, scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """torchvision's RoIAlign as a weighted sum of feature pixels per output bin.

    The sample points, bilinear weights and averaging are torchvision's, coordinates in the
    same float32 arithmetic; the sum is ``F.embedding_bag`` over the feature's pixels with
    channels innermost, so every tap reads ``C`` contiguous values (free for a channels-last
    feature). torchvision's CPU kernels loop over RoIs one channel plane at a time; this is
    about 10x faster forward and backward on 2 cores, and its backward needs no gradient but
    the feature's. With adaptive sampling (``sampling_ratio`` 0) RoIs are taken in order of
    their samples per bin and in chunks, each padded to its largest, so that a few large
    RoIs do not pad all the others.

    Args: feature ``[N, C, H, W]`` float; rois ``[R, 5]`` (image index, x1, y1, x2, y2),
    same dtype; as torchvision's ``roi_align``. Returns ``[R, C, S, S]`` (channels-last strides).
    """
    n, c, h, w = feature.shape
    num_rois, bins = rois.shape[0], output_size * output_size
    if num_rois == 0:
        return feature.new_zeros((0, c, output_size, output_size))
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * scale - offset).unbind(1)
    width, height = x2 - x1, y2 - y1
    if not aligned:  # torchvision's legacy rule: RoIs at least one pixel a side
        width, height = width.clamp(min=1.0), height.clamp(min=1.0)
    bin_w, bin_h = width / output_size, height / output_size
    if sampling_ratio > 0:
        grid_w = grid_h = torch.full_like(bin_w, sampling_ratio)
        order = None
    else:  # adaptive: ceil(bin size) samples per bin side
        grid_w, grid_h = bin_w.ceil(), bin_h.ceil()
        order = torch.maximum(grid_w, grid_h).argsort()
        x1, y1, bin_w, bin_h, grid_w, grid_h, rois = (t[order] for t in (x1, y1, bin_w, bin_h, grid_w, grid_h, rois))
    pixels = feature.permute(0, 2, 3, 1).reshape(n * h * w, c)  # (N*H*W, C): a view when channels-last
    base = rois[:, 0].long() * (h * w)
    chunks = []
    for first, last in _chunks(torch.maximum(grid_w, grid_h), bins):
        part = slice(first, last)
        x_index, x_weight = _axis_taps(x1[part], bin_w[part], grid_w[part], output_size, w)  # (r, S, Gx*2)
        y_index, y_weight = _axis_taps(y1[part], bin_h[part], grid_h[part], output_size, h)
        count = (grid_w[part] * grid_h[part]).clamp(min=1.0)
        # bin (i, j) takes every y tap of row i with every x tap of column j: (r, S, S, Gy*2, Gx*2)
        index = base[part, None, None, None, None] + y_index[:, :, None, :, None] * w + x_index[:, None, :, None, :]
        weight = y_weight[:, :, None, :, None] * x_weight[:, None, :, None, :] / count[:, None, None, None, None]
        bags = (last - first) * bins
        chunks.append(F.embedding_bag(index.view(bags, -1), pixels, per_sample_weights=weight.view(bags, -1), mode="sum"))
    pooled = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
    pooled = pooled.view(num_rois, output_size, output_size, c).permute(0, 3, 1, 2)  # (R*S*S, C) -> (R, C, S, S)
    return pooled if order is None else pooled[order.argsort()]


def _chunks(grid: Tensor, bins: int) -> list[tuple[int, int]]:
    """Consecutive RoI ranges (at least one RoI) whose taps, padded to the range's largest ``grid`` (ascending), fit one call."""
    taps = [bins * (2 * max(int(g), 1)) ** 2 for g in grid.tolist()]
    ranges, first = [], 0
    for i, roi_taps in enumerate(taps):
        if i > first and (i + 1 - first) * roi_taps > GATHER_TAPS_PER_CALL:
            ranges.append((first, i))
            first = i
    return [*ranges, (first, len(taps))]


def _axis_taps(start: Tensor, bin_size: Tensor, grid: Tensor, output_size: int, size: int) -> tuple[Tensor, Tensor]:
    """Bilinear taps along one axis of every sample of every bin, as torchvision's ``bilinear_interpolate``.

    Args: start, bin_size, grid (samples per bin, float) ``[r]``; ``size`` the feature's extent.
    Returns pixel index (int64) and weight, ``[r, S, G * 2]``: each sample's low and high
    neighbour, ``G`` the largest grid (at least 1). Samples beyond their ``grid`` (padding) or outside
    ``[-1, size]`` weigh 0.
    """
    bins = torch.arange(output_size, dtype=start.dtype, device=start.device)
    samples = torch.arange(max(int(grid.max()), 1), dtype=start.dtype, device=start.device)  # one, unused, if none
    # torchvision's order of operations: start + bin * bin_size + (sample + .5) * bin_size / grid
    coord = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]) + (
        (samples + 0.5)[None, None, :] * bin_size[:, None, None] / grid[:, None, None]
    )  # (r, S, G)
    used = (coord >= -1.0) & (coord <= size) & (samples < grid[:, None, None])
    coord = torch.where(used, coord.clamp(min=0.0), 0.0)  # unused (padding may be 0 / 0): any valid pixel
    low = coord.floor().clamp(max=size - 1)
    at_edge = coord >= size - 1  # the last pixel: both neighbours are it
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, 0.0, coord - low)
    weight = torch.stack([1.0 - frac, frac], dim=-1) * used[..., None]
    index = torch.stack([low, high], dim=-1).long()
    return index.flatten(2), weight.flatten(2)
