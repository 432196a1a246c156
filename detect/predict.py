"""Running a detector on image files, folders, globs and videos, and recording what it found.

Inputs are decoded to RGB ``uint8 (H, W, 3)`` (images with their EXIF orientation applied)
and run through the model in batches at their own size; the model resizes them itself,
and its boxes come back in the pixels of the image as read.

The records, one per image or video frame, are JSON-ready dicts::

    {"file": "photos/cat.jpg",        # the path as found from the inputs
     "frame": 12,                      # videos only: 0-based frame index
     "width": 640, "height": 480,      # of the image as read (EXIF applied)
     "detections": [                   # by descending score
         {"box": [x1, y1, x2, y2],     # float pixels of that image, within [0, width] x [0, height]
          "score": 0.93,               # >= the score threshold
          "label": 17,                 # the dataset category id
          "name": "cat"}]}
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from detect.data.image_io import ImageReadError, image_to_tensor, read_image, to_float_image, write_image
from detect.engine.inference import autocast
from detect.video import VideoReader, VideoReadError, VideoWriter
from detect.visualize import draw_detections

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """The image and video files that ``inputs`` name, in order, each once.

    Each input is a file (taken whatever its extension, so that a bad file is
    reported rather than silently passed over), or a folder or glob pattern: its
    image and video files by extension, sorted (a folder's are not searched recursively).

    Raises:
        FileNotFoundError: an input names no such file, or no image or video file.
    """
    found: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_file():
            found.append(path)
            continue
        if path.is_dir():
            candidates = sorted(path.iterdir())
        elif glob.has_magic(text):
            candidates = [Path(p) for p in sorted(glob.glob(text))]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        matches = [p for p in candidates if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS]
        if not matches:
            raise FileNotFoundError(f"{text}: no image or video file ({', '.join(sorted(MEDIA_EXTENSIONS))})")
        found.extend(matches)
    return list(dict.fromkeys(found))  # the same file named twice is processed once


def output_paths(inputs: Sequence[Path], output_dir: Path) -> dict[Path, Path]:
    """Where each input's drawing goes: its file name under ``output_dir`` (videos as ``.mp4``).

    Raises:
        ValueError: two inputs would write the same file, or a drawing would overwrite its input.
    """
    outputs: dict[Path, Path] = {}
    taken: dict[Path, Path] = {}
    for path in inputs:
        out = output_dir / (path.stem + ".mp4" if is_video(path) else path.name)
        if out in taken:
            raise ValueError(f"{taken[out]} and {path} would both be drawn to {out}; predict them into separate output folders")
        if out.resolve() == path.resolve():
            raise ValueError(f"drawing {path} would overwrite it; choose another --output-dir")
        taken[out] = path
        outputs[path] = out
    return outputs


class Predictor:
    """A detector in evaluation mode on a device: RGB arrays in, thresholded detections out.

    Args:
        model: a ``FasterRCNN`` (anything with ``categories`` that maps float
            ``[3, H, W]`` images in 0..1 to dicts of ``boxes``, ``scores``, ``labels``).
        device: where the model runs; it is moved there.
        score_thresh: detections scoring below this are dropped.
        amp: ``off``, ``bf16`` or ``fp16``, as ``train.amp``.
    """

    def __init__(self, model: nn.Module, device: torch.device, score_thresh: float, amp: str = "off") -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.score_thresh = score_thresh
        self.amp = amp
        self.class_names: dict[int, str] = model.categories.to_dict()

    @torch.inference_mode()
    def __call__(self, rgbs: Sequence[np.ndarray]) -> list[dict[str, Tensor]]:
        """Detections of each ``uint8 (H, W, 3)`` RGB image: CPU ``boxes [D, 4]`` (clipped to
        the image), ``scores [D]`` descending, ``labels [D]`` category ids."""
        images = [to_float_image(image_to_tensor(rgb).to(self.device, non_blocking=True)) for rgb in rgbs]
        with autocast(self.device, self.amp):
            outputs = self.model(images)
        results = []
        for rgb, output in zip(rgbs, outputs):
            height, width = rgb.shape[:2]
            scores = output["scores"].float().cpu()
            order = torch.argsort(scores, descending=True, stable=True)
            order = order[scores[order] >= self.score_thresh]
            boxes = output["boxes"].float().cpu()[order]
            # Rescaling to the original size can overshoot the border by a rounding error.
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            results.append({"boxes": boxes, "scores": scores[order], "labels": output["labels"].cpu()[order]})
        return results

    def draw(self, rgb: np.ndarray, detections: dict[str, Tensor]) -> np.ndarray:
        return draw_detections(rgb, detections["boxes"], detections["labels"], detections["scores"], self.class_names)

    def record(self, file: Path, rgb: np.ndarray, detections: dict[str, Tensor], frame: Optional[int] = None) -> dict[str, Any]:
        """The JSON record of one image or frame (see the module docstring)."""
        record: dict[str, Any] = {"file": str(file)}
        if frame is not None:
            record["frame"] = frame
        record["width"], record["height"] = int(rgb.shape[1]), int(rgb.shape[0])
        rows = zip(detections["boxes"].tolist(), detections["scores"].tolist(), detections["labels"].tolist())
        record["detections"] = [
            {"box": box, "score": score, "label": int(label), "name": self.class_names.get(int(label), str(label))}
            for box, score, label in rows
        ]
        return record


# Called once per input file when it is done: (file, its records, the skip message or None).
FileDone = Callable[[Path, list[dict[str, Any]], Optional[str]], None]


@dataclass
class PredictionRun:
    """What a run over the inputs produced: ``records`` of the processed images and frames,
    and one message per input that could not be read and was skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    on_file: Optional[FileDone] = None

    def file_done(self, path: Path, records: list[dict[str, Any]], skipped: Optional[str] = None) -> None:
        self.records.extend(records)
        if skipped is not None:
            self.skipped.append(skipped)
            tqdm.write(f"skipped: {skipped}", file=sys.stderr)  # tqdm.write keeps the progress bar intact
        if self.on_file is not None:
            self.on_file(path, records, skipped)


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    batch_size: int,
    output_dir: Optional[Path] = None,
    on_file: Optional[FileDone] = None,
) -> PredictionRun:
    """Runs ``predictor`` over image and video files: images first, then each video's frames.

    An unreadable file is reported on stderr, skipped, and listed in ``skipped``.

    Args:
        batch_size: images or frames per model call.
        output_dir: where drawn images and videos go (see :func:`output_paths`); None draws nothing.
        on_file: called as each input file is done (see ``FileDone``).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    outputs = output_paths(paths, output_dir) if output_dir is not None else {}
    run = PredictionRun(on_file=on_file)
    images = [p for p in paths if not is_video(p)]
    if images:
        _predict_images(predictor, images, batch_size, outputs, run)
    for path in (p for p in paths if is_video(p)):
        try:
            run.file_done(path, predict_video(predictor, path, batch_size, outputs.get(path)))
        except VideoReadError as e:
            run.file_done(path, [], str(e))
    return run


def predict_video(predictor: Predictor, path: Path, batch_size: int, output_path: Optional[Path] = None) -> list[dict[str, Any]]:
    """Detections of every frame of a video, optionally drawn into a new video with the
    input's frame count, frame size and frame rate.

    Returns:
        One record per frame, with ``frame`` the 0-based index.

    Raises:
        VideoReadError: the file cannot be opened or yields no frame.
        ValueError: ``output_path`` cannot be written.
    """
    records: list[dict[str, Any]] = []
    with VideoReader(path) as reader:
        writer = VideoWriter(output_path, reader.fps) if output_path is not None else None
        total = reader.frame_count if reader.frame_count > 0 else None
        with writer or contextlib.nullcontext(), tqdm(total=total, desc=path.name, unit="frame", dynamic_ncols=True) as bar:
            for frames in reader.batches(batch_size):
                for rgb, detections in zip(frames, predictor(frames)):
                    records.append(predictor.record(path, rgb, detections, frame=len(records)))
                    if writer is not None:
                        writer.write(predictor.draw(rgb, detections))
                bar.update(len(frames))
    if not records:
        raise VideoReadError(f"{path}: no decodable frame")
    return records


def _predict_images(predictor: Predictor, paths: Sequence[Path], batch_size: int, outputs: dict[Path, Path], run: PredictionRun) -> None:
    with tqdm(total=len(paths), desc="predict", unit="img", dynamic_ncols=True) as bar:
        for batch in _readable_batches(paths, batch_size, run, bar):
            files, rgbs = zip(*batch)
            for path, rgb, detections in zip(files, rgbs, predictor(rgbs)):
                if path in outputs:
                    write_image(outputs[path], predictor.draw(rgb, detections))
                run.file_done(path, [predictor.record(path, rgb, detections)])  # after the drawing: done means both
            bar.update(len(batch))


def _readable_batches(
    paths: Sequence[Path], batch_size: int, run: PredictionRun, bar: tqdm
) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Decoded images, ``batch_size`` at a time; unreadable files are skipped as they are met."""
    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            batch.append((path, read_image(path)))
        except ImageReadError as e:
            run.file_done(path, [], str(e))
            bar.update(1)
            continue
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_records(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Writes the records as a JSON list, atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, path)
