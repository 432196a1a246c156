"""``build_model``: the one place where the config becomes a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet

from detect.checkpoint import load_checkpoint
from detect.config import Config, ModelConfig
from detect.categories import CategoryMap
from detect.models.anchors import AnchorGenerator
from detect.models.backbones import RESNETS, ResNetC4, ResNetFPN, ResNetTrunk, build_resnet
from detect.models.c4 import ResNetC5Head
from detect.models.faster_rcnn import FasterRCNN
from detect.models.loading import fitting_config, load_detector_weights
from detect.models.matcher import BalancedSampler, Matcher
from detect.models.poolers import RoIPooler
from detect.models.roi_heads import BoxPredictor, RoIHeads, TwoFCHead
from detect.models.rpn import RPN, RPNHead
from detect.models.transform import ImageTransform
from detect.models.vgg import VGG16BoxHead, VGG16Trunk, build_vgg16


def build_model(cfg: Config, classes: dict[int, str] | None = None) -> FasterRCNN:
    """Builds the detector of ``cfg.model``, loading ``cfg.model.weights`` when set.

    Args:
        cfg: the config.
        classes: {category id: name} of the dataset the model is to be trained on.
            Given, the model predicts these classes, and ``model.weights`` of other
            classes is fine-tuned onto them (see ``detect/models/loading.py``); the log
            line printed says what was carried over. None (evaluation, prediction): the
            classes are the checkpoint's, else ``model.classes``.
    """
    checkpoint = load_checkpoint(cfg.model.weights) if cfg.model.weights else None
    categories = resolve_classes(cfg, checkpoint, classes)
    model = _build(cfg.model, categories, pretrained_backbone=checkpoint is None)
    if checkpoint is not None:
        report = load_detector_weights(model, checkpoint, cfg, fine_tune=classes is not None)
        if report:
            print(report)
    return model


def place_model(model: FasterRCNN, device: torch.device, channels_last: bool | None = None) -> FasterRCNN:
    """``model`` on ``device``, its convolution weights in the memory format ``train.channels_last`` asks for.

    None picks channels-last on the CPU, where oneDNN runs it without reordering every
    convolution's input and output (``docs/benchmark/cpu.json``: the fp32 against the
    fp32-cl backbone times of torchvision and Detectron2); CUDA stays NCHW unless asked,
    unmeasured there. The model's input follows its weights (``FasterRCNN.forward``).
    """
    model = model.to(device)
    if channels_last if channels_last is not None else device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def resolve_classes(cfg: Config, checkpoint: dict[str, Any] | None, dataset_classes: dict[int, str] | None) -> CategoryMap:
    """The classes the model predicts; sources that disagree on the category ids are an error.

    Training (``dataset_classes`` given): ``model.classes``, else the dataset's; a checkpoint's
    own classes only decide which predictor rows carry over. Evaluation: the checkpoint's,
    else ``model.classes``.
    """
    if dataset_classes is not None:
        sources = [("model.classes", cfg.model.classes), ("the dataset", dataset_classes)]
    else:
        sources = [(f"model.weights={cfg.model.weights}", checkpoint["classes"] if checkpoint else None),
                   ("model.classes", cfg.model.classes)]
    given = [(name, CategoryMap.from_dict(c)) for name, c in sources if c]
    if not given:
        raise ValueError("the classes are unknown: set model.classes or model.weights, or train on a dataset")
    (first_name, first), *others = given
    for name, other in others:
        if other.ids != first.ids:
            hint = ""
            if checkpoint and dataset_classes is None:
                hint = f"{fitting_config(checkpoint, cfg)}; or set model.classes=None to take the checkpoint's"
            raise ValueError(
                f"class mismatch: {first_name} has {first.num_classes} classes ({_listed(first)}), "
                f"{name} has {other.num_classes} ({_listed(other)}){hint}"
            )
    return first


def _listed(categories: CategoryMap) -> str:
    pairs = [f"{i}: {n}" for i, n in zip(categories.ids[:6], categories.names)]
    return ", ".join(pairs) + (", ..." if categories.num_classes > 6 else "")


def require_backbone_weights(cfg: ModelConfig) -> None:
    """Before training: a backbone that is to start from ImageNet has its weights file.

    Frozen BN from a random initialisation is an identity map and its frozen stages stay
    random, so ``norm=frozen_bn`` without weights would train a crippled network.

    Raises:
        FileNotFoundError: naming the file looked for, where to get it, and how to train from scratch.
    """
    name, path = cfg.backbone.name, cfg.backbone.weights
    if cfg.weights or (path and Path(path).is_file()):
        return  # a detector checkpoint brings its own backbone
    if not path and (name == "vgg16" or cfg.backbone.norm != "frozen_bn"):
        return  # from scratch, as asked
    looked = f"model.backbone.weights={path} is not a file" if path else "model.backbone.weights is not set"
    if name != "vgg16" and cfg.backbone.norm == "frozen_bn":
        looked += ", and model.backbone.norm=frozen_bn needs ImageNet weights"
    get = f"into {Path(path).parent}/" if path else "and set model.backbone.weights to its path"
    scratch = "model.backbone.weights=None" + ("" if name == "vgg16" else " model.backbone.norm=bn (or gn)")
    raise FileNotFoundError(
        f"{looked}: download {imagenet_weights_url(name, path)} {get}, or train from scratch with {scratch}"
    )


# Detectron2's ImageNet backbones, the MSRA originals of the ResNet paper and FAIR's ResNeXt.
DETECTRON2_IMAGENET = {
    "R-50.pkl": "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl",
    "R-101.pkl": "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-101.pkl",
    "X-101-32x8d.pkl": "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/FAIR/X-101-32x8d.pkl",
}


def imagenet_weights_url(name: str, path: str | None) -> str:
    """Where the ImageNet weights file ``path`` of backbone ``name`` is published."""
    file_name = Path(path).name if path else ""
    if file_name in DETECTRON2_IMAGENET:
        return DETECTRON2_IMAGENET[file_name]
    try:
        return torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    except (ValueError, AttributeError):
        return f"an ImageNet checkpoint of {name}"


def _build(cfg: ModelConfig, categories: CategoryMap, pretrained_backbone: bool) -> FasterRCNN:
    weights = cfg.backbone.weights if pretrained_backbone else None
    backbone, box_head, rpn_features, roi_features = _build_backbone(cfg, weights)
    anchor_strides = [backbone.strides[n] for n in rpn_features] if cfg.anchors.nominal_strides else None
    anchors = AnchorGenerator(cfg.anchors.sizes, cfg.anchors.aspect_ratios, cfg.anchors.rounded, anchor_strides)
    if len(cfg.anchors.sizes) != len(rpn_features):
        raise ValueError(f"model.anchors.sizes has {len(cfg.anchors.sizes)} levels, the backbone {len(rpn_features)}")
    rpn = RPN(
        head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location),
        anchor_generator=anchors,
        matcher=Matcher(cfg.rpn.fg_iou_thresh, cfg.rpn.bg_iou_thresh, allow_low_quality_matches=True),
        sampler=BalancedSampler(cfg.rpn.batch_size_per_image, cfg.rpn.positive_fraction),
        pre_nms_topk=(cfg.rpn.pre_nms_topk_train, cfg.rpn.pre_nms_topk_test),
        post_nms_topk=(cfg.rpn.post_nms_topk_train, cfg.rpn.post_nms_topk_test),
        nms_thresh=cfg.rpn.nms_thresh,
        min_box_size=cfg.rpn.min_box_size,
        smooth_l1_beta=cfg.rpn.smooth_l1_beta,
        nms_on_logits=cfg.rpn.nms_on_logits,
    )
    heads = cfg.roi_heads
    pooler = RoIPooler(
        heads.pooler_resolution,
        [backbone.strides[n] for n in roi_features],
        heads.pooler_sampling_ratio,
        heads.pooler_aligned,
        heads.pooler_type,
    )
    roi_heads = RoIHeads(
        pooler=pooler,
        box_head=box_head,
        predictor=BoxPredictor(box_head.out_dim, categories.num_classes),
        matcher=Matcher(heads.fg_iou_thresh, heads.bg_iou_thresh, allow_low_quality_matches=False),
        sampler=BalancedSampler(heads.batch_size_per_image, heads.positive_fraction),
        bbox_reg_weights=tuple(heads.bbox_reg_weights),
        smooth_l1_beta=heads.smooth_l1_beta,
        score_thresh=heads.score_thresh,
        nms_thresh=heads.nms_thresh,
        detections_per_image=heads.detections_per_image,
        min_box_size=heads.min_box_size,
    )
    transform = ImageTransform(
        cfg.input.min_size,
        cfg.input.max_size,
        cfg.input.size_divisible,
        cfg.input.pixel_mean,
        cfg.input.pixel_std,
        cfg.input.channel_order,
        cfg.input.pixel_scale,
    )
    return FasterRCNN(transform, backbone, rpn, roi_heads, rpn_features, roi_features, categories)


# The backbone and the per-RoI box head of each design, with the feature maps the
# RPN and the RoI heads read: (backbone, box_head, rpn_features, roi_features).
Parts = tuple[nn.Module, nn.Module, list[str], list[str]]


def _build_backbone(cfg: ModelConfig, weights: str | None) -> Parts:
    """ResNet-FPN, or one of the ResNet paper's two stride-16 baselines: ResNet C4 and VGG-16."""
    name = cfg.backbone.name
    if name == "vgg16":
        if cfg.fpn.enabled:
            raise ValueError("model.backbone.name='vgg16' is the paper's single-map baseline: set model.fpn.enabled=False")
        return _vgg16(cfg, weights)
    if name not in RESNETS:
        raise ValueError(f"unknown model.backbone.name {name!r}; known: {', '.join([*RESNETS, 'vgg16'])}")
    resnet = build_resnet(name, cfg.backbone.norm, weights, cfg.backbone.stride_in_1x1)
    return _resnet_fpn(cfg, resnet) if cfg.fpn.enabled else _resnet_c4(cfg, resnet)


