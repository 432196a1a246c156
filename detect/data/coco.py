"""COCO-format detection data: any instances json plus an image folder.

COCO's ``bbox`` is ``[x, y, width, height]`` in continuous pixel coordinates;
it becomes ``x1, y1, x2, y2`` here, clipped to the image, and nowhere else.
Annotations are checked when the dataset is built (cheap); images when an item
is read.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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

    Items are ``(image, target)``: ``image`` is ``uint8 Tensor[3, H, W]`` RGB
    (``detect.data.image_io.to_float_image`` makes the model's input) and ``target`` holds

    - ``boxes``: ``float32 Tensor[N, 4]``, absolute pixel ``x1, y1, x2, y2``;
    - ``labels``: ``int64 Tensor[N]``, the json's own category ids (not contiguous);
    - ``image_id``: ``int``; ``orig_size``: ``(h, w)`` of the image file.

    Crowd annotations (``iscrowd=1``) are left out of targets; they stay in the
    index of :meth:`load_coco` for evaluation. Boxes with zero width or height
    after clipping to the image are left out with a logged warning: the official
    train2017 json has two (annotation ids 918 and 2206849), so they cannot be an error.

    The annotations are held in a few numpy arrays (:class:`CompactAnnotations`),
    not in per-record Python objects: DataLoader workers forked from the process
    then share those pages instead of copying them as reference counts change.

    Attributes:
        categories: ``{category id: name}`` in ascending id order.
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
        data = read_coco_json(self.ann_file, segmentation=False)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.categories = {int(c["id"]): str(c["name"]) for c in categories}
        with _collector_paused():
            self._table = CompactAnnotations.from_json(self.ann_file, data, self.categories)
        del data, categories
        release_freed_memory()
        num_images = len(self._table.image_ids)
        rows = np.arange(num_images)
        if filter_empty:
            rows = rows[np.diff(self._table.starts) > 0]
            if len(rows) < num_images:
                _warn_once(
                    "%s: left out %d of %d images without a usable box (filter_empty)",
                    self.ann_file, num_images - len(rows), num_images,
                )
        self._rows = rows  # item index -> row of the table

    @property
    def image_ids(self) -> list[int]:
        """The ids of the items, ascending (a new list at each call)."""
        return self._table.image_ids[self._rows].tolist()

    def load_coco(self) -> COCO:
        """A ``pycocotools`` index of the whole json, crowd annotations included, for evaluation.

        Read anew at each call and not kept: a training dataset never holds it.
        """
        return load_coco_json(self.ann_file)

    def __len__(self) -> int:
        return len(self._rows)

    def image_info(self, index: int) -> dict[str, Any]:
        """``file_name`` (relative to ``root``), ``path``, ``height``, ``width``, ``image_id`` and
        ``record`` (names the annotation in messages); no decoding."""
        row = self._rows[index]
        table = self._table
        image_id = int(table.image_ids[row])
        file_name = table.file_name(row)
        return {
            "file_name": file_name,
            "path": str(self.root / file_name),
            "height": int(table.heights[row]),
            "width": int(table.widths[row]),
            "image_id": image_id,
            "record": f"{self.ann_file} image id {image_id}",
        }

    def annotations(self, index: int) -> dict[str, Any]:
        """The target of item ``index`` before transforms, without decoding the image."""
        row = self._rows[index]
        boxes, labels = self._table.targets(row)
        return {
            "boxes": torch.tensor(boxes),  # a copy: callers may edit targets in place
            "labels": torch.tensor(labels),
            "image_id": int(self._table.image_ids[row]),
            "orig_size": (int(self._table.heights[row]), int(self._table.widths[row])),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        info = self.image_info(index)
        record = info["record"]
        rgb = read_annotated_image(info["path"], info["height"], info["width"], record)
        boxes, labels = self._table.targets(self._rows[index])
        if self.transforms is not None:
            rgb, boxes, labels = run_transforms(self.transforms, rgb, boxes, labels, record)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": info["image_id"],
            "orig_size": (info["height"], info["width"]),
        }
        return image_to_tensor(rgb), target


@dataclass(frozen=True)
class CompactAnnotations:
    """The training view of a COCO json in numpy arrays, one row per image in ascending id order.

    ``I`` images, ``B`` usable boxes (no crowd, no zero-size box). The boxes of
    row ``r`` are ``boxes[starts[r]:starts[r + 1]]``, in json order; its file
    name is the UTF-8 bytes ``names[name_starts[r]:name_starts[r + 1]]``. The
    arrays are read-only: items hand out views of them.
    """

    image_ids: np.ndarray  # int64 (I,)
    heights: np.ndarray  # int64 (I,)
    widths: np.ndarray  # int64 (I,)
    names: np.ndarray  # uint8, all file names concatenated
    name_starts: np.ndarray  # int64 (I + 1,)
    starts: np.ndarray  # int64 (I + 1,)
    boxes: np.ndarray  # float32 (B, 4), x1, y1, x2, y2 clipped to the image
    labels: np.ndarray  # int64 (B,), category ids

    def __post_init__(self) -> None:
        for array in vars(self).values():
            array.flags.writeable = False

    def file_name(self, row: int) -> str:
        """The ``file_name`` of one row."""
        return self.names[self.name_starts[row]:self.name_starts[row + 1]].tobytes().decode()

    def targets(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``boxes (N, 4)`` and ``labels (N,)`` of one row, read-only views."""
        start, end = self.starts[row], self.starts[row + 1]
        return self.boxes[start:end], self.labels[start:end]

    @classmethod
    def from_json(cls, ann_file: Path, data: dict[str, Any], categories: dict[int, str]) -> CompactAnnotations:
        """Checks every annotation of ``data`` (as :func:`read_coco_json` returns it) and packs the usable boxes."""
        images = sorted(data["images"], key=lambda im: im["id"])
        row_of = {im["id"]: row for row, im in enumerate(images)}
        names = [im["file_name"].encode() for im in images]
        flat_boxes: list[float] = []
        labels: list[int] = []
        rows: list[int] = []
        degenerate = []
        for ann in data["annotations"]:
            box = _check_annotation(ann_file, ann, row_of, images, categories)
            if ann["iscrowd"]:
                continue
            if box[2] <= box[0] or box[3] <= box[1]:
                degenerate.append(f"annotation id {ann['id']} field bbox = {ann['bbox']}")
                continue
            flat_boxes.extend(box)
            labels.append(ann["category_id"])
            rows.append(row_of[ann["image_id"]])
        if degenerate:
            _warn_once(
                "%s: left out %d boxes with zero width or height inside the image: %s",
                ann_file, len(degenerate), "; ".join(degenerate[:10]),
            )
        row_array = np.array(rows, dtype=np.int64)
        order = np.argsort(row_array, kind="stable")  # by image, json order within an image
        return cls(
            image_ids=np.array([im["id"] for im in images], dtype=np.int64),
            heights=np.array([im["height"] for im in images], dtype=np.int64),
            widths=np.array([im["width"] for im in images], dtype=np.int64),
            names=np.frombuffer(b"".join(names), dtype=np.uint8).copy(),
            name_starts=_offsets([len(n) for n in names]),
            starts=_offsets(np.bincount(row_array, minlength=len(images))),
            boxes=np.array(flat_boxes, dtype=np.float32).reshape(-1, 4)[order],
            labels=np.array(labels, dtype=np.int64)[order],
        )


