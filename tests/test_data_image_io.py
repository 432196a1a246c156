"""Image reading/writing: RGB order, EXIF orientation, errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detect.data.coco import CocoDetection
from detect.data.image_io import (
    ImageReadError,
    image_to_tensor,
    read_annotated_image,
    read_image,
    to_float_image,
    write_image,
)

COCO8 = Path(__file__).parent / "data" / "coco8"

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF: display the stored pixels rotated 90 degrees clockwise


def _two_colour_image() -> np.ndarray:
    """10x20 RGB: left half pure red, right half pure blue."""
    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    rgb[:, :10] = (255, 0, 0)
    rgb[:, 10:] = (0, 0, 255)
    return rgb


def test_write_then_read_keeps_rgb_order_and_creates_folders(tmp_path: Path) -> None:
    rgb = _two_colour_image()
    path = tmp_path / "new" / "folder" / "image.png"  # PNG: lossless, so pixels compare exactly
    write_image(path, rgb)
    assert np.array_equal(read_image(path), rgb)
    # An independent decoder sees red on the left, so no channel swap happened on writing.
    assert tuple(np.asarray(Image.open(path))[0, 0]) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    path = tmp_path / "rotated.jpg"
    Image.fromarray(_two_colour_image()).save(path, exif=exif, quality=95)
    rgb = read_image(path)
    # Stored 10 high x 20 wide; turned clockwise the red left half becomes the top half.
    assert rgb.shape == (20, 10, 3)
    assert rgb[2, 5].tolist() == pytest.approx([255, 0, 0], abs=8)
    assert rgb[17, 5].tolist() == pytest.approx([0, 0, 255], abs=8)


def test_grayscale_file_gives_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((4, 6), 77, dtype=np.uint8), mode="L").save(path)
    rgb = read_image(path)
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8 and (rgb == 77).all()


def test_missing_file_error_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError, match="nope.jpg: image file not found"):
        read_image(path)


@pytest.mark.parametrize("content", [b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 64])
def test_corrupt_file_error_names_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.jpg: cannot decode"):
        read_image(path)


def test_size_mismatch_with_annotation_names_file_and_record(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    write_image(path, _two_colour_image())
    assert read_annotated_image(path, 10, 20, "ann.json image id 3").shape == (10, 20, 3)
    expected = r"a.png: decoded image is 10x20 .* ann.json image id 3 says height=20, width=10"
    with pytest.raises(ImageReadError, match=expected):
        read_annotated_image(path, 20, 10, "ann.json image id 3")


def test_write_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x.unknownext"):
        write_image(tmp_path / "x.unknownext", _two_colour_image())
    with pytest.raises(ValueError, match="y.png: expected a uint8 RGB array"):
        write_image(tmp_path / "y.png", np.zeros((4, 4), dtype=np.uint8))


def test_image_to_tensor_layout_dtype_and_no_aliasing() -> None:
    rgb = _two_colour_image()
    before = rgb.copy()
    tensor = image_to_tensor(rgb)
    assert tensor.shape == (3, 10, 20) and tensor.dtype == torch.uint8 and tensor.is_contiguous()
    assert tensor[:, 0, 0].tolist() == [255, 0, 0] and tensor[:, 0, 19].tolist() == [0, 0, 255]
    tensor.zero_()
    assert np.array_equal(rgb, before)
    # A horizontally flipped view (negative strides, as augmentation makes) is read as it looks.
    assert image_to_tensor(rgb[:, ::-1])[:, 0, 0].tolist() == [0, 0, 255]


def test_to_float_image_is_numpys_float32_division_for_every_value() -> None:
    values = np.arange(256, dtype=np.uint8)
    expected = values.astype(np.float32) / np.float32(255)  # IEEE float32 division, computed by numpy
    image = torch.from_numpy(np.stack([values] * 3)[:, None, :])  # (3, 1, 256)
    converted = to_float_image(image)
    assert converted.dtype == torch.float32 and converted.shape == (3, 1, 256)
    assert np.array_equal(converted[0, 0].numpy(), expected)  # bit for bit
    assert to_float_image(converted) is converted  # float images are already the model's input
    with pytest.raises(ValueError, match="expected a uint8 or float image tensor, got torch.int32"):
        to_float_image(image.int())


def test_dataset_images_convert_to_the_same_floats_as_an_independent_decode(coco8: dict) -> None:
    """The coco8 fixture decodes with OpenCV and divides by 255 in float32, as images were made before."""
    dataset = CocoDetection(COCO8 / "images", COCO8 / "annotations.json")
    image_ids = [info["id"] for info in json.loads((COCO8 / "annotations.json").read_text())["images"]]
    for image_id, expected in zip(image_ids, coco8["images"], strict=True):  # the fixture's order
        image, _ = dataset[dataset.image_ids.index(image_id)]
        assert image.dtype == torch.uint8
        assert torch.equal(to_float_image(image), expected)
