"""Reading Detectron2's pickles: model-zoo Faster R-CNN checkpoints and ImageNet ResNets.

Both are pickles of numpy arrays. A pickle can name any Python callable, which
unpickling then calls, so files from the internet are read with an unpickler that
admits only numpy arrays, numbers, strings and plain containers.

Name legend: Detectron2 calls ResNet stages ``res2 .. res5`` (torchvision's
``layer1 .. layer4``), a block's convs ``conv1 .. conv3`` with their norm inside
(``conv1.norm``; torchvision's ``bn1``) and the projection ``shortcut``
(torchvision's ``downsample``). Caffe2's ImageNet files (``R-50.pkl``) spell the
same as ``res2_0_branch2a_w``, ``res2_0_branch2a_bn_s`` (scale), ``_bn_b`` (shift) or
``_bn_gamma``, ``_bn_beta``, ``_bn_running_mean``, ``_bn_running_var``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

# The only globals a pickle of numpy arrays needs; protocol 2 files spell bytes via _codecs.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")),
    *((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")),  # protocol 5
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
FROZEN_BN_EPS = 1e-5
# Caffe2 norm suffixes: Detectron's folded scale and shift, Detectron2's unfolded batch norm.
CAFFE2_NORM = {
    "s": "weight",
    "b": "bias",
    "rm": "running_mean",
    "riv": "running_var",
    "gamma": "weight",
    "beta": "bias",
    "running_mean": "running_mean",
    "running_var": "running_var",
}
# (depth, groups, width per group) -> torchvision's constructor name in detect.models.backbones.RESNETS
RESNET_NAMES = {
    (50, 1, 64): "resnet50",
    (101, 1, 64): "resnet101",
    (152, 1, 64): "resnet152",
    (50, 32, 4): "resnext50_32x4d",
    (101, 32, 8): "resnext101_32x8d",
    (101, 64, 4): "resnext101_64x4d",
}
RES4_BLOCKS_TO_DEPTH = {6: 50, 23: 101, 36: 152}
# Detectron2's default anchors: 3 aspect ratios; C4 has 5 sizes on one level, FPN one size per level.
NUM_ASPECT_RATIOS = 3
OTHER_MODELS = {
    "roi_heads.mask_head.": "a Mask R-CNN (roi_heads.mask_head.*)",
    "roi_heads.keypoint_head.": "a Keypoint R-CNN (roi_heads.keypoint_head.*)",
    "roi_heads.box_predictor.0.": "a Cascade R-CNN (roi_heads.box_predictor.0.*)",
    "sem_seg_head.": "a panoptic or semantic segmentation model (sem_seg_head.*)",
    "head.": "a RetinaNet (head.*)",
}


class UnsafePickleError(ValueError):
    """A pickle that names a Python global other than numpy's arrays and plain containers."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str):
        super().__init__(file, encoding="latin1")  # Caffe2-era files were written by Python 2
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refused to load global {module}.{name}; a weights pickle may only hold "
                "numpy arrays, numbers, strings and containers"
            )
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Unpickles ``path`` admitting only numpy arrays, numbers, strings and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def imagenet_resnet_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A Detectron2 ImageNet ResNet pickle as a torchvision ResNet state dict.

    Reads Caffe2 names (MSRA's ``R-50.pkl``, ``R-101.pkl``, FAIR's
    ``X-101-32x8d.pkl``: ``{"blobs": {...}}`` or a plain dict) and Detectron2
    names (``{"model": {"stem.conv1.weight": ...}}``). Norm layers without running
    statistics (Caffe2 folded them into scale and shift) get mean 0 and variance
    ``1 - eps``, so that frozen BN applies exactly the stored scale.
    """
    data = load_pickle(path)
    weights = data.get("blobs", data.get("model", data)) if isinstance(data, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{path}: expected a dict of numpy arrays (optionally under 'blobs' or 'model'), got {type(data).__name__}")
    state = {}
    for name, value in weights.items():
        if name.endswith("_momentum") or name in ("pred_w", "pred_b", "fc1000_w", "fc1000_b", "linear.weight", "linear.bias"):
            continue  # optimiser state and the ImageNet classifier, unused by a detector
        d2_name = _caffe2_to_detectron2(name) if "." not in name else name
        tv_name = _resnet_name(d2_name) if d2_name else None
        if tv_name is None:
            raise ValueError(f"{path}: {name!r} is not a ResNet weight in Caffe2's or Detectron2's naming")
        state[tv_name] = _tensor(value, path, name)
    _fill_running_stats(state)
    return state


def convert_model_zoo(data: Any, source: str) -> tuple[dict[str, Any], str]:
    """A Detectron2 model-zoo Faster R-CNN (``{"model": {name: array}}``) as a detect checkpoint.

    The predictor's rows are reordered from Detectron2's (classes 0..K-1, then
    background; no background box deltas) to detect's (background first, zero
    background deltas); contiguous class indices become COCO category ids. C4's
    RPN rows are reordered from Detectron2's size-major anchors to ratio-major.

    Returns:
        The checkpoint (``model``, ``classes``, ``config``) and a description of the
        architecture, e.g. ``"R_101_C4"``, as in the names of ``configs/zoo/``.
    """
    weights = data.get("model") if isinstance(data, dict) else None
    if not isinstance(weights, dict) or not weights:
        found = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{source}: not a Detectron2 checkpoint: expected a dict with a 'model' dict of arrays, found {found}")
    weights = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    for prefix, what in OTHER_MODELS.items():
        if any(k.startswith(prefix) for k in weights):
            raise ValueError(f"{source}: is {what}; only Faster R-CNN (FPN or C4) converts")
    fpn = any(k.startswith("backbone.bottom_up.") for k in weights)
    trunk = "backbone.bottom_up." if fpn else "backbone."
    model, unknown = {}, []
    for name, value in weights.items():
        new = _detect_name(name, trunk, fpn)
        if new is None:
            unknown.append(name)
        else:
            model[new] = _tensor(value, source, name)
    if unknown:
        raise ValueError(f"{source}: weights that are not a Faster R-CNN's {'FPN' if fpn else 'C4'} design: {unknown[:4]}")
    _check_running_stats(model, source)
    arch = _architecture(model, source, fpn)
    _reorder_rpn(model, fpn, source)
    num_classes = _reorder_predictor(model, source)
    return {"model": model, "classes": coco_classes(num_classes), "config": None}, arch


def coco_classes(num_classes: int) -> dict[int, str]:
    """{category id: name} of a Detectron2 model's contiguous classes 0..K-1.

    COCO's 80 classes are its category ids in ascending order, as Detectron2 maps
    them; other class counts are numbered 1..K.
    """
    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]  # indexed by COCO id, "N/A" for gaps
    coco = {i: name for i, name in enumerate(names) if i > 0 and name != "N/A"}
    if num_classes == len(coco):
        return coco
    return {i + 1: f"class_{i + 1}" for i in range(num_classes)}


def _caffe2_to_detectron2(name: str) -> str | None:
    if name == "conv1_w":
        return "stem.conv1.weight"
    if m := re.fullmatch(r"res_conv1_bn_(\w+)", name):
        return f"stem.conv1.norm.{CAFFE2_NORM[m[1]]}" if m[1] in CAFFE2_NORM else None
    convs = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
    if m := re.fullmatch(r"res(\d)_(\d+)_branch(1|2a|2b|2c)_w", name):
        return f"res{m[1]}.{m[2]}.{convs[m[3]]}.weight"
    if m := re.fullmatch(r"res(\d)_(\d+)_branch(1|2a|2b|2c)_bn_(\w+)", name):
        return f"res{m[1]}.{m[2]}.{convs[m[3]]}.norm.{CAFFE2_NORM[m[4]]}" if m[4] in CAFFE2_NORM else None
    return None


def _resnet_name(name: str) -> str | None:
    """Detectron2 ResNet name (``res2.0.conv1.norm.weight``) -> torchvision's (``layer1.0.bn1.weight``)."""
    if m := re.fullmatch(r"stem\.conv1\.(weight|norm\.(weight|bias|running_mean|running_var))", name):
        return "conv1.weight" if m[1] == "weight" else f"bn1.{m[2]}"
    m = re.fullmatch(r"res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.(weight|bias|running_mean|running_var))", name)
    if m is None:
        return None
    block = f"layer{int(m[1]) - 1}.{m[2]}"
    if m[3] == "shortcut":
        return f"{block}.downsample.0.weight" if m[4] == "weight" else f"{block}.downsample.1.{m[5]}"
    return f"{block}.{m[3]}.weight" if m[4] == "weight" else f"{block}.bn{m[3][-1]}.{m[5]}"