def _resnet_fpn(cfg: ModelConfig, resnet: ResNet) -> Parts:
    backbone = ResNetFPN(ResNetTrunk(resnet, num_stages=4, freeze_at=cfg.backbone.freeze_at), cfg.fpn.out_channels)
    rpn_features = list(backbone.strides)
    roi_features = rpn_features[:4]  # P6 serves proposals only, as in the FPN paper
    box_head = TwoFCHead(backbone.out_channels, cfg.roi_heads.pooler_resolution, cfg.roi_heads.fc_dim)
    return backbone, box_head, rpn_features, roi_features


def _resnet_c4(cfg: ModelConfig, resnet: ResNet) -> Parts:
    """conv1 .. conv4_x shared (stride 16), conv5_x + average pooling per RoI (pool to 14x14: conv5_1 halves it)."""
    if not 0 <= cfg.backbone.freeze_at <= 4:
        raise ValueError(
            f"model.backbone.freeze_at for the C4 design must be in 0..4 (conv5_x is the per-RoI head and "
            f"always trained), got {cfg.backbone.freeze_at}"
        )
    backbone = ResNetC4(ResNetTrunk(resnet, num_stages=3, freeze_at=cfg.backbone.freeze_at))
    return backbone, ResNetC5Head(resnet), ["c4"], ["c4"]


def _vgg16(cfg: ModelConfig, weights: str | None) -> Parts:
    """conv1_1 .. conv5_3 shared (stride 16), fc6 + fc7 per RoI (pool to 7x7, fc6's input size)."""
    if cfg.backbone.norm != "frozen_bn":
        raise ValueError(
            f"VGG-16 has no normalisation layers: leave model.backbone.norm at 'frozen_bn' (got {cfg.backbone.norm!r})"
        )
    if cfg.roi_heads.pooler_resolution != 7:
        raise ValueError(
            f"VGG-16's fc6 takes 7x7 RoI features: set model.roi_heads.pooler_resolution=7, "
            f"got {cfg.roi_heads.pooler_resolution}"
        )
    vgg = build_vgg16(weights)
    backbone = VGG16Trunk(vgg, cfg.backbone.freeze_at)
    return backbone, VGG16BoxHead(vgg), ["conv5"], ["conv5"]
