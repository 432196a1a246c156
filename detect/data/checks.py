"""A dataset's files checked before training, and training images that cannot be used.

``data.bad_images`` decides what an image that is missing, unreadable (empty,
truncated, not an image) or not the size its record says does to training:
``error`` stops with one line naming the file and the record; ``skip`` leaves it
out. A skipped image is replaced in its batch by the next usable one, so batches
stay full, and its message travels in the replacing item's target under
``skipped`` so that the training process can name and count it, also when
loader workers read the images.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from detect.data.image_io import ImageReadError

if TYPE_CHECKING:
    from detect.data.build import Dataset

logger = logging.getLogger(__name__)


def check_image_files(dataset: Dataset, split: str, bad_images: str) -> None:
    """Checks that the image folder exists and every image file is there (a ``stat`` each, no decoding).

    Args:
        dataset: a COCO or VOC dataset (``root`` and ``image_info``).
        split: names the dataset in messages, e.g. ``"data.train"``.
        bad_images: ``error``: a missing file is an error; ``skip``: a warning with
            the count, unless no file is left.

    Raises:
        FileNotFoundError: the image folder is missing or empty.
        ImageReadError: ``error`` and a file is missing (the first is named, with its record).
        ValueError: ``skip`` and every file is missing.
    """
    root = Path(dataset.root)
    if not root.is_dir():
        raise FileNotFoundError(f"{split}.root = {root}: folder not found")
    if not any(root.iterdir()):
        raise FileNotFoundError(f"{split}.root = {root}: the folder is empty")
    infos = [dataset.image_info(i) for i in range(len(dataset))]
    missing = [info for info in infos if not os.path.isfile(info["path"])]
    if not missing:
        return
    first = f"{missing[0]['path']}: image file not found ({missing[0]['record']})"
    counts = f"{len(missing)} of {len(infos)} images of {split} are missing"
    if bad_images == "error":
        raise ImageReadError(f"{first}; {counts} (data.bad_images=skip would leave them out)")
    if len(missing) == len(infos):
        raise ValueError(f"{counts}: no usable image under {split}.root = {root}; the first: {first}")
    logger.warning("%s; they are left out (data.bad_images=skip); the first: %s", counts, first)


class SkippingDataset(torch.utils.data.Dataset):
    """A training dataset whose unusable images are replaced by the next usable one.

    Items are the wrapped dataset's, with ``target["skipped"]``: the messages
    (file, record, reason) of the images passed over for this item, often none.
    Everything else (``image_info``, ``categories``, ...) is the wrapped dataset's.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._bad: dict[int, str] = {}  # per process: indices known to fail, with their message

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet, e.g. while unpickling in a worker
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        skipped: list[str] = []
        size = len(self.dataset)
        for step in range(size):
            i = (index + step) % size
            if i not in self._bad:
                try:
                    image, target = self.dataset[i]
                except ImageReadError as e:
                    self._bad[i] = str(e)
                else:
                    target["skipped"] = skipped
                    return image, target
            skipped.append(self._bad[i])
        raise ValueError(f"no usable image among the {size} training images (data.bad_images=skip); the first: {skipped[0]}")
