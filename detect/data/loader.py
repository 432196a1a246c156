"""Batching: samplers, collation and the training and test loaders.

Batches are ``(images, targets)``: ``images`` a list of ``Tensor[3, H, W]`` of
different sizes (the model pads them) and ``targets`` the matching list of dicts,
as torchvision's detection models take them.

Under ``torch.distributed`` each process (rank) loads its own share:

- training: an endless stream; each pass over the data is a permutation drawn
  from ``seed + epoch``, split ``perm[rank::world_size]``, so every rank knows
  the others' shares without communicating;
- test: contiguous slices in dataset order, so gathering the results of ranks
  0, 1, ... and concatenating them restores the dataset order.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, Optional, Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Sampler


class DetectionDataset(Protocol):
    """What the loaders need of a dataset (both :mod:`detect.data.coco` and :mod:`detect.data.voc` qualify)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]: ...

    def image_info(self, index: int) -> dict[str, Any]: ...


def collate(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])``; images are not stacked."""
    return [image for image, _ in batch], [target for _, target in batch]


def _rank_and_world_size(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    """Explicit values win; otherwise those of the initialised process group, else a single process."""
    if (rank is None) != (world_size is None):
        raise ValueError(f"give both rank and world_size or neither, got rank={rank}, world_size={world_size}")
    if rank is None:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


class TrainingSampler(Sampler[int]):
    """Endless shuffled dataset indices for this rank.

    Pass ``e`` over the data is ``randperm(size)`` seeded with ``seed + e``;
    rank ``r`` of ``W`` takes every ``W``-th index from position ``r``. The shares
    of one pass are disjoint and together cover the dataset exactly once.
    """

    def __init__(self, size: int, seed: int, rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        """
        Args:
            size: number of dataset items.
            seed: the same on every rank.
            rank, world_size: default to the initialised process group, else 0 and 1.
        """
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)
        if size < self.world_size:
            # A rank with an empty share would loop forever without yielding.
            raise ValueError(f"cannot share {size} training images among {self.world_size} processes")
        self.size = size
        self.seed = seed

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's share of pass ``epoch``, in sampling order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator)[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        for epoch in itertools.count():
            yield from self.epoch_indices(epoch)


class GroupedBatchSampler:
    """Batches whose indices all share a group id, e.g. portrait vs landscape.

    Padding a batch to its largest image wastes less when all images have the
    same orientation. Indices wait in a per-group buffer until it holds a full
    batch; meant for endless samplers, so a partial buffer is never emitted.
    """

    def __init__(self, sampler: Iterable[int], group_ids: list[int], batch_size: int) -> None:
        """
        Args:
            sampler: yields dataset indices.
            group_ids: ``group_ids[i]`` is the group of dataset index ``i``.
            batch_size: indices per batch.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            buffer = buffers.setdefault(self.group_ids[index], [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                buffer.clear()


class SkippedBatches:
    """An endless batch sampler without its first ``count`` batches (index lists only: no image is read)."""

    def __init__(self, batches: Iterable[list[int]], count: int) -> None:
        self.batches = batches
        self.count = count

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.count, None)


def aspect_ratio_groups(dataset: DetectionDataset) -> list[int]:
    """Group id per item from the annotations: 0 if width / height < 1 (portrait), else 1."""
    groups = []
    for index in range(len(dataset)):
        info = dataset.image_info(index)
        groups.append(0 if info["width"] < info["height"] else 1)
    return groups


def build_train_loader(
    dataset: DetectionDataset,
    batch_size_per_process: int,
    num_workers: int,
    aspect_ratio_grouping: bool,
    seed: int,
    start_batch: int = 0,
) -> DataLoader:
    """An endless loader of shuffled training batches for this process.

    Args:
        dataset: a map-style detection dataset.
        batch_size_per_process: images per batch on this rank.
        num_workers: loading processes; 0 loads in the calling process.
        aspect_ratio_grouping: batch portrait and landscape images separately.
        seed: same on every rank; fixes the order and (with ``rank``) the augmentation.
        start_batch: batches to skip, so that a resumed run continues the same sequence.

    Returns:
        Iterating yields ``(images, targets)`` batches forever; do not call ``len``.
    """
    sampler = TrainingSampler(len(dataset), seed)
    if aspect_ratio_grouping:
        groups = aspect_ratio_groups(dataset)
        batch_sampler: Iterable[list[int]] = GroupedBatchSampler(sampler, groups, batch_size_per_process)
    else:
        batch_sampler = BatchSampler(sampler, batch_size_per_process, drop_last=True)
    if start_batch:
        batch_sampler = SkippedBatches(batch_sampler, start_batch)
    # Workers' torch seeds (and so the augmentation draws) derive from this generator;
    # each rank gets its own so ranks do not augment in lockstep.
    generator = torch.Generator().manual_seed(seed + sampler.rank)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
    )


class InferenceSampler(Sampler[int]):
    """This rank's contiguous slice of ``range(size)``, each index once, in order.

    Slices differ in length by at most one; rank ``r`` of ``W`` gets
    ``[r * size // W, (r + 1) * size // W)``.
    """

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        self.rank, self.world_size = _rank_and_world_size(rank, world_size)
        self.indices = range(self.rank * size // self.world_size, (self.rank + 1) * size // self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_test_loader(dataset: DetectionDataset, batch_size: int, num_workers: int) -> DataLoader:
    """Each of this rank's images once, in dataset order (see :class:`InferenceSampler`).

    Targets carry ``image_id``, so results can also be matched to images by id.
    """
    batch_sampler = BatchSampler(InferenceSampler(len(dataset)), batch_size, drop_last=False)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate)
