"""PASCAL VOC detection data (``VOCdevkit`` layout) and its COCO-format view.

VOC corners are 1-based and inclusive: a box covering pixel columns 1..W has
``xmin=1, xmax=W``. In the continuous coordinates used everywhere in detect that
box is ``x1=0, x2=W``, so ``(xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax)``.
This conversion happens here and nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor

from detect.data.image_io import image_to_tensor, read_annotated_image
from detect.data.transforms import Transform, run_transforms

# Category id k (1..20) is VOC_CLASSES[k - 1], the standard order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_CLASS_TO_ID = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
_SET_PATTERN = re.compile(r"^(\d{4})/(\w+)$")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VOCImage:
    """One annotation file, every object included.

    ``boxes`` is ``float32 (N, 4)`` 0-based ``x1, y1, x2, y2``; ``labels``
    ``int64 (N,)`` category ids 1..20; ``difficult`` ``bool (N,)``.
    """

    image_id: str
    year: str
    name: str  # in ImageSets, Annotations/<name>.xml, JPEGImages/<name>.jpg
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    @property
    def file_name(self) -> str:
        """The image file, relative to the VOCdevkit root."""
        return f"VOC{self.year}/JPEGImages/{self.name}.jpg"

    @property
    def xml_name(self) -> str:
        """The annotation file, relative to the VOCdevkit root."""
        return f"VOC{self.year}/Annotations/{self.name}.xml"


class VOCDetection(torch.utils.data.Dataset):
    """Images and boxes of one or more VOC image sets.

    Items are ``(image, target)``: ``image`` is ``uint8 Tensor[3, H, W]`` RGB
    (``detect.data.image_io.to_float_image`` makes the model's input) and ``target`` holds

    - ``boxes``: ``float32 Tensor[N, 4]``, absolute pixel ``x1, y1, x2, y2``;
    - ``labels``: ``int64 Tensor[N]``, category ids 1..20 (see :data:`VOC_CLASSES`);
    - ``difficult``: ``bool Tensor[N]``; all False unless ``keep_difficult``;
    - ``image_id``: the ImageSets name, e.g. ``"000005"``; ``orig_size``: ``(h, w)``.

    Image ids are the ImageSets names; only when two sets of different years
    share a name are those ids prefixed with the year (``"2012_000005"``).

    Attributes:
        categories: ``{1: "aeroplane", ..., 20: "tvmonitor"}``.
        image_ids: the ids of the items, in ImageSets order, sets in the given order.
        keep_difficult: whether difficult objects are in the targets.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sets: list[str],
        transforms: Optional[Transform] = None,
        filter_empty: bool = False,
        keep_difficult: bool = False,
    ) -> None:
        """
        Args:
            root: the ``VOCdevkit`` folder, holding ``VOC2007/``, ``VOC2012/``, ...
            sets: ``"<year>/<split>"`` entries, e.g. ``["2007/trainval", "2012/trainval"]``,
                read from ``VOC<year>/ImageSets/Main/<split>.txt``.
            transforms: applied to ``(rgb, boxes, labels)``; see :mod:`detect.data.transforms`.
            filter_empty: drop images without a box left in the target (for training).
            keep_difficult: keep difficult objects, flagged, in targets (for evaluation);
                otherwise they are left out (for training).
        """
        self.root = Path(root)
        self.transforms = transforms
        self.keep_difficult = keep_difficult
        self.categories = {i + 1: name for i, name in enumerate(VOC_CLASSES)}
        records = []
        for year, name in _list_images(self.root, sets):
            records.append(parse_voc_xml(self.root / f"VOC{year}" / "Annotations" / f"{name}.xml", year, name))
        records = _unique_ids(records)
        if not keep_difficult:
            records = [_without_difficult(r) for r in records]
        if filter_empty:
            kept = [r for r in records if len(r.labels) > 0]
            if len(kept) < len(records):
                logger.warning(
                    "%s %s: left out %d of %d images without a usable box (filter_empty)",
                    self.root, sets, len(records) - len(kept), len(records),
                )
            records = kept
        self._records = records
        self.image_ids: list[str] = [r.image_id for r in records]

    def __len__(self) -> int:
        return len(self._records)

    def image_info(self, index: int) -> dict[str, Any]:
        """``file_name`` (relative to ``root``), ``path``, ``height``, ``width``, ``image_id`` and
        ``record`` (names the annotation file in messages); no decoding."""
        r = self._records[index]
        return {
            "file_name": r.file_name,
            "path": str(self.root / r.file_name),
            "height": r.height,
            "width": r.width,
            "image_id": r.image_id,
            "record": str(self.root / r.xml_name),
        }

    def annotations(self, index: int) -> dict[str, Any]:
        """The target of item ``index`` before transforms, without decoding the image."""
        r = self._records[index]
        return {
            "boxes": torch.tensor(r.boxes),  # copies: callers may edit targets in place
            "labels": torch.tensor(r.labels),
            "difficult": torch.tensor(r.difficult),
            "image_id": r.image_id,
            "orig_size": (r.height, r.width),
        }

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        r = self._records[index]
        record = str(self.root / r.xml_name)
        rgb = read_annotated_image(self.root / r.file_name, r.height, r.width, record)
        boxes, labels = r.boxes, r.labels
        if self.transforms is not None:
            rgb, boxes, labels = run_transforms(self.transforms, rgb, boxes, labels, record)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "difficult": torch.tensor(r.difficult),
            "image_id": r.image_id,
            "orig_size": (r.height, r.width),
        }
        return image_to_tensor(rgb), target


