"""Reading and writing image files; the one place where RGB <-> BGR is handled.

Everything in detect speaks RGB: ``uint8`` arrays of shape ``(H, W, 3)`` on the
numpy side; on the torch side datasets give ``uint8 Tensor[3, H, W]`` (a quarter
of float32's bytes through the loader's workers and onto the device) and the
model takes float ``Tensor[3, H, W]`` in 0..1, made by :func:`to_float_image`
where the images meet the model, on its device. Images are
decoded with Pillow, which raises on a truncated file where OpenCV only prints a
warning and fills the rest with grey (both use libjpeg-turbo and give the same
pixels); they are written with OpenCV, whose BGR order is converted here and
nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch import Tensor


class ImageReadError(ValueError):
    """An image file that is missing or cannot be decoded; the message names the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decodes an image file to RGB, with its EXIF orientation applied.

    Grayscale, palette, CMYK and alpha images come back as three RGB channels (an
    alpha channel is dropped), 16-bit images as their high byte, so every image
    has the same layout. The whole file is decoded before anything is returned:
    a truncated or corrupt stream is an error, never an image with a grey fill.

    Args:
        path: any format Pillow decodes (JPEG, PNG, BMP, TIFF, WebP, ...).

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``, RGB. ``H, W`` are those of the
        image as displayed, i.e. after the EXIF orientation tag is applied (the
        convention of COCO's ``height``/``width`` and of every image viewer).

    Raises:
        ImageReadError: the file is missing, empty, truncated, corrupt or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Another library switched Pillow to filling truncated images with grey; refuse rather than train on it.
        raise ImageReadError(f"{path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so truncated images would pass")
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte: a truncated stream raises here (OpenCV would fill with grey)
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = "empty file" if path.stat().st_size == 0 else str(e)
        raise ImageReadError(f"{path}: cannot decode image ({reason}): truncated, corrupt or not an image") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image -> ``uint8 (H, W, 3)`` RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grayscale: keep the high byte, as Pillow itself does for 16-bit colour.
        gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image)  # np.array, not asarray: a writable copy


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Encodes an RGB image to a file whose format follows its extension.

    Args:
        path: e.g. ``out/vis/000005.jpg``; missing parent folders are created.
        rgb: ``uint8`` array of shape ``(H, W, 3)``, RGB.

    Raises:
        ValueError: ``rgb`` is not ``uint8 (H, W, 3)``, or the file cannot be written.
    """
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: expected a uint8 RGB array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except cv2.error as e:  # raised instead of returning False for e.g. an unknown extension
        raise ValueError(f"{path}: cannot write image: {e}") from e
    if not ok:
        raise ValueError(f"{path}: cannot write image (unsupported extension or unwritable location)")


def image_to_tensor(rgb: np.ndarray) -> Tensor:
    """``uint8 (H, W, 3)`` RGB array -> ``uint8 Tensor[3, H, W]`` (a copy); :func:`to_float_image` makes the model's input."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
    # (H, W, 3) -> (3, H, W): one copy, whatever the strides (a flipped array's are negative).
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def to_float_image(image: Tensor) -> Tensor:
    """``uint8 Tensor[3, H, W]`` in 0..255 -> ``float32 Tensor[3, H, W]`` in 0..1, on the image's device.

    The one conversion to the model's input: a correctly rounded division, so the
    pixels are the same bits on every device. A float image is taken to be in 0..1
    already and returned as it is (datasets of one's own may give either).
    """
    if image.is_floating_point():
        return image
    if image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 or float image tensor, got {image.dtype} {tuple(image.shape)}")
    return image.float().div_(255.0)


def read_annotated_image(path: str | os.PathLike, height: int, width: int, record: str) -> np.ndarray:
    """Reads an image and checks it has the size its annotation records.

    Boxes are only meaningful in the frame the annotation was made in, so a
    mismatch (typically an EXIF orientation tag the annotator ignored, or the
    wrong file) is an error rather than silently misplaced boxes.

    Args:
        height, width: the size the annotation gives the image.
        record: names the annotation in errors, e.g. ``"instances.json image id 9"``.

    Returns:
        ``uint8 (height, width, 3)`` RGB.
    """
    try:
        rgb = read_image(path)
    except ImageReadError as e:
        raise ImageReadError(f"{e} ({record})") from e
    if rgb.shape[:2] != (height, width):
        raise ImageReadError(
            f"{path}: decoded image is {rgb.shape[0]}x{rgb.shape[1]} (HxW, EXIF orientation applied) but "
            f"{record} says height={height}, width={width}"
        )
    return rgb
