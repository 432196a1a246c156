"""Rebuilds the test data in this folder from a copy of the source data sets.

Run from the repository root, naming the folder that holds ``coco128/`` and
``voc_from_coco128/`` (see README.md here for what they are)::

    .venv/bin/python tests/data/make_subsets.py DATA_DIR

It copies the first ``COCO_IMAGES`` images of coco128 that have boxes, with an
annotations json trimmed to exactly those images (original, non-contiguous
category ids and the full category list kept), and a few VOC2007-layout images
chosen to include ``difficult`` objects and both orientations, with ImageSets
files listing exactly the copied images.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

COCO_IMAGES = 8
VOC_SPLITS = {
    # 049, 074: several difficult objects; 049: portrait.
    "trainval": ["000000000030", "000000000049", "000000000074", "000000000081"],
    # 404: portrait with one difficult boat; 419: three difficult cars.
    "test": ["000000000382", "000000000404", "000000000419"],
}
HERE = Path(__file__).resolve().parent


def make_coco8(source: Path, dest: Path) -> None:
    data = json.loads((source / "annotations.json").read_text())
    with_boxes = {a["image_id"] for a in data["annotations"]}
    images = [im for im in data["images"] if im["id"] in with_boxes][:COCO_IMAGES]
    ids = {im["id"] for im in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    for im in images:
        shutil.copy2(source / "images" / im["file_name"], dest / "images" / im["file_name"])
    (dest / "annotations.json").write_text(json.dumps(data))


def make_voc(source: Path, dest: Path) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for split, names in VOC_SPLITS.items():
        for name in names:
            shutil.copy2(source / "Annotations" / f"{name}.xml", dest / "Annotations")
            shutil.copy2(source / "JPEGImages" / f"{name}.jpg", dest / "JPEGImages")
        (dest / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared_data", type=Path, help="folder holding coco128/ and voc_from_coco128/")
    args = parser.parse_args()
    make_coco8(args.shared_data / "coco128", HERE / "coco8")
    make_voc(args.shared_data / "voc_from_coco128" / "VOCdevkit" / "VOC2007", HERE / "voc" / "VOCdevkit" / "VOC2007")


if __name__ == "__main__":
    main()