def parse_voc_xml(path: Path, year: str, name: str) -> VOCImage:
    """Reads one VOC annotation file, checking every field it uses.

    Args:
        path: ``VOC<year>/Annotations/<name>.xml``.

    Returns:
        The image's record with id ``name``, every object included.
    """
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation file not found: {path} (listed in VOC{year} ImageSets as {name!r})")
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not valid XML: {e}") from e
    width, height = _number(path, tree, "size/width"), _number(path, tree, "size/height")
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: field size has width={width}, height={height}; expected positive")
    boxes, labels, difficult = [], [], []
    for index, obj in enumerate(tree.findall("object")):
        where = f"object {index}"
        class_name = (obj.findtext("name") or "").strip()
        if class_name not in _CLASS_TO_ID:
            raise ValueError(f"{path}: {where} field name = {class_name!r} is not a VOC class {VOC_CLASSES}")
        xmin, ymin, xmax, ymax = (_number(path, obj, f"bndbox/{k}", where) for k in ("xmin", "ymin", "xmax", "ymax"))
        # 1-based inclusive corners -> 0-based continuous, clipped to the image.
        box = [max(xmin - 1, 0.0), max(ymin - 1, 0.0), min(xmax, width), min(ymax, height)]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(
                f"{path}: {where} field bndbox = (xmin={xmin}, ymin={ymin}, xmax={xmax}, ymax={ymax}) is empty "
                f"inside the {int(width)}x{int(height)} image; expected xmin <= xmax and ymin <= ymax "
                "(1-based, inclusive)"
            )
        boxes.append(box)
        labels.append(_CLASS_TO_ID[class_name])
        flag = _number(path, obj, "difficult", where, default=0.0)
        if flag not in (0.0, 1.0):
            raise ValueError(f"{path}: {where} field difficult = {flag:g}; expected 0 or 1")
        difficult.append(flag == 1.0)
    return VOCImage(
        image_id=name,
        year=year,
        name=name,
        height=int(height),
        width=int(width),
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        difficult=np.array(difficult, dtype=bool),
    )


def _number(path: Path, node: ET.Element, field: str, where: str = "", default: Optional[float] = None) -> float:
    text = node.findtext(field)
    prefix = f"{path}: {where + ' ' if where else ''}field {field}"
    if text is None:
        if default is not None:
            return default
        raise ValueError(f"{prefix} is missing")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{prefix} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{prefix} = {text!r} is not a finite number")
    return value


