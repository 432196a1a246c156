"""VOCDetection against the raw XML of tests/data/voc, hand-written XML, and voc_to_coco."""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image
from pycocotools.cocoeval import COCOeval

from detect.data.voc import VOC_CLASSES, VOCDetection, coco_image_id, voc_to_coco

DEVKIT = Path(__file__).parent / "data" / "voc" / "VOCdevkit"
VOC2007 = DEVKIT / "VOC2007"


def _objects(name: str) -> list[tuple[str, bool]]:
    """(class name, difficult) of every object in an annotation file, read independently."""
    root = ET.parse(VOC2007 / "Annotations" / f"{name}.xml").getroot()
    return [(o.findtext("name"), o.findtext("difficult") == "1") for o in root.iter("object")]


def _names(split: str) -> list[str]:
    return (VOC2007 / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def _write_voc_image(year_dir: Path, name: str, size: tuple[int, int], objects: list[str]) -> None:
    """A tiny image plus its annotation; ``objects`` are ``<object>`` inner XML strings."""
    width, height = size
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (40, 80, 120)).save(year_dir / "JPEGImages" / f"{name}.jpg")
    body = "".join(f"<object>{o}</object>" for o in objects)
    xml = f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}</annotation>"
    (year_dir / "Annotations" / f"{name}.xml").write_text(xml)
    with open(year_dir / "ImageSets" / "Main" / "train.txt", "a") as f:
        f.write(name + "\n")


def _object(name: str, box: tuple[int, int, int, int], difficult: int = 0) -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<name>{name}</name><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
    )


def test_classes_are_the_standard_twenty() -> None:
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[14] == "person"
    ds = VOCDetection(DEVKIT, ["2007/test"])
    assert ds.categories[1] == "aeroplane" and ds.categories[20] == "tvmonitor" and len(ds.categories) == 20


def test_counts_and_difficult_flags_match_raw_xml() -> None:
    keep = VOCDetection(DEVKIT, ["2007/trainval", "2007/test"], keep_difficult=True)
    drop = VOCDetection(DEVKIT, ["2007/trainval", "2007/test"])
    assert keep.image_ids == drop.image_ids == _names("trainval") + _names("test")
    n_difficult = 0
    for index, name in enumerate(keep.image_ids):
        objects = _objects(name)
        kept, dropped = keep.annotations(index), drop.annotations(index)
        assert kept["difficult"].tolist() == [d for _, d in objects]
        assert kept["labels"].tolist() == [VOC_CLASSES.index(n) + 1 for n, _ in objects]
        assert len(dropped["boxes"]) == sum(not d for _, d in objects)
        assert not dropped["difficult"].any()
        n_difficult += sum(d for _, d in objects)
    assert n_difficult == 12  # the data set carries difficult objects, so the above tested something


def test_item_types_and_boxes_inside_image() -> None:
    ds = VOCDetection(DEVKIT, ["2007/test"], keep_difficult=True)
    index = ds.image_ids.index("000000000404")  # portrait, 426 wide x 640 high
    image, target = ds[index]
    assert image.shape == (3, 640, 426) and image.dtype == torch.uint8
    assert target["image_id"] == "000000000404" and target["orig_size"] == (640, 426)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["difficult"].dtype == torch.bool and target["difficult"].tolist() == [False] * 4 + [True]
    boxes = target["boxes"]
    assert (boxes >= 0).all() and (boxes[:, 2] <= 426).all() and (boxes[:, 3] <= 640).all()
    assert ds.image_info(index) == {
        "file_name": "VOC2007/JPEGImages/000000000404.jpg",
        "path": str(DEVKIT / "VOC2007/JPEGImages/000000000404.jpg"),
        "height": 640,
        "width": 426,
        "image_id": "000000000404",
        "record": str(DEVKIT / "VOC2007/Annotations/000000000404.xml"),
    }


def test_one_based_inclusive_corners_become_zero_based(tmp_path: Path) -> None:
    # A box over the whole 30x20 image is xmin=1..xmax=30 in VOC; a one-pixel box is xmin=xmax.
    objects = [_object("dog", (1, 1, 30, 20)), _object("cat", (5, 7, 5, 7))]
    _write_voc_image(tmp_path / "VOC2007", "a", (30, 20), objects)
    ds = VOCDetection(tmp_path, ["2007/train"])
    target = ds.annotations(0)
    assert target["boxes"].tolist() == [[0.0, 0.0, 30.0, 20.0], [4.0, 6.0, 5.0, 7.0]]
    assert target["labels"].tolist() == [12, 8]
    assert ds[0][0].shape == (3, 20, 30)


