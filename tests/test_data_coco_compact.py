"""CocoDetection's compact arrays against pycocotools' own index of the same json, and evaluation through it."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO

from detect.data.coco import CocoDetection, CompactAnnotations
from detect.evaluation.coco import evaluate_coco
from detect.evaluation.dataset import evaluate_detections

COCO8 = Path(__file__).parent / "data" / "coco8"


def _crafted(tmp_path: Path, num_images: int = 6) -> Path:
    """Unsorted image ids, a unicode file name, annotations out of image order, a crowd region, a
    zero-width box, a box outside its image, a box clipped to it and an image without boxes."""
    rng = np.random.default_rng(3)
    ids = [int(i) for i in rng.permutation(1000)[:num_images] + 1]
    images = [
        {"id": i, "file_name": f"dir/ünï {i}.jpg", "height": int(rng.integers(20, 60)), "width": int(rng.integers(20, 60))}
        for i in ids
    ]
    annotations = []
    for k in range(5 * num_images):
        image = images[int(rng.integers(num_images - 1))]  # the last image gets no annotation
        x, y = rng.uniform(-10, image["width"]), rng.uniform(-10, image["height"])
        w, h = rng.uniform(0, 30, size=2).round(2)
        annotations.append({"id": 10 * k + 7, "image_id": image["id"], "category_id": int(rng.choice([1, 5, 90])),
                            "bbox": [float(x), float(y), float(w), float(h)], "iscrowd": int(k % 7 == 3)})
    annotations[4]["bbox"][2] = 0.0
    categories = [{"id": 90, "name": "z"}, {"id": 1, "name": "a"}, {"id": 5, "name": "e"}]
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _expected(image_id: int, coco: COCO) -> tuple[list[list[float]], list[int]]:
    """Non-crowd boxes of ``image_id`` clipped to the image, without zero-size ones, in json order."""
    image = coco.imgs[image_id]
    boxes, labels = [], []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        x, y, w, h = ann["bbox"]
        x1, x2 = (min(max(v, 0.0), image["width"]) for v in (x, x + w))
        y1, y2 = (min(max(v, 0.0), image["height"]) for v in (y, y + h))
        if not ann["iscrowd"] and x2 > x1 and y2 > y1:
            boxes.append([x1, y1, x2, y2])
            labels.append(ann["category_id"])
    return boxes, labels


@pytest.mark.parametrize("filter_empty", [False, True])
@pytest.mark.parametrize("which", ["coco8", "crafted"])
def test_items_match_pycocotools_index(tmp_path: Path, which: str, filter_empty: bool) -> None:
    ann_file = COCO8 / "annotations.json" if which == "coco8" else _crafted(tmp_path)
    coco = COCO(str(ann_file))
    dataset = CocoDetection(tmp_path, ann_file, filter_empty=filter_empty)
    expected_ids = sorted(i for i in coco.imgs if not filter_empty or _expected(i, coco)[0])
    assert dataset.image_ids == expected_ids
    for index, image_id in enumerate(expected_ids):
        image = coco.imgs[image_id]
        assert dataset.image_info(index) == {
            "file_name": image["file_name"],
            "path": str(tmp_path / image["file_name"]),
            "height": image["height"],
            "width": image["width"],
            "image_id": image_id,
            "record": f"{ann_file} image id {image_id}",
        }
        target = dataset.annotations(index)
        boxes, labels = _expected(image_id, coco)
        assert target["image_id"] == image_id and target["orig_size"] == (image["height"], image["width"])
        assert target["boxes"].shape == (len(boxes), 4) and target["labels"].tolist() == labels
        assert np.array_equal(target["boxes"].numpy(), np.array(boxes, dtype=np.float32).reshape(-1, 4))


def test_crafted_json_has_every_case(tmp_path: Path) -> None:
    """The crafted json does exercise crowd regions, clipping, a dropped box and an image without boxes."""
    ann_file = _crafted(tmp_path)
    raw = json.loads(ann_file.read_text())
    assert any(a["iscrowd"] for a in raw["annotations"]) and raw["annotations"][4]["bbox"][2] == 0.0
    assert any(a["bbox"][0] < 0 for a in raw["annotations"])
    dataset = CocoDetection(tmp_path, ann_file)
    assert sum(len(dataset.annotations(i)["boxes"]) == 0 for i in range(len(dataset))) >= 1
    assert [a["image_id"] for a in raw["annotations"]] != sorted(a["image_id"] for a in raw["annotations"])


def test_dataset_holds_no_per_record_objects(tmp_path: Path) -> None:
    """A few arrays whatever the number of records: nothing for reference counts or the collector to touch."""

    def reachable(root: Any) -> int:
        seen, stack = set(), [root]
        while stack:
            obj = stack.pop()
            if id(obj) not in seen:
                seen.add(id(obj))
                stack.extend(o for o in gc.get_referents(obj) if not isinstance(o, type))
        return len(seen)

    small, large = (CocoDetection(tmp_path, _crafted(tmp_path, n)) for n in (6, 300))
    assert reachable(small._table) == reachable(large._table)
    assert reachable(large._table) < 40 < len(large)
    assert all(a.flags.writeable is False for a in vars(large._table).values())
    assert {type(v) for v in vars(large._table).values()} == {np.ndarray}
    assert not any(isinstance(v, (COCO, dict, list)) and len(v) > 10 for v in vars(large).values())


def test_empty_json(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    dataset = CocoDetection(tmp_path, path)
    assert len(dataset) == 0 and dataset.image_ids == [] and dataset._table.boxes.shape == (0, 4)
    assert isinstance(dataset._table, CompactAnnotations)


def test_evaluation_loads_the_index_with_crowd_regions(tmp_path: Path) -> None:
    """The evaluation of a dataset is pycocotools' on the json itself, crowd regions included."""
    ann_file = _crafted(tmp_path)
    dataset = CocoDetection(tmp_path, ann_file)
    reference = COCO(str(ann_file))
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5 + 0.001 * k}
        for k, a in enumerate(reference.dataset["annotations"][::2])
    ]
    for ann in reference.dataset["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]  # what load_coco fills in
    report = evaluate_detections(dataset, results)
    assert report.metrics == evaluate_coco(reference, results, dataset.categories).to_json()
    assert sum(a["iscrowd"] for a in dataset.load_coco().dataset["annotations"]) > 0
    assert 0 < report.metrics["bbox"]["AP50"] < 100 and not math.isnan(report.metrics["bbox"]["AP"])
