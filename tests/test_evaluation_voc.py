"""VOC evaluation: the devkit's matching rules and both AP forms, on hand-derived cases."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch

from detect.evaluation.voc import evaluate_voc, format_voc_table

CLASSES = {1: "cat", 2: "dog", 3: "bird"}
TOL = 1e-9


def _gt(boxes: list, labels: list, difficult: list | None = None) -> dict[str, torch.Tensor]:
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if difficult is not None:
        target["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    return target


def _pred(boxes: list, scores: list, labels: list) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_duplicate_is_fp_and_11point_differs_from_area() -> None:
    gt = {"a": _gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1])}
    # TP on box 0, a second hit on box 0 (IoU 0.9, a duplicate: FP), TP on box 1.
    predictions = {"a": _pred([[0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 30, 10]], [0.9, 0.8, 0.7], [1, 1, 1])}
    cat = evaluate_voc(gt, predictions, CLASSES)["per_class"]["cat"]

    # recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # area: envelope 1 up to recall 1/2, then 2/3: 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert cat["AP"] == pytest.approx(100 * 5 / 6, abs=TOL)
    # 11-point: t = 0 .. 0.5 (6 points) reach precision 1, t = 0.6 .. 1 (5 points) reach 2/3.
    assert cat["AP_11point"] == pytest.approx(100 * (6 * 1 + 5 * 2 / 3) / 11, abs=TOL)
    assert cat["num_gt"] == 2


def test_detection_on_a_difficult_object_is_ignored() -> None:
    gt = {"a": _gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1], difficult=[False, True])}
    # On the difficult box (ignored), on the normal box (TP), on nothing (FP).
    predictions = {"a": _pred([[20, 0, 30, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [1, 1, 1])}
    cat = evaluate_voc(gt, predictions, CLASSES)["per_class"]["cat"]

    # Only TP, FP remain: recall 1, 1; precision 1, 1/2. Counting the difficult hit as
    # a FP would give recall 0, 1, 1 and precision 0, 1/2, 1/3: AP 1/2.
    assert cat == {"AP": pytest.approx(100.0, abs=TOL), "AP_11point": pytest.approx(100.0, abs=TOL), "num_gt": 1}


def test_best_box_already_matched_makes_a_duplicate_even_if_another_box_overlaps() -> None:
    # Box 1 overlaps box 0; the second detection's best IoU is with box 0 (taken), so
    # the devkit calls it a FP although its IoU with the free box 1 is 0.6 > 0.5.
    gt = {"a": _gt([[0, 0, 10, 10], [2, 0, 12, 10]], [1, 1])}
    predictions = {"a": _pred([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])}
    cat = evaluate_voc(gt, predictions, CLASSES)["per_class"]["cat"]

    # recall 1/2, 1/2; precision 1, 1/2: area 1/2, 11-point 6/11.
    assert cat["AP"] == pytest.approx(50.0, abs=TOL)
    assert cat["AP_11point"] == pytest.approx(100 * 6 / 11, abs=TOL)


def test_iou_exactly_at_threshold_is_not_a_match() -> None:
    gt = {"a": _gt([[0, 0, 10, 10]], [1])}
    # IoU = 100 / 200 = 0.5: the devkit requires ovmax > ovthresh.
    predictions = {"a": _pred([[0, 0, 10, 20]], [0.9], [1])}
    assert evaluate_voc(gt, predictions, CLASSES)["per_class"]["cat"]["AP"] == 0.0
    assert evaluate_voc(gt, predictions, CLASSES, iou_thresh=0.49)["per_class"]["cat"]["AP"] == pytest.approx(100.0)


def test_classes_without_ground_truth_are_absent_from_the_mean() -> None:
    # dog: detections but no ground truth; bird: only a difficult object.
    gt = {"a": _gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 3], difficult=[False, True])}
    predictions = {"a": _pred([[0, 0, 10, 10], [40, 40, 50, 50], [20, 0, 30, 10]], [0.9, 0.8, 0.7], [1, 2, 3])}
    metrics = evaluate_voc(gt, predictions, CLASSES)

    assert metrics["per_class"]["dog"] == {"AP": None, "AP_11point": None, "num_gt": 0}
    assert metrics["per_class"]["bird"] == {"AP": None, "AP_11point": None, "num_gt": 0}
    assert metrics["mAP"] == pytest.approx(100.0, abs=TOL)  # cat only, not (100 + 0 + 0) / 3
    assert metrics["mAP_11point"] == pytest.approx(100.0, abs=TOL)
    assert list(metrics["per_class"]) == ["cat", "dog", "bird"]  # ascending class id


def test_no_ground_truth_at_all_gives_no_mean() -> None:
    metrics = evaluate_voc({"a": _gt([], [])}, {"a": _pred([[0, 0, 1, 1]], [0.5], [1])}, CLASSES)
    assert metrics["mAP"] is None and metrics["mAP_11point"] is None
    assert "absent" in format_voc_table(metrics)


def test_images_without_detections() -> None:
    gt = {"a": _gt([[0, 0, 10, 10]], [1]), "b": _gt([[0, 0, 10, 10]], [1]), "c": _gt([[5, 5, 9, 9]], [2])}
    # "b" has no entry, "c" has an empty one.
    predictions = {"a": _pred([[0, 0, 10, 10]], [0.9], [1]), "c": _pred([], [], [])}
    metrics = evaluate_voc(gt, predictions, CLASSES)

    # cat: recall 1/2 at precision 1 -> area 1/2, 11-point 6/11. dog: nothing found -> 0.
    assert metrics["per_class"]["cat"]["AP"] == pytest.approx(50.0, abs=TOL)
    assert metrics["per_class"]["cat"]["AP_11point"] == pytest.approx(100 * 6 / 11, abs=TOL)
    assert metrics["per_class"]["dog"] == {"AP": 0.0, "AP_11point": 0.0, "num_gt": 1}
    assert metrics["mAP"] == pytest.approx(25.0, abs=TOL)


def test_tied_scores_keep_input_order() -> None:
    gt = {"a": _gt([[0, 0, 10, 10]], [1]), "b": _gt([], [])}
    hit = _pred([[0, 0, 10, 10]], [0.5], [1])
    miss = _pred([[0, 0, 10, 10]], [0.5], [1])

    # Miss first: recall 0, 1; precision 0, 1/2 -> both APs 1/2.
    first_miss = evaluate_voc(gt, {"b": miss, "a": hit}, CLASSES)["per_class"]["cat"]
    assert first_miss["AP"] == pytest.approx(50.0, abs=TOL)
    assert first_miss["AP_11point"] == pytest.approx(50.0, abs=TOL)
    # Hit first: recall 1, 1; precision 1, 1/2 -> both APs 1.
    first_hit = evaluate_voc(gt, {"a": hit, "b": miss}, CLASSES)["per_class"]["cat"]
    assert first_hit["AP"] == pytest.approx(100.0, abs=TOL)
    # Within one image, ties keep the detection index: the far box comes first here.
    within = evaluate_voc(gt, {"a": _pred([[50, 50, 60, 60], [0, 0, 10, 10]], [0.5, 0.5], [1, 1])}, CLASSES)
    assert within["per_class"]["cat"]["AP"] == pytest.approx(50.0, abs=TOL)


def test_inputs_are_checked() -> None:
    gt = {"a": _gt([[0, 0, 10, 10]], [1])}
    with pytest.raises(ValueError, match=r"missing from the ground truth: \['zz'\]"):
        evaluate_voc(gt, {"zz": _pred([], [], [])}, CLASSES)
    with pytest.raises(ValueError, match=r"prediction for image 'a': labels \[7\] are not among"):
        evaluate_voc(gt, {"a": _pred([[0, 0, 1, 1]], [0.5], [7])}, CLASSES)
    with pytest.raises(ValueError, match=r"ground truth of image 'a': invalid box \[5.0, 0.0, 1.0, 1.0\] at index 0"):
        evaluate_voc({"a": _gt([[5, 0, 1, 1]], [1])}, {}, CLASSES)


def test_format_voc_table() -> None:
    gt = {"a": _gt([[0, 0, 10, 10]], [1])}
    table = format_voc_table(evaluate_voc(gt, {"a": _pred([[0, 0, 10, 10]], [0.9], [1])}, CLASSES))
    lines = table.splitlines()
    assert lines[0].split() == ["class", "AP", "AP_11pt", "num_gt"]
    assert lines[1].split() == ["cat", "100.00", "100.00", "1"]
    assert lines[2].split() == ["dog", "absent", "absent", "0"]
    assert lines[-2:] == ["mAP (area, VOC2010+):    100.00", "mAP (11-point, VOC2007): 100.00"]


def _reference_class_ap(gt: dict, predictions: dict, class_id: int) -> tuple[Fraction, Fraction] | None:
    """The devkit's rules, written out with exact fractions and plain loops.

    Area AP is summed per TP: each one adds 1/num_gt of recall at the best precision
    reached from its rank onwards.
    """
    objects = {
        image_id: [(box, bool(d)) for box, label, d in zip(t["boxes"].tolist(), t["labels"].tolist(),
                                                          t["difficult"].tolist()) if label == class_id]
        for image_id, t in gt.items()
    }
    num_gt = sum(not d for objs in objects.values() for _, d in objs)
    if num_gt == 0:
        return None
    dets = [(score, image_id, box) for image_id, p in predictions.items()
            for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())
            if label == class_id]
    dets = sorted(dets, key=lambda d: -d[0])  # Python's sort is stable

    def iou(a: list, b: list) -> Fraction:
        a, b = [Fraction(v) for v in a], [Fraction(v) for v in b]
        w = max(Fraction(0), min(a[2], b[2]) - max(a[0], b[0]))
        h = max(Fraction(0), min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union else Fraction(0)

    taken: set = set()
    tp = fp = 0
    points = []  # (recall, precision, is_tp) after each counted detection
    for _, image_id, box in dets:
        best, best_iou = None, Fraction(-1)
        for j, (gt_box, _) in enumerate(objects[image_id]):
            overlap = iou(box, gt_box)
            if overlap > best_iou:  # strict: the first of equal maxima wins
                best, best_iou = j, overlap
        if best is not None and best_iou > Fraction(1, 2) and objects[image_id][best][1]:
            continue
        is_tp = best is not None and best_iou > Fraction(1, 2) and (image_id, best) not in taken
        if is_tp:
            taken.add((image_id, best))
        tp, fp = tp + is_tp, fp + (not is_tp)
        points.append((Fraction(tp, num_gt), Fraction(tp, tp + fp), is_tp))

    area = sum(
        (Fraction(1, num_gt) * max(p for _, p, _ in points[i:]) for i, (_, _, hit) in enumerate(points) if hit),
        Fraction(0),
    )
    eleven = sum(
        (max([p for r, p, _ in points if float(r) >= k * 0.1], default=Fraction(0)) for k in range(11)), Fraction(0)
    ) / 11
    return area, eleven


def _random_scene(rng: random.Random) -> tuple[dict, dict]:
    """Five images; detections are jittered ground truth boxes (some twice, some
    mislabelled) plus background boxes, with few distinct scores so that ties occur."""

    def box() -> list:
        x, y = rng.randint(0, 40), rng.randint(0, 40)
        return [x, y, x + rng.randint(5, 15), y + rng.randint(5, 15)]

    gt, predictions = {}, {}
    for i in range(5):
        objects = [(box(), rng.randint(1, 3), rng.random() < 0.2) for _ in range(rng.randint(0, 4))]
        gt[f"{i:06d}"] = _gt([b for b, _, _ in objects], [c for _, c, _ in objects], [d for _, _, d in objects])
        dets = []
        for b, c, _ in objects:
            for _ in range(rng.choice([0, 1, 1, 2])):
                jittered = [v + rng.randint(-2, 2) for v in b]
                jittered[2:] = [max(jittered[0], jittered[2]), max(jittered[1], jittered[3])]
                dets.append((jittered, c if rng.random() < 0.85 else rng.randint(1, 3)))
        dets += [(box(), rng.randint(1, 3)) for _ in range(rng.randint(0, 3))]
        rng.shuffle(dets)
        if dets or rng.random() < 0.5:
            scores = [rng.choice([0.25, 0.5, 0.75, 0.9]) for _ in dets]
            predictions[f"{i:06d}"] = _pred([b for b, _ in dets], scores, [c for _, c in dets])
    return gt, predictions


@pytest.mark.parametrize("seed", range(12))
def test_matches_an_exact_reference_on_random_scenes(seed: int) -> None:
    gt, predictions = _random_scene(random.Random(seed))
    metrics = evaluate_voc(gt, predictions, CLASSES)

    for class_id, name in CLASSES.items():
        expected = _reference_class_ap(gt, predictions, class_id)
        entry = metrics["per_class"][name]
        if expected is None:
            assert entry["AP"] is None and entry["AP_11point"] is None
        else:
            assert entry["AP"] == pytest.approx(100 * float(expected[0]), abs=TOL)
            assert entry["AP_11point"] == pytest.approx(100 * float(expected[1]), abs=TOL)


def test_11point_thresholds_are_the_devkits_accumulated_tenths() -> None:
    # 10 objects, 3 found: recall stops at exactly 3/10. The devkit's threshold
    # 3 * 0.1 = 0.30000000000000004 lies above it, so only t = 0, 0.1, 0.2 reach
    # precision 1: 3/11, not 4/11. Area: 3/10 * 1.
    gt = {"a": _gt([[20 * i, 0, 20 * i + 10, 10] for i in range(10)], [1] * 10)}
    predictions = {"a": _pred([[20 * i, 0, 20 * i + 10, 10] for i in range(3)], [0.9, 0.8, 0.7], [1, 1, 1])}
    cat = evaluate_voc(gt, predictions, CLASSES)["per_class"]["cat"]
    assert cat["AP_11point"] == pytest.approx(100 * 3 / 11, abs=TOL)
    assert cat["AP"] == pytest.approx(100 * 3 / 10, abs=TOL)
