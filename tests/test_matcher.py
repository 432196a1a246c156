"""detect.models.matcher: labels for crafted IoUs, a brute-force reference, chunking, sparse anchor matching, and the sampler."""

import pytest
import torch
from torchvision.ops import box_iou

import detect.models.matcher as matcher_module
from detect.models.anchors import AnchorGenerator
from detect.models.matcher import PAIR_MIN_IOU, BalancedSampler, Matcher


def _h(x1: float, x2: float) -> list[float]:
    """A box spanning ``[x1, x2]`` horizontally and ``[0, 10]`` vertically: IoUs reduce to 1-D interval IoUs."""
    return [x1, 0.0, x2, 10.0]


def test_thresholds_fg_ignored_bg():
    gt = torch.tensor([[_h(0, 10)]])  # (1, 1, 4)
    boxes = torch.tensor([
        _h(0, 8),  # IoU 8 / 10 = 0.8 -> foreground
        _h(0, 5),  # IoU 5 / 10 = 0.5 -> ignored
        _h(0, 2),  # IoU 2 / 10 = 0.2 -> background
        _h(50, 60),  # IoU 0 -> background
    ])
    matched, labels = Matcher(0.7, 0.3, allow_low_quality_matches=False)(gt, torch.tensor([[True]]), boxes)
    assert labels.tolist() == [[1, -1, 0, 0]]
    assert matched.tolist() == [[0, 0, 0, 0]]
    assert labels.dtype == torch.int8 and matched.dtype == torch.int64


def test_thresholds_on_the_boundaries():
    gt = torch.tensor([[_h(0, 10)]])
    boxes = torch.tensor([
        _h(0, 7.5),  # IoU 0.75 exactly (75 / 100): >= fg_thresh -> foreground
        _h(0, 2.5),  # IoU 0.25 exactly: not < bg_thresh -> ignored
        _h(0, 2.4),  # IoU 0.24 -> background
    ])
    _, labels = Matcher(0.75, 0.25, allow_low_quality_matches=False)(gt, torch.tensor([[True]]), boxes)
    assert labels.tolist() == [[1, -1, 0]]


def test_equal_thresholds_leave_nothing_ignored():
    # The RoI heads' 0.5 / 0.5: every box is foreground or background.
    gt = torch.tensor([[_h(0, 10)]])
    boxes = torch.tensor([_h(0, 5), _h(0, 4.9)])  # IoU 0.5 -> fg; 0.49 -> bg
    _, labels = Matcher(0.5, 0.5, allow_low_quality_matches=False)(gt, torch.tensor([[True]]), boxes)
    assert labels.tolist() == [[1, 0]]


def test_bg_thresh_above_fg_thresh_is_an_error():
    with pytest.raises(ValueError, match="bg_thresh 0.8"):
        Matcher(0.5, 0.8, allow_low_quality_matches=False)


# Ground truth A = [10, 20], B = [20, 30], C = [100, 110] (all of height [0, 10]).
LOW_QUALITY_GT = torch.tensor([[_h(10, 20), _h(20, 30), _h(100, 110)]])
LOW_QUALITY_BOXES = torch.tensor([
    _h(10, 18),  # A: 8 / 10 = 0.8 (foreground on its own)
    _h(11.25, 27.5),  # A: 8.75 / 17.5 = 0.5 (its argmax); B: 7.5 / 18.75 = 0.4 (B's best, tied)
    _h(20, 24),  # B: 4 / 10 = 0.4 (B's best, tied)
    _h(26, 30),  # B: 4 / 10 = 0.4 (B's best, tied)
    _h(40, 50),  # nothing: 0
])


def test_low_quality_matches_include_ties_and_keep_own_argmax():
    # B's best IoU is 0.4, between the thresholds: without low-quality matches no box is
    # foreground for B. With them, the three boxes tied at 0.4 become foreground; box 1
    # keeps its own best match A (IoU 0.5). C overlaps nothing, so it makes no match
    # (otherwise every box at IoU 0 with C would become foreground).
    valid = torch.tensor([[True, True, True]])
    matched, labels = Matcher(0.7, 0.3, allow_low_quality_matches=True)(LOW_QUALITY_GT, valid, LOW_QUALITY_BOXES)
    assert labels.tolist() == [[1, 1, 1, 1, 0]]
    assert matched[0, :4].tolist() == [0, 0, 1, 1]

    _, labels = Matcher(0.7, 0.3, allow_low_quality_matches=False)(LOW_QUALITY_GT, valid, LOW_QUALITY_BOXES)
    assert labels.tolist() == [[1, -1, -1, -1, 0]]


