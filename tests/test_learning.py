"""Learning runs: a ResNet-FPN Faster R-CNN trained from scratch through the whole pipeline."""

import json

import pytest

from conftest import DATA, REPO
from detect.config import load_config
from detect.engine import train

COCO8 = DATA / "coco8"


@pytest.mark.slow
def test_resnet_fpn_from_scratch_overfits_eight_coco_images(tmp_path):
    """Dataset, augmentation, loader, trainer and COCO evaluation together: AP50 >= 90 on the training images."""
    cfg = load_config(
        REPO / "configs/quickstart_shapes.py",
        [
            f"data.train.root={COCO8 / 'images'}",
            f"data.train.ann_file={COCO8 / 'annotations.json'}",
            f"data.val.root={COCO8 / 'images'}",
            f"data.val.ann_file={COCO8 / 'annotations.json'}",
            "data.train_min_sizes=[256]",
            "data.train_max_size=352",
            "data.hflip_prob=0.0",
            "data.num_workers=0",
            "model.input.min_size=256",
            "model.input.max_size=352",
            "model.anchors.sizes=[[16.0], [32.0], [64.0], [128.0], [256.0]]",
            "train.optimizer=adamw",
            "train.base_lr=0.002",
            "train.weight_decay=0.0001",
            "train.max_iter=200",
            "train.lr_schedule=step",
            "train.steps=[150]",
            "train.warmup_iters=10",
            "train.batch_size=8",
            "train.checkpoint_period=0",
            "train.log_period=10",
            f"output_dir={tmp_path}",
        ],
    )
    metrics = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["total_loss"] < log[0]["total_loss"] / 3
    assert metrics["bbox"]["AP50"] >= 90, metrics["bbox"]
