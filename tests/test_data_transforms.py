"""Training transforms: exact resize sizes, boxes follow the pixels, nothing dropped or mutated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detect.data.transforms import build_train_transforms, resized_shape, run_transforms


def _marked_image(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black image with a white rectangle covering the pixels of ``box`` (x1, y1, x2, y2)."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    rgb[y1:y2, x1:x2] = 255
    return rgb


def _white_extent(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 of the pixels brighter than mid-grey."""
    ys, xs = np.nonzero(rgb[..., 0] > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(
    "height, width, short, max_size, expected",
    [
        (480, 640, 800, 1333, (800, 1067)),  # 640 * 800 / 480 = 1066.67 rounds up
        (640, 480, 800, 1333, (1067, 800)),
        (100, 1000, 800, 1333, (133, 1333)),  # long side caps: scale = 1333 / 1000
        (600, 600, 600, 1000, (600, 600)),  # already there
        (1200, 800, 400, 1333, (600, 400)),  # shrinking
    ],
)
def test_resized_shape(height: int, width: int, short: int, max_size: int, expected: tuple[int, int]) -> None:
    assert resized_shape(height, width, short, max_size) == expected


def test_resize_scales_boxes_like_the_image() -> None:
    rgb = _marked_image(40, 60, (12, 8, 30, 20))
    boxes = np.array([[12, 8, 30, 20]], dtype=np.float32)
    transform = build_train_transforms([80], 1000, hflip_prob=0.0, color_jitter=False)
    out, out_boxes, out_labels = transform(rgb, boxes, np.array([7]))
    assert out.shape == (80, 120, 3)  # scale 2
    assert out_boxes.dtype == np.float32
    np.testing.assert_allclose(out_boxes, [[24, 16, 60, 40]], atol=1e-3)
    # The white rectangle moved with the box (to within the bilinear edge pixel).
    np.testing.assert_allclose(_white_extent(out), out_boxes[0], atol=1)
    assert out_labels.tolist() == [7]


def test_flip_maps_x1_to_width_minus_x2() -> None:
    rgb = _marked_image(30, 50, (5, 4, 15, 20))
    boxes = np.array([[5, 4, 15, 20], [0, 0, 50, 30]], dtype=np.float32)
    transform = build_train_transforms([30], 1000, hflip_prob=1.0, color_jitter=False)
    out, out_boxes, _ = transform(rgb, boxes, np.array([1, 2]))
    np.testing.assert_allclose(out_boxes, [[50 - 15, 4, 50 - 5, 20], [0, 0, 50, 30]], atol=1e-3)
    assert _white_extent(out) == (35, 4, 45, 20)


def test_every_box_kept_in_order_and_inputs_not_mutated() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    xy = rng.uniform(0, 30, (20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.5, 20, (20, 2))], axis=1).astype(np.float32)
    boxes[0] = [0, 0, 53, 37]  # touches every edge
    boxes[1] = [52.5, 36.5, 53, 37]  # half a pixel, in the corner
    labels = np.arange(20, dtype=np.int64)
    saved = rgb.copy(), boxes.copy(), labels.copy()
    transform = build_train_transforms([16, 61, 97], 120, hflip_prob=0.5, color_jitter=True)
    torch.manual_seed(0)
    for _ in range(10):
        out, out_boxes, out_labels = run_transforms(transform, rgb, boxes, labels, "test image")
        height, width = out.shape[:2]
        assert out.dtype == np.uint8 and out_labels.tolist() == labels.tolist()
        assert out_boxes.shape == (20, 4) and out_boxes.dtype == np.float32
        assert (out_boxes[:, 2:] > out_boxes[:, :2]).all()
        assert (out_boxes >= 0).all()
        assert (out_boxes[:, [0, 2]] <= width).all() and (out_boxes[:, [1, 3]] <= height).all()
    for before, now in zip(saved, (rgb, boxes, labels)):
        assert np.array_equal(before, now)


def test_image_without_boxes() -> None:
    transform = build_train_transforms([20], 100, hflip_prob=1.0, color_jitter=True)
    out, boxes, labels = transform(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert out.shape == (20, 20, 3) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_draws_follow_torch_seed() -> None:
    rgb = np.zeros((10, 20, 3), np.uint8)
    boxes = np.array([[1, 1, 5, 5]], np.float32)
    transform = build_train_transforms([10, 20, 30, 40], 1000, hflip_prob=0.5, color_jitter=False)

    def run() -> list[tuple[tuple[int, ...], list[float]]]:
        torch.manual_seed(123)
        return [(o.shape, b.tolist()) for o, b, _ in (transform(rgb, boxes, np.array([1])) for _ in range(12))]

    first = run()
    assert first == run()
    assert len({shape for shape, _ in first}) > 1 and len({tuple(b[0]) for _, b in first}) > 2  # sizes and flips vary


def test_run_transforms_rejects_a_transform_that_drops_boxes() -> None:
    def drop_last(rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return rgb, boxes[:-1], labels[:-1]

    boxes = np.array([[0, 0, 1, 1], [1, 1, 2, 2]], np.float32)
    with pytest.raises(ValueError, match="img 3: transform function returned 1 boxes and 1 labels for 2 input boxes"):
        run_transforms(drop_last, np.zeros((4, 4, 3), np.uint8), boxes, np.array([1, 2]), "img 3")


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="hflip_prob"):
        build_train_transforms([800], 1333, hflip_prob=1.5, color_jitter=False)
    with pytest.raises(ValueError, match="min_sizes"):
        build_train_transforms([], 1333, hflip_prob=0.5, color_jitter=False)