def test_padded_ground_truth_is_never_matched():
    # gt 1 is padding placed exactly on box 1 (IoU 1): box 1 must stay background and
    # not be a low-quality match of the padding.
    gt = torch.tensor([[_h(0, 10), _h(50, 60)]])
    valid = torch.tensor([[True, False]])
    boxes = torch.tensor([_h(0, 8), _h(50, 60)])
    matched, labels = Matcher(0.7, 0.3, allow_low_quality_matches=True)(gt, valid, boxes)
    assert labels.tolist() == [[1, 0]]
    assert matched.tolist() == [[0, 0]]


def test_padded_boxes_are_ignored_and_make_no_low_quality_match():
    gt = torch.tensor([[_h(0, 10), _h(50, 60)]])
    boxes = torch.tensor([[
        _h(0, 8),  # gt 0: IoU 0.8, but padding -> -1
        _h(0, 2),  # gt 0: IoU 0.2, gt 0's best valid box -> its low-quality match (0.2 > 0)
        _h(50, 58),  # gt 1: IoU 0.8, padding -> -1
        _h(80, 90),  # nothing -> background
    ]])
    boxes_valid = torch.tensor([[False, True, False, True]])
    matched, labels = Matcher(0.7, 0.3, allow_low_quality_matches=True)(
        gt, torch.tensor([[True, True]]), boxes, boxes_valid
    )
    # The padded box at IoU 0.8 does not count as gt 0's best; gt 1 overlaps only padding: no match.
    assert labels.tolist() == [[-1, 1, -1, 0]]
    assert matched[0, 1] == 0


def test_image_without_ground_truth_is_all_background():
    gt = torch.tensor([[_h(0, 10)], [_h(0, 10)]])
    gt_valid = torch.tensor([[True], [False]])  # image 1 has no ground truth, only padding
    boxes = torch.tensor([[_h(0, 8), _h(0, 10)], [_h(0, 8), _h(0, 10)]])
    boxes_valid = torch.tensor([[True, True], [True, False]])
    _, labels = Matcher(0.7, 0.3, allow_low_quality_matches=True)(gt, gt_valid, boxes, boxes_valid)
    assert labels.tolist() == [[1, 1], [0, -1]]
    # A batch without any ground truth (G = 0) also labels everything background.
    _, labels = Matcher(0.7, 0.3, True)(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool), boxes[0])
    assert labels.tolist() == [[0, 0], [0, 0]]


def _random_problem(seed: int, num_images: int = 3, num_gt: int = 12, num_boxes: int = 300):
    g = torch.Generator().manual_seed(seed)

    def boxes(shape):
        xy = torch.rand(shape + (2,), generator=g) * 80
        return torch.cat([xy, xy + 5 + torch.rand(shape + (2,), generator=g) * 40], dim=-1)

    gt = boxes((num_images, num_gt))
    gt_valid = torch.rand((num_images, num_gt), generator=g) < 0.7
    gt_valid[-1] = False  # one image without ground truth
    return gt, gt_valid, boxes((num_images, num_boxes)), torch.rand((num_images, num_boxes), generator=g) < 0.9


