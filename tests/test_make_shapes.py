"""The synthetic shapes dataset: determinism, COCO format, and that it is not trivial."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_shapes", REPO / "datasets" / "make_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


shapes = _load()


@pytest.fixture(scope="module")
def rendered() -> list[tuple[np.ndarray, list]]:
    return [shapes.render_image(shapes.image_generator(0, "stats", i)) for i in range(120)]


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        shapes.make_split(tmp_path / folder, "val", 6, seed=seed)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 7  # 6 images and the json
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "annotations" / "val.json").read_bytes() != \
        (tmp_path / "c" / "annotations" / "val.json").read_bytes()


def test_coco_file_matches_images_and_drawn_pixels(tmp_path: Path) -> None:
    coco = shapes.make_split(tmp_path, "train", 6, seed=1)
    assert coco == json.loads((tmp_path / "annotations" / "train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(shapes.CLASSES) + 1))
    for image in coco["images"]:
        pixels = cv2.imread(str(tmp_path / "train" / "images" / image["file_name"]))
        assert pixels.shape == (image["height"], image["width"], 3)
        # Redraw the image: the json boxes must be the extents of what was actually drawn.
        _, drawn = shapes.render_image(shapes.image_generator(1, "train", image["id"] - 1))
        annotations = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert [a["category_id"] for a in annotations] == [s.category_id for s in drawn]
        for a, shape in zip(annotations, drawn):
            ys, xs = np.nonzero(shape.mask)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["area"] == shape.mask.sum() > 0 and a["iscrowd"] == 0


def test_boxes_are_tight_around_pixels_of_the_object_colour(rendered) -> None:
    for image, drawn in rendered:
        for shape in drawn:
            x, y, w, h = shape.bbox()
            assert 0 <= x and 0 <= y and x + w <= image.shape[1] and y + h <= image.shape[0]
            inside = shape.mask[y:y + h, x:x + w]
            assert inside.sum() == shape.mask.sum()  # nothing outside the box
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
            mean = image[shape.mask].mean(0)
            assert np.abs(mean - shape.colour).max() < 20  # the mask is where the object's colour landed


def test_classes_sizes_and_counts_are_varied(rendered) -> None:
    assert len(shapes.CLASSES) >= 5
    labels = [s.category_id for _, drawn in rendered for s in drawn]
    assert set(labels) == set(range(1, len(shapes.CLASSES) + 1))
    counts = [len(drawn) for _, drawn in rendered]
    assert min(counts) == 1 and max(counts) == 8
    sides = np.array([max(s.bbox()[2:]) for _, drawn in rendered for s in drawn])
    assert 8 <= sides.min() <= 16 and 100 <= sides.max() <= 121
    assert np.percentile(sides, 25) < 30 < np.percentile(sides, 75)  # spread, not clustered at one end
    heights, widths = zip(*(image.shape[:2] for image, _ in rendered))
    assert 256 <= min(heights + widths) and max(heights + widths) <= 320 and len(set(widths)) > 20


def test_colour_says_nothing_about_the_class(rendered) -> None:
    colours: dict[int, list[np.ndarray]] = {}
    for image, drawn in rendered:
        for shape in drawn:
            colours.setdefault(shape.category_id, []).append(image[shape.mask].mean(0))
    overall = np.concatenate(list(colours.values())).reshape(-1, 3).mean(0)
    for category, values in colours.items():
        assert len(values) >= 30
        # An 80-sample class mean of uniform colours lies within ~3.5 standard errors of the overall mean.
        assert np.abs(np.mean(values, axis=0) - overall).max() < 30, shapes.CLASSES[category - 1]
