import itertools
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detect.evaluation.errors import DetectionKind, classify_detections
from detect.label_layout import overlapping, place_labels
from detect.visualize import (
    ERROR_COLORS,
    class_color,
    draw_box,
    draw_detections,
    draw_errors,
    label_size,
    line_thickness,
    make_grid,
    to_rgb_array,
)

H, W = 200, 300
GREY = 128


def grey_image() -> np.ndarray:
    return np.full((H, W, 3), GREY, dtype=np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


def label_rect_above(image: np.ndarray, drawn: np.ndarray, top_of_box: int) -> tuple[int, int, int, int]:
    """Bounding (top, bottom, left, right) of what drawing changed above a box's top edge."""
    rows, cols = np.nonzero(changed(image, drawn)[:top_of_box])
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def reference_label(text: str, category: int) -> np.ndarray:
    """The label patch as drawn with room all around it, to compare border cases against."""
    image = grey_image()
    drawn = draw_detections(image, [[100, 100, 200, 180]], [category], class_names={category: text})
    top, bottom, left, right = label_rect_above(image, drawn, 100)
    assert bottom == 100 and left == 100  # directly above the box, starting at its left edge
    return drawn[top:bottom, left:right]


def test_outline_has_exactly_the_class_colour_and_nothing_else_changes():
    image = grey_image()
    color = np.array(class_color(1))
    x1, y1, x2, y2 = 50, 60, 150, 120
    drawn = draw_detections(image, np.array([[x1, y1, x2, y2]], dtype=np.float32), [1], [0.87], {1: "person"})

    assert line_thickness(H, W) == 1
    for edge in (drawn[y1, x1:x2], drawn[y2 - 1, x1:x2], drawn[y1:y2, x1], drawn[y1:y2, x2 - 1]):
        assert (edge == color).all()
    assert (drawn[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == GREY).all()  # inside the outline

    top, bottom, left, right = label_rect_above(image, drawn, y1)
    assert bottom == y1 and left == x1 and 8 <= bottom - top <= 30 and right > left
    label = drawn[top:bottom, left:right]
    assert (label == color).all(axis=2).mean() > 0.5  # a filled background in the class colour
    assert ((label == 0).all(axis=2) | (label == 255).all(axis=2)).any()  # text in black or white

    outside = changed(image, drawn)
    outside[y1:y2, x1:x2] = False
    outside[top:bottom, left:right] = False
    assert not outside.any()


def test_box_in_top_left_corner_keeps_its_label_inside_the_box():
    reference = reference_label("person 0.87", 1)
    image = grey_image()
    h, w = reference.shape[:2]
    y1 = 5
    assert y1 < h  # no room above the box
    drawn = draw_detections(image, [[0, y1, 120, 80]], [1], [0.87], {1: "person"})
    assert (drawn[y1 : y1 + h, :w] == reference).all()  # whole label, hanging from the box's top edge


def test_box_at_right_edge_shifts_its_label_left_to_stay_whole():
    name = "a rather long category name"
    reference = reference_label(name, 7)
    h, w = reference.shape[:2]
    x1, y1 = W - 40, 100
    assert x1 + w > W  # placed at the box's left edge the label would not fit
    image = grey_image()
    drawn = draw_detections(image, [[x1, y1, W, 150]], [7], class_names={7: name})
    assert (drawn[y1 - h : y1, W - w :] == reference).all()


def test_box_at_top_border_over_full_width_keeps_label_in_bounds():
    reference = reference_label("car", 3)
    image = grey_image()
    drawn = draw_detections(image, [[-20, -5, W + 30, 60]], [3], class_names={3: "car"})
    h, w = reference.shape[:2]
    assert (drawn[:h, :w] == reference).all()
    assert (drawn[h:60, 0] == class_color(3)).all()  # the outline is clamped to the image


def overlap(a: tuple, b: tuple) -> bool:
    return bool(overlapping(a, [b]))


def inside_image(rect: tuple) -> bool:
    left, top, right, bottom = rect
    return 0 <= left < right <= W and 0 <= top < bottom <= H


def test_rectangles_overlap_only_when_they_share_a_pixel():
    assert overlap((0, 0, 10, 10), (9, 9, 20, 20))
    assert not overlap((0, 0, 10, 10), (10, 0, 20, 10))  # right and bottom are exclusive
    assert not overlap((0, 0, 10, 10), (0, 10, 10, 20))


def test_labels_of_near_identical_boxes_do_not_cover_each_other():
    sizes = [label_size(t, H, W) for t in ("square 0.66", "hexagon 0.41")]
    (w1, h1), (w2, h2) = sizes
    first, second = place_labels([(100, 100, 200, 180), (101, 99, 201, 181)], sizes, (H, W))
    assert first == (100, 100 - h1, 100 + w1, 100)  # the natural spot: above the box
    # Above (rows 99 - h2 .. 98) and inside the top (from row 99) both meet the first label: below the box.
    assert second == (101, 181, 101 + w2, 181 + h2)
    assert not overlap(first, second) and inside_image(first) and inside_image(second)


def test_label_slides_down_past_taken_spots_and_stays_in_the_image():
    size = label_size("a 0.9", H, W)
    h = size[1]
    rects = place_labels([(100, 60, 200, 120)] * 4, [size] * 4, (H, W))
    assert [r[1] for r in rects[:3]] == [60 - h, 60, 120]  # above, inside the top, below
    assert rects[3][1] == 60 + h  # from above it slides down past the first two labels
    # At the bottom border there is no room above or below: the second label slides down inside the box.
    low = place_labels([(100, 5, 200, H), (100, 6, 200, H)], [size] * 2, (H, W))
    assert [r[1] for r in low] == [5, 5 + h]
    for placed in (rects, low):
        assert all(inside_image(r) for r in placed)
        assert not any(overlap(a, b) for a, b in itertools.combinations(placed, 2))


def test_label_at_the_right_edge_moves_left_and_one_without_room_keeps_its_first_spot():
    w, h = 60, 15
    right, = place_labels([(W - 20, 50, W, 90)], [(w, h)], (H, W))
    assert right == (W - w, 50 - h, W, 50)
    # An image one label tall: the second label has nowhere else to go.
    full = place_labels([(0, 0, 50, h + 2)] * 2, [(w, h)] * 2, (h + 2, W))
    assert full == [(0, 0, w, h)] * 2


def test_the_most_confident_detection_keeps_its_label_above_its_box():
    image = grey_image()
    boxes = [(100, 100, 200, 180), (101, 100, 200, 181)]
    drawn = draw_detections(image, boxes, [1, 2], [0.4, 0.9], {1: "circle", 2: "square"})
    sizes = [label_size(t, H, W) for t in ("square 0.90", "circle 0.40")]
    best, other = place_labels(boxes[::-1], sizes, (H, W))
    assert best[3] == 100 and not overlap(best, other)
    for (left, top, right, bottom), category in ((best, 2), (other, 1)):
        patch = drawn[top:bottom, left:right]
        assert (patch == class_color(category)).all(axis=2).mean() > 0.5  # each label is whole, on its colour


def test_class_colours_are_distinct_for_coco_ids():
    ids = range(1, 91)
    rgb = np.array([class_color(i) for i in ids], dtype=np.float32)
    # CIELAB from OpenCV, independently of the module's own conversion.
    lab = cv2.cvtColor(rgb[None] / 255, cv2.COLOR_RGB2Lab)[0]
    for a, b in itertools.combinations(range(len(rgb)), 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) >= 20, (ids[a], ids[b])
        assert np.linalg.norm(lab[a] - lab[b]) >= 15, (ids[a], ids[b])
    for a in range(len(rgb) - 1):
        assert np.linalg.norm(rgb[a] - rgb[a + 1]) >= 40  # neighbouring ids clearly differ
    assert all(isinstance(c, int) and 0 <= c <= 255 for color in rgb.astype(int).tolist() for c in color)


def test_class_colours_are_stable_across_calls_and_processes():
    here = [class_color(i) for i in range(1, 91)]
    assert here == [class_color(i) for i in range(1, 91)]
    code = "from detect.visualize import class_color; print([class_color(i) for i in range(1, 91)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(here)


def test_input_not_mutated_and_new_array_returned():
    image = grey_image()
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0]])
    drawn = draw_detections(image, boxes, torch.tensor([2]), torch.tensor([0.5]))
    assert (image == GREY).all()
    assert boxes.tolist() == [[10.0, 20.0, 100.0, 120.0]]
    assert drawn is not image and not np.shares_memory(drawn, image)