def _reference(gt, gt_valid, boxes, boxes_valid, fg, bg):
    """Brute force per image, on torchvision's box_iou over the valid boxes only."""
    num_images, num_boxes = boxes_valid.shape
    labels = torch.full((num_images, num_boxes), -1, dtype=torch.int8)
    matched = torch.full((num_images, num_boxes), -1, dtype=torch.int64)  # -1: no meaningful match
    for i in range(num_images):
        (gt_idx,) = torch.where(gt_valid[i])
        (box_idx,) = torch.where(boxes_valid[i])
        if len(gt_idx) == 0:
            labels[i, box_idx] = 0
            continue
        iou = box_iou(gt[i, gt_idx], boxes[i, box_idx])  # (g, m)
        best, arg = iou.max(dim=0)
        lab = torch.full_like(best, -1, dtype=torch.int8)
        lab[best >= fg] = 1
        lab[best < bg] = 0
        gt_best = iou.max(dim=1).values
        low_quality = ((iou == gt_best[:, None]) & (gt_best[:, None] > 0)).any(dim=0)
        lab[low_quality] = 1
        labels[i, box_idx] = lab
        matched[i, box_idx] = torch.where(best > 0, gt_idx[arg], -1)
    return matched, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_reference(seed):
    gt, gt_valid, boxes, boxes_valid = _random_problem(seed)
    matched, labels = Matcher(0.6, 0.3, allow_low_quality_matches=True)(gt, gt_valid, boxes, boxes_valid)
    expected_matched, expected_labels = _reference(gt, gt_valid, boxes, boxes_valid, 0.6, 0.3)
    assert {-1, 0, 1} <= set(expected_labels.unique().tolist())  # all three outcomes occur
    assert torch.equal(labels, expected_labels)
    has_match = expected_matched >= 0
    assert has_match.sum() > 100
    assert torch.equal(matched[has_match], expected_matched[has_match])


def test_chunks_give_identical_results(monkeypatch):
    gt, gt_valid, boxes, boxes_valid = _random_problem(2, num_gt=10)
    matcher = Matcher(0.6, 0.3, allow_low_quality_matches=True)
    expected = matcher(gt, gt_valid, boxes, boxes_valid)

    calls = []
    original = matcher_module.batched_pairwise_iou

    def recording(boxes1, boxes2):
        calls.append(boxes1.shape[1])
        return original(boxes1, boxes2)

    monkeypatch.setattr(matcher_module, "batched_pairwise_iou", recording)
    monkeypatch.setattr(matcher_module, "IOU_CHUNK_ELEMENTS", 3 * 3 * 300)  # 3 gt per chunk
    got = matcher(gt, gt_valid, boxes, boxes_valid)
    # 10 gt in chunks of 3, 3, 3, 1, each IoU computed once (running maxima and low-quality matches).
    assert calls == [3, 3, 3, 1]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_iou_memory_stays_bounded_with_many_ground_truth(monkeypatch):
    num_gt, num_boxes = 2000, 5000
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(1, num_gt, 2, generator=g) * 500
    gt = torch.cat([xy, xy + 20], dim=-1)
    xy = torch.rand(num_boxes, 2, generator=g) * 500
    anchors = torch.cat([xy, xy + 20], dim=-1)

    largest = []
    original = matcher_module.batched_pairwise_iou

    def recording(boxes1, boxes2):
        iou = original(boxes1, boxes2)
        largest.append(iou.numel())
        return iou

    monkeypatch.setattr(matcher_module, "batched_pairwise_iou", recording)
    monkeypatch.setattr(matcher_module, "IOU_CHUNK_ELEMENTS", 1 << 20)  # smaller than the default, to keep the test fast
    _, labels = Matcher(0.7, 0.3, True)(gt, torch.ones(1, num_gt, dtype=torch.bool), anchors)
    # The whole matrix would be 2000 * 5000 = 1e7 elements; no block exceeds 2**20 = 1.05e6.
    assert max(largest) <= 1 << 20 < num_gt * num_boxes
    assert len(largest) == 10  # 2**20 // 5000 = 209 gt per chunk -> 10 chunks, one pass
    assert (labels == 1).any()


# Sampler ------------------------------------------------------------------------------------


def test_sampler_counts_per_image():
    labels = torch.full((3, 100), -1, dtype=torch.int8)
    labels[0, :30] = 1  # 30 positives, more than 16 * 0.25 = 4
    labels[0, 30:90] = 0
    labels[1, :2] = 1  # 2 positives: negatives fill to 16
    labels[1, 2:50] = 0
    labels[2, :1] = 1  # 1 positive and only 5 negatives: 6 in all
    labels[2, 1:6] = 0
    pos, neg = BalancedSampler(16, 0.25, shuffle=False)(labels)
    assert pos.sum(dim=1).tolist() == [4, 2, 1]  # min(#pos, int(16 * 0.25) = 4)
    assert neg.sum(dim=1).tolist() == [12, 14, 5]  # min(#neg, 16 - #pos sampled)
    assert not (pos & neg).any()