def test_filter_empty_drops_images_left_without_boxes(tmp_path: Path) -> None:
    year = tmp_path / "VOC2007"
    _write_voc_image(year, "only_difficult", (30, 20), [_object("dog", (1, 1, 10, 10), difficult=1)])
    _write_voc_image(year, "no_objects", (30, 20), [])
    _write_voc_image(year, "normal", (30, 20), [_object("dog", (1, 1, 10, 10))])
    assert VOCDetection(tmp_path, ["2007/train"]).image_ids == ["only_difficult", "no_objects", "normal"]
    assert VOCDetection(tmp_path, ["2007/train"], filter_empty=True).image_ids == ["normal"]
    assert len(VOCDetection(tmp_path, ["2007/train"], filter_empty=True, keep_difficult=True)) == 2


def test_unknown_class_error_names_file_and_object(tmp_path: Path) -> None:
    objects = [_object("dog", (1, 1, 5, 5)), _object("unicorn", (1, 1, 5, 5))]
    _write_voc_image(tmp_path / "VOC2007", "a", (30, 20), objects)
    with pytest.raises(ValueError, match=r"a.xml: object 1 field name = 'unicorn' is not a VOC class"):
        VOCDetection(tmp_path, ["2007/train"])


def test_empty_box_error_names_file_object_and_values(tmp_path: Path) -> None:
    _write_voc_image(tmp_path / "VOC2007", "a", (30, 20), [_object("dog", (9, 1, 8, 5))])
    with pytest.raises(ValueError, match=r"a.xml: object 0 field bndbox = \(xmin=9.0, ymin=1.0, xmax=8.0, ymax=5.0\)"):
        VOCDetection(tmp_path, ["2007/train"])


def test_bad_set_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="should look like '2007/trainval'"):
        VOCDetection(DEVKIT, ["trainval"])
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val.txt"):
        VOCDetection(DEVKIT, ["2007/val"])
    with pytest.raises(ValueError, match="already listed in VOC set '2007/test'"):
        VOCDetection(DEVKIT, ["2007/test", "2007/test"])
    _write_voc_image(tmp_path / "VOC2007", "a", (30, 20), [])
    (tmp_path / "VOC2007" / "JPEGImages" / "a.jpg").unlink()
    ds = VOCDetection(tmp_path, ["2007/train"])
    with pytest.raises(ValueError, match=r"a.jpg: image file not found \(.*VOC2007/Annotations/a.xml\)"):
        ds[0]


def test_same_name_in_two_years_gets_year_prefix(tmp_path: Path) -> None:
    _write_voc_image(tmp_path / "VOC2007", "000005", (30, 20), [_object("dog", (1, 1, 5, 5))])
    _write_voc_image(tmp_path / "VOC2007", "000007", (30, 20), [_object("dog", (1, 1, 5, 5))])
    _write_voc_image(tmp_path / "VOC2012", "000005", (40, 20), [_object("cat", (1, 1, 5, 5))])
    ds = VOCDetection(tmp_path, ["2007/train", "2012/train"])
    assert ds.image_ids == ["2007_000005", "000007", "2012_000005"]
    assert ds.image_info(2)["file_name"] == "VOC2012/JPEGImages/000005.jpg" and ds.image_info(2)["width"] == 40


def test_coco_image_id() -> None:
    assert coco_image_id("000005") == 5 == int("000005")
    assert coco_image_id("2008_000002") == 2008000002 == int("2008_000002")
    with pytest.raises(ValueError, match="'frame_a1' has no integer form"):
        coco_image_id("frame_a1")


def test_voc_to_coco_marks_difficult_as_crowd_and_scores_perfect_detections() -> None:
    ds = VOCDetection(DEVKIT, ["2007/trainval", "2007/test"], keep_difficult=True)
    gt = voc_to_coco(ds)
    assert sorted(gt.getImgIds()) == sorted(int(name) for name in ds.image_ids)
    assert gt.imgs[30]["voc_id"] == "000000000030" and gt.imgs[30]["height"] == 428
    n_objects = sum(len(_objects(name)) for name in ds.image_ids)
    assert len(gt.getAnnIds(iscrowd=None)) == n_objects
    assert len(gt.getAnnIds(iscrowd=True)) == sum(d for name in ds.image_ids for _, d in _objects(name))
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[30]))[0]  # VOC <bndbox> 206 32 460 355
    assert ann["bbox"] == [205.0, 31.0, 255.0, 324.0] and ann["area"] == 255.0 * 324.0

    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt.loadAnns(gt.getAnnIds(iscrowd=False))
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)

    with pytest.raises(ValueError, match="keep_difficult=True"):
        voc_to_coco(VOCDetection(DEVKIT, ["2007/test"]))


def test_annotations_are_copies() -> None:
    ds = VOCDetection(DEVKIT, ["2007/test"], keep_difficult=True)
    before = ds.annotations(0)
    ds.annotations(0)["boxes"].zero_()
    ds.annotations(0)["difficult"].fill_(True)
    after = ds.annotations(0)
    assert torch.equal(before["boxes"], after["boxes"]) and torch.equal(before["difficult"], after["difficult"])
