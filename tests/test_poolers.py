"""detect.models.poolers: FPN level assignment by hand, parity with torchvision's RoI ops."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align, roi_pool

from detect.models.poolers import RoIPooler, assign_fpn_levels, roi_align_gather


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


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_gather_matches_torchvision(sampling_ratio, aligned, channels_last):
    # RoIs of 3 images in random order, some empty, tiny, larger than the image or partly outside
    # it (torchvision's edge rules), at two scales: values and gradients equal to torchvision's
    # up to float32 summation order.
    g = torch.Generator().manual_seed(sampling_ratio)
    feature = torch.randn(3, 8, 23, 37, generator=g)
    for scale in (0.25, 1 / 32):
        extent = torch.tensor([37 / scale, 23 / scale])
        xy = (torch.rand(80, 2, generator=g) * 1.4 - 0.2) * extent
        sides = torch.rand(80, 2, generator=g) ** 3 * extent
        sides[:6] = torch.tensor([0.0, 0.0, 0.3, 0.2, 0.0, 5.0, 400.0, 300.0, 1.0, 0.0, 40.0, 40.0]).view(6, 2)
        rois = torch.cat([torch.randint(0, 3, (80, 1), generator=g).float(), xy, xy + sides], dim=1)
        grad = torch.randn(80, 8, 7, 7, generator=g)
        expected_input = feature.clone().requires_grad_()
        expected = roi_align(expected_input, rois, 7, scale, sampling_ratio, aligned)
        expected.backward(grad)
        got_input = (feature.contiguous(memory_format=torch.channels_last) if channels_last else feature.clone()).requires_grad_()
        got = roi_align_gather(got_input, rois, 7, scale, sampling_ratio, aligned)
        got.backward(grad)
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)
        torch.testing.assert_close(got_input.grad, expected_input.grad, rtol=0, atol=5e-5)


def test_roi_align_gather_without_rois_or_samples():
    feature = torch.randn(2, 4, 10, 10)
    assert roi_align_gather(feature, torch.zeros(0, 5), 7, 0.25, 0, False).shape == (0, 4, 7, 7)
    # aligned and adaptive, every RoI empty: no sample at all, zeros as in torchvision
    empty = torch.tensor([[0.0, 5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 2.0, 3.0]])
    assert torch.equal(roi_align_gather(feature, empty, 7, 1.0, 0, True), roi_align(feature, empty, 7, 1.0, 0, True))


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