def _detect_name(name: str, trunk: str, fpn: bool) -> str | None:
    """Detectron2 model-zoo name -> detect's, or None for a weight outside Faster R-CNN."""
    if name.startswith(trunk):
        resnet = _resnet_name(name[len(trunk) :])
        return f"backbone.body.{resnet}" if resnet and (fpn or not resnet.startswith("layer4.")) else None
    if not fpn and name.startswith("roi_heads.res5."):
        resnet = _resnet_name(name[len("roi_heads.") :])
        return f"roi_heads.box_head.{resnet}" if resnet else None
    if fpn and (m := re.fullmatch(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)", name)):
        blocks = "inner_blocks" if m[1] == "lateral" else "layer_blocks"
        return f"backbone.fpn.{blocks}.{int(m[2]) - 2}.0.{m[3]}"
    if m := re.fullmatch(r"proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\.(weight|bias)", name):
        return f"rpn.head.{ {'conv': 'conv', 'objectness_logits': 'objectness', 'anchor_deltas': 'deltas'}[m[1]]}.{m[2]}"
    if fpn and (m := re.fullmatch(r"roi_heads\.box_head\.fc([12])\.(weight|bias)", name)):
        return f"roi_heads.box_head.fc{int(m[1]) + 5}.{m[2]}"
    if m := re.fullmatch(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", name):
        return f"roi_heads.predictor.{m[1]}.{m[2]}"
    return None


def _tensor(value: Any, source: str | Path, name: str) -> Tensor:
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise ValueError(f"{source}: {name!r} is not a float array ({type(value).__name__} {getattr(value, 'dtype', '')})")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def _fill_running_stats(state: dict[str, Tensor]) -> None:
    for name in [k for k in state if re.search(r"(bn\d|downsample\.1)\.weight$", k)]:
        prefix = name[: -len("weight")]
        state.setdefault(prefix + "running_mean", torch.zeros_like(state[name]))
        state.setdefault(prefix + "running_var", torch.full_like(state[name], 1 - FROZEN_BN_EPS))


def _check_running_stats(model: dict[str, Tensor], source: str) -> None:
    for name in model:
        if re.search(r"(bn\d|downsample\.1)\.weight$", name) and name[: -len("weight")] + "running_var" not in model:
            raise ValueError(
                f"{source}: {name} has no running statistics: not a frozen-BN model (GroupNorm or SyncBN models do not convert)"
            )


def _architecture(model: dict[str, Tensor], source: str, fpn: bool) -> str:
    res4_blocks = len({k.split(".")[3] for k in model if k.startswith("backbone.body.layer3.")})
    depth = RES4_BLOCKS_TO_DEPTH.get(res4_blocks)
    conv2 = model.get("backbone.body.layer1.0.conv2.weight")
    if depth is None or conv2 is None:
        raise ValueError(f"{source}: a ResNet with {res4_blocks} blocks in res4 is not ResNet-50, -101 or -152")
    width, group_width = conv2.shape[0], conv2.shape[1]
    groups = width // group_width
    name = RESNET_NAMES.get((depth, groups, group_width if groups > 1 else 64))
    if name is None:
        raise ValueError(f"{source}: a ResNet-{depth} with {groups} groups of width {group_width} has no torchvision definition")
    if not fpn and "roi_heads.box_head.layer4.0.conv1.weight" not in model:
        raise ValueError(f"{source}: neither an FPN (backbone.bottom_up.*) nor a C4 model (roi_heads.res5.*)")
    family = f"X_{depth}_{groups}x{group_width}d" if groups > 1 else f"R_{depth}"
    return f"{family}_{'FPN' if fpn else 'C4'}"


def _reorder_rpn(model: dict[str, Tensor], fpn: bool, source: str) -> None:
    """Detectron2 orders a location's anchors size-major, detect ratio-major (as torchvision)."""
    num_anchors = model["rpn.head.objectness.weight"].shape[0]
    if num_anchors % NUM_ASPECT_RATIOS or (fpn and num_anchors != NUM_ASPECT_RATIOS):
        raise ValueError(f"{source}: {num_anchors} anchors per location; Detectron2's default anchors have 3 (FPN) or 15 (C4)")
    sizes = num_anchors // NUM_ASPECT_RATIOS
    # new index r * sizes + s takes Detectron2's s * ratios + r
    order = torch.arange(num_anchors).view(sizes, NUM_ASPECT_RATIOS).t().reshape(-1)
    for kind in ("weight", "bias"):
        model[f"rpn.head.objectness.{kind}"] = model[f"rpn.head.objectness.{kind}"][order]
        deltas = model[f"rpn.head.deltas.{kind}"]
        model[f"rpn.head.deltas.{kind}"] = deltas.view(num_anchors, 4, *deltas.shape[1:])[order].flatten(0, 1)


def _reorder_predictor(model: dict[str, Tensor], source: str) -> int:
    """Background last -> first; class-specific deltas ``4K -> 4(K + 1)`` with zero background rows."""
    num_outputs = model["roi_heads.predictor.cls_score.weight"].shape[0]
    num_classes = num_outputs - 1
    num_deltas = model["roi_heads.predictor.bbox_pred.weight"].shape[0]
    if num_deltas != 4 * num_classes:
        raise ValueError(
            f"{source}: roi_heads.box_predictor.bbox_pred has {num_deltas} outputs for {num_classes} classes; "
            f"only class-specific box regression ({4 * num_classes}) converts"
        )
    order = torch.cat([torch.tensor([num_classes]), torch.arange(num_classes)])
    for kind in ("weight", "bias"):
        model[f"roi_heads.predictor.cls_score.{kind}"] = model[f"roi_heads.predictor.cls_score.{kind}"][order]
        deltas = model[f"roi_heads.predictor.bbox_pred.{kind}"]
        model[f"roi_heads.predictor.bbox_pred.{kind}"] = torch.cat([deltas.new_zeros((4, *deltas.shape[1:])), deltas])
    return num_classes
