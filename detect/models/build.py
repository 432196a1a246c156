"""``build_model``: the one place where the config becomes a model."""

from __future__ import annotations

from typing import Any

from torch import nn

from detect.checkpoint import load_checkpoint
from detect.config import Config, ModelConfig
from detect.data.categories import CategoryMap
from detect.models.anchors import AnchorGenerator
from detect.models.backbones import ResNetC4, ResNetFPN, ResNetTrunk, build_resnet
from detect.models.faster_rcnn import FasterRCNN
from detect.models.matcher import BalancedSampler, Matcher
from detect.models.poolers import RoIPooler
from detect.models.roi_heads import BoxPredictor, RoIHeads, TwoFCHead
from detect.models.rpn import RPN, RPNHead
from detect.models.transform import ImageTransform


def build_model(cfg: Config, classes: dict[int, str] | None = None) -> FasterRCNN:
    """Builds the detector of ``cfg.model``, loading ``cfg.model.weights`` when set.

    Args:
        cfg: the config.
        classes: {category id: name} of the training dataset, used when neither
            the config nor the weights fix the classes.
    """
    checkpoint = load_checkpoint(cfg.model.weights) if cfg.model.weights else None
    categories = resolve_classes(cfg.model, checkpoint, classes)
    model = _build(cfg.model, categories, pretrained_backbone=checkpoint is None)
    if checkpoint is not None:
        result = model.load_state_dict(checkpoint["model"], strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{cfg.model.weights} does not fit the config's model: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
    return model


def resolve_classes(model_cfg: ModelConfig, checkpoint: dict[str, Any] | None, dataset_classes: dict[int, str] | None) -> CategoryMap:
    """The model's classes: the weights' if any, else the config's, else the dataset's; conflicts are errors."""
    sources = [
        ("model.weights", checkpoint["classes"] if checkpoint else None),
        ("model.classes", model_cfg.classes),
        ("the dataset", dataset_classes),
    ]
    given = [(name, CategoryMap.from_dict(c)) for name, c in sources if c]
    if not given:
        raise ValueError("the classes are unknown: set model.classes, model.weights, or train on a dataset")
    (first_name, first), *others = given
    for name, other in others:
        if name == "the dataset" and first_name == "model.weights":
            continue  # evaluating a checkpoint on any data labelled with a subset of its ids is fine
        if other.ids != first.ids:
            raise ValueError(
                f"class mismatch: {first_name} has {first.num_classes} classes (ids {list(first.ids)[:8]}...), "
                f"{name} has {other.num_classes} (ids {list(other.ids)[:8]}...)"
            )
    return first


def _build(cfg: ModelConfig, categories: CategoryMap, pretrained_backbone: bool) -> FasterRCNN:
    weights = cfg.backbone.weights if pretrained_backbone else None
    resnet = build_resnet(cfg.backbone.name, cfg.backbone.norm, weights)
    if not cfg.fpn.enabled:
        raise NotImplementedError("the C4 design is built in detect.models.c4")
    backbone = ResNetFPN(ResNetTrunk(resnet, num_stages=4, freeze_at=cfg.backbone.freeze_at), cfg.fpn.out_channels)
    rpn_features = list(backbone.strides)
    roi_features = rpn_features[:4]  # P6 serves proposals only, as in the FPN paper
    anchors = AnchorGenerator(cfg.anchors.sizes, cfg.anchors.aspect_ratios)
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
    )
    heads = cfg.roi_heads
    pooler = RoIPooler(
        heads.pooler_resolution,
        [backbone.strides[n] for n in roi_features],
        heads.pooler_sampling_ratio,
        heads.pooler_aligned,
        heads.pooler_type,
    )
    box_head: nn.Module = TwoFCHead(backbone.out_channels, heads.pooler_resolution, heads.fc_dim)
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
    )
    transform = ImageTransform(
        cfg.input.min_size, cfg.input.max_size, cfg.input.size_divisible, cfg.input.pixel_mean, cfg.input.pixel_std
    )
    return FasterRCNN(transform, backbone, rpn, roi_heads, rpn_features, roi_features, categories)
