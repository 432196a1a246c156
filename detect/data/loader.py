"""Batching: samplers, collation and the training and test loaders.

Batches are ``(images, targets)``: ``images`` a list of ``uint8 Tensor[3, H, W]``
of different sizes (the model pads them; :func:`detect.data.image_io.to_float_image`
makes its float input where the batch meets it) and ``targets`` the matching list
of dicts, as torchvision's detection models take them.

Under ``torch.distributed`` each process (rank) loads its own share:

- training: an endless stream of ``(index, augmentation seed)`` samples; each
  pass over the data is a permutation drawn from ``seed + epoch``, split
  ``perm[rank::world_size]``, so every rank knows the others' shares without
  communicating. An image's augmentation is drawn from its sample's seed alone,
  so it is the same whichever worker or process reads it, and a resumed run
  continues the stream instead of restarting it;
- test: contiguous slices in dataset order, so gathering the results of ranks
  0, 1, ... and concatenating them restores the dataset order.
"""

from __future__ import annotations

import gc
import itertools
import signal
from typing import Any, Iterable, Iterator, Optional, Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Sampler

Sample = tuple[int, int]  # (dataset index, seed of its augmentation)


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


class TrainingSampler(Sampler[Sample]):
    """Endless shuffled ``(dataset index, augmentation seed)`` samples for this rank.

    Pass ``e`` over the data draws ``randperm(size)`` and one seed per position
    from a generator seeded with ``seed + e``; rank ``r`` of ``W`` takes every
    ``W``-th position from ``r``. The shares of one pass are disjoint and together
    cover the dataset exactly once, and a position's seed does not depend on ``W``.
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

    def epoch_samples(self, epoch: int) -> list[Sample]:
        """This rank's share of pass ``epoch``, in sampling order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        indices = torch.randperm(self.size, generator=generator)
        seeds = torch.randint(2**62, (self.size,), generator=generator)
        share = slice(self.rank, None, self.world_size)
        return list(zip(indices[share].tolist(), seeds[share].tolist()))

    def epoch_indices(self, epoch: int) -> list[int]:
        """The dataset indices of :meth:`epoch_samples`."""
        return [index for index, _ in self.epoch_samples(epoch)]

    def __iter__(self) -> Iterator[Sample]:
        for epoch in itertools.count():
            yield from self.epoch_samples(epoch)


class SeededSamples(torch.utils.data.Dataset):
    """Reads sample ``(index, seed)`` of ``dataset`` with torch's generator set to ``seed``.

    The training transforms draw from torch's generator, so an image's
    augmentation depends on its sample alone: not on the worker that reads it,
    the number of workers or processes, or where a resumed run restarted. The
    caller's generator state is left as it was.
    """

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, sample: Sample) -> tuple[Tensor, dict[str, Any]]:
        index, seed = sample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class GroupedBatchSampler:
    """Batches of samples whose images all share a group id, e.g. portrait vs landscape.

    Padding a batch to its largest image wastes less when all images have the
    same orientation. Samples wait in a per-group buffer until it holds a full
    batch; meant for endless samplers, so a partial buffer is never emitted.
    """

    def __init__(self, sampler: Iterable[Sample], group_ids: list[int], batch_size: int) -> None:
        """
        Args:
            sampler: yields ``(dataset index, seed)`` samples.
            group_ids: ``group_ids[i]`` is the group of dataset index ``i``.
            batch_size: samples per batch.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[Sample]]:
        buffers: dict[int, list[Sample]] = {}
        for sample in self.sampler:
            buffer = buffers.setdefault(self.group_ids[sample[0]], [])
            buffer.append(sample)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                buffer.clear()


class SkippedBatches:
    """An endless batch sampler without its first ``count`` batches (sample lists only: no image is read)."""

    def __init__(self, batches: Iterable[list[Sample]], count: int) -> None:
        self.batches = batches
        self.count = count

    def __iter__(self) -> Iterator[list[Sample]]:
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
    pin_memory: bool = False,
) -> DataLoader:
    """An endless loader of shuffled training batches for this process.

    Args:
        dataset: a map-style detection dataset.
        batch_size_per_process: images per batch on this rank.
        num_workers: loading processes; 0 loads in the calling process.
        aspect_ratio_grouping: batch portrait and landscape images separately.
        seed: same on every rank; fixes the order and the augmentation.
        start_batch: batches to skip, so that a resumed run continues the same sequence.
        pin_memory: put batches in page-locked memory, so that copies to a CUDA device
            with ``non_blocking=True`` overlap the computation instead of waiting for it.

    Returns:
        Iterating yields ``(images, targets)`` batches forever; do not call ``len``.
    """
    sampler = TrainingSampler(len(dataset), seed)
    if aspect_ratio_grouping:
        groups = aspect_ratio_groups(dataset)
        batch_sampler: Iterable[list[Sample]] = GroupedBatchSampler(sampler, groups, batch_size_per_process)
    else:
        batch_sampler = BatchSampler(sampler, batch_size_per_process, drop_last=True)
    if start_batch:
        batch_sampler = SkippedBatches(batch_sampler, start_batch)
    # Starting an iterator draws the workers' base seed; from a private generator it leaves the
    # global one (the model's sampling) alone, which a resumed run restores from its checkpoint.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        SeededSamples(dataset),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=ignore_stop_signals,
        pin_memory=pin_memory,
    )


def start_workers(loader: DataLoader) -> Iterator:
    """Starts iterating ``loader``, which forks its worker processes from this one.

    The objects that exist now are moved to the garbage collector's permanent
    generation first: a forked worker's collections would otherwise write to every
    tracked object of this process (torch's modules, the dataset) and copy the pages
    that hold them, about 90 MB per worker.
    """
    if loader.num_workers > 0:
        gc.freeze()
    return iter(loader)


def stop_workers(batches: Iterator) -> None:
    """Stops the worker processes of a training loader's iterator now.

    Its workers ignore SIGTERM (:func:`ignore_stop_signals`), so they must be told
    to stop: left to the end of the interpreter, which SIGTERMs daemonic children
    and then joins them, they would keep the process from ever exiting. An error
    raised while iterating keeps the iterator alive in its traceback, so it is
    not collected before that either.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # the iterator has no public close()
    if shutdown is not None:
        shutdown()


def ignore_stop_signals(worker_id: int) -> None:
    """Leaves SIGINT and SIGTERM to the training process, which stops at the end of a step.

    A terminal's Ctrl-C and a cluster's SIGTERM reach every process of the job;
    a worker killed by them would make the training process fail at once.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
