"""RPN proposals, RoI sampling and post-processing on crafted inputs; losses of images without boxes."""

import math

import pytest
import torch

from detect.config import Config, apply_overrides
from detect.models import build_model
from detect.models.anchors import AnchorGenerator
from detect.models.matcher import BalancedSampler, Matcher
from detect.models.poolers import RoIPooler
from detect.models.roi_heads import BoxPredictor, RoIHeads, TwoFCHead
from detect.models.rpn import RPN, Proposals, RPNHead
from detect.models.targets import GroundTruth

# Model-level tests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    cfg = Config()
    apply_overrides(
        cfg,
        [
            "model.backbone.name=resnet18",
            "model.backbone.norm=bn",
            "model.classes={1: 'a', 7: 'b', 90: 'c'}",
            "model.anchors.sizes=[[16], [32], [64], [128], [256]]",
            "model.rpn.batch_size_per_image=64",
            "model.roi_heads.batch_size_per_image=32",
            "model.roi_heads.fc_dim=64",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    model.backbone.eval()  # BN on running statistics: an image's features do not depend on its batch
    model.rpn.sampler.shuffle = False
    model.roi_heads.sampler.shuffle = False
    return model


def _images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 96, 128, generator=g), torch.rand(3, 96, 128, generator=g)


TARGET = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 120.0, 90.0]]), "labels": torch.tensor([7, 90])}
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def test_image_without_boxes_gives_zero_box_losses(model):
    image, _ = _images()
    losses = model([image], [EMPTY])
    assert losses["loss_rpn_box"] == 0 and losses["loss_box"] == 0
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_cls"] > 0 and losses["loss_cls"] > 0


def test_image_without_boxes_adds_no_box_loss_to_a_batch(model):
    image, empty_image = _images()
    alone = model([image], [TARGET])
    batch = model([image, empty_image], [TARGET, EMPTY])
    assert all(torch.isfinite(v) for v in batch.values())
    # Both box losses are normalised by all sampled boxes of the batch: the empty image brings
    # as many samples as the other (64 anchors, 32 RoIs) and no positives, so the loss halves.
    for name in ("loss_rpn_box", "loss_box"):
        assert alone[name] > 0
        torch.testing.assert_close(batch[name], alone[name] / 2, rtol=1e-4, atol=0, msg=name)


# RPN proposals -------------------------------------------------------------------------------

# Two levels of three anchors each. a and b overlap with IoU 9 * 10 / (100 + 100 - 90) = 0.82;
# d is a copy of a on the other level; f is smaller than min_box_size.
A, B, C = [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]
D, E, F = [0.0, 0.0, 10.0, 10.0], [70.0, 70.0, 80.0, 80.0], [5.0, 5.0, 5.0005, 5.0005]


def _rpn(pre_topk: int, post_topk: int) -> RPN:
    return RPN(
        RPNHead(4, 1),
        AnchorGenerator([[8.0], [16.0]], [1.0]),
        Matcher(0.7, 0.3, True),
        BalancedSampler(8, 0.5),
        pre_nms_topk=(pre_topk, pre_topk),
        post_nms_topk=(post_topk, post_topk),
        nms_thresh=0.7,
        min_box_size=1e-3,
        smooth_l1_beta=1 / 9,
    ).eval()


@pytest.mark.parametrize(
    "pre_topk, post_topk, expected",
    [
        # Per level NMS: b falls to a (IoU 0.82 > 0.7) but d survives beside a (another level);
        # f is dropped as too small. Survivors by score a 3, d 2.5, c 1, e 0.5: the first 3 stay.
        (3, 3, [A, D, C]),
        # Top 2 per level before NMS: a, b on level 0 (b suppressed), f, d on level 1 (f too small).
        (2, 10, [A, D]),
    ],
)
def test_rpn_proposals_by_hand(pre_topk, post_topk, expected):
    anchors = torch.tensor([A, B, C, D, E, F])
    logits = torch.tensor([[3.0, 2.0, 1.0, 2.5, 0.5, 4.0]] * 2)  # both images alike
    deltas = torch.zeros(2, 6, 4)  # proposals = anchors
    # Image 1 is 40 x 40: c and e are clipped to empty boxes and dropped.
    image_sizes = torch.tensor([[100, 100], [40, 40]])
    proposals = _rpn(pre_topk, post_topk)._proposals(logits, deltas, anchors, [3, 3], image_sizes)
    expected_1 = [box for box in expected if box not in (C, E)]
    assert proposals.boxes.tolist() == expected + expected_1
    assert proposals.image_index.tolist() == [0] * len(expected) + [1] * len(expected_1)


# RoI heads: sampling and post-processing -----------------------------------------------------


def _heads(score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_image: int = 100) -> RoIHeads:
    return RoIHeads(
        pooler=RoIPooler(7, [4], 2, False, "align"),
        box_head=TwoFCHead(4, 7, 8),
        predictor=BoxPredictor(8, num_classes=3),
        matcher=Matcher(0.5, 0.5, allow_low_quality_matches=False),
        sampler=BalancedSampler(16, 0.25, shuffle=False),
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta=0.0,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_image=detections_per_image,
    )