def test_sampler_without_shuffle_takes_lowest_indices():
    labels = torch.tensor([[0, 1, -1, 0, 1, 1, 0, 0, 1, 0]], dtype=torch.int8)
    pos, neg = BalancedSampler(4, 0.5, shuffle=False)(labels)
    assert torch.where(pos[0])[0].tolist() == [1, 4]  # the first two of positives 1, 4, 5, 8
    assert torch.where(neg[0])[0].tolist() == [0, 3]  # the first two of negatives 0, 3, 6, 7, 9


def test_sampler_never_draws_ignored():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 2, (4, 500), generator=g).to(torch.int8)
    torch.manual_seed(0)
    pos, neg = BalancedSampler(128, 0.25)(labels)
    assert pos.sum(dim=1).tolist() == [32] * 4 and neg.sum(dim=1).tolist() == [96] * 4
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()


def test_sampler_randomness_follows_the_seed():
    labels = torch.zeros((1, 1000), dtype=torch.int8)
    labels[0, ::2] = 1
    sampler = BalancedSampler(64, 0.5, shuffle=True)

    def draw(seed):
        torch.manual_seed(seed)
        return sampler(labels)

    pos_a, neg_a = draw(0)
    pos_b, neg_b = draw(0)
    pos_c, neg_c = draw(1)
    assert torch.equal(pos_a, pos_b) and torch.equal(neg_a, neg_b)
    assert not torch.equal(pos_a, pos_c) and not torch.equal(neg_a, neg_c)
    # Random picks are spread over the candidates, not the lowest indices.
    assert torch.where(pos_a[0])[0].max() > 64


# Sparse matching of anchors --------------------------------------------------------------------


@pytest.mark.parametrize("strides", [None, [4, 8]])
def test_match_pairs_equals_dense_matching(strides):
    # Two images of ground truth (with a duplicate box, a box equal to an anchor, padding) and one
    # without any; anchors of two levels of a 66x83 padded image (not a multiple of the strides).
    generator = AnchorGenerator([[8], [16]], [0.5, 1.0, 2.0], strides=strides)
    feature_sizes, image_size = [(16, 20), (8, 10)], (66, 83)
    anchors = torch.cat(generator(feature_sizes, image_size, torch.device("cpu")))
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 12, 2, generator=g) * 60
    gt = torch.cat([xy, xy + 2 + torch.rand(3, 12, 2, generator=g) * 30], dim=-1)
    gt[0, 3] = gt[0, 1]  # a tie: the lower index must win
    gt[1, 0] = anchors[100]
    gt_valid = torch.ones(3, 12, dtype=torch.bool)
    gt_valid[1, 9:] = False
    gt_valid[2] = False
    image_of, gt_of = torch.where(gt_valid)
    flat = gt[image_of, gt_of]

    pairs = list(generator.overlapping(flat, feature_sizes, image_size, max_pairs=500))
    assert len(pairs) > 3  # several groups
    covered = torch.zeros(len(flat), len(anchors), dtype=torch.bool)
    for gt_index, anchor_index in pairs:
        covered[gt_index, anchor_index] = True
    assert not (box_iou(flat, anchors) > 0)[~covered].any()  # no overlapping pair left out

    for low_quality in (True, False):
        matcher = Matcher(0.6, 0.3, allow_low_quality_matches=low_quality)
        expected = matcher(gt, gt_valid, anchors)
        got = matcher.match_pairs(gt, gt_valid, anchors, lambda _: generator.overlapping(flat, feature_sizes, image_size, 500))
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert (got[1][:2] == 1).any() and (got[1] == 0).any()


