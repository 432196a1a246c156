"""detect.models.poolers: FPN level assignment by hand, parity with torchvision's RoI ops."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool

from detect.models.poolers import ParallelRoIAlign, RoIPooler, assign_fpn_levels


def _box(w: float, h: float) -> list[float]:
    return [10.0, 10.0, 10.0 + w, 10.0 + h]


def test_assign_fpn_levels_by_hand():
    # level = floor(4 + log2(sqrt(w * h) / 224)), clamped to 2..5; returned as level - 2.
    boxes = torch.tensor([
        _box(224, 224),  # log2(1) = 0 -> level 4
        _box(112, 112),  # log2(1/2) = -1 -> level 3, exactly on the 2/3 boundary
        _box(111, 111),  # just below the boundary -> floor(2.99) = level 2
        _box(448, 448),  # log2(2) = 1 -> level 5
        _box(223, 223),  # just below 224 -> level 3
        _box(112, 448),  # sqrt(112 * 448) = 224 -> level 4: area decides, not a side
        _box(1, 1),  # 4 + log2(1/224) = -3.8 -> clamped to level 2
        _box(0, 0),  # empty: log2(0) = -inf -> clamped to level 2
        _box(5000, 5000),  # 4 + 4.48 -> clamped to level 5
    ])
    levels = assign_fpn_levels(boxes, min_level=2, max_level=5)
    assert levels.tolist() == [2, 1, 0, 3, 1, 2, 0, 0, 3]
    assert levels.dtype == torch.int64


def _random_rois(g: torch.Generator, num: int, num_images: int, extent: float) -> torch.Tensor:
    """``[R, 5]`` RoIs of sqrt(area) from 4 to 700 px (log-uniform), so that every FPN level gets some."""
    size = torch.exp(torch.empty(num, 1).uniform_(1.4, 6.55, generator=g))
    aspect = torch.exp(torch.empty(num, 1).uniform_(-0.5, 0.5, generator=g))
    sides = torch.cat([size * aspect, size / aspect], dim=1)
    xy = torch.rand(num, 2, generator=g) * extent
    image_index = torch.randint(0, num_images, (num, 1), generator=g).float()
    return torch.cat([image_index, xy - sides / 2, xy + sides / 2], dim=1)


def test_roi_align_matches_torchvision_multiscale():
    g = torch.Generator().manual_seed(0)
    image_size = 256
    strides = [4, 8, 16, 32]
    features = [torch.randn(2, 4, image_size // s, image_size // s, generator=g) for s in strides]
    rois = _random_rois(g, 200, 2, image_size)
    assert set(assign_fpn_levels(rois[:, 1:], 2, 5).tolist()) == {0, 1, 2, 3}  # every level is used

    reference = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=7, sampling_ratio=2)
    boxes_per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    expected = reference(OrderedDict(zip(["p2", "p3", "p4", "p5"], features)), boxes_per_image, [(image_size, image_size)] * 2)
    # torchvision returns the RoIs grouped by image; ours keep the order they come in.
    order = torch.cat([torch.where(rois[:, 0] == i)[0] for i in range(2)])
    got = RoIPooler(7, strides, sampling_ratio=2, aligned=False, pool_type="align")(features, rois)
    assert got.shape == (200, 4, 7, 7)
    torch.testing.assert_close(got[order], expected)


def test_single_level_roi_pool_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 3, 16, 16, generator=g)
    rois = _random_rois(g, 30, 2, 256)
    got = RoIPooler(7, [16], sampling_ratio=0, aligned=False, pool_type="pool")([feature], rois)
    torch.testing.assert_close(got, roi_pool(feature, rois, 7, 1 / 16))


def test_unknown_pooler_type_is_an_error():
    with pytest.raises(ValueError, match="'max'.*known: 'align', 'pool'"):
        RoIPooler(7, [16], 2, False, "max")


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_roi_align_matches_torchvision(threads):
    # RoIs of 3 images in random order, split over 2 or 3 chunks: the forward must equal torchvision's
    # exactly, the chunks' partial gradients must sum to torchvision's gradient.
    torch.manual_seed(0)
    feature = torch.randn(3, 8, 40, 48)
    xy = torch.rand(50, 2) * 150
    rois = torch.cat([torch.randint(0, 3, (50, 1)).float(), xy, xy + torch.rand(50, 2) * 40 + 2], dim=1)
    grad = torch.randn(50, 8, 7, 7)
    expected_input = feature.clone().requires_grad_()
    roi_align(expected_input, rois, 7, 0.25, 2, False).backward(grad)
    got_input = feature.clone().requires_grad_()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = ParallelRoIAlign.apply(got_input, rois, 7, 0.25, 2, False)
        torch.testing.assert_close(out, roi_align(feature, rois, 7, 0.25, 2, False), rtol=0, atol=0)
        out.backward(grad)
    finally:
        torch.set_num_threads(saved)
    torch.testing.assert_close(got_input.grad, expected_input.grad, rtol=1e-5, atol=1e-5)


def test_parallel_roi_align_without_rois():
    feature = torch.randn(2, 4, 10, 10, requires_grad=True)
    out = ParallelRoIAlign.apply(feature, torch.zeros(0, 5), 7, 0.25, 2, False)
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()
    assert feature.grad.shape == feature.shape and not feature.grad.any()


@pytest.mark.parametrize("pool_type", ["align", "pool"])
def test_bf16_autocast_keeps_box_corners_exact(pool_type):
    # Far from the origin bf16 steps are 8 px: a box corner at 1290.6 would pool from 1288.
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 4, 24, 400, generator=g).bfloat16().float()  # stride 4: 1600 px wide
    rois = torch.tensor([[0.0, 1290.6, 10.3, 1330.9, 60.7], [0.0, 1501.2, 3.1, 1590.4, 90.6]])
    pooler = RoIPooler(7, [4], sampling_ratio=2, aligned=False, pool_type=pool_type)
    reference = pooler([feature], rois)  # float32 features equal to their bf16 values, exact boxes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = pooler([feature.bfloat16()], rois)
    torch.testing.assert_close(pooled.float(), reference, rtol=0, atol=1e-6)
