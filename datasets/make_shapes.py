"""The quick-start dataset: synthetic shapes in COCO format, seeded and fast.

    python datasets/make_shapes.py --out datasets/shapes --train 600 --val 100 --seed 0

Writes ``OUT/{train,val}/images/000001.jpg ...`` and ``OUT/annotations/{train,val}.json``
(COCO instances: category ids 1..7, bbox xywh in pixels, area, iscrowd 0).

Built so that a detector has to learn shape, not shortcuts:
- 7 classes (CLASSES); an object's colour is drawn from one distribution for all
  classes, so colour says nothing about the class.
- objects of about 12 to 120 px on 256-320 px images, log-uniform per object so
  that every scale is equally common and each image mixes them.
- 1-8 objects per image, randomly rotated and mildly stretched; later objects
  may partly cover earlier ones (boxes overlap by at most MAX_BOX_OVERLAP of the
  smaller box, and every object keeps MIN_VISIBLE of its pixels).
- backgrounds: a colour gradient, low-frequency blotches, distractor lines,
  scribbles and blurred spots, and pixel noise over everything.
Boxes and areas come from each object's visible pixels after all drawing, so
they are tight whatever the rotation or occlusion.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon")  # category id = index + 1
IMAGE_SIZES = (256, 320)  # width and height are drawn independently in this range
OBJECT_SIZES = (12.0, 120.0)  # diameter of the shape's circumscribed circle, px
MAX_OBJECTS = 8
MAX_BOX_OVERLAP = 0.35  # intersection over the smaller of two boxes
MIN_VISIBLE = 0.6  # of an object's pixels, once later objects are drawn over it
MIN_CONTRAST = 60.0  # RGB distance between an object's colour and what it is drawn on
PLACEMENT_TRIES = 30
JPEG_QUALITY = 92
SUBPIXEL_BITS = 4  # cv2.fillPoly draws 1/16-px vertex positions: small shapes keep their form


@dataclass
class DrawnShape:
    """One object as rendered: ``mask`` is (H, W) bool, the pixels still visible."""

    category_id: int
    mask: np.ndarray
    colour: tuple[int, int, int]  # RGB before shading and noise

    def bbox(self) -> list[int]:
        """Tight COCO box [x, y, w, h] around the visible pixels (pixel i spans [i, i + 1))."""
        ys, xs = np.nonzero(self.mask)
        return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def render_image(rng: np.random.Generator) -> tuple[np.ndarray, list[DrawnShape]]:
    """Draws one image.

    Args:
        rng: the image's own generator (see :func:`image_generator`).

    Returns:
        The image, uint8 (H, W, 3) RGB, and its objects in drawing order.
    """
    height, width = (int(s) for s in rng.integers(IMAGE_SIZES[0], IMAGE_SIZES[1] + 1, size=2))
    canvas = _background(rng, height, width)
    shapes: list[DrawnShape] = []
    boxes: list[np.ndarray] = []
    full_areas: list[int] = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        for _ in range(PLACEMENT_TRIES):
            category = int(rng.integers(len(CLASSES)))
            size = float(np.exp(rng.uniform(*np.log(OBJECT_SIZES))))  # log-uniform: every scale equally common
            outer, hole = _place(_outline(CLASSES[category], rng), rng, size, width, height)
            box = np.concatenate([outer.min(0), outer.max(0)])
            if any(_overlap(box, other) > MAX_BOX_OVERLAP for other in boxes):
                continue
            mask = _fill(outer, hole, height, width)
            if not mask.any() or _hides_too_much(mask, shapes, full_areas):
                continue
            colour = _contrasting_colour(rng, canvas[mask].mean(0))
            canvas[mask] = _shaded(rng, colour, mask)
            for shape in shapes:
                shape.mask &= ~mask
            shapes.append(DrawnShape(category + 1, mask, colour))
            boxes.append(box)
            full_areas.append(int(mask.sum()))
            break
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(3.0, 12.0)
    return np.clip(canvas, 0, 255).astype(np.uint8), shapes


def _hides_too_much(mask: np.ndarray, shapes: list[DrawnShape], full_areas: list[int]) -> bool:
    """Whether drawing ``mask`` on top would leave an earlier object under MIN_VISIBLE of its pixels."""
    return any((shape.mask & ~mask).sum() < MIN_VISIBLE * area for shape, area in zip(shapes, full_areas))


def _outline(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """A class's polygon inside the unit circle, (K, 2), and a hole polygon for rings."""
    if name in ("circle", "ring"):
        outer = _regular(64)
        return outer, (_regular(64) * rng.uniform(0.45, 0.65) if name == "ring" else None)
    if name == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return _regular(10) * radii[:, None], None
    if name == "cross":
        w = rng.uniform(0.3, 0.45)  # half the arm width, arms reaching 1
        quarter = np.array([[w, w], [w, 1.0], [-w, 1.0]])
        turns = [quarter @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
                 for a in np.arange(4) * np.pi / 2]
        return np.concatenate(turns) / np.hypot(1.0, w), None
    return _regular({"square": 4, "triangle": 3, "hexagon": 6}[name]), None


