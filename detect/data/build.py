"""Datasets from the config tree; the only data code that reads a config."""

from __future__ import annotations

from typing import Callable, Optional, Union

from detect.config import DataConfig, DatasetConfig
from detect.data.checks import SkippingDataset
from detect.data.coco import CocoDetection
from detect.data.transforms import Transform, build_train_transforms
from detect.data.voc import VOCDetection

Dataset = Union[CocoDetection, VOCDetection, SkippingDataset]


def _build_coco(ds_cfg: DatasetConfig, transforms: Optional[Transform], is_train: bool) -> CocoDetection:
    if not ds_cfg.root or not ds_cfg.ann_file:
        raise ValueError(
            f"a coco dataset needs root (image folder) and ann_file (instances json); "
            f"got root={ds_cfg.root!r}, ann_file={ds_cfg.ann_file!r}"
        )
    return CocoDetection(ds_cfg.root, ds_cfg.ann_file, transforms, filter_empty=is_train and ds_cfg.filter_empty)


def _build_voc(ds_cfg: DatasetConfig, transforms: Optional[Transform], is_train: bool) -> VOCDetection:
    if not ds_cfg.root or not ds_cfg.sets:
        raise ValueError(
            f"a voc dataset needs root (VOCdevkit folder) and sets (e.g. ['2007/trainval', '2012/trainval']); "
            f"got root={ds_cfg.root!r}, sets={ds_cfg.sets!r}"
        )
    # Evaluation keeps difficult objects, flagged, so that detecting them is neither rewarded nor penalised.
    return VOCDetection(
        ds_cfg.root, ds_cfg.sets, transforms, filter_empty=is_train and ds_cfg.filter_empty, keep_difficult=not is_train
    )


BUILDERS: dict[str, Callable[[DatasetConfig, Optional[Transform], bool], Dataset]] = {
    "coco": _build_coco,
    "voc": _build_voc,
}


def build_dataset(ds_cfg: DatasetConfig, data_cfg: DataConfig, is_train: bool) -> Dataset:
    """The dataset ``ds_cfg`` describes.

    Args:
        ds_cfg: ``cfg.data.train`` or ``cfg.data.val``.
        data_cfg: ``cfg.data``, for the augmentation settings.
        is_train: training gets the augmentation, ``filter_empty`` and
            ``data.bad_images`` (see :mod:`detect.data.checks`); test gets none of
            them (the model resizes test images itself, and every image is scored)
            and, for VOC, keeps difficult objects flagged for evaluation.
    """
    if ds_cfg.type not in BUILDERS:
        raise ValueError(f"unknown dataset type {ds_cfg.type!r}; known types: {sorted(BUILDERS)}")
    transforms = None
    if is_train:
        transforms = build_train_transforms(
            data_cfg.train_min_sizes, data_cfg.train_max_size, data_cfg.hflip_prob, data_cfg.color_jitter
        )
    dataset = BUILDERS[ds_cfg.type](ds_cfg, transforms, is_train)
    if is_train and data_cfg.bad_images == "skip":
        dataset = SkippingDataset(dataset)
    if len(dataset) == 0:
        source = ds_cfg.ann_file if ds_cfg.type == "coco" else f"{ds_cfg.root} {ds_cfg.sets}"
        hint = " with a usable box (filter_empty=True leaves out images without one)" if is_train and ds_cfg.filter_empty else ""
        raise ValueError(f"{source}: no image{hint}; nothing to {'train on' if is_train else 'evaluate'}")
    return dataset


def dataset_classes(dataset: Dataset) -> dict[int, str]:
    """``{category id: name}`` of a dataset, ascending ids; a copy the caller may keep."""
    return dict(sorted(dataset.categories.items()))
