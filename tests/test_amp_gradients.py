"""detect/engine/amp_gradients.py and tools/amp_gradients.py: bf16 against float32 gradients of one step."""

import json
import math

import pytest
import torch
from torch import nn

from detect.engine.amp_gradients import ProposalReplay, format_report, parameter_group, relative_differences
from test_tools_train_test import DATA, TINY_MODEL, _ok, _run


def test_relative_differences_per_group_and_over_all_parameters():
    reference = {"backbone.body.conv.weight": torch.tensor([3.0, 4.0]), "rpn.head.conv.weight": torch.tensor([1.0, 0.0])}
    gradients = {"backbone.body.conv.weight": torch.tensor([3.0, 5.0]), "rpn.head.conv.weight": torch.tensor([1.0, 1.0])}
    # |(0, 1)| / |(3, 4)| = 1/5; |(0, 1)| / |(1, 0)| = 1; all: sqrt(1 + 1) / sqrt(25 + 1)
    assert relative_differences(gradients, reference) == pytest.approx(
        {"all": math.sqrt(2 / 26), "backbone.body": 0.2, "rpn.head": 1.0}
    )
    assert parameter_group("roi_heads.box_head.fc6.weight") == "roi_heads.box_head"


class _Proposer(nn.Module):
    def forward(self, x):
        return x * 2, {"loss": x.sum()}


def test_proposal_replay_hands_the_recorded_proposals_to_later_passes_and_keeps_their_losses():
    rpn = _Proposer()
    replay = ProposalReplay(rpn)
    replay.mode = "record"
    assert rpn(torch.tensor([1.0]))[0].item() == 2.0
    replay.mode = "replay"
    proposals, losses = rpn(torch.tensor([5.0]))
    assert proposals.item() == 2.0 and losses["loss"].item() == 5.0
    replay.mode = None
    assert rpn(torch.tensor([5.0]))[0].item() == 10.0
    replay.remove()
    replay.mode = "replay"
    assert rpn(torch.tensor([5.0]))[0].item() == 10.0


def test_script_compares_bf16_and_float32_steps_of_the_same_batches(tmp_path):
    out = tmp_path / "gradients.json"
    _ok(_run(
        "amp_gradients.py", "configs/quickstart_shapes.py", "--weights", "init", "--batches", "2", "--json", out,
        *DATA, *TINY_MODEL, "train.batch_size=2", "data.train_min_sizes=[128]", "data.train_max_size=160",
        "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=100",
    ))
    result = json.loads(out.read_text())["models"]["init"]
    differences = result["relative_difference"]
    assert set(differences) == {"float32_again", "bf16_same_proposals", "bf16", "float32_other_samples", "batch_against_mean"}
    assert set(differences["bf16"]) == {"all", "backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head", "roi_heads.predictor"}
    assert all(v == 0.0 for v in differences["float32_again"].values())  # the step is deterministic
    # The RPN's gradients come from its own losses, which do not depend on the proposals passed on.
    assert differences["bf16_same_proposals"]["rpn.head"] == differences["bf16"]["rpn.head"]
    assert 0.0 < differences["bf16"]["rpn.head"] < 0.1  # bf16 rounding, a few percent
    assert differences["float32_other_samples"]["rpn.head"] > 0.0  # other anchors sampled
    assert len(result["per_batch"]) == 2
    per_batch = [b["losses"]["bf16"]["loss_cls"] - b["losses"]["reference"]["loss_cls"] for b in result["per_batch"]]
    assert result["losses"]["bf16"]["loss_cls"]["mean"] == pytest.approx(sum(per_batch) / 2)
    assert "| rpn.head | 0.0000 |" in format_report("init", result)
    assert out.with_suffix(".md").read_text() == format_report("init", result)


def test_script_refuses_a_single_batch(tmp_path):
    result = _run("amp_gradients.py", "configs/quickstart_shapes.py", "--weights", "init", "--batches", "1", "--json", tmp_path / "g.json")
    assert result.returncode == 2 and "--batches must be at least 2" in result.stderr
