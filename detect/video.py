"""Reading and writing video files frame by frame, in RGB.

The video counterpart of :mod:`detect.data.image_io`: OpenCV decodes and encodes
frames in BGR, and this module converts them to and from RGB, so everything past
it speaks RGB as the rest of detect does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Optional

import cv2
import numpy as np

from detect.data.image_io import ImageReadError

FOURCC = "mp4v"  # MPEG-4 Part 2: encoded by every OpenCV build, played by common players
DEFAULT_FPS = 30.0  # for containers that do not record a frame rate


class VideoReadError(ImageReadError):
    """A video file that cannot be opened or has no decodable frame; the message names the file."""


class VideoReader:
    """The frames of a video file as RGB ``uint8 (H, W, 3)`` arrays, in decoding order.

    Args:
        path: any video OpenCV's FFmpeg backend decodes.

    Raises:
        VideoReadError: the file cannot be opened.
    """

    def __init__(self, path: Path):
        self.path = path
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise VideoReadError(f"{path}: cannot open video (corrupt file or unsupported format)")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))  # a container's estimate; may be 0

    def batches(self, batch_size: int) -> Iterator[list[np.ndarray]]:
        """Frames ``batch_size`` at a time (the last batch may be shorter)."""
        batch: list[np.ndarray] = []
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, kind: Optional[type], error: Optional[BaseException], trace: Optional[TracebackType]) -> None:
        self._capture.release()


class VideoWriter:
    """Writes RGB frames to an ``mp4v`` video at ``fps``; the frame size is the first frame's.

    Raises (on the first frame):
        ValueError: ``path`` cannot be written.
    """

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = fps
        self._writer: Optional[cv2.VideoWriter] = None

    def write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            self._writer = self._open(rgb.shape[1], rgb.shape[0])
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*FOURCC), self.fps, (width, height))
        if not writer.isOpened():
            raise ValueError(f"{self.path}: cannot write video ({FOURCC} codec at {width}x{height}, {self.fps:g} fps)")
        return writer

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind: Optional[type], error: Optional[BaseException], trace: Optional[TracebackType]) -> None:
        if self._writer is not None:
            self._writer.release()
