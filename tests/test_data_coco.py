"""CocoDetection against the raw json of tests/data/coco8, and its input checks."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from detect.data.coco import CocoDetection
from detect.data.image_io import ImageReadError

COCO8 = Path(__file__).parent / "data" / "coco8"
ANN_FILE = COCO8 / "annotations.json"
IMAGES = COCO8 / "images"


def _raw() -> dict[str, Any]:
    return json.loads(ANN_FILE.read_text())


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def dataset() -> CocoDetection:
    return CocoDetection(IMAGES, ANN_FILE)


def test_counts_ids_and_categories_match_raw_json(dataset: CocoDetection) -> None:
    raw = _raw()
    per_image = Counter(a["image_id"] for a in raw["annotations"])
    assert len(dataset) == len(raw["images"]) == 8
    assert dataset.image_ids == sorted(im["id"] for im in raw["images"])
    assert dataset.categories == {c["id"]: c["name"] for c in raw["categories"]}
    assert 90 in dataset.categories and 12 not in dataset.categories  # COCO ids have gaps
    for index, image_id in enumerate(dataset.image_ids):
        target = dataset.annotations(index)
        assert target["image_id"] == image_id
        assert len(target["boxes"]) == len(target["labels"]) == per_image[image_id]


def test_boxes_are_xyxy_of_the_json_xywh(dataset: CocoDetection) -> None:
    raw = _raw()
    image_id = raw["images"][0]["id"]
    anns = [a for a in raw["annotations"] if a["image_id"] == image_id]
    expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
    target = dataset.annotations(dataset.image_ids.index(image_id))
    assert torch.allclose(target["boxes"], expected.clamp(min=0))
    assert target["labels"].tolist() == [a["category_id"] for a in anns]


def test_item_image_and_target_types(dataset: CocoDetection) -> None:
    index = dataset.image_ids.index(36)  # portrait, 481 wide x 640 high in the json
    image, target = dataset[index]
    assert image.shape == (3, 640, 481) and image.dtype == torch.uint8
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["orig_size"] == (640, 481) and target["image_id"] == 36
    boxes = target["boxes"]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes >= 0).all() and (boxes[:, 2] <= 481).all() and (boxes[:, 3] <= 640).all()


def test_image_info_reads_annotations_only(dataset: CocoDetection) -> None:
    info = dataset.image_info(0)
    assert info == {
        "file_name": "000000000009.jpg",
        "path": str(IMAGES / "000000000009.jpg"),
        "height": 480,
        "width": 640,
        "image_id": 9,
        "record": f"{ANN_FILE} image id 9",
    }


def test_targets_are_copies(dataset: CocoDetection) -> None:
    _, target = dataset[0]
    target["boxes"].zero_()
    dataset.annotations(0)["labels"].zero_()
    assert dataset.annotations(0)["boxes"].abs().sum() > 0
    assert (dataset[0][1]["labels"] > 0).all()


def test_crowd_boxes_are_left_out_and_filter_empty(tmp_path: Path) -> None:
    raw = _raw()
    first, second = raw["images"][0]["id"], raw["images"][1]["id"]
    for ann in raw["annotations"]:
        if ann["image_id"] == second:
            ann["iscrowd"] = 1  # every box of the second image becomes a crowd region
    crowd = {"id": 999999, "image_id": first, "category_id": 1, "bbox": [5, 5, 50, 50], "area": 2500, "iscrowd": 1}
    raw["annotations"].append(crowd)
    ds = CocoDetection(IMAGES, _write(tmp_path, raw))
    n_first = sum(a["image_id"] == first and not a["iscrowd"] for a in raw["annotations"])
    assert len(ds.annotations(ds.image_ids.index(first))["boxes"]) == n_first
    assert len(ds.annotations(ds.image_ids.index(second))["boxes"]) == 0
    assert len(ds.load_coco().getAnnIds(imgIds=[first], iscrowd=None)) == n_first + 1  # kept for evaluation
    filtered = CocoDetection(IMAGES, _write(tmp_path, raw), filter_empty=True)
    assert second not in filtered.image_ids and len(filtered) == len(ds) - 1


def test_zero_width_box_is_left_out_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = _raw()
    bad = raw["annotations"][0]
    bad["bbox"] = [10.0, 20.0, 0.0, 30.0]
    with caplog.at_level(logging.WARNING):
        ds = CocoDetection(IMAGES, _write(tmp_path, raw))
    assert f"annotation id {bad['id']} field bbox = [10.0, 20.0, 0.0, 30.0]" in caplog.text
    assert "instances.json" in caplog.text
    per_image = sum(a["image_id"] == bad["image_id"] for a in raw["annotations"])
    assert len(ds.annotations(ds.image_ids.index(bad["image_id"]))["boxes"]) == per_image - 1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("bbox", [10, 20, -3, 30], r"annotation id {id}: field bbox = \[10, 20, -3, 30\] has a negative width"),
        ("bbox", [10, 20, 30], r"annotation id {id}: field bbox = \[10, 20, 30\], expected 4 finite numbers"),
        ("category_id", 12, r"annotation id {id}: field category_id = 12 is not among the json's categories"),
        ("image_id", 123456, r"annotation id {id}: field image_id = 123456 is not among the json's images"),
    ],
)
def test_bad_annotation_errors_name_file_record_field_value(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    raw = _raw()
    bad = raw["annotations"][3]
    bad[field] = value
    with pytest.raises(ValueError, match="instances.json: " + message.format(id=bad["id"])):
        CocoDetection(IMAGES, _write(tmp_path, raw))


def test_missing_and_corrupt_images_error_at_getitem(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    raw = _raw()
    raw["images"] = raw["images"][:2]
    keep = {im["id"] for im in raw["images"]}
    raw["annotations"] = [a for a in raw["annotations"] if a["image_id"] in keep]
    shutil.copy(IMAGES / raw["images"][0]["file_name"], images)
    (images / raw["images"][1]["file_name"]).write_bytes(b"\x00" * 100)
    ds = CocoDetection(images, _write(tmp_path, raw))  # images are not opened here
    (images / raw["images"][0]["file_name"]).unlink()
    with pytest.raises(ImageReadError, match=r"000000000009.jpg: image file not found \(.*instances.json image id 9\)"):
        ds[0]
    with pytest.raises(ImageReadError, match=r"000000000025.jpg: cannot decode .*instances.json image id 25"):
        ds[1]


def test_missing_or_malformed_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        CocoDetection(IMAGES, tmp_path / "nothing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        CocoDetection(IMAGES, broken)
    raw = _raw()
    del raw["images"][2]["height"]
    with pytest.raises(ValueError, match=r"instances.json: images\[2\] \(id 30\): missing field 'height'"):
        CocoDetection(IMAGES, _write(tmp_path, raw))