def _offsets(counts: Any) -> np.ndarray:
    """``[0, c0, c0 + c1, ...]``: where each run starts, and the end."""
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))


def _check_annotation(
    ann_file: Path, ann: dict[str, Any], row_of: dict[int, int], images: list[dict[str, Any]], categories: dict[int, str]
) -> list[float]:
    """Validates one annotation; returns its box as ``x1, y1, x2, y2`` clipped to the image."""
    where = f"{ann_file}: annotation id {ann['id']}"
    if ann["image_id"] not in row_of:
        raise ValueError(f"{where}: field image_id = {ann['image_id']!r} is not among the json's images")
    if ann["category_id"] not in categories:
        raise ValueError(
            f"{where}: field category_id = {ann['category_id']!r} is not among the json's categories "
            f"{sorted(categories)}"
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
    image = images[row_of[ann["image_id"]]]
    width, height = image["width"], image["height"]
    x1, x2 = (min(max(v, 0.0), width) for v in (x, x + w))
    y1, y2 = (min(max(v, 0.0), height) for v in (y, y + h))
    return [x1, y1, x2, y2]


def release_freed_memory() -> None:
    """Collects garbage and gives glibc's free heap pages back to the system.

    Without ``malloc_trim`` much of a dropped json's memory would stay in the
    process as free heap, and every forked DataLoader worker would inherit it.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def load_coco_json(ann_file: Path) -> COCO:
    """A ``pycocotools`` index of a COCO json (for evaluation), read by :func:`read_coco_json`."""
    coco = COCO()
    coco.dataset = read_coco_json(ann_file)
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def read_coco_json(ann_file: Path, segmentation: bool = True) -> dict[str, Any]:
    """Reads a COCO json, with errors that name the file, record and field.

    Every record is checked, so that a missing or mistyped field is this
    module's error rather than a ``KeyError`` later (in pycocotools, say).
    Annotations without ``iscrowd`` or ``area`` get them (see :func:`_fill_optional_fields`).

    Args:
        segmentation: keep the annotations' ``segmentation``; without it each is
            dropped as soon as it is parsed, which at COCO scale more than halves
            the memory the parsed json needs at its peak.
    """
    if not ann_file.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}")
    try:
        with _collector_paused():
            data = json.loads(ann_file.read_bytes(), object_hook=None if segmentation else _without_segmentation)
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
    return data


def _without_segmentation(record: dict[str, Any]) -> dict[str, Any]:
    record.pop("segmentation", None)
    return record


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector while a json's millions of objects are made.

    They are not garbage, yet each full collection that their number triggers
    visits them all: a third of the time of reading a COCO-sized json.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
