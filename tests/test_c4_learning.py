"""End-to-end learning of the ResNet paper's two detectors, from scratch, on a few coco8 images.

Sizes are cut for a CPU: images of shorter side 128-160 px, anchors of 64-256 px,
fewer RoIs, and for ResNet C4 an 8x8 RoI pooling (4x4 after conv5_1) instead of 14x14.
Float32 on at most 2 threads (``learning_cpu``); the thresholds come from the spread
over seeds and thread counts (tools/learning_spread.py), as test_learning.py explains.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import DATA, REPO
from detect import build_model, load_config

pytestmark = pytest.mark.slow

# Images with few, large objects: a zebra; an umbrella and a person; a dog.
IMAGE_IDS = (34, 36, 42)


def small_images(coco8: dict, image_ids: tuple[int, ...], short_side: int) -> tuple[list, list, dict[int, str]]:
    """The coco8 images of ``image_ids`` resized to ``short_side``, their targets, and their classes only."""
    ids = [info["id"] for info in json.loads((DATA / "coco8" / "annotations.json").read_text())["images"]]
    images, targets = [], []
    for image_id in image_ids:
        i = ids.index(image_id)
        image, target = coco8["images"][i], coco8["targets"][i]
        scale = short_side / min(image.shape[-2:])
        images.append(F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False)[0])
        targets.append({"boxes": target["boxes"] * scale, "labels": target["labels"]})
    labels = sorted({int(label) for t in targets for label in t["labels"]})
    return images, targets, {c: coco8["categories"][c] for c in labels}


def small_run_overrides(classes: dict[int, str], short_side: int) -> list[str]:
    return [
        "model.backbone.weights=None",
        f"model.classes={classes}",
        f"model.input.min_size={short_side}",
        "model.anchors.sizes=[[64, 128, 256]]",
        "model.rpn.pre_nms_topk_train=1000",
        "model.rpn.post_nms_topk_train=200",
        "model.rpn.pre_nms_topk_test=1000",
        "model.rpn.post_nms_topk_test=50",
    ]


def train(model, images, targets, optimizer, iterations: int, lr_drop_at: int | None = None) -> list[dict[str, float]]:
    history = []
    model.train()
    for it in range(iterations):
        if it == lr_drop_at:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at iteration {it}: {losses}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({"total": loss.item(), **{k: v.item() for k, v in losses.items()}})
    return history


def mean(history: list[dict[str, float]], key: str) -> float:
    return sum(h[key] for h in history) / len(history)


def ratio(history: list[dict[str, float]], key: str) -> float:
    """Mean of ``key`` over the last 3 iterations over its mean over the first 3."""
    return mean(history[-3:], key) / mean(history[:3], key)


def test_vgg16_from_scratch_losses_fall(coco8, learning_seed, learning_metrics):
    """VGG-16 Faster R-CNN, 8 iterations on 2 images: the total and classification losses
    fall (mean of the last 3 iterations over the first 3).

    Spread over seeds 0-4 x 1, 2 threads (10 runs), min / median / max:
    ratio_total 0.73 / 0.84 / 0.87, ratio_loss_cls 0.56 / 0.62 / 0.65. The RPN objectness
    loss falls too little this early to keep a margin (ratio 0.93 / 0.95 / 0.97), so only
    the two above are asserted.
    """
    torch.manual_seed(learning_seed)
    images, targets, classes = small_images(coco8, (34, 42), short_side=128)
    cfg = load_config(
        REPO / "configs/frcnn_vgg16_voc.py",
        [*small_run_overrides(classes, 128), "model.roi_heads.batch_size_per_image=64"],
    )
    model = build_model(cfg)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)
    history = train(model, images, targets, optimizer, iterations=8)
    learning_metrics.update(ratio_total=ratio(history, "total"), ratio_loss_cls=ratio(history, "loss_cls"))
    assert learning_metrics["ratio_total"] < 0.95, history
    assert learning_metrics["ratio_loss_cls"] < 0.8, history


def test_resnet_c4_from_scratch_loss_falls(coco8, learning_seed, learning_metrics):
    """ResNet-18 C4 Faster R-CNN, 20 iterations on 3 images (learning rate / 10 after 16):
    the total loss falls (mean of the last 3 iterations over the first 3).

    Spread over seeds 0-4 x 1, 2 threads (10 runs), min / median / max:
    ratio_total 0.33 / 0.38 / 0.45. VOC AP50 on the training images after these 20
    iterations is 0.0 / 0.0 / 83.3 over the same runs (seed 1 on 1 thread 83.3, on
    2 threads 0.0): no AP threshold can keep a margin this early, so the loss's fall is
    asserted instead.
    """
    torch.manual_seed(learning_seed)
    images, targets, classes = small_images(coco8, IMAGE_IDS, short_side=160)
    cfg = load_config(
        REPO / "configs/frcnn_r101_voc.py",
        [
            *small_run_overrides(classes, 160),
            "model.backbone.name=resnet18",
            "model.backbone.norm=bn",
            "model.backbone.freeze_at=0",
            "model.roi_heads.pooler_resolution=8",
            "model.roi_heads.batch_size_per_image=32",
        ],
    )
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    history = train(model, images, targets, optimizer, iterations=20, lr_drop_at=16)
    learning_metrics.update(ratio_total=ratio(history, "total"))
    assert learning_metrics["ratio_total"] < 0.65, history