def test_tensor_inputs_match_numpy_inputs():
    image = grey_image()
    boxes, labels, scores = [[10, 20, 100, 120], [150, 50, 280, 190]], [2, 44], [0.5, 0.75]
    expected = draw_detections(image, np.array(boxes), np.array(labels), np.array(scores))
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    drawn = draw_detections(chw, torch.tensor(boxes).float(), torch.tensor(labels), torch.tensor(scores))
    assert drawn.dtype == np.uint8 and drawn.shape == (H, W, 3)
    assert (drawn == expected).all()


def test_score_threshold_and_colour_override():
    image = grey_image()
    boxes = [[10, 20, 100, 120], [150, 50, 280, 190]]
    drawn = draw_detections(image, boxes, [1, 1], [0.2, 0.9], score_thresh=0.5, colors={1: (1, 2, 3)})
    assert (drawn[20:120, 10:100] == GREY).all()  # 0.2 < 0.5: not drawn
    assert (drawn[50, 150:280] == (1, 2, 3)).all()


def test_draw_box_draws_in_place_and_skips_boxes_outside():
    image = grey_image()
    draw_box(image, [10, 10, 20, 20], (255, 0, 0), thickness=3)
    assert (image[10:13, 10:20] == (255, 0, 0)).all() and (image[13:17, 13:17] == GREY).all()
    before = image.copy()
    draw_box(image, [400, 10, 500, 20], (255, 0, 0), text="far away")
    assert (image == before).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((H, W), dtype=np.uint8), [], [])
    with pytest.raises(ValueError, match="labels"):
        draw_detections(grey_image(), [[0, 0, 10, 10]], [1, 2])


