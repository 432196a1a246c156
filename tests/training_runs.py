"""Shared by the tests that train: a tiny model's overrides, and comparing two runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detect.checkpoint import load_checkpoint

REPO = Path(__file__).parent.parent
COCO8 = REPO / "tests" / "data" / "coco8"
CONFIG = REPO / "configs" / "quickstart_shapes.py"
LOSSES = ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box")

# A ResNet-18 FPN on 128-160 px images: an iteration takes a fraction of a second on one thread.
TINY = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=64",
    "model.roi_heads.fc_dim=128",
    "model.input.min_size=128",
    "model.input.max_size=160",
    "model.rpn.pre_nms_topk_train=200",
    "model.rpn.post_nms_topk_train=100",
    "model.rpn.pre_nms_topk_test=100",
    "model.rpn.post_nms_topk_test=50",
    "model.rpn.batch_size_per_image=64",
    "model.roi_heads.batch_size_per_image=64",
    "data.train_min_sizes=[128]",
    "data.train_max_size=160",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.device=cpu",
    "train.log_period=1",
    "train.eval_period=0",
    "train.base_lr=0.01",
    "train.lr_schedule=step",
    "train.warmup_iters=2",
    "train.steps=[4]",
]
COCO8_DATA = [
    f"data.train.root={COCO8}/images",
    f"data.train.ann_file={COCO8}/annotations.json",
    f"data.val.root={COCO8}/images",
    f"data.val.ann_file={COCO8}/annotations.json",
]


def read_log(run: Path) -> dict[int, dict]:
    """The log's record of each iteration; where a resumed run logged one again, its later record."""
    return {r["iteration"]: r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


def assert_same_training(run: Path, reference: Path, rel: float = 1e-5) -> None:
    """Both runs logged the same iterations with the same lr and losses and ended with the same weights.

    Args:
        rel: relative tolerance of each loss (absolute ``rel / 10`` for losses near zero),
            and of all weights together (the norm of their difference over the norm of the
            reference's). Each weight tensor alone
            may differ by 10 x ``rel``: one that starts at zero, like the box predictor's
            bias, is so small after a few steps that rounding alone moves it by ~1e-5.
    """
    log, expected = read_log(run), read_log(reference)
    assert sorted(log) == sorted(expected)
    for iteration, record in expected.items():
        assert log[iteration]["lr"] == record["lr"], iteration
        for key in LOSSES:
            # a loss near zero (the box loss of a few positives) carries the rounding of larger terms
            assert log[iteration][key] == pytest.approx(record[key], rel=rel, abs=rel / 10), (iteration, key)
    weights = load_checkpoint(run / "model_final.pth")["model"]
    expected_weights = load_checkpoint(reference / "model_final.pth")["model"]
    assert weights.keys() == expected_weights.keys()
    squared_error = squared_norm = 0.0
    for name, value in expected_weights.items():
        if not value.is_floating_point():
            assert torch.equal(weights[name], value), name
            continue
        error, norm = float((weights[name] - value).norm()), float(value.norm())
        assert error <= 10 * rel * max(norm, 1e-12), (name, error / max(norm, 1e-12))
        squared_error, squared_norm = squared_error + error**2, squared_norm + norm**2
    assert squared_error**0.5 <= rel * squared_norm**0.5, (squared_error / squared_norm) ** 0.5
