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
import traceback
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# The allowed values of every enumerated key: checked when a config is loaded, and
# the sets the code that reads each key uses (tests/test_config.py ties the builders' tables to them).
# torchvision's constructors of these names build the ResNet backbones.
RESNET_NAMES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
)
BACKBONE_NAMES = (*RESNET_NAMES, "vgg16")
NORMS = ("frozen_bn", "bn", "gn")
POOLER_TYPES = ("align", "pool")
DATASET_TYPES = ("coco", "voc")
BAD_IMAGES = ("error", "skip")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("step", "cosine")
AMP_MODES = ("off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
CHOICES: dict[str, tuple[str, ...]] = {
    "model.backbone.name": BACKBONE_NAMES,
    "model.backbone.norm": NORMS,
    "model.roi_heads.pooler_type": POOLER_TYPES,
    "data.train.type": DATASET_TYPES,
    "data.val.type": DATASET_TYPES,
    "data.bad_images": BAD_IMAGES,
    "train.optimizer": OPTIMIZERS,
    "train.lr_schedule": LR_SCHEDULES,
    "train.amp": AMP_MODES,
    "train.device": DEVICES,
}

# The folder holding the shipped ``configs`` package, so that a config file anywhere can inherit from it.
SHIPPED_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BackboneConfig:
    name: str = "resnet50"  # resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d/64x4d or vgg16
    # ImageNet weights: torchvision's .pth, or Detectron2's .pkl (R-50.pkl, R-101.pkl, X-101-32x8d.pkl)
    weights: Optional[str] = None
    norm: str = "frozen_bn"  # frozen_bn (pretrained), bn or gn (from scratch)
    freeze_at: int = 2  # 0: nothing frozen, 1: stem, 2: stem + res2, ...
    stride_in_1x1: bool = False  # True: a block's stride in its first 1x1 conv (MSRA's ResNets), not the 3x3


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
    # The network's own pixel convention; the model's input stays float RGB in 0..1.
    # Detectron2's: channel_order "bgr", pixel_scale 255, mean and std in BGR order on 0..255.
    channel_order: str = "rgb"  # rgb or bgr: the channel order pixel_mean, pixel_std and conv1 use
    pixel_scale: float = 1.0  # pixels are multiplied by this before pixel_mean is subtracted


@dataclass
class AnchorConfig:
    sizes: list[list[float]] = field(default_factory=lambda: [[32.0], [64.0], [128.0], [256.0], [512.0]])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rounded: bool = True  # cell anchor corners rounded to integers (torchvision); False: exact (Detectron2)
    # False: a level's stride is the padded image size // its size (torchvision); True: the
    # backbone's nominal stride (Detectron2), which differs when the padded size is not a multiple of it
    nominal_strides: bool = False


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
    # NMS ranks proposals by objectness probability (torchvision) or, True, by logit (Detectron2):
    # the order differs where the sigmoid saturates to 1.0 in float32 (logits above ~17)
    nms_on_logits: bool = False


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
    min_box_size: float = 1e-2  # detections narrower or lower than this are dropped (Detectron2: 0, none)


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
    # A training image that is missing, unreadable or not the size its record says:
    # error (stop, naming the file and record) or skip (leave it out, name it in the log, count it).
    bad_images: str = "error"


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
    channels_last: Optional[bool] = None  # None: channels-last on the CPU (faster there), NCHW on CUDA
    checkpoint_period: int = 5000
    keep_checkpoints: int = 0  # newest periodic checkpoints kept (disk space); 0 keeps all
    eval_period: int = 0  # 0: only at the end
    log_period: int = 20
    tensorboard: bool = False  # also write TensorBoard event files into the run folder
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


def load_config(path: str | os.PathLike, overrides: typing.Sequence[str] = (), check_device: bool = True) -> Config:
    """Runs a config file, applies dotted ``key=value`` overrides and checks the result.

    Args:
        path: a Python file that defines ``cfg: Config``.
        overrides: e.g. ``["train.max_iter=100", "model.weights=ckpt.pth"]``.
        check_device: also check that ``train.device`` and ``train.amp`` suit this
            machine (off to read a run made elsewhere).

    Returns:
        A fresh :class:`Config`; loading the same file twice gives independent trees.

    Raises:
        ConfigError: the file is missing or fails, or a key, type or value is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}{_path_hint(path)}")
    namespace = _run_isolated(path)
    cfg = namespace.get("cfg")
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: must define `cfg` as a detect.config.Config, found {type(cfg).__name__}")
    cfg = copy.deepcopy(cfg)
    try:
        check_config(cfg, check_device=False)  # what the file itself set
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    apply_overrides(cfg, overrides, check_device)
    return cfg


def _path_hint(path: Path) -> str:
    """A likely meant file for a config path that does not exist."""
    candidates = [Path(f"{path}.py")]
    if not path.is_absolute():  # a path relative to the repository, given from another folder
        candidates += [SHIPPED_ROOT / path, SHIPPED_ROOT / f"{path}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return f"; did you mean {candidate}?"
    folder = path.parent if path.parent.is_dir() else SHIPPED_ROOT / path.parent
    if path.is_dir() or not folder.is_dir():
        return "; give a Python config file, e.g. configs/quickstart_shapes.py"
    close = difflib.get_close_matches(path.name, [p.name for p in folder.glob("*.py")], n=3, cutoff=0.5)
    return f"; similar files in {folder}: {', '.join(close)}" if close else ""


def _run_isolated(path: Path) -> dict[str, Any]:
    """Runs a config file so that the base configs it imports are fresh objects.

    Config modules mutate the ``cfg`` they import, so cached modules would leak
    one file's assignments into the next file loaded in the same process. The
    file's own package root comes first on ``sys.path``, then the folder of the
    shipped ``configs`` package, so ``from configs.frcnn_r50_fpn_coco import cfg``
    works from a config file in any folder.
    """
    package_root = path.resolve().parent
    while (package_root / "__init__.py").exists():
        package_root = package_root.parent
    roots = [str(package_root)]
    if (SHIPPED_ROOT / "configs" / "__init__.py").exists() and SHIPPED_ROOT != package_root:
        roots.append(str(SHIPPED_ROOT))
    # Packages whose modules must be fresh: the file's own, and the shipped configs.
    fresh = {path.resolve().relative_to(package_root).parts[0], "configs"}

    def is_fresh(name: str) -> bool:
        return name.split(".")[0] in fresh

    saved_modules = dict(sys.modules)
    for name in [n for n in sys.modules if is_fresh(n)]:
        del sys.modules[name]  # a package of the same name imported from elsewhere must not shadow this one
    sys.path[:0] = roots
    try:
        return runpy.run_path(str(path))
    except Exception as e:
        raise ConfigError(f"{path}{_failing_line(e, path)}: {type(e).__name__}: {e}") from None
    finally:
        for root in roots:
            sys.path.remove(root)
        for name in set(sys.modules) - set(saved_modules):
            if is_fresh(name):
                del sys.modules[name]
        sys.modules.update(saved_modules)


def _failing_line(error: Exception, path: Path) -> str:
    """``", line N"`` of the last traceback frame in ``path``, if any."""
    line = ""
    for frame, lineno in traceback.walk_tb(error.__traceback__):
        if Path(frame.f_code.co_filename).resolve() == path.resolve():
            line = f", line {lineno}"
    return line


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


def apply_overrides(cfg: Config, overrides: typing.Sequence[str], check_device: bool = True) -> None:
    """Sets dotted ``key=value`` overrides in place, then checks the whole config (see :func:`check_config`)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        set_value(cfg, key.strip(), _parse_value(text.strip()), text=text.strip())
    check_config(cfg, check_device)


def check_config(cfg: Config, check_device: bool = True) -> None:
    """Checks what a config file may have set without :func:`set_value`.

    Every attribute is a known key of its type, every enumerated key holds one of
    its :data:`CHOICES`, and with ``check_device`` the device and mixed precision
    suit this machine. Ints given for floats become floats.

    Raises:
        ConfigError: naming the first bad key, its value and what is allowed.
    """
    _check_node(cfg, cfg, "")
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(repr, allowed))}{hint}")
    if check_device:
        _check_device(cfg.train)


def _check_node(cfg: Config, node: Any, prefix: str) -> None:
    names = [f.name for f in dataclasses.fields(node)]  # in declaration order, so the first bad key is reported
    for name in vars(node):
        if name not in names:
            raise ConfigError(_unknown_key_message(cfg, prefix + name))
    hints = typing.get_type_hints(type(node))
    for name in names:
        value = getattr(node, name)
        if dataclasses.is_dataclass(value):
            _check_node(cfg, value, f"{prefix}{name}.")
        else:
            setattr(node, name, _check_type(prefix + name, value, hints[name]))


def _get(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _check_device(train: TrainConfig) -> None:
    import torch  # here, so that reading a config needs no torch

    cuda = torch.cuda.is_available()
    if train.device == "cuda" and not cuda:
        raise ConfigError("train.device = 'cuda' but this machine has no CUDA device; use train.device=cpu or auto")
    if train.amp == "fp16" and (train.device == "cpu" or not cuda):
        raise ConfigError("train.amp = 'fp16' needs a CUDA device (a gradient scaler for float16); use train.amp=bf16 on the CPU")


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