def test_draw_errors_colours_each_kind_and_adds_a_legend():
    gt_boxes = [[20, 20, 80, 80], [150, 100, 250, 180]]
    det_boxes = [[20, 20, 80, 80], [200, 20, 260, 60]]  # a true positive, and a background FP
    errors = classify_detections(gt_boxes, [1, 2], det_boxes, [0.9, 0.8], [1, 1])
    image = grey_image()

    drawn = draw_errors(image, errors, {1: "person", 2: "car"})

    assert drawn.shape[0] > H and drawn.shape[1:] == (W, 3)
    assert (drawn[79, 20:80] == ERROR_COLORS[DetectionKind.TRUE_POSITIVE]).all()
    assert (drawn[59, 200:260] == ERROR_COLORS[DetectionKind.BACKGROUND]).all()
    assert (drawn[179, 150:250] == ERROR_COLORS["missed"]).all()
    legend = drawn[H:]
    for color in ERROR_COLORS.values():
        assert (legend == color).all(axis=2).any()
    assert (image == GREY).all()


def test_make_grid_size_and_placement():
    red = np.zeros((100, 160, 3), np.uint8)
    red[..., 0] = 255
    tall = np.full((100, 50, 3), 200, np.uint8)
    images = [red, tall, red, red, red]

    grid = make_grid(images, cols=2, cell_size=(50, 80), pad=4)

    assert grid.shape == (3 * 50 + 4 * 4, 2 * 80 + 3 * 4, 3)
    assert (grid[4:54, 4:84] == (255, 0, 0)).all()  # same aspect ratio as the cell: fills it
    # 100x50 scaled to 50x25, centred in the cell starting at column 4 + 80 + 4 = 88.
    left = 88 + (80 - 25) // 2
    assert (grid[4:54, left : left + 25] == 200).all()
    assert (grid[4:54, left - 1] != 200).any() and (grid[4:54, left + 25] != 200).any()
    assert (grid[2 * 54 + 4 : 2 * 54 + 54, 4:84] == (255, 0, 0)).all()  # fifth image, third row


def test_make_grid_default_cells_and_few_images():
    a = np.zeros((30, 40, 3), np.uint8)
    b = np.zeros((20, 60, 3), np.uint8)
    assert make_grid([a, b], cols=5, pad=2).shape == (30 + 4, 2 * 60 + 6, 3)
    with pytest.raises(ValueError):
        make_grid([], cols=2)


def test_to_rgb_array_from_uint8_tensor():
    chw = torch.arange(3 * 2 * 2, dtype=torch.uint8).reshape(3, 2, 2)
    assert to_rgb_array(chw)[1, 0].tolist() == [2, 6, 10]
