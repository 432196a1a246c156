"""build_dataset from config sections: types, train vs test behaviour, VOC 07+12 set lists."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from detect.config import DataConfig, DatasetConfig
from detect.data.build import build_dataset, dataset_classes
from detect.data.coco import CocoDetection
from detect.data.transforms import TrainTransforms
from detect.data.voc import VOC_CLASSES, VOCDetection

DATA = Path(__file__).parent / "data"
COCO8 = DATA / "coco8"
DEVKIT = DATA / "voc" / "VOCdevkit"


def _coco_cfg() -> DatasetConfig:
    return DatasetConfig(type="coco", root=str(COCO8 / "images"), ann_file=str(COCO8 / "annotations.json"))


def test_coco_train_and_test() -> None:
    data_cfg = DataConfig(train_min_sizes=[64], train_max_size=100)
    train = build_dataset(_coco_cfg(), data_cfg, is_train=True)
    test = build_dataset(_coco_cfg(), data_cfg, is_train=False)
    assert isinstance(train, CocoDetection) and isinstance(train.transforms, TrainTransforms)
    assert test.transforms is None and len(test) == len(train) == 8
    assert min(train[0][0].shape[1:]) == 64  # augmentation applied
    assert test[0][0].shape == (3, 480, 640)  # the file's size: the model resizes at test time
    assert dataset_classes(train) == train.categories and len(dataset_classes(train)) == 80


def test_voc_train_drops_difficult_test_keeps_them() -> None:
    cfg = DatasetConfig(type="voc", root=str(DEVKIT), sets=["2007/test"])
    train = build_dataset(cfg, DataConfig(), is_train=True)
    test = build_dataset(cfg, DataConfig(), is_train=False)
    assert isinstance(train, VOCDetection) and not train.keep_difficult and test.keep_difficult
    roots = [ET.parse(DEVKIT / "VOC2007" / "Annotations" / f"{name}.xml").getroot() for name in test.image_ids]
    n_easy = sum(o.findtext("difficult") == "0" for root in roots for o in root.iter("object"))
    n_all = sum(len(root.findall("object")) for root in roots)
    assert n_easy < n_all
    assert sum(len(train.annotations(i)["boxes"]) for i in range(len(train))) == n_easy
    assert sum(len(test.annotations(i)["boxes"]) for i in range(len(test))) == n_all
    assert dataset_classes(test) == dict(enumerate(VOC_CLASSES, start=1))


def test_voc_07_plus_12(tmp_path: Path) -> None:
    # A VOC2012 folder built from the 2007 test images: names do not clash with 2007 trainval.
    shutil.copytree(DEVKIT / "VOC2007", tmp_path / "VOC2007")
    shutil.copytree(DEVKIT / "VOC2007", tmp_path / "VOC2012")
    (tmp_path / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_text(
        (DEVKIT / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text()
    )
    cfg = DatasetConfig(type="voc", root=str(tmp_path), sets=["2007/trainval", "2012/trainval"])
    dataset = build_dataset(cfg, DataConfig(), is_train=False)
    names = [(DEVKIT / "VOC2007" / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("trainval", "test")]
    assert dataset.image_ids == names[0] + names[1]
    assert dataset.image_info(len(names[0]))["file_name"] == f"VOC2012/JPEGImages/{names[1][0]}.jpg"


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset type 'yolo'; known types: \['coco', 'voc'\]"):
        build_dataset(DatasetConfig(type="yolo"), DataConfig(), is_train=True)
    with pytest.raises(ValueError, match="coco dataset needs root .* and ann_file"):
        build_dataset(DatasetConfig(type="coco", root=str(COCO8)), DataConfig(), is_train=True)
    with pytest.raises(ValueError, match="voc dataset needs root .* and sets"):
        build_dataset(DatasetConfig(type="voc", root=str(DEVKIT)), DataConfig(), is_train=True)
