import pytest
import torch

from detect.evaluation.errors import DetectionKind, classify_detections

K = DetectionKind


def boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_one_of_each_kind_worked_by_hand():
    gt_boxes = boxes([0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10])
    gt_labels = torch.tensor([1, 2, 3])
    det_boxes = boxes(
        [0, 0, 10, 10],  # class 1 on gt 0, IoU 1: true positive
        [0, 0, 10, 9],  # class 1 on gt 0 again, IoU 0.9: duplicate
        [20, 0, 30, 10],  # class 1 on the class-2 gt 1, IoU 1: wrong class
        [60, 60, 70, 70],  # touches nothing: background
        [40, 0, 50, 3],  # class 3 on gt 2, IoU 30/100 = 0.3: localization
    )
    det_scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    det_labels = torch.tensor([1, 1, 1, 1, 3])

    errors = classify_detections(gt_boxes, gt_labels, det_boxes, det_scores, det_labels)

    assert errors.det_kinds == (K.TRUE_POSITIVE, K.DUPLICATE, K.WRONG_CLASS, K.BACKGROUND, K.LOCALIZATION)
    assert errors.det_gt_index.tolist() == [0, 0, 1, -1, 2]
    assert errors.gt_missed.tolist() == [False, True, True]
    assert (errors.num_true_positives, errors.num_false_positives, errors.num_missed) == (1, 4, 2)
    assert errors.error_score == 6
    assert errors.count(K.DUPLICATE) == 1


def test_higher_score_claims_the_object_whatever_the_input_order():
    gt_boxes, gt_labels = boxes([0, 0, 10, 10]), torch.tensor([5])
    det_boxes = boxes([0, 0, 10, 10], [0, 0, 10, 8])  # IoU 1.0 and 0.8
    det_scores = torch.tensor([0.5, 0.9])
    det_labels = torch.tensor([5, 5])
    before = det_boxes.clone(), det_scores.clone()

    errors = classify_detections(gt_boxes, gt_labels, det_boxes, det_scores, det_labels)

    assert errors.det_scores.tolist() == pytest.approx([0.9, 0.5])
    assert errors.det_boxes.tolist() == [[0, 0, 10, 8], [0, 0, 10, 10]]
    assert errors.det_kinds == (K.TRUE_POSITIVE, K.DUPLICATE)
    assert torch.equal(det_boxes, before[0]) and torch.equal(det_scores, before[1])


def test_second_detection_takes_a_free_object_over_a_claimed_better_overlap():
    # Two class-1 objects side by side; the second detection overlaps the claimed gt 0 more
    # (IoU 80/120) than gt 1 (IoU 70/130), but gt 1 is free, so under the COCO rule it is a true positive.
    gt_boxes = boxes([0, 0, 10, 10], [5, 0, 15, 10])
    gt_labels = torch.tensor([1, 1])
    det_boxes = boxes([0, 0, 10, 10], [2, 0, 12, 10])
    det_scores = torch.tensor([0.9, 0.8])
    det_labels = torch.tensor([1, 1])

    errors = classify_detections(gt_boxes, gt_labels, det_boxes, det_scores, det_labels)

    assert errors.det_kinds == (K.TRUE_POSITIVE, K.TRUE_POSITIVE)
    assert errors.det_gt_index.tolist() == [0, 1]
    assert not errors.gt_missed.any()


def test_score_threshold_drops_detections_before_matching():
    gt_boxes, gt_labels = boxes([0, 0, 10, 10]), torch.tensor([1])
    det_boxes = boxes([0, 0, 10, 10], [50, 50, 60, 60])
    det_scores = torch.tensor([0.3, 0.8])
    det_labels = torch.tensor([1, 1])

    errors = classify_detections(gt_boxes, gt_labels, det_boxes, det_scores, det_labels, score_thresh=0.5)

    assert errors.det_kinds == (K.BACKGROUND,)
    assert errors.det_scores.tolist() == pytest.approx([0.8])
    assert errors.gt_missed.tolist() == [True]
    assert errors.error_score == 2


def test_iou_threshold_decides_between_hit_and_localization():
    gt_boxes, gt_labels = boxes([0, 0, 10, 10]), torch.tensor([1])
    det = (boxes([0, 0, 10, 6]), torch.tensor([0.9]), torch.tensor([1]))  # IoU 0.6

    assert classify_detections(gt_boxes, gt_labels, *det, iou_thresh=0.5).det_kinds == (K.TRUE_POSITIVE,)
    assert classify_detections(gt_boxes, gt_labels, *det, iou_thresh=0.7).det_kinds == (K.LOCALIZATION,)


def test_barely_touching_same_class_is_background_not_localization():
    gt_boxes, gt_labels = boxes([0, 0, 10, 10]), torch.tensor([1])
    errors = classify_detections(gt_boxes, gt_labels, boxes([9.5, 0, 19.5, 10]), [0.9], [1])  # IoU 5/195
    assert errors.det_kinds == (K.BACKGROUND,)
    assert errors.det_gt_index.tolist() == [-1]


def test_empty_inputs():
    no_dets = classify_detections(boxes([0, 0, 10, 10]), [1], boxes(), [], [])
    assert no_dets.det_kinds == () and no_dets.det_boxes.shape == (0, 4)
    assert no_dets.gt_missed.tolist() == [True] and no_dets.error_score == 1

    no_gt = classify_detections(boxes(), [], boxes([0, 0, 10, 10]), [0.9], [1])
    assert no_gt.det_kinds == (K.BACKGROUND,) and no_gt.error_score == 1


def test_accepts_lists():
    errors = classify_detections([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [0.9], [1])
    assert errors.det_kinds == (K.TRUE_POSITIVE,)


def test_mismatched_lengths_name_the_field():
    with pytest.raises(ValueError, match="det_scores"):
        classify_detections(boxes([0, 0, 10, 10]), [1], boxes([0, 0, 10, 10]), [0.9, 0.8], [1])
    with pytest.raises(ValueError, match="gt_boxes"):
        classify_detections(torch.zeros(2, 5), [1, 1], boxes(), [], [])