def _regular(k: int) -> np.ndarray:
    angles = np.arange(k) * 2 * np.pi / k
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _place(polygons: tuple[np.ndarray, np.ndarray | None], rng: np.random.Generator, size: float, width: int,
           height: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Stretches, rotates, scales to ``size`` px and moves the polygons to a random spot inside the image."""
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    stretch = np.array([1.0, rng.uniform(0.8, 1.0)])
    transform = np.diag(stretch * size / 2) @ rotation
    outer = polygons[0] @ transform
    low, high = outer.min(0), outer.max(0)
    offset = rng.uniform(-low, np.array([width - 1, height - 1]) - high)
    return outer + offset, (None if polygons[1] is None else polygons[1] @ transform + offset)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two xyxy boxes over the smaller one's area."""
    w, h = np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])
    smaller = min(np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2]))
    return float(max(w, 0.0) * max(h, 0.0) / smaller)


def _fill(outer: np.ndarray, hole: np.ndarray | None, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    scale = 1 << SUBPIXEL_BITS
    cv2.fillPoly(mask, [np.round(outer * scale).astype(np.int32)], 1, cv2.LINE_8, SUBPIXEL_BITS)
    if hole is not None:
        cv2.fillPoly(mask, [np.round(hole * scale).astype(np.int32)], 0, cv2.LINE_8, SUBPIXEL_BITS)
    return mask.astype(bool)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A uniform RGB colour, redrawn while too close to what lies under the object.

    The redraw depends on the background only, never on the class.
    """
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            break
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def _shaded(rng: np.random.Generator, colour: tuple[int, int, int], mask: np.ndarray) -> np.ndarray:
    """The object's pixels, (P, 3): its colour under a random linear light, so fills are not flat."""
    ys, xs = np.nonzero(mask)
    direction = rng.normal(size=2)
    ramp = (xs - xs.mean()) * direction[0] + (ys - ys.mean()) * direction[1]
    ramp = ramp / (np.abs(ramp).max() + 1e-6) * rng.uniform(0.0, 30.0)
    return np.asarray(colour, np.float32) + ramp[:, None].astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32: gradient + blotches + distractors that look like no class."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    canvas = start + (end - start) * t[..., None]
    grid = rng.normal(0, rng.uniform(10, 35), size=(rng.integers(3, 8), rng.integers(3, 8), 3)).astype(np.float32)
    canvas += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(2, 9)):  # straight lines and open scribbles
        points = rng.uniform([0, 0], [width, height], size=(rng.integers(2, 6), 2)).astype(np.int32)
        cv2.polylines(canvas, [points], False, rng.uniform(0, 255, size=3).tolist(), int(rng.integers(1, 4)),
                      cv2.LINE_AA)
    for _ in range(rng.integers(0, 5)):  # soft-edged spots: blobs of colour without a shape's crisp outline
        spot = np.zeros((height, width), np.float32)
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (int(rng.integers(6, 50)), int(rng.integers(6, 50)))
        cv2.ellipse(spot, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(spot, (0, 0), float(rng.uniform(4, 10)))[..., None] * rng.uniform(0.3, 0.7)
        canvas = canvas * (1 - alpha) + rng.uniform(0, 255, size=3).astype(np.float32) * alpha
    return canvas.astype(np.float32)


def image_generator(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of a split: each image has its own,
    so images do not depend on how many come before them and splits never share one."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def make_split(out: str | Path, split: str, num_images: int, seed: int = 0) -> dict:
    """Writes ``out/<split>/images/*.jpg`` and ``out/annotations/<split>.json``.

    The same seed gives byte-identical files (see :func:`image_generator`). JPEGs
    left in the images folder from an earlier run are removed first.

    Returns:
        The COCO dict written to the json file.
    """
    image_dir = Path(out) / split / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in image_dir.glob("*.jpg"):
        stale.unlink()
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"shapes {split}", unit="img"):
        image, shapes = render_image(image_generator(seed, split, index))
        file_name = f"{index + 1:06d}.jpg"
        cv2.imwrite(str(image_dir / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        images.append({"id": index + 1, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for shape in shapes:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": shape.category_id,
                                "bbox": shape.bbox(), "area": float(shape.mask.sum()), "iscrowd": 0})
    coco = {
        "info": {"description": f"detect synthetic shapes, split {split}, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)],
    }
    ann_file = Path(out) / "annotations" / f"{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco))
    return coco


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="datasets/shapes")
    parser.add_argument("--train", type=int, default=600, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=100, help="validation images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.seed < 0 or args.train < 0 or args.val < 0:
        parser.error(f"--seed, --train and --val must be >= 0, got {args.seed}, {args.train}, {args.val}")
    for split, count in (("train", args.train), ("val", args.val)):
        coco = make_split(args.out, split, count, args.seed)
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} objects")
        print(f"  data.{split}.root={args.out}/{split}/images "
              f"data.{split}.ann_file={args.out}/annotations/{split}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
