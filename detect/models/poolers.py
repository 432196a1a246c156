"""Pooling a fixed-size feature for every RoI, from the FPN level that suits its size.

Shape letters: ``R`` RoIs of the whole batch, ``C`` channels, ``S`` output size.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
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
        out = rois.new_zeros((rois.shape[0], features[0].shape[1], self.output_size, self.output_size))  # shape[0], not len(): traceable
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            (idx,) = torch.where(levels == level)
            out[idx] = self._pool(feature, rois[idx], scale).to(out.dtype)
        return out

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        # Pooled in float32, as torchvision's autocast rules for its RoI ops do. Boxes must
        # never be cast to a bf16 feature's dtype: in bf16 a corner at x = 1290.6 is 1288.
        # torchvision's kernels copy a channels-last feature to NCHW on every call: once here.
        feature, rois = feature.to(torch.float32, memory_format=torch.contiguous_format), rois.float()
        if self.pool_type == "pool":
            return roi_pool(feature, rois, self.output_size, scale)
        if feature.device.type == "cpu" and torch.get_num_threads() > 1 and not torch.compiler.is_compiling():
            return ParallelRoIAlign.apply(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)


class ParallelRoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign, with its CPU forward and backward run on chunks of RoIs in parallel threads.

    torchvision's CPU kernels are serial loops over RoIs; the backward was measured at a
    third of a small-image training step on 2 cores. The forward's chunks are independent
    (same values as one call). Each backward chunk scatters into a gradient covering only
    the images its RoIs lie in, which the main thread adds into the full gradient: no two
    threads write one element, and memory stays near one gradient whatever the thread count.
    """

    _pool: ThreadPoolExecutor | None = None

    @staticmethod
    def _map(fn, chunks: int) -> list:
        if ParallelRoIAlign._pool is None:
            ParallelRoIAlign._pool = ThreadPoolExecutor(max_workers=torch.get_num_threads())
        return list(ParallelRoIAlign._pool.map(fn, range(chunks)))

    @staticmethod
    def _bounds(num_rois: int) -> list[int]:
        chunks = min(torch.get_num_threads(), max(1, num_rois))
        return [num_rois * i // chunks for i in range(chunks + 1)]

    @staticmethod
    def forward(ctx, feature: Tensor, rois: Tensor, output_size: int, scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.params = (feature.shape, output_size, scale, sampling_ratio, aligned)
        bounds = ParallelRoIAlign._bounds(len(rois))

        def forward_chunk(i: int) -> Tensor:
            part = rois[bounds[i] : bounds[i + 1]]
            return torch.ops.torchvision.roi_align(feature, part, scale, output_size, output_size, sampling_ratio, aligned)

        return torch.cat(ParallelRoIAlign._map(forward_chunk, len(bounds) - 1))

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (rois,) = ctx.saved_tensors
        (n, c, h, w), size, scale, sampling_ratio, aligned = ctx.params
        grad_output = grad_output.contiguous()
        bounds = ParallelRoIAlign._bounds(len(rois))
        grad = grad_output.new_zeros((n, c, h, w))
        if len(rois) == 0:
            return grad, None, None, None, None, None

        def backward_chunk(i: int) -> tuple[int, Tensor]:
            part = rois[bounds[i] : bounds[i + 1]]
            if len(part) == 0:
                return 0, grad_output.new_zeros((0, c, h, w))
            first, last = int(part[:, 0].min()), int(part[:, 0].max())
            part = torch.cat([part[:, :1] - first, part[:, 1:]], dim=1)  # image indices from 0 within the chunk
            chunk_grad = torch.ops.torchvision._roi_align_backward(
                grad_output[bounds[i] : bounds[i + 1]], part, scale, size, size, last - first + 1, c, h, w, sampling_ratio, aligned
            )
            return first, chunk_grad

        for first, chunk_grad in ParallelRoIAlign._map(backward_chunk, len(bounds) - 1):
            grad[first : first + len(chunk_grad)] += chunk_grad
        return grad, None, None, None, None, None
