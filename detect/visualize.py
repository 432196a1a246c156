"""Drawing boxes, labels, error analyses and contact sheets: the one drawing module of detect.

Images are numpy ``uint8`` arrays of shape ``[H, W, 3]`` in RGB order (a float ``Tensor[3, H, W]``
in 0..1, the model's input, is accepted too). Functions return new arrays and never read or
write files: ``detect.data.image_io`` does that, and owns the RGB <-> BGR conversion.
Boxes are ``x1, y1, x2, y2`` in absolute pixels; ``x2, y2`` are the far edges, so the box
``[0, 0, W, H]`` covers the whole image. Labels are dataset category ids.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import cv2
import numpy as np
import torch

from detect.evaluation.errors import DetectionKind, ImageErrors
from detect.label_layout import Rect, place_labels

Color = tuple[int, int, int]
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Enough colours that COCO (ids 1..90) never repeats; larger ids wrap around.
_PALETTE_SIZE = 256

# Fixed, so the same kind of error has the same colour in every image of an analysis.
# Keyed by ``DetectionKind`` (a ``str``) plus "missed" for unmatched ground truth.
ERROR_COLORS: dict[str, Color] = {
    DetectionKind.TRUE_POSITIVE: (0, 200, 0),
    DetectionKind.DUPLICATE: (255, 0, 255),
    DetectionKind.WRONG_CLASS: (255, 150, 0),
    DetectionKind.LOCALIZATION: (0, 220, 255),
    DetectionKind.BACKGROUND: (230, 0, 0),
    "missed": (40, 80, 255),
}


def class_color(category_id: int) -> Color:
    """The RGB colour of a category: the same in every run and process, distinct between ids.

    Colours come from a fixed palette built by farthest-point sampling in CIELAB, so every
    colour is as far as possible, to the eye, from all colours of smaller ids.
    """
    return tuple(int(c) for c in _palette()[int(category_id) % _PALETTE_SIZE])


@functools.lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    """``[_PALETTE_SIZE, 3]`` uint8 RGB colours; deterministic (no randomness, no hashing)."""
    levels = np.arange(0, 256, 15)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    # Dark or greyish colours vanish against photographs; keep vivid, bright-enough ones.
    value = grid.max(axis=1)
    saturation = (value - grid.min(axis=1)) / np.maximum(value, 1)
    candidates = grid[(value >= 115) & (saturation >= 0.45)]
    lab = _rgb_to_lab(candidates)
    chosen = [0]
    distance = np.linalg.norm(lab - lab[0], axis=1)
    for _ in range(_PALETTE_SIZE - 1):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(lab - lab[chosen[-1]], axis=1))
    palette = candidates[chosen].astype(np.uint8)
    palette.flags.writeable = False
    return palette


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``[N, 3]`` in 0..255 -> CIELAB (D65) ``[N, 3]``, in float64 numpy for exact reproducibility."""
    c = rgb / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = linear[:, 0], linear[:, 1], linear[:, 2]
    # XYZ divided by the D65 white point.
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    fx, fy, fz = (np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116) for t in (x, y, z))
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=1)


def text_color(background: Color) -> Color:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def line_thickness(height: int, width: int) -> int:
    """Box outline width in pixels: about 1 px per 350 px of image size, at least 1."""
    return max(1, round(math.sqrt(height * width) / 350))


def font_scale(height: int, width: int) -> float:
    """OpenCV font scale: text about 1.5% of the image size tall, and never below legible."""
    return max(0.35, math.sqrt(height * width) / 1500)


def _font_weight(scale: float) -> int:
    """Stroke width that keeps text from looking spindly as it grows."""
    return max(1, round(scale * 1.5))


