"""COCO-format detection data: any instances json plus an image folder.

COCO's ``bbox`` is ``[x, y, width, height]`` in continuous pixel coordinates;
it becomes ``x1, y1, x2, y2`` here, clipped to the image, and nowhere else.
Annotations are checked when the dataset is built (cheap); images when an item
is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from detect.data.image_io import image_to_tensor, read_annotated_image
from detect.data.transforms import Transform, run_transforms

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def _warn_once(message: str, *args: Any) -> None:
    """Logs a warning the first time only: a split is read again for every evaluation."""
    text = message % args
    if text not in _warned:
        _warned.add(text)
        logger.warning(text)


class CocoDetection(torch.utils.data.Dataset):
    """Images and boxes of a COCO instances json.

    Items are ``(image, target)``: ``image`` is ``float32 Tensor[3, H, W]`` in
    0..1 and ``target`` holds

    - ``boxes``: ``float32 Tensor[N, 4]``, absolute pixel ``x1, y1, x2, y2``;
    - ``labels``: ``int64 Tensor[N]``, the json's own category ids (not contiguous);
    - ``image_id``: ``int``; ``orig_size``: ``(h, w)`` of the image file.

    Crowd annotations (``iscrowd=1``) are left out of targets; they stay in
    :attr:`coco` for evaluation. Boxes with zero width or height after clipping
    to the image are left out with a logged warning: the official train2017 json
    has two (annotation ids 918 and 2206849), so they cannot be an error.

    Attributes:
        coco: the ``pycocotools`` index of the whole json (for evaluation).
        categories: ``{category id: name}`` in ascending id order.
        image_ids: the ids of the items, ascending.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Optional[Transform] = None,
        filter_empty: bool = False,
    ) -> None:
        """
        Args:
            root: folder the images' ``file_name`` is relative to.
            ann_file: COCO instances json.
            transforms: applied to ``(rgb, boxes, labels)``; see :mod:`detect.data.transforms`.
            filter_empty: drop images without a usable box (for training).
        """
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.coco = load_coco_json(self.ann_file)
        categories = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.categories = {int(c["id"]): str(c["name"]) for c in categories}
        self._boxes, self._labels = self._parse_annotations()
        ids = sorted(self.coco.imgs)
        if filter_empty:
            ids = [i for i in ids if len(self._labels[i]) > 0]
            if len(ids) < len(self.coco.imgs):
                _warn_once(
                    "%s: left out %d of %d images without a usable box (filter_empty)",
                    self.ann_file, len(self.coco.imgs) - len(ids), len(self.coco.imgs),
                )
        self.image_ids: list[int] = ids

    def _parse_annotations(self) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Checks every annotation; returns per image ``boxes (N, 4)`` xyxy and ``labels (N,)``."""
        boxes: dict[int, list[list[float]]] = {i: [] for i in self.coco.imgs}
        labels: dict[int, list[int]] = {i: [] for i in self.coco.imgs}
        degenerate = []
        for ann in self.coco.dataset.get("annotations", []):
            box = self._check_annotation(ann)
            if ann.get("iscrowd", 0):
                continue
            if box[2] <= box[0] or box[3] <= box[1]:
                degenerate.append(f"annotation id {ann['id']} field bbox = {ann['bbox']}")
                continue
            boxes[ann["image_id"]].append(box)
            labels[ann["image_id"]].append(ann["category_id"])
        if degenerate:
            _warn_once(
                "%s: left out %d boxes with zero width or height inside the image: %s",
                self.ann_file, len(degenerate), "; ".join(degenerate[:10]),
            )
        return (
            {i: np.array(b, dtype=np.float32).reshape(-1, 4) for i, b in boxes.items()},
            {i: np.array(l, dtype=np.int64) for i, l in labels.items()},
        )

    def _check_annotation(self, ann: dict[str, Any]) -> list[float]:
        """Validates one annotation; returns its box as ``x1, y1, x2, y2`` clipped to the image."""
        where = f"{self.ann_file}: annotation id {ann['id']}"
        if ann["image_id"] not in self.coco.imgs:
            raise ValueError(f"{where}: field image_id = {ann['image_id']!r} is not among the json's images")
        if ann["category_id"] not in self.categories:
            raise ValueError(
                f"{where}: field category_id = {ann['category_id']!r} is not among the json's categories "
                f"{sorted(self.categories)}"
            )
        bbox = ann["bbox"]
        if (
            not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
        ):
            raise ValueError(f"{where}: field bbox = {bbox!r}, expected 4 finite numbers [x, y, width, height]")
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise ValueError(f"{where}: field bbox = {bbox!r} has a negative width or height ([x, y, width, height])")
        image = self.coco.imgs[ann["image_id"]]
        width, height = image["width"], image["height"]
        x1, x2 = (min(max(v, 0.0), width) for v in (x, x + w))
        y1, y2 = (min(max(v, 0.0), height) for v in (y, y + h))
        return [x1, y1, x2, y2]

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_info(self, index: int) -> dict[str, Any]:
        """``file_name`` (relative to ``root``), ``path``, ``height``, ``width``, ``image_id`` and
        ``record`` (names the annotation in messages); no decoding."""
        image_id = self.image_ids[index]
        image = self.coco.imgs[image_id]
        return {
            "file_name": image["file_name"],
            "path": str(self.root / image["file_name"]),
            "height": int(image["height"]),
            "width": int(image["width"]),
            "image_id": image_id,
            "record": f"{self.ann_file} image id {image_id}",
        }

    def annotations(self, index: int) -> dict[str, Any]:
        """The target of item ``index`` before transforms, without decoding the image."""
        image_id = self.image_ids[index]
        image = self.coco.imgs[image_id]
        return {
            "boxes": torch.tensor(self._boxes[image_id]),  # a copy: callers may edit targets in place
            "labels": torch.tensor(self._labels[image_id]),
            "image_id": image_id,
            "orig_size": (int(image["height"]), int(image["width"])),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        info = self.image_info(index)
        image_id, record = info["image_id"], info["record"]
        rgb = read_annotated_image(info["path"], info["height"], info["width"], record)
        boxes, labels = self._boxes[image_id], self._labels[image_id]
        if self.transforms is not None:
            rgb, boxes, labels = run_transforms(self.transforms, rgb, boxes, labels, record)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": image_id,
            "orig_size": (info["height"], info["width"]),
        }
        return image_to_tensor(rgb), target


def load_coco_json(ann_file: Path) -> COCO:
    """Reads and indexes a COCO json, with errors that name the file, record and field.

    Every record is checked before pycocotools indexes it, so that a missing or
    mistyped field is this module's error rather than a ``KeyError`` inside pycocotools.
    """
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        data = json.loads(ann_file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{ann_file}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a JSON object with images and categories, found {type(data).__name__}")
    data.setdefault("annotations", [])  # a test split may come without them
    for key in RECORD_FIELDS:
        if not isinstance(data.get(key), list):
            raise ValueError(f"{ann_file}: missing list {key!r} (keys found: {sorted(data)})")
        _check_records(ann_file, key, data[key])
    _fill_optional_fields(ann_file, data["annotations"])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


# The fields each record must have, with their JSON types (COCO's ids are integers).
RECORD_FIELDS: dict[str, dict[str, type]] = {
    "images": {"id": int, "file_name": str, "height": int, "width": int},
    "categories": {"id": int, "name": str},
    "annotations": {"id": int, "image_id": int, "category_id": int, "bbox": list},
}


def _check_records(ann_file: Path, key: str, records: list[Any]) -> None:
    """Fields present and of their type, ids unique, image sizes positive."""
    first_index: dict[int, int] = {}
    for index, record in enumerate(records):
        where = f"{ann_file}: {key}[{index}]"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, found {type(record).__name__}")
        where += f" (id {record.get('id')!r})"
        for field, kind in RECORD_FIELDS[key].items():
            if field not in record:
                raise ValueError(f"{where}: missing field {field!r}")
            value = record[field]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{where}: field {field} = {value!r} is not {'an' if kind is int else 'a'} {_JSON_NAMES[kind]}")
        if key == "images" and (record["height"] <= 0 or record["width"] <= 0):
            raise ValueError(f"{where}: height = {record['height']}, width = {record['width']}; expected positive")
        if record["id"] in first_index:
            raise ValueError(f"{where}: repeats the id of {key}[{first_index[record['id']]}]; ids must be unique")
        first_index[record["id"]] = index


_JSON_NAMES = {int: "integer", str: "string", list: "list"}


def _fill_optional_fields(ann_file: Path, annotations: list[dict[str, Any]]) -> None:
    """Gives annotations without ``iscrowd`` the value 0, and those without ``area`` their box's
    area, as pycocotools does for detections.

    pycocotools' evaluation raises a KeyError without them (it sorts objects into
    small, medium and large by ``area``); hand-made jsons often leave them out.
    """
    for ann in annotations:
        ann.setdefault("iscrowd", 0)
    missing = [a for a in annotations if "area" not in a]
    for ann in missing:
        bbox = ann["bbox"]
        numbers = len(bbox) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ann["area"] = float(bbox[2]) * float(bbox[3]) if numbers else 0.0  # a bad bbox is reported later
    if missing:
        _warn_once("%s: %d of %d annotations have no area; their box area is used (for APs, APm, APl)",
                       ann_file, len(missing), len(annotations))
