"""tools/convert_torchvision.py as a user runs it: torchvision state dict in, detect checkpoint out."""

import subprocess
import sys

import pytest
import torch
from torchvision.models.detection import (
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)

from conftest import REPO
from detect import build_model, load_config
from detect.checkpoint import load_checkpoint
from detect.models.torchvision_compat import convert_fasterrcnn_resnet50_fpn


def _convert(source, output) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert_torchvision.py"), str(source), str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_converts_fasterrcnn_resnet50_fpn(tmp_path):
    torch.manual_seed(0)
    state = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    source, output = tmp_path / "tv.pth", tmp_path / "out" / "detect.pth"
    torch.save(state, source)

    result = _convert(source, output)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}" in result.stdout and "90 classes" in result.stdout

    checkpoint = load_checkpoint(output)
    # torchvision's 91-way predictor: index 0 background, index i the COCO category id i.
    assert list(checkpoint["classes"]) == list(range(1, 91))
    assert checkpoint["classes"][1] == "person" and checkpoint["classes"][90] == "toothbrush"

    cfg = load_config(REPO / "configs" / "frcnn_r50_fpn_coco.py", [f"model.weights={output}"])
    model = build_model(cfg)  # strict: every tensor has its place
    assert model.categories.num_classes == 90
    detect_state = model.state_dict()
    renamed = {
        "rpn.head.objectness.weight": "rpn.head.cls_logits.weight",
        "rpn.head.deltas.weight": "rpn.head.bbox_pred.weight",
        "roi_heads.predictor.cls_score.weight": "roi_heads.box_predictor.cls_score.weight",
        "backbone.body.layer3.5.conv3.weight": "backbone.body.layer3.5.conv3.weight",
        "backbone.fpn.layer_blocks.3.0.weight": "backbone.fpn.layer_blocks.3.0.weight",
    }
    for ours, theirs in renamed.items():
        assert torch.equal(detect_state[ours], state[theirs]), ours


def test_other_architecture_fails_with_one_line(tmp_path):
    source, output = tmp_path / "mobilenet.pth", tmp_path / "detect.pth"
    torch.save(fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None).state_dict(), source)
    result = _convert(source, output)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    assert lines[0].startswith(f"error: {source} is not a torchvision fasterrcnn_resnet50_fpn state_dict")
    assert "layer1 is not ResNet-50's" in lines[0]
    assert not output.exists()


def test_resnet50_fpn_v2_is_refused_naming_the_source():
    # The same ResNet-50 trunk, but a conv box head and a two-conv RPN head.
    state = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()
    with pytest.raises(ValueError) as info:
        convert_fasterrcnn_resnet50_fpn(state, source="v2.pth")
    message = str(info.value)
    assert message.startswith("v2.pth is not a torchvision fasterrcnn_resnet50_fpn state_dict")
    assert "no two-FC box head on 256 x 7 x 7 RoI features" in message and "\n" not in message
