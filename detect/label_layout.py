"""Where the labels of drawn boxes go, so that labels of boxes in nearly the same place stay readable.

Pure geometry on whole pixels; :mod:`detect.visualize` measures the labels and draws them.
A rectangle is ``(left, top, right, bottom)``, right and bottom exclusive; a box is a
rectangle already clipped to the image.
"""

from __future__ import annotations

from collections.abc import Sequence

Rect = tuple[int, int, int, int]


def place_labels(boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> list[Rect]:
    """The rectangle of each box's label; labels do not cover each other and stay in the image.

    Labels are placed one after another in the given order, each avoiding those placed
    before it. A label tries, in turn: just above its box (left edges aligned), inside
    the box's top, just below the box, each moved left as needed to stay in the image.
    When all three are taken, the first of them that fits in the image slides down, past
    the labels it meets, until it is free; failing that, up. Only when its whole column
    is taken does a label keep its first spot and cover another.

    Args:
        boxes: ``N`` boxes inside the image.
        sizes: ``N`` label sizes ``(width, height)`` in pixels.
        image_size: ``(height, width)`` of the image.

    Returns:
        ``N`` label rectangles, in the order of ``boxes``.
    """
    if len(boxes) != len(sizes):
        raise ValueError(f"{len(boxes)} boxes but {len(sizes)} label sizes")
    placed: list[Rect] = []
    for box, size in zip(boxes, sizes):
        placed.append(_place(box, size, image_size, placed))
    return placed


def _place(box: Rect, size: tuple[int, int], image_size: tuple[int, int], placed: Sequence[Rect]) -> Rect:
    height, width = image_size
    x1, y1, _, y2 = box
    label_w, label_h = size
    left = min(max(x1, 0), max(width - label_w, 0))
    lowest = max(height - label_h, 0)

    def at(top: int) -> Rect:
        return left, top, left + label_w, top + label_h

    # Above, inside the top, below; a spot that does not fit in the image is skipped.
    tops = [top for top in (y1 - label_h, y1, y2) if 0 <= top <= lowest] or [min(y1, lowest)]
    for top in tops:
        if not overlapping(at(top), placed):
            return at(top)
    for down in (True, False):
        top = tops[0]
        while 0 <= top <= lowest:
            hits = overlapping(at(top), placed)
            if not hits:
                return at(top)
            # Jump just past every label in the way: no free spot lies between.
            top = max(r[3] for r in hits) if down else min(r[1] for r in hits) - label_h
    return at(tops[0])


def overlapping(rect: Rect, others: Sequence[Rect]) -> list[Rect]:
    """The rectangles of ``others`` that share at least one pixel with ``rect``."""
    left, top, right, bottom = rect
    return [o for o in others if o[0] < right and left < o[2] and o[1] < bottom and top < o[3]]
