"""COCO evaluation: results format, parity with pycocotools, hand-derived AP, metrics.json."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation.coco import (
    STAT_NAMES,
    CocoMetrics,
    evaluate_coco,
    load_results,
    precision_recall_curves,
    save_metrics,
    to_coco_results,
)

# Non-contiguous category ids, as in COCO. Areas: < 32^2 small, < 96^2 medium, else large.
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]
GT_BOXES = {  # image id -> [(category id, [x, y, w, h])]
    1: [(1, [10.0, 10.0, 20.0, 20.0]), (3, [100.0, 100.0, 50.0, 50.0])],  # small, medium
    2: [(90, [0.0, 0.0, 200.0, 200.0]), (1, [300.0, 300.0, 60.0, 60.0])],  # large, medium
    3: [(3, [50.0, 50.0, 150.0, 100.0])],  # large
}


def _gt_file(tmp_path: Path, boxes: dict[int, list] = GT_BOXES, categories: list = CATEGORIES) -> Path:
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in boxes]
    annotations = []
    for image_id, objects in boxes.items():
        for category_id, bbox in objects:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                 "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
            )
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _load_gt(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _pycocotools(gt: COCO, results_file: Path, category_ids: list[int] | None = None) -> np.ndarray:
    """The reference: COCOeval run directly on the results file."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(str(results_file)), iouType="bbox")
        if category_ids is not None:
            coco_eval.params.catIds = category_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def _xyxy(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


def _perfect_predictions() -> dict[int, dict[str, torch.Tensor]]:
    return {
        image_id: {
            "boxes": torch.tensor([_xyxy(*bbox) for _, bbox in objects]),
            "scores": torch.ones(len(objects)),
            "labels": torch.tensor([c for c, _ in objects], dtype=torch.int64),
        }
        for image_id, objects in GT_BOXES.items()
    }


def _noisy_results() -> list[dict]:
    """Shifted boxes, a wrong class, a duplicate and a background hit, with distinct scores."""
    return [
        {"image_id": 1, "category_id": 1, "bbox": [11.0, 12.0, 20.0, 19.0], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [110.0, 100.0, 50.0, 50.0], "score": 0.8},
        {"image_id": 1, "category_id": 3, "bbox": [100.0, 102.0, 48.0, 50.0], "score": 0.7},  # duplicate
        {"image_id": 2, "category_id": 90, "bbox": [20.0, 0.0, 200.0, 180.0], "score": 0.95},
        {"image_id": 2, "category_id": 1, "bbox": [500.0, 400.0, 30.0, 30.0], "score": 0.6},  # background
        {"image_id": 2, "category_id": 3, "bbox": [300.0, 300.0, 60.0, 60.0], "score": 0.5},  # wrong class
        {"image_id": 3, "category_id": 3, "bbox": [60.0, 40.0, 150.0, 120.0], "score": 0.85},
        {"image_id": 3, "category_id": 1, "bbox": [55.0, 55.0, 100.0, 90.0], "score": 0.3},
    ]


def test_to_coco_results_converts_xyxy_to_xywh_exactly() -> None:
    predictions = {
        7: {"boxes": torch.tensor([[10.5, 20.25, 30.75, 40.125]]), "scores": torch.tensor([0.5]),
            "labels": torch.tensor([90])},
        2: {"boxes": torch.tensor([[0.1, 0.2, 0.3, 0.7], [1.0, 2.0, 1.0, 2.0]]), "scores": torch.tensor([0.25, 0.125]),
            "labels": torch.tensor([3, 1])},
        5: {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    }
    results = to_coco_results(predictions)

    # Ordered by image id, then detection index; category ids stay the dataset's own.
    assert [(r["image_id"], r["category_id"]) for r in results] == [(2, 3), (2, 1), (7, 90)]
    assert results[2] == {"image_id": 7, "category_id": 90, "bbox": [10.5, 20.25, 20.25, 19.875], "score": 0.5}
    assert results[1]["bbox"] == [1.0, 2.0, 0.0, 0.0]
    # float32 corners subtract exactly in float64: w + x == x2 bit for bit.
    x1, y1, x2, y2 = (float(v) for v in predictions[2]["boxes"][0])
    assert results[0]["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    assert all(type(v) is float for r in results for v in r["bbox"] + [r["score"]])
    json.dumps(results)


def test_to_coco_results_rejects_an_inverted_box_naming_the_image() -> None:
    predictions = {4: {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0], [5.0, 0.0, 1.0, 5.0]]),
                       "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}}
    with pytest.raises(ValueError, match=r"image 4: invalid detection at index 1"):
        to_coco_results(predictions)


def test_perfect_detections_give_ap_100(tmp_path: Path) -> None:
    metrics = evaluate_coco(_load_gt(_gt_file(tmp_path)), to_coco_results(_perfect_predictions()))

    # pycocotools divides by tp + fp + eps, so a perfect precision is 1 - 2e-16.
    assert metrics.stats == pytest.approx({name: 100.0 for name in STAT_NAMES}, abs=1e-9)
    assert metrics.per_class == pytest.approx({"person": 100.0, "car": 100.0, "toothbrush": 100.0}, abs=1e-9)
    assert len(metrics.summary.strip().splitlines()) == 12
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in metrics.summary


def test_matches_pycocotools_run_directly_on_the_same_files(tmp_path: Path) -> None:
    gt = _load_gt(_gt_file(tmp_path))
    results = _noisy_results()
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))

    metrics = evaluate_coco(gt, load_results(results_file))
    reference = _pycocotools(gt, results_file)

    for name, value in zip(STAT_NAMES, reference):
        assert metrics.stats[name] == 100.0 * value, name
    assert 0 < metrics.stats["AP"] < 100  # the case is not degenerate
    assert results == _noisy_results()  # loadRes adds fields to records: ours were copied


