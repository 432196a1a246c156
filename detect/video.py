"""Running a detector over the frames of a video and writing the drawn video.

The video counterpart of :mod:`detect.data.image_io`: OpenCV decodes and encodes
frames in BGR, and this module converts them to and from RGB, so everything past
it speaks RGB as the rest of detect does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import cv2
import numpy as np
from tqdm import tqdm

from detect.data.image_io import ImageReadError

if TYPE_CHECKING:
    from detect.predict import Predictor

FOURCC = "mp4v"  # MPEG-4 Part 2: encoded by every OpenCV build, played by common players
DEFAULT_FPS = 30.0  # for containers that do not record a frame rate


class VideoReadError(ImageReadError):
    """A video file that cannot be opened or has no decodable frame; the message names the file."""


def predict_video(predictor: "Predictor", path: Path, batch_size: int, output_path: Optional[Path] = None) -> list[dict[str, Any]]:
    """Detections of every frame of a video, optionally drawn into a new video.

    The drawn video has the input's frame count, frame size and frame rate.

    Args:
        predictor: a :class:`detect.predict.Predictor`.
        path: any video OpenCV's FFmpeg backend decodes.
        batch_size: frames per model call.
        output_path: where the drawn video goes (``mp4v`` codec); None draws nothing.

    Returns:
        One record per frame, with ``frame`` the 0-based index (see :mod:`detect.predict`).

    Raises:
        VideoReadError: the file cannot be opened or yields no frame.
        ValueError: ``output_path`` cannot be written.
    """
    capture = cv2.VideoCapture(str(path))
    writer: Optional[cv2.VideoWriter] = None
    try:
        if not capture.isOpened():
            raise VideoReadError(f"{path}: cannot open video (corrupt file or unsupported format)")
        fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # a container's estimate; may be 0
        records: list[dict[str, Any]] = []
        with tqdm(total=expected if expected > 0 else None, desc=path.name, unit="frame", dynamic_ncols=True) as bar:
            for frames in _frame_batches(capture, batch_size):
                for rgb, detections in zip(frames, predictor(frames)):
                    records.append(predictor.record(path, rgb, detections, frame=len(records)))
                    if output_path is not None:
                        writer = writer or _open_writer(output_path, fps, rgb.shape[1], rgb.shape[0])
                        writer.write(cv2.cvtColor(predictor.draw(rgb, detections), cv2.COLOR_RGB2BGR))
                bar.update(len(frames))
        if not records:
            raise VideoReadError(f"{path}: no decodable frame")
        return records
    finally:
        capture.release()
        if writer is not None:
            writer.release()


def _frame_batches(capture: cv2.VideoCapture, batch_size: int) -> Iterator[list[np.ndarray]]:
    """RGB frames in decoding order, ``batch_size`` at a time."""
    batch: list[np.ndarray] = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        batch.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _open_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"{path}: cannot write video ({FOURCC} codec at {width}x{height}, {fps:g} fps)")
    return writer