def _detect(heads: RoIHeads, probabilities, rois, image_index=None, image_sizes=None, deltas=None):
    """``_detect`` with logits whose softmax is exactly ``probabilities`` (background first)."""
    logits = torch.tensor(probabilities).log()
    rois = torch.tensor(rois)
    if deltas is None:
        deltas = torch.zeros(len(rois), logits.shape[1] * 4)  # boxes = RoIs
    if image_index is None:
        image_index = torch.zeros(len(rois), dtype=torch.int64)
    if image_sizes is None:
        image_sizes = torch.tensor([[100, 100]])
    return heads._detect(logits, deltas, rois, torch.as_tensor(image_index), image_sizes)


# RoIs 0 and 1 overlap with IoU 9 * 10 / (100 + 100 - 90) = 0.82 > nms_thresh 0.5.
OVERLAPPING = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]]


def test_nms_removes_the_weaker_of_two_overlapping_boxes_of_a_class():
    det = _detect(_heads(), [[0.2, 0.8, 0.0, 0.0], [0.3, 0.7, 0.0, 0.0]], OVERLAPPING)
    assert det.boxes.tolist() == [OVERLAPPING[0]]
    torch.testing.assert_close(det.scores, torch.tensor([0.8]))
    assert det.labels.tolist() == [1] and det.image_index.tolist() == [0]


def test_nms_keeps_overlapping_boxes_of_different_classes():
    det = _detect(_heads(), [[0.2, 0.8, 0.0, 0.0], [0.3, 0.0, 0.0, 0.7]], OVERLAPPING)
    assert det.boxes.tolist() == OVERLAPPING
    torch.testing.assert_close(det.scores, torch.tensor([0.8, 0.7]))
    assert det.labels.tolist() == [1, 3]


def test_score_threshold():
    rois = [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0]]
    probabilities = [
        [0.94, 0.06, 0.0, 0.0],  # 0.06 > 0.05: kept
        [0.96, 0.04, 0.0, 0.0],  # 0.04: dropped
        [0.1, 0.5, 0.4, 0.0],  # one RoI, two classes above the threshold: two detections
    ]
    det = _detect(_heads(score_thresh=0.05), probabilities, rois)
    assert det.boxes.tolist() == [rois[2], rois[2], rois[0]]  # by descending score 0.5, 0.4, 0.06
    assert det.labels.tolist() == [1, 2, 1]
    torch.testing.assert_close(det.scores, torch.tensor([0.5, 0.4, 0.06]))


def test_detections_per_image_keeps_the_best_of_each_image():
    rois = [[float(20 * i), 0.0, float(20 * i + 10), 10.0] for i in range(6)]  # disjoint
    class_1 = [0.9, 0.3, 0.6, 0.8, 0.5, 0.7]
    probabilities = [[1 - p, p, 0.0, 0.0] for p in class_1]
    image_index = [0, 0, 0, 1, 1, 1]
    image_sizes = torch.tensor([[100, 200], [100, 200]])
    det = _detect(_heads(detections_per_image=2), probabilities, rois, image_index, image_sizes)
    # image 0 has 0.9, 0.3, 0.6 -> keeps 0.9, 0.6; image 1 has 0.8, 0.5, 0.7 -> keeps 0.8, 0.7.
    assert det.image_index.tolist() == [0, 0, 1, 1]
    assert det.boxes.tolist() == [rois[0], rois[2], rois[3], rois[5]]
    torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.6, 0.8, 0.7]))


def test_class_specific_deltas_and_per_image_clipping():
    rois = [[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]]
    deltas = torch.zeros(2, 4 * 4)
    deltas[0, 4:8] = torch.tensor([5.0, 0.0, 0.0, 0.0])  # class 1: dx = 5 / 10 = 0.5 -> 10 px right
    deltas[0, 8:12] = torch.tensor([0.0, 0.0, 5 * math.log(2), 0.0])  # class 2: dw = log 2 -> twice as wide
    probabilities = [[0.1, 0.5, 0.4, 0.0], [0.1, 0.9, 0.0, 0.0]]
    image_sizes = torch.tensor([[40, 35]])  # (h, w)
    det = _detect(_heads(), probabilities, rois, image_sizes=image_sizes, deltas=deltas)
    # class 1: [20, 10, 40, 30], x2 clipped to w = 35; class 2: [0, 10, 40, 30], x2 clipped to 35.
    # RoI 1 lies outside the 35 x 40 image: clipped to an empty box and dropped despite score 0.9.
    torch.testing.assert_close(det.boxes, torch.tensor([[20.0, 10.0, 35.0, 30.0], [0.0, 10.0, 35.0, 30.0]]))
    assert det.labels.tolist() == [1, 2]


