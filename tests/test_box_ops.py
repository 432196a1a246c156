"""detect.box_ops: hand-worked values and parity with torchvision's box functions."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.ops import box_iou

from detect.box_ops import (
    DEFAULT_SCALE_CLAMP,
    BoxCoder,
    batched_nms,
    batched_pairwise_iou,
    clip_boxes,
    first_k_per_image,
)


def _random_boxes(generator: torch.Generator, shape: tuple[int, ...], extent: float = 100.0) -> torch.Tensor:
    """Valid x1, y1, x2, y2 boxes (width and height >= 1) inside ``[0, extent]``."""
    xy = torch.rand(shape + (2,), generator=generator) * extent * 0.7
    wh = 1 + torch.rand(shape + (2,), generator=generator) * extent * 0.3
    return torch.cat([xy, xy + wh], dim=-1)


# Reference r = [0, 0, 10, 20]: width 10, height 20, centre (5, 10).
# Box     g = [2, 4, 22, 24]: width 20, height 20, centre (12, 14).
REFERENCE = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
BOX = torch.tensor([[2.0, 4.0, 22.0, 24.0]])


def test_encode_hand_worked_unit_weights():
    deltas = BoxCoder((1, 1, 1, 1)).encode(BOX, REFERENCE)
    expected = torch.tensor([[
        (12 - 5) / 10,  # dx = (gx - rx) / rw = 0.7
        (14 - 10) / 20,  # dy = (gy - ry) / rh = 0.2
        math.log(20 / 10),  # dw = log(gw / rw) = log 2
        math.log(20 / 20),  # dh = log(gh / rh) = 0
    ]])
    torch.testing.assert_close(deltas, expected)


def test_encode_hand_worked_rcnn_weights():
    deltas = BoxCoder((10, 10, 5, 5)).encode(BOX, REFERENCE)
    expected = torch.tensor([[
        10 * 0.7,  # dx = 10 * (12 - 5) / 10 = 7
        10 * 0.2,  # dy = 10 * (14 - 10) / 20 = 2
        5 * math.log(2),  # dw = 5 * log(20 / 10) = 3.4657...
        5 * 0.0,  # dh = 5 * log(20 / 20) = 0
    ]])
    torch.testing.assert_close(deltas, expected)


def test_decode_hand_worked_and_scale_clamp():
    coder = BoxCoder((1, 1, 1, 1))
    # The hand-worked deltas bring the reference back to the box.
    deltas = torch.tensor([[0.7, 0.2, math.log(2), 0.0]])
    torch.testing.assert_close(coder.decode(deltas, REFERENCE), BOX[:, None, :])
    # dw = dh = 100 is clamped to log(1000 / 16): a 16 px reference grows to exactly 1000 px,
    # centred on (8, 8): [8 - 500, 8 - 500, 8 + 500, 8 + 500].
    huge = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    torch.testing.assert_close(huge, torch.tensor([[[-492.0, -492.0, 508.0, 508.0]]]))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    reference = _random_boxes(g, (50,))
    boxes = _random_boxes(g, (50,))
    coder = BoxCoder(weights)
    decoded = coder.decode(coder.encode(boxes, reference), reference)
    assert decoded.shape == (50, 1, 4)
    torch.testing.assert_close(decoded[:, 0], boxes, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_matches_torchvision(weights):
    g = torch.Generator().manual_seed(1)
    num_boxes, num_classes = 40, 3
    reference = _random_boxes(g, (num_boxes,))
    # Large deltas: after dividing by the weights, some dw, dh exceed the clamp log(1000/16) = 4.14.
    deltas = torch.randn((num_boxes, num_classes * 4), generator=g) * 4 * torch.tensor(weights).repeat(num_classes)
    assert (deltas[:, 2::4] / weights[2] > DEFAULT_SCALE_CLAMP).any()
    assert (deltas[:, 3::4] / weights[3] > DEFAULT_SCALE_CLAMP).any()
    expected = tv_utils.BoxCoder(weights).decode(deltas, [reference])  # (R, K, 4)
    got = BoxCoder(weights).decode(deltas, reference)
    assert got.shape == (num_boxes, num_classes, 4)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_matches_torchvision(weights):
    g = torch.Generator().manual_seed(2)
    reference = _random_boxes(g, (30,))
    boxes = _random_boxes(g, (30,))
    expected = tv_utils.BoxCoder(weights).encode_single(boxes, reference)
    torch.testing.assert_close(BoxCoder(weights).encode(boxes, reference), expected)


def test_clip_boxes_per_image_sizes():
    boxes = torch.tensor([
        [[-5.0, -5.0, 120.0, 60.0], [10.0, 20.0, 30.0, 40.0]],  # image 0: h 50, w 100
        [[-5.0, -5.0, 120.0, 60.0], [10.0, 20.0, 30.0, 40.0]],  # image 1: h 30, w 40
    ])
    image_sizes = torch.tensor([[50, 100], [30, 40]])  # (h, w)
    expected = torch.tensor([
        [[0.0, 0.0, 100.0, 50.0], [10.0, 20.0, 30.0, 40.0]],  # x clipped to w = 100, y to h = 50
        [[0.0, 0.0, 40.0, 30.0], [10.0, 20.0, 30.0, 30.0]],  # x to w = 40, y to h = 30 (y2 40 -> 30)
    ])
    assert torch.equal(clip_boxes(boxes, image_sizes), expected)
    # Extra middle dimensions (per-class boxes [N, K, 4] in RoI heads) broadcast the same way.
    per_class = boxes[:, :, None, :].expand(-1, -1, 3, -1)
    assert torch.equal(clip_boxes(per_class, image_sizes), expected[:, :, None, :].expand(-1, -1, 3, -1))


def test_pairwise_iou_hand_worked():
    a = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    # overlap 5 x 10 = 50 over union 100 + 100 - 50 = 150 -> 1/3; identical -> 1; disjoint -> 0.
    torch.testing.assert_close(batched_pairwise_iou(a, b), torch.tensor([[[1 / 3, 1.0, 0.0]]]))


def test_pairwise_iou_matches_torchvision():
    g = torch.Generator().manual_seed(3)
    boxes1 = _random_boxes(g, (3, 5))
    boxes2 = _random_boxes(g, (3, 7))
    shared = _random_boxes(g, (7,))
    per_image = batched_pairwise_iou(boxes1, boxes2)
    with_shared = batched_pairwise_iou(boxes1, shared)
    assert per_image.shape == with_shared.shape == (3, 5, 7)
    assert (per_image > 0).any()
    for i in range(3):  # the same float operations as torchvision's: bit for bit
        torch.testing.assert_close(per_image[i], box_iou(boxes1[i], boxes2[i]), rtol=0, atol=0)
        torch.testing.assert_close(with_shared[i], box_iou(boxes1[i], shared), rtol=0, atol=0)


def test_first_k_per_image():
    image_index = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3])
    expected_k2 = [True, True, False, True, True, True, True, False, False]
    assert first_k_per_image(image_index, 2).tolist() == expected_k2
    assert first_k_per_image(image_index, 0).tolist() == [False] * 9
    assert first_k_per_image(image_index, 10).tolist() == [True] * 9
    assert first_k_per_image(torch.zeros(0, dtype=torch.int64), 3).shape == (0,)


def test_batched_nms_matches_plain_nms_per_image_and_group():
    g = torch.Generator().manual_seed(4)
    num = 120
    boxes = _random_boxes(g, (num,), extent=60.0)  # crowded, so NMS removes many
    scores = torch.rand(num, generator=g)
    groups = torch.randint(0, 3, (num,), generator=g)
    image_index = torch.randint(0, 3, (num,), generator=g)  # not sorted by image
    image_index[image_index == 2] = 3  # image 2 has no boxes
    keep = batched_nms(boxes, scores, groups, image_index, num_images=4, iou_thresh=0.5)
    # Independent: plain NMS per (image, group), then each image's survivors by descending score.
    expected = []
    for i in range(4):
        kept = []
        for c in range(3):
            (idx,) = torch.where((image_index == i) & (groups == c))
            kept.append(idx[torchvision.ops.nms(boxes[idx], scores[idx], 0.5)])
        kept = torch.cat(kept)
        expected.append(kept[scores[kept].argsort(descending=True)])
    expected = torch.cat(expected)
    assert 0 < len(expected) < num
    assert keep.tolist() == expected.tolist()