def draw_box(
    image: np.ndarray,
    box: ArrayLike,
    color: Color,
    text: Optional[str] = None,
    thickness: Optional[int] = None,
) -> None:
    """Draw one box outline, and optionally a label, onto ``image`` in place.

    The outline lies inside the box, so a box touching the image border is fully visible.
    The label sits on a filled rectangle of ``color`` where ``detect.label_layout`` puts it:
    just above the box, or inside its top where there is no room above. A box entirely
    outside the image draws nothing.

    Args:
        image: ``uint8 [H, W, 3]`` RGB, C-contiguous; modified in place.
        box: ``x1, y1, x2, y2`` in pixels.
        color: RGB outline and label background colour.
        text: label text; None for no label.
        thickness: outline width in pixels; None picks ``line_thickness`` of the image.
    """
    _draw_labelled_boxes(image, [(box, color, text)], thickness)


def _draw_labelled_boxes(
    image: np.ndarray,
    items: Sequence[tuple[ArrayLike, Color, Optional[str]]],
    thickness: Optional[int] = None,
) -> None:
    """Draw ``(box, colour, text)`` items in order, so the last is on top; all outlines, then all labels.

    Labels are placed in reverse order: the item drawn on top (the most confident) gets the
    natural spot above its box, and the others move out of its way.
    """
    height, width = image.shape[:2]
    t = line_thickness(height, width) if thickness is None else thickness
    visible = [(clipped, color, text) for box, color, text in items if (clipped := _clip_box(box, height, width))]
    for (x1, y1, x2, y2), color, _ in visible:
        image[y1 : y1 + t, x1:x2] = color
        image[max(y2 - t, y1) : y2, x1:x2] = color
        image[y1:y2, x1 : x1 + t] = color
        image[y1:y2, max(x2 - t, x1) : x2] = color
    top_first = [(box, color, text) for box, color, text in reversed(visible) if text]
    sizes = [label_size(text, height, width) for _, _, text in top_first]
    rects = place_labels([box for box, _, _ in top_first], sizes, (height, width))
    for (_, color, text), rect in zip(reversed(top_first), reversed(rects)):
        _draw_label(image, text, rect, color)


def _clip_box(box: ArrayLike, height: int, width: int) -> Optional[Rect]:
    """``box`` rounded to whole pixels and clipped to the image; None when nothing of it is inside."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def _label_metrics(text: str, height: int, width: int) -> tuple[float, int, int, int]:
    """``(font scale, stroke weight, padding, text height)`` of a label drawn on an image of this size."""
    scale = font_scale(height, width)
    weight = _font_weight(scale)
    (_, text_h), _ = cv2.getTextSize(text, _FONT, scale, weight)
    return scale, weight, max(1, round(text_h * 0.25)), text_h


def label_size(text: str, height: int, width: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of the filled label of ``text`` on an image of ``height x width``."""
    scale, weight, pad, _ = _label_metrics(text, height, width)
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, weight)
    return text_w + 2 * pad, text_h + baseline + 2 * pad


def _draw_label(image: np.ndarray, text: str, rect: Rect, color: Color) -> None:
    """A filled ``rect`` of ``color`` with ``text`` in black or white on it."""
    scale, weight, pad, text_h = _label_metrics(text, *image.shape[:2])
    left, top, right, bottom = rect
    image[top:bottom, left:right] = color
    cv2.putText(image, text, (left + pad, top + pad + text_h), _FONT, scale, text_color(color), weight, cv2.LINE_AA)


