"""Samplers and loaders: shares per rank, determinism, group purity, order at test time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from detect.data.coco import CocoDetection
from detect.data.loader import (
    GroupedBatchSampler,
    InferenceSampler,
    TrainingSampler,
    aspect_ratio_groups,
    build_test_loader,
    build_train_loader,
    collate,
)
from detect.data.transforms import build_train_transforms

COCO8 = Path(__file__).parent / "data" / "coco8"


class SizedOnly:
    """A dataset of blank images with given (height, width); items cost nothing to load."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        height, width = self.sizes[index]
        return torch.zeros(3, height, width), {"image_id": index, "boxes": torch.zeros(0, 4)}

    def image_info(self, index: int) -> dict[str, Any]:
        height, width = self.sizes[index]
        return {"file_name": f"{index}.jpg", "height": height, "width": width, "image_id": index}


def test_collate_keeps_lists() -> None:
    batch = [(torch.zeros(3, 2, 4), {"image_id": 0}), (torch.zeros(3, 5, 1), {"image_id": 1})]
    images, targets = collate(batch)
    assert [im.shape for im in images] == [(3, 2, 4), (3, 5, 1)]
    assert [t["image_id"] for t in targets] == [0, 1]


@pytest.mark.parametrize("size, world_size", [(10, 1), (10, 3), (7, 4), (3, 3)])
def test_training_shares_are_disjoint_and_cover_each_epoch(size: int, world_size: int) -> None:
    for epoch in range(3):
        samplers = [TrainingSampler(size, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
        shares = [sampler.epoch_indices(epoch) for sampler in samplers]
        flat = [i for share in shares for i in share]
        assert sorted(flat) == list(range(size))  # disjoint and covering


def test_training_sampler_is_endless_deterministic_and_reshuffles() -> None:
    def first(n: int, seed: int, rank: int = 0) -> list[int]:
        samples = itertools.islice(TrainingSampler(10, seed=seed, rank=rank, world_size=2), n)
        return [index for index, _ in samples]

    stream = first(25, seed=1)  # 5 per epoch and rank: runs into the 5th epoch
    assert stream == first(25, seed=1)
    assert stream != first(25, seed=2)
    assert stream[:5] != stream[5:10]  # each epoch is a new permutation
    assert set(stream[:5]).isdisjoint(first(5, seed=1, rank=1))
    with pytest.raises(ValueError, match="cannot share 0 training images among 1 processes"):
        TrainingSampler(0, seed=1)
    with pytest.raises(ValueError, match="cannot share 2 training images among 3 processes"):
        TrainingSampler(2, seed=1, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank must be in"):
        TrainingSampler(5, seed=1, rank=2, world_size=2)


def test_grouped_batches_are_pure_and_cover_the_stream() -> None:
    groups = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1]
    samples = [(i, 100 + i) for i in range(12)]
    batches = list(GroupedBatchSampler(samples, groups, batch_size=2))
    assert all(len(b) == 2 and groups[b[0][0]] == groups[b[1][0]] for b in batches)
    assert sorted(s for b in batches for s in b) == samples  # both groups have an even count; seeds stay with their index
    endless = GroupedBatchSampler(TrainingSampler(12, seed=0), groups, batch_size=3)
    for batch in itertools.islice(endless, 50):
        assert len({groups[i] for i, _ in batch}) == 1


def test_aspect_ratio_groups_from_annotations() -> None:
    dataset = SizedOnly([(10, 20), (20, 10), (15, 15), (30, 29)])
    assert aspect_ratio_groups(dataset) == [1, 0, 1, 0]
    coco = CocoDetection(COCO8 / "images", COCO8 / "annotations.json")
    portrait = {36, 49}  # 481x640 and 381x500 in the json
    assert [g == 0 for g in aspect_ratio_groups(coco)] == [i in portrait for i in coco.image_ids]


@pytest.mark.parametrize("size, world_size", [(10, 3), (2, 4), (8, 1)])
def test_inference_shares_are_contiguous_in_order_and_cover(size: int, world_size: int) -> None:
    shares = [list(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)]
    assert [i for share in shares for i in share] == list(range(size))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_train_loader_batches_forever_grouped() -> None:
    sizes = [(10, 20), (20, 10), (10, 20), (20, 10), (12, 12)]
    loader = build_train_loader(SizedOnly(sizes), 2, num_workers=0, aspect_ratio_grouping=True, seed=3)
    for images, targets in itertools.islice(loader, 20):  # 20 batches of a 5-image dataset: many passes
        assert len(images) == len(targets) == 2
        assert len({im.shape[2] < im.shape[1] for im in images}) == 1  # all portrait or none
    loader = build_train_loader(SizedOnly(sizes), 3, num_workers=0, aspect_ratio_grouping=False, seed=3)
    assert all(len(images) == 3 for images, _ in itertools.islice(loader, 7))


def test_train_loader_on_real_data_is_reproducible() -> None:
    transforms = build_train_transforms([64, 96], 128, hflip_prob=0.5, color_jitter=False)
    dataset = CocoDetection(COCO8 / "images", COCO8 / "annotations.json", transforms, filter_empty=True)

    def two_batches() -> list[tuple[Any, ...]]:
        torch.manual_seed(0)
        loader = build_train_loader(dataset, 2, num_workers=0, aspect_ratio_grouping=True, seed=7)
        return [
            (t["image_id"], tuple(im.shape), t["boxes"].tolist())
            for images, targets in itertools.islice(loader, 2)
            for im, t in zip(images, targets)
        ]

    first = two_batches()
    assert first == two_batches()
    for image_id, shape, boxes in first:
        assert min(shape[1:]) in (64, 96) or max(shape[1:]) == 128


def test_test_loader_yields_each_image_once_in_order() -> None:
    dataset = SizedOnly([(4, 4)] * 7)
    loader = build_test_loader(dataset, batch_size=3, num_workers=0)
    batches = [[t["image_id"] for t in targets] for _, targets in loader]
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]


def test_samplers_read_rank_from_an_initialised_process_group(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        sampler = TrainingSampler(6, seed=0)
        assert (sampler.rank, sampler.world_size) == (0, 1)
        assert sorted(sampler.epoch_indices(0)) == list(range(6))
        assert list(InferenceSampler(6)) == list(range(6))
    finally:
        dist.destroy_process_group()


def _augmented_stream(num_workers: int, start_batch: int, batches: int) -> list[tuple[int, Tensor, list]]:
    transforms = build_train_transforms([64, 80, 96], 128, hflip_prob=0.5, color_jitter=True)
    dataset = CocoDetection(COCO8 / "images", COCO8 / "annotations.json", transforms, filter_empty=True)
    loader = build_train_loader(dataset, 2, num_workers, aspect_ratio_grouping=False, seed=7, start_batch=start_batch)
    return [
        (t["image_id"], image, t["boxes"].tolist())
        for images, targets in itertools.islice(loader, batches)
        for image, t in zip(images, targets)
    ]


def _assert_same_stream(a: list[tuple[int, Tensor, list]], b: list[tuple[int, Tensor, list]]) -> None:
    assert [image_id for image_id, _, _ in a] == [image_id for image_id, _, _ in b]
    for (image_id, image_a, boxes_a), (_, image_b, boxes_b) in zip(a, b):
        assert torch.equal(image_a, image_b), image_id
        assert boxes_a == boxes_b, image_id


def test_augmentation_depends_on_the_sample_only_not_on_workers_or_restarts() -> None:
    """Scale, flip and colour of every image are the same read by the main process or by
    two workers, and a loader started at batch 3 (a resumed run) continues the stream
    instead of augmenting as from the start."""
    torch.manual_seed(0)
    reference = _augmented_stream(num_workers=0, start_batch=0, batches=6)  # 12 samples: a pass and a half
    assert len({tuple(image.shape) for _, image, _ in reference}) > 1  # the augmentation did vary
    torch.manual_seed(1)  # the global generator plays no part
    _assert_same_stream(_augmented_stream(num_workers=2, start_batch=0, batches=6), reference)
    _assert_same_stream(_augmented_stream(num_workers=2, start_batch=3, batches=3), reference[6:])


def test_shares_of_two_ranks_interleave_to_one_process_stream() -> None:
    """Rank r of 2 at batch 1 reads what position r of each batch of 2 reads in one process,
    with the same augmentation seed, so 2 processes train on what one process does."""
    single = TrainingSampler(9, seed=3, rank=0, world_size=1)
    ranks = [TrainingSampler(9, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        one = single.epoch_samples(epoch)
        assert one[0::2] == ranks[0].epoch_samples(epoch)
        assert one[1::2] == ranks[1].epoch_samples(epoch)
        assert len({seed for _, seed in one}) == 9