def test_per_class_ap_equals_cocoeval_restricted_to_that_class(tmp_path: Path) -> None:
    gt = _load_gt(_gt_file(tmp_path))
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(_noisy_results()))

    metrics = evaluate_coco(gt, _noisy_results(), class_names={1: "p", 3: "c", 90: "t", 5: "unused"})

    for category_id, name in ((1, "p"), (3, "c"), (90, "t")):
        assert metrics.per_class[name] == pytest.approx(100.0 * _pycocotools(gt, results_file, [category_id])[0], abs=1e-12)


def test_iou_062_counts_at_ap50_but_not_at_ap75(tmp_path: Path) -> None:
    # One large object per class. The car detection covers 62 of its 100 columns:
    # IoU = 6200 / 10000 = 0.62, a match at IoU thresholds 0.50, 0.55, 0.60 only.
    gt = _load_gt(_gt_file(tmp_path, {1: [(3, [0.0, 0.0, 100.0, 100.0]), (90, [200.0, 200.0, 100.0, 100.0])]}))
    results = [
        {"image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 62.0, 100.0], "score": 0.9},
        {"image_id": 1, "category_id": 90, "bbox": [200.0, 200.0, 100.0, 100.0], "score": 0.8},
    ]
    metrics = evaluate_coco(gt, results)

    # A class's AP at one IoU is 1 when its only detection matches, else 0.
    assert metrics.per_class["car"] == pytest.approx(100.0 * 3 / 10, abs=1e-9)
    assert metrics.per_class["toothbrush"] == pytest.approx(100.0, abs=1e-9)
    assert "person" not in metrics.per_class  # no ground truth: omitted
    assert metrics.stats["AP"] == pytest.approx((30.0 + 100.0) / 2, abs=1e-9)
    assert metrics.stats["AP50"] == pytest.approx(100.0, abs=1e-9)
    assert metrics.stats["AP75"] == pytest.approx((0.0 + 100.0) / 2, abs=1e-9)
    assert metrics.stats["APl"] == metrics.stats["AP"]
    assert metrics.stats["APs"] is None and metrics.stats["APm"] is None  # no small or medium objects

    car = metrics.curves["per_class"]["car"]
    assert metrics.curves["recall"] == pytest.approx([i / 100 for i in range(101)])
    assert car["precision_iou50"] == pytest.approx([1.0] * 101, abs=1e-12)
    assert car["precision"] == pytest.approx([0.3] * 101)


def test_empty_results_give_ap_0(tmp_path: Path) -> None:
    metrics = evaluate_coco(_load_gt(_gt_file(tmp_path)), to_coco_results({}))

    assert metrics.stats == {name: 0.0 for name in STAT_NAMES}
    assert metrics.per_class == {"person": 0.0, "car": 0.0, "toothbrush": 0.0}
    assert len(metrics.summary.strip().splitlines()) == 12


def test_results_for_unknown_images_or_categories_are_named(tmp_path: Path) -> None:
    gt = _load_gt(_gt_file(tmp_path))
    record = {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5}
    with pytest.raises(ValueError, match=r"2 image_ids not among the ground truth's images: 42, 99"):
        evaluate_coco(gt, [record, {**record, "image_id": 99}, {**record, "image_id": 42}])
    with pytest.raises(ValueError, match=r"category_ids not among the ground truth's categories: 2"):
        evaluate_coco(gt, [record, {**record, "category_id": 2}])
    with pytest.raises(ValueError, match=r"class_names lacks the ground truth's category ids \[90\]"):
        evaluate_coco(gt, [record], class_names={1: "a", 3: "b"})


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "field 'image_id' must be an integer or a string, got None"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "field 'bbox' must be"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 0.5}, "field 'bbox' must be"),
        ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}, "field 'score' must be"),
    ],
)
def test_load_results_names_file_record_and_field(tmp_path: Path, record: dict, message: str) -> None:
    good = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    path = tmp_path / "results.json"
    path.write_text(json.dumps([good, record]))
    with pytest.raises(ValueError, match=rf"results\.json: record 1: {message}".replace("[", r"\[")):
        load_results(path)


def test_load_results_rejects_a_non_list(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(ValueError, match="results.json: expected a JSON list"):
        load_results(path)


def test_precision_recall_curves_requires_accumulate(tmp_path: Path) -> None:
    gt = _load_gt(_gt_file(tmp_path))
    with pytest.raises(ValueError, match="accumulate"):
        precision_recall_curves(COCOeval(gt, gt, iouType="bbox"))


def test_save_metrics_merges_sections_and_writes_valid_json(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.json"
    save_metrics({"voc": {"mAP": 70.0}}, path)
    metrics = CocoMetrics(
        stats={"AP": 50.0, "AP50": 80.0, "AP75": 40.0, "APs": None, "APm": 10.0, "APl": 60.0},
        per_class={"car": 50.0}, summary="", curves={},
    )
    save_metrics(metrics, path)

    saved = json.loads(path.read_text())
    assert saved == {"voc": {"mAP": 70.0}, "bbox": {**metrics.stats, "per_class": {"car": 50.0}}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_save_metrics_refuses_nan_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    save_metrics({"voc": {"mAP": 70.0}}, path)
    with pytest.raises(ValueError, match="NaN"):
        save_metrics({"bbox": {"AP": math.nan}}, path)
    assert json.loads(path.read_text()) == {"voc": {"mAP": 70.0}}