def draw_detections(
    image: ArrayLike,
    boxes: ArrayLike,
    labels: ArrayLike,
    scores: Optional[ArrayLike] = None,
    class_names: Optional[dict[int, str]] = None,
    score_thresh: float = 0.0,
    colors: Optional[dict[int, Color]] = None,
) -> np.ndarray:
    """Draw labelled boxes (detections, or ground truth when ``scores`` is None) on a copy of ``image``.

    The most confident box is drawn on top and its label goes just above it; labels of
    boxes in the same place move aside (``detect.label_layout``) instead of covering it.

    Args:
        image: ``uint8 [H, W, 3]`` RGB array, or float ``Tensor[3, H, W]`` in 0..1.
        boxes: ``[N, 4]`` boxes, tensor or array.
        labels: ``[N]`` dataset category ids.
        scores: ``[N]`` scores shown after the name, or None.
        class_names: category id -> name; an id without a name shows as the number.
        score_thresh: boxes scoring below this are not drawn (ignored without scores).
        colors: category id -> RGB, overriding ``class_color`` for the ids it has.

    Returns:
        A new ``uint8 [H, W, 3]`` RGB array; the input is left untouched.
    """
    canvas = to_rgb_array(image)
    boxes_np = _as_numpy(boxes, np.float64).reshape(-1, 4)
    labels_np = _as_numpy(labels, np.int64).reshape(-1)
    _check_length(labels_np, len(boxes_np), "labels")
    if scores is not None:
        scores_np = _as_numpy(scores, np.float64).reshape(-1)
        _check_length(scores_np, len(boxes_np), "scores")
        # Ascending score, so the most confident boxes end up on top.
        order = [i for i in np.argsort(scores_np, kind="stable") if scores_np[i] >= score_thresh]
    else:
        order = range(len(boxes_np))
    class_names = class_names or {}
    colors = colors or {}
    items = []
    for i in order:
        category = int(labels_np[i])
        text = class_names.get(category, str(category))
        if scores is not None:
            text = f"{text} {scores_np[i]:.2f}"
        items.append((boxes_np[i], colors.get(category) or class_color(category), text))
    _draw_labelled_boxes(canvas, items)
    return canvas


def draw_errors(
    image: ArrayLike,
    errors: ImageErrors,
    class_names: Optional[dict[int, str]] = None,
) -> np.ndarray:
    """Draw an error analysis: detections coloured by kind, missed objects, and a legend strip.

    Missed ground truth is drawn first so detections lying on it stay visible. The legend,
    one swatch per kind with its count, goes in a strip added below the image so it hides
    nothing; the result is therefore taller than ``image``.

    Args:
        image: ``uint8 [H, W, 3]`` RGB array, or float ``Tensor[3, H, W]`` in 0..1.
        errors: the output of ``detect.evaluation.errors.classify_detections`` for this image.
        class_names: category id -> name.

    Returns:
        A new ``uint8 [H + legend, W, 3]`` RGB array.
    """
    canvas = to_rgb_array(image)
    class_names = class_names or {}
    items = []
    for g in errors.gt_missed.nonzero().flatten().tolist():
        label = int(errors.gt_labels[g])
        items.append((errors.gt_boxes[g], ERROR_COLORS["missed"], f"missed {class_names.get(label, label)}"))
    for d in reversed(range(len(errors.det_kinds))):  # lowest score first, so the best ends on top
        label, score = int(errors.det_labels[d]), float(errors.det_scores[d])
        items.append((errors.det_boxes[d], ERROR_COLORS[errors.det_kinds[d]], f"{class_names.get(label, label)} {score:.2f}"))
    _draw_labelled_boxes(canvas, items)
    counts: dict[str, int] = {kind.value: errors.count(kind) for kind in DetectionKind}
    counts["missed"] = errors.num_missed
    legend = _legend(counts, canvas.shape[1], font_scale(*canvas.shape[:2]))
    return np.concatenate([canvas, legend], axis=0)