def _list_images(root: Path, sets: list[str]) -> list[tuple[str, str]]:
    """``(year, name)`` of every image of ``sets``, in order; each image once."""
    if not sets:
        raise ValueError(f"no VOC image sets given for {root}; expected e.g. ['2007/trainval']")
    entries: list[tuple[str, str]] = []
    listed_in: dict[tuple[str, str], str] = {}
    for image_set in sets:
        match = _SET_PATTERN.match(image_set)
        if match is None:
            raise ValueError(f"VOC image set {image_set!r} should look like '2007/trainval' (<year>/<split>)")
        year, split = match.groups()
        list_file = root / f"VOC{year}" / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"VOC image set {image_set!r}: list file not found: {list_file}")
        for name in list_file.read_text().split():
            key = (year, name)
            if key in listed_in:
                raise ValueError(f"{list_file}: image {name!r} is already listed in VOC set {listed_in[key]!r}")
            listed_in[key] = image_set
            entries.append(key)
    return entries


def _unique_ids(records: list[VOCImage]) -> list[VOCImage]:
    """Prefixes the year to ids that occur in more than one year, leaving the others as they are."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.image_id] = counts.get(r.image_id, 0) + 1
    return [
        r if counts[r.image_id] == 1 else replace(r, image_id=f"{r.year}_{r.image_id}") for r in records
    ]


def _without_difficult(r: VOCImage) -> VOCImage:
    keep = ~r.difficult
    return replace(r, boxes=r.boxes[keep], labels=r.labels[keep], difficult=r.difficult[keep])


def coco_image_id(voc_id: str) -> int:
    """The integer image id COCO tools need for a VOC image id.

    The digits of the id with ``_`` separators dropped, which is also what
    ``int(voc_id)`` gives: ``"000005" -> 5``, ``"2008_000002" -> 2008000002``.
    VOC2007 names have 6 digits and VOC2012 names 10, so the two never collide.
    """
    digits = voc_id.replace("_", "")
    if not digits.isdigit():
        raise ValueError(f"VOC image id {voc_id!r} has no integer form for COCO tools (digits and '_' only)")
    return int(digits)


def voc_to_coco(dataset: VOCDetection) -> COCO:
    """An in-memory COCO ground truth of a VOC dataset, for COCO-style AP.

    Image ids are :func:`coco_image_id` of the dataset's ids (COCO tools require
    integers), with the original kept as ``voc_id`` in each image record. Boxes
    become ``[x, y, width, height]`` with ``area`` the box area; difficult
    objects are marked ``iscrowd=1`` so that pycocotools ignores detections of
    them rather than counting them as false positives.

    Args:
        dataset: built with ``keep_difficult=True``, else difficult objects would be
            missing and their detections counted as false positives.
    """
    if not dataset.keep_difficult:
        raise ValueError("voc_to_coco needs a VOCDetection built with keep_difficult=True")
    images, annotations = [], []
    voc_id_of: dict[int, str] = {}
    for index in range(len(dataset)):
        info, target = dataset.image_info(index), dataset.annotations(index)
        image_id = coco_image_id(info["image_id"])
        if image_id in voc_id_of:
            raise ValueError(f"VOC image ids {voc_id_of[image_id]!r} and {info['image_id']!r} share COCO id {image_id}")
        voc_id_of[image_id] = info["image_id"]
        images.append(
            {
                "id": image_id,
                "voc_id": info["image_id"],
                "file_name": info["file_name"],
                "height": info["height"],
                "width": info["width"],
            }
        )
        objects = zip(target["boxes"].tolist(), target["labels"].tolist(), target["difficult"].tolist())
        for (x1, y1, x2, y2), label, difficult in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(difficult),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in dataset.categories.items()],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco
