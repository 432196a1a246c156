"""The configuration tree, config files and command-line overrides.

A config file is a plain Python file that defines a module-level ``cfg`` of type
:class:`Config`. Files inherit by import plus assignment::

    from configs.frcnn_r50_fpn_coco import cfg
    cfg.model.backbone.name = "resnet101"

Overrides are dotted ``key=value`` strings; values are parsed with
``ast.literal_eval`` (a value that is not a Python literal is taken as a string,
so ``model.weights=run/model_final.pth`` needs no quotes).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import os
import runpy
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet18/34/50/101/152 or vgg16
    weights: Optional[str] = None  # torchvision ImageNet checkpoint file
    norm: str = "frozen_bn"  # frozen_bn (pretrained), bn or gn (from scratch)
    freeze_at: int = 2  # 0: nothing frozen, 1: stem, 2: stem + res2, ...


@dataclass
class FPNConfig:
    enabled: bool = True  # False: the single stride-16 "C4" trunk of the ResNet paper
    out_channels: int = 256


@dataclass
class InputConfig:
    min_size: int = 800  # test-time shorter side; training scale is set in data.train_min_sizes
    max_size: int = 1333
    size_divisible: int = 32
    pixel_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    pixel_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class AnchorConfig:
    sizes: list[list[float]] = field(default_factory=lambda: [[32.0], [64.0], [128.0], [256.0], [512.0]])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])


@dataclass
class RPNConfig:
    fg_iou_thresh: float = 0.7
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    pre_nms_topk_train: int = 2000  # per level with FPN
    post_nms_topk_train: int = 2000  # per image
    pre_nms_topk_test: int = 1000
    post_nms_topk_test: int = 1000
    nms_thresh: float = 0.7
    min_box_size: float = 1e-3
    smooth_l1_beta: float = 1.0 / 9


@dataclass
class RoIHeadsConfig:
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.5
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    pooler_type: str = "align"  # align (RoIAlign) or pool (RoIPool, as in the ResNet paper)
    pooler_resolution: int = 7
    pooler_sampling_ratio: int = 2
    pooler_aligned: bool = False  # torchvision's convention; Detectron2 uses True
    fc_dim: int = 1024
    bbox_reg_weights: list[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    smooth_l1_beta: float = 1.0 / 9
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    input: InputConfig = field(default_factory=InputConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    # {category id: name}. None: taken from model.weights or the training dataset.
    classes: Optional[dict[int, str]] = None
    weights: Optional[str] = None  # a detect checkpoint: evaluated as is; in training, fine-tuned onto the dataset's classes


@dataclass
class DatasetConfig:
    type: str = "coco"  # coco or voc
    root: str = ""  # image folder (coco) or VOCdevkit folder (voc)
    ann_file: str = ""  # COCO instances json (coco)
    sets: list[str] = field(default_factory=list)  # voc: "2007/trainval", "2012/trainval", ...
    filter_empty: bool = True  # skip images without usable boxes (training only)


@dataclass
class DataConfig:
    train: DatasetConfig = field(default_factory=DatasetConfig)
    val: DatasetConfig = field(default_factory=DatasetConfig)
    train_min_sizes: list[int] = field(default_factory=lambda: [800])  # one is drawn per image
    train_max_size: int = 1333
    hflip_prob: float = 0.5
    color_jitter: bool = False
    aspect_ratio_grouping: bool = True
    num_workers: int = 2


@dataclass
class TrainConfig:
    max_iter: int = 90000
    batch_size: int = 16  # images per iteration, all processes together
    optimizer: str = "sgd"  # sgd (momentum) or adamw
    base_lr: float = 0.02
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0  # for norm layers' scale and shift
    weight_decay_bias: float = 1e-4
    lr_schedule: str = "step"  # step or cosine
    steps: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    clip_grad_norm: float = 0.0  # 0 disables
    amp: str = "off"  # off, bf16 or fp16 (fp16 with a gradient scaler, CUDA only)
    channels_last: bool = False
    checkpoint_period: int = 5000
    eval_period: int = 0  # 0: only at the end
    log_period: int = 20
    seed: int = 42
    device: str = "auto"  # auto, cpu or cuda


@dataclass
class TestConfig:
    batch_size: int = 1  # images per inference batch and process


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    output_dir: str = "output"


class ConfigError(ValueError):
    """A config file or override that cannot be applied."""


def load_config(path: str | os.PathLike, overrides: typing.Sequence[str] = ()) -> Config:
    """Runs a config file and applies dotted ``key=value`` overrides.

    Args:
        path: a Python file that defines ``cfg: Config``.
        overrides: e.g. ``["train.max_iter=100", "model.weights=ckpt.pth"]``.

    Returns:
        A fresh :class:`Config`; loading the same file twice gives independent trees.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    namespace = _run_isolated(path)
    cfg = namespace.get("cfg")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: must define `cfg` as a detect.config.Config, found {type(cfg).__name__}")
    cfg = copy.deepcopy(cfg)
    apply_overrides(cfg, overrides)
    return cfg


def _run_isolated(path: Path) -> dict[str, Any]:
    """Runs a config file so that the base configs it imports are fresh objects.

    Config modules mutate the ``cfg`` they import, so cached modules would leak
    one file's assignments into the next file loaded in the same process.
    """
    package_root = path.resolve().parent
    while (package_root / "__init__.py").exists():
        package_root = package_root.parent
    saved_modules = dict(sys.modules)
    top_package = path.resolve().relative_to(package_root).parts[0]
    for name in [n for n in sys.modules if n == top_package or n.startswith(top_package + ".")]:
        del sys.modules[name]  # a package of the same name imported from elsewhere must not shadow this one
    sys.path.insert(0, str(package_root))
    try:
        return runpy.run_path(str(path))
    finally:
        sys.path.remove(str(package_root))
        for name in set(sys.modules) - set(saved_modules):
            if name == top_package or name.startswith(top_package + "."):
                del sys.modules[name]
        sys.modules.update(saved_modules)


def all_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config tree, e.g. ``model.rpn.nms_thresh``."""
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            keys.extend(all_keys(value, key + "."))
        else:
            keys.append(key)
    return keys


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> None:
    """Sets dotted ``key=value`` overrides in place, checking keys and types."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        set_value(cfg, key.strip(), _parse_value(text.strip()), text=text.strip())


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def set_value(cfg: Config, key: str, value: Any, text: str | None = None) -> None:
    """Sets one dotted key, raising ConfigError with the nearest valid keys.

    ``text`` is the value as typed on a command line: a text key keeps it as is
    (``output_dir=3.10`` is the folder "3.10", not the number 3.1).
    """
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = {f.name: f for f in dataclasses.fields(node)}
        if part not in names:
            raise ConfigError(_unknown_key_message(cfg, key))
        if i < len(parts) - 1:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(_unknown_key_message(cfg, key))
    leaf = parts[-1]
    hint = typing.get_type_hints(type(node))[leaf]
    if dataclasses.is_dataclass(getattr(node, leaf)):
        raise ConfigError(f"{key} is a section; set one of its keys, e.g. {all_keys(getattr(node, leaf), key + '.')[:3]}")
    if text is not None and not isinstance(value, str) and value is not None and _accepts_text(hint):
        value = text
    setattr(node, leaf, _check_type(key, value, hint))


def _accepts_text(hint: Any) -> bool:
    return hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint))


def _unknown_key_message(cfg: Config, key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(cfg), n=5, cutoff=0.5)
    return f"unknown config key {key!r}; nearest valid keys: {', '.join(close) if close else '(none close)'}"


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(key, value, option)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        (item_hint,) = typing.get_args(hint)[:1] or (Any,)
        return [_check_type(f"{key}[{i}]", v, item_hint) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a dict, got {value!r}")
        key_hint, value_hint = typing.get_args(hint)
        return {_check_type(key, k, key_hint): _check_type(f"{key}[{k!r}]", v, value_hint) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and not isinstance(value, str):
        value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key} expects {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuilds a Config from :func:`config_to_dict` output (e.g. from a checkpoint)."""
    cfg = Config()
    for key, value in _flatten(data).items():
        set_value(cfg, key, value)
    return cfg


def flat_config(data: dict[str, Any]) -> dict[str, Any]:
    """A :func:`config_to_dict` tree as ``{dotted key: value}``; ``model.classes`` stays one value."""
    return _flatten(data)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in data.items():
        if isinstance(v, dict) and not (k == "classes" and prefix == "model."):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def dump_config(cfg: Config) -> str:
    """The resolved config as a Python config file that load_config reads back."""
    lines = ["from detect.config import Config", "", "cfg = Config()"]
    for key, value in _flatten(config_to_dict(cfg)).items():
        lines.append(f"cfg.{key} = {value!r}")
    return "\n".join(lines) + "\n"


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(dump_config(cfg))
