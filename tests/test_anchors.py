"""detect.models.anchors: the anchor table written out by hand, and parity with torchvision."""

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detect.models.anchors import ANCHOR_CACHE_SIZE, AnchorGenerator, cell_anchors

# Size 32 keeps area 32**2; ratio r = h / w gives w = 32 / sqrt(r), h = 32 * sqrt(r).
#   r = 0.5: w = 45.25, h = 22.63 -> half sizes 22.63, 11.31 -> rounded 23, 11
#   r = 1:   w = h = 32            -> half sizes 16, 16
#   r = 2:   w = 22.63, h = 45.25  -> half sizes 11.31, 22.63 -> rounded 11, 23
CELL_32 = [
    [-23.0, -11.0, 23.0, 11.0],
    [-16.0, -16.0, 16.0, 16.0],
    [-11.0, -23.0, 11.0, 23.0],
]


def test_cell_anchors_by_hand():
    assert cell_anchors([32], [0.5, 1.0, 2.0]).tolist() == CELL_32


def test_cell_anchors_ratio_major_with_several_sizes():
    # Ratio-major: all sizes of ratio 0.5 first, as torchvision orders them.
    anchors = cell_anchors([16, 32], [0.5, 1.0])
    # size 16, r = 0.5: half sizes 11.31, 5.66 -> 11, 6; size 32 as above; then r = 1: 8 and 16.
    assert anchors.tolist() == [
        [-11.0, -6.0, 11.0, 6.0],
        [-23.0, -11.0, 23.0, 11.0],
        [-8.0, -8.0, 8.0, 8.0],
        [-16.0, -16.0, 16.0, 16.0],
    ]


def test_level_table_by_hand():
    generator = AnchorGenerator([[32.0]], [0.5, 1.0, 2.0])
    # A 2 x 3 level of a 16 x 24 image: stride 16 // 2 = 8 down, 24 // 3 = 8 across.
    (anchors,) = generator([(2, 3)], (16, 24), torch.device("cpu"))
    assert generator.num_anchors_per_location == 3
    assert anchors.shape == (2 * 3 * 3, 4)  # H * W * A

    def shifted(dx, dy):
        return [[x1 + dx, y1 + dy, x2 + dx, y2 + dy] for x1, y1, x2, y2 in CELL_32]

    expected_first = (
        shifted(0, 0)  # location (row 0, col 0): the cell anchors themselves
        + shifted(8, 0)  # (0, 1): x + 1 stride
        + shifted(16, 0)  # (0, 2): x + 2 strides
        + shifted(0, 8)  # (1, 0): next row, y + 1 stride
    )
    assert anchors[:12].tolist() == expected_first
    assert anchors[-3:].tolist() == shifted(16, 8)  # the last location (1, 2)


@pytest.mark.parametrize("h, w", [(4, 5), (7, 3), (1, 1)])
def test_anchor_count_per_level(h, w):
    generator = AnchorGenerator([[32.0], [64.0]], [0.5, 1.0, 2.0])
    levels = generator([(h, w), (h, w)], (8 * h, 8 * w), torch.device("cpu"))
    assert [len(a) for a in levels] == [h * w * 3, h * w * 3]


def test_unequal_anchors_per_level_is_an_error():
    with pytest.raises(ValueError, match="same number of anchors"):
        AnchorGenerator([[32.0], [64.0, 128.0]], [1.0])


def test_matches_torchvision_anchor_generator():
    sizes = [[32.0], [64.0], [128.0], [256.0], [512.0]]
    ratios = [0.5, 1.0, 2.0]
    # A padded size that the level sizes do not divide: strides come from integer division.
    padded = (100, 130)
    feature_sizes = [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]
    reference = TorchvisionAnchorGenerator(tuple((tuple(s) for s in sizes)), (tuple(ratios),) * len(sizes))
    image_list = ImageList(torch.zeros(2, 3, *padded), [(100, 130), (90, 120)])
    feature_maps = [torch.zeros(2, 8, h, w) for h, w in feature_sizes]
    expected = reference(image_list, feature_maps)  # per image, all levels concatenated

    got = torch.cat(AnchorGenerator(sizes, ratios)(feature_sizes, padded, torch.device("cpu")))
    assert len(got) == sum(h * w * 3 for h, w in feature_sizes)
    for e in expected:
        assert torch.equal(got, e)


def test_cache_returns_fresh_anchors_keyed_by_size_and_device():
    generator = AnchorGenerator([[32], [64]], [0.5, 1.0, 2.0])
    sizes, image = [(8, 10), (4, 5)], (32, 40)
    first = generator(sizes, image, torch.device("cpu"))
    fresh = generator._anchors(sizes, image, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(first, fresh))
    assert all(a is b for a, b in zip(generator(sizes, image, torch.device("cpu")), first))  # cached
    # Another padded size with the same feature sizes: other strides without fixed strides, other anchors.
    other = generator(sizes, (36, 44), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(other, generator._anchors(sizes, (36, 44), torch.device("cpu"))))
    assert not torch.equal(other[1], first[1])
    on_meta = generator(sizes, image, torch.device("meta"))
    assert all(a.device.type == "meta" and a.shape == b.shape for a, b in zip(on_meta, first))


def test_cache_is_bounded():
    generator = AnchorGenerator([[32]], [1.0], strides=[4])
    oldest = generator([(2, 2)], (8, 8), torch.device("cpu"))
    for i in range(ANCHOR_CACHE_SIZE):
        generator([(3 + i, 3)], (12 + 4 * i, 12), torch.device("cpu"))
    assert len(generator._cache) == ANCHOR_CACHE_SIZE
    again = generator([(2, 2)], (8, 8), torch.device("cpu"))  # evicted: computed anew, equal
    assert again[0] is not oldest[0] and torch.equal(again[0], oldest[0])