def test_sampling_adds_ground_truth_and_encodes_targets():
    heads = _heads()
    # Image 0: gt0 (label index 2) and gt1 (1); image 1: one gt (3) and padding.
    gt = GroundTruth(
        boxes=torch.tensor([[[0.0, 0.0, 10.0, 10.0], [30.0, 30.0, 50.0, 50.0]], [[20.0, 20.0, 40.0, 40.0], [0.0, 0.0, 0.0, 0.0]]]),
        labels=torch.tensor([[2, 1], [3, 0]]),
        valid=torch.tensor([[True, True], [True, False]]),
    )
    # Image 0 proposes p0 = [0, 0, 10, 8] (IoU 0.8 with gt0) and p1 far from all; image 1 proposes nothing.
    proposals = Proposals(torch.tensor([[0.0, 0.0, 10.0, 8.0], [60.0, 60.0, 70.0, 70.0]]), torch.tensor([0, 0]))
    boxes, image_index, labels, targets = heads._sample(proposals, gt)
    # Candidates per image: proposals, then ground truth; padding is never sampled.
    assert boxes.tolist() == [
        [0.0, 0.0, 10.0, 8.0],
        [60.0, 60.0, 70.0, 70.0],
        [0.0, 0.0, 10.0, 10.0],
        [30.0, 30.0, 50.0, 50.0],
        [20.0, 20.0, 40.0, 40.0],
    ]
    assert image_index.tolist() == [0, 0, 0, 0, 1]
    assert labels.tolist() == [2, 0, 2, 1, 3]  # p0 takes gt0's label; p1 is background
    # p0 -> gt0: centre y 4 -> 5 over height 8: dy = 10 * 1 / 8; dh = 5 * log(10 / 8).
    torch.testing.assert_close(targets[0], torch.tensor([0.0, 10 / 8, 0.0, 5 * math.log(10 / 8)]))
    torch.testing.assert_close(targets[2:], torch.zeros(3, 4))  # each gt is its own target


def test_rpn_losses_with_many_boxes_equal_dense_matching(monkeypatch):
    # 40 boxes per image take the sparse (pair by pair) anchor matching; forcing the dense
    # IoU matrix must give the same losses.
    import detect.models.rpn as rpn_module

    torch.manual_seed(0)
    rpn = RPN(
        RPNHead(4, 3),
        AnchorGenerator([[8.0], [16.0]], [0.5, 1.0, 2.0]),
        Matcher(0.7, 0.3, True),
        BalancedSampler(64, 0.5, shuffle=False),
        pre_nms_topk=(50, 50), post_nms_topk=(20, 20), nms_thresh=0.7, min_box_size=1e-3, smooth_l1_beta=1 / 9,
    ).train()
    features = [torch.randn(2, 4, 16, 16), torch.randn(2, 4, 8, 8)]
    xy = torch.rand(2, 40, 2) * 50
    boxes = torch.cat([xy, xy + 3 + torch.rand(2, 40, 2) * 20], dim=-1)
    gt = GroundTruth.pad([boxes[0], boxes[1, :35]], [torch.ones(40, dtype=torch.int64), torch.ones(35, dtype=torch.int64)])
    image_sizes = torch.tensor([[64, 64], [60, 64]])
    assert gt.boxes.shape[1] >= rpn_module.SPARSE_MATCH_MIN_GT
    _, sparse = rpn(features, image_sizes, (64, 64), gt)
    monkeypatch.setattr(rpn_module, "SPARSE_MATCH_MIN_GT", 10**9)
    _, dense = rpn(features, image_sizes, (64, 64), gt)
    assert sparse["loss_rpn_box"] > 0
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_rpn_head_equals_its_convs_run_one_by_one(channels_last):
    """The head runs its sibling convs as one and masks the ReLU's gradient in place; outputs
    and every gradient equal the plain conv -> ReLU -> two 1x1 convs of each level."""
    g = torch.Generator().manual_seed(0)
    head = RPNHead(8, 3)
    for p in head.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)
    features = [torch.randn(2, 8, s, s + 3, generator=g) for s in (9, 5)]
    if channels_last:
        head = head.to(memory_format=torch.channels_last)
        features = [f.contiguous(memory_format=torch.channels_last) for f in features]

    def reference(xs):
        logits, deltas = [], []
        for x in xs:
            t = torch.relu(torch.nn.functional.conv2d(x, head.conv.weight, head.conv.bias, padding=1))
            o = torch.nn.functional.conv2d(t, head.objectness.weight, head.objectness.bias)
            d = torch.nn.functional.conv2d(t, head.deltas.weight, head.deltas.bias)
            n, _, h, w = o.shape
            logits.append(o.permute(0, 2, 3, 1).reshape(n, -1))
            deltas.append(d.view(n, 3, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return torch.cat(logits, 1), torch.cat(deltas, 1)

    results = []
    for run in (reference, head):
        xs = [f.clone().requires_grad_(True) for f in features]
        logits, deltas = run(xs)
        weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
        loss = (logits * weights).sum() + (deltas * deltas).sum()
        grads = torch.autograd.grad(loss, xs + list(head.parameters()))
        results.append((logits.detach(), deltas.detach(), grads))
    (expected_logits, expected_deltas, expected_grads), (logits, deltas, grads) = results
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(deltas, expected_deltas, rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads, expected_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