def _legend(counts: dict[str, int], width: int, scale: float) -> np.ndarray:
    """A white strip of ``width`` with a coloured swatch and "name (count)" per entry, wrapping into rows."""
    weight = _font_weight(scale)
    entries = [(ERROR_COLORS[key], f"{key.replace('_', ' ')} ({n})") for key, n in counts.items()]
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, weight)
    gap, row_h = text_h, text_h + baseline + text_h // 2
    rows: list[list[tuple[Color, str, int]]] = [[]]
    x = gap
    for color, text in entries:
        entry_w = text_h + gap // 2 + cv2.getTextSize(text, _FONT, scale, weight)[0][0]
        if rows[-1] and x + entry_w > width:
            rows.append([])
            x = gap
        rows[-1].append((color, text, x))
        x += entry_w + gap
    strip = np.full((row_h * len(rows) + baseline, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        text_bottom = r * row_h + text_h // 2 + text_h
        for color, text, x in row:
            strip[text_bottom - text_h : text_bottom, x : x + text_h] = color
            origin = (x + text_h + gap // 2, text_bottom)
            cv2.putText(strip, text, origin, _FONT, scale, (0, 0, 0), weight, cv2.LINE_AA)
    return strip


def make_grid(
    images: Sequence[ArrayLike],
    cols: int,
    cell_size: Optional[tuple[int, int]] = None,
    pad: int = 4,
) -> np.ndarray:
    """Contact sheet: images in row-major order, each scaled to fit its cell with its aspect ratio kept.

    Each image is centred in its cell; cells are ``pad`` pixels apart and from the sheet's
    border, over a dark grey background.

    Args:
        images: RGB images as accepted by ``to_rgb_array``; sizes may differ.
        cols: cells per row; fewer images than ``cols`` make a single row of ``len(images)``.
        cell_size: ``(height, width)`` of a cell; None takes the largest height and width.
        pad: pixels between cells and around the sheet.

    Returns:
        ``uint8 [rows * cell_h + (rows + 1) * pad, cols * cell_w + (cols + 1) * pad, 3]``.
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    if cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    arrays = [to_rgb_array(im) for im in images]
    if cell_size is None:
        cell_h, cell_w = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    else:
        cell_h, cell_w = cell_size
    cols = min(cols, len(arrays))
    rows = math.ceil(len(arrays) / cols)
    sheet_shape = (rows * cell_h + (rows + 1) * pad, cols * cell_w + (cols + 1) * pad, 3)
    sheet = np.full(sheet_shape, 40, dtype=np.uint8)
    for i, array in enumerate(arrays):
        fitted = _fit(array, cell_h, cell_w)
        h, w = fitted.shape[:2]
        top = pad + (i // cols) * (cell_h + pad) + (cell_h - h) // 2
        left = pad + (i % cols) * (cell_w + pad) + (cell_w - w) // 2
        sheet[top : top + h, left : left + w] = fitted
    return sheet


def _fit(image: np.ndarray, max_h: int, max_w: int) -> np.ndarray:
    """Scale ``image`` to the largest size within ``max_h x max_w`` with the same aspect ratio."""
    h, w = image.shape[:2]
    scale = min(max_h / h, max_w / w)
    size = (max(1, min(max_w, round(w * scale))), max(1, min(max_h, round(h * scale))))  # cv2 wants (w, h)
    if size == (w, h):
        return image
    # Area averaging avoids aliasing when shrinking; it is no better than bilinear when enlarging.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def to_rgb_array(image: ArrayLike) -> np.ndarray:
    """A new C-contiguous ``uint8 [H, W, 3]`` RGB array from an array of that form or a ``Tensor[3, H, W]``.

    A float tensor is taken to be in 0..1 (the model's input); a uint8 tensor in 0..255.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must have shape [3, H, W], got {tuple(image.shape)}")
        tensor = image.detach().cpu()
        if tensor.is_floating_point():
            tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
        return np.array(tensor.permute(1, 2, 0).numpy(), order="C", copy=True)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8 [H, W, 3] RGB, got {array.dtype} {array.shape}")
    return np.array(array, order="C", copy=True)


def _as_numpy(values: ArrayLike, dtype: type) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def _check_length(values: np.ndarray, expected: int, name: str) -> None:
    if len(values) != expected:
        raise ValueError(f"{name} has {len(values)} entries but there are {expected} boxes")