def test_overlapping_leaves_out_only_pairs_below_the_area_ratio():
    generator = AnchorGenerator([[8], [32]], [0.5, 1.0, 2.0], strides=[4, 8])
    feature_sizes, image_size = [(32, 32), (16, 16)], (128, 128)
    anchors = torch.cat(generator(feature_sizes, image_size, torch.device("cpu")))
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(20, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 2 + torch.rand(20, 2, generator=g) * 60], dim=1)
    iou = box_iou(boxes, anchors)
    for ratio in (1 / 16, 0.2):
        covered = torch.zeros_like(iou, dtype=torch.bool)
        for box_index, anchor_index in generator.overlapping(boxes, feature_sizes, image_size, 300, ratio):
            covered[box_index, anchor_index] = True
        assert not (iou >= ratio)[~covered].any()  # every pair that can reach the ratio is there
        assert ((iou > 0) & ~covered).any()  # and some overlapping pairs are not


@pytest.mark.parametrize("tiny_box", [False, True])
def test_match_pairs_leaves_out_pairs_that_change_no_label(tiny_box):
    # Boxes of 40-100 px against 8 px and 32 px anchors: the small anchors' pairs are left out.
    # A 1.5 px box's best IoU (2.25 / 64) is below PAIR_MIN_IOU: then all pairs are matched.
    generator = AnchorGenerator([[8], [32]], [0.5, 1.0, 2.0], strides=[4, 8])
    feature_sizes, image_size = [(32, 32), (16, 16)], (128, 128)
    anchors = torch.cat(generator(feature_sizes, image_size, torch.device("cpu")))
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(2, 6, 2, generator=g) * 20
    gt = torch.cat([xy, xy + 40 + torch.rand(2, 6, 2, generator=g) * 60], dim=-1)
    if tiny_box:
        gt[1, 2] = torch.tensor([50.0, 50.0, 51.5, 51.5])
    gt_valid = torch.ones(2, 6, dtype=torch.bool)
    image_of, gt_of = torch.where(gt_valid)
    flat = gt[image_of, gt_of]
    asked = []

    def pairs(min_iou):
        asked.append(min_iou)
        return generator.overlapping(flat, feature_sizes, image_size, 200, min_iou)

    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    expected_gt, expected_labels = matcher(gt, gt_valid, anchors)
    got_gt, got_labels = matcher.match_pairs(gt, gt_valid, anchors, pairs)
    best_iou = torch.stack([box_iou(gt[i], anchors).max(dim=0).values for i in range(2)])
    assert asked == ([PAIR_MIN_IOU, 0.0] if tiny_box else [PAIR_MIN_IOU])
    assert torch.equal(got_labels, expected_labels)
    reaches = best_iou >= PAIR_MIN_IOU
    assert torch.equal(got_gt[reaches], expected_gt[reaches])
    if tiny_box:
        assert torch.equal(got_gt, expected_gt)
    else:
        assert ((best_iou > 0) & ~reaches).any()  # the comparison covers boxes whose pairs were left out
    assert (got_labels == 1).sum() > 12 and (got_labels == 0).any()


def test_match_pairs_with_bg_thresh_below_the_pair_bound_matches_every_pair():
    # bg_thresh 0.05 < PAIR_MIN_IOU: a pair left out could make a box ignored instead of background.
    generator = AnchorGenerator([[8], [32]], [0.5, 1.0, 2.0], strides=[4, 8])
    feature_sizes, image_size = [(32, 32), (16, 16)], (128, 128)
    anchors = torch.cat(generator(feature_sizes, image_size, torch.device("cpu")))
    gt = torch.tensor([[[10.0, 10.0, 90.0, 70.0], [40.0, 30.0, 120.0, 110.0]]])
    gt_valid = torch.ones(1, 2, dtype=torch.bool)
    asked = []

    def pairs(min_iou):
        asked.append(min_iou)
        return generator.overlapping(gt[0], feature_sizes, image_size, 200, min_iou)

    matcher = Matcher(0.7, 0.05, allow_low_quality_matches=True)
    got = matcher.match_pairs(gt, gt_valid, anchors, pairs)
    expected = matcher(gt, gt_valid, anchors)
    assert asked == [0.0]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert (got[1] == -1).any()  # anchors of IoU 0.05-0.7: ignored, which a left-out pair would have made background
