"""detect.engine.optim: hand-worked learning-rate factors and the weight-decay groups."""

import math

import pytest
import torch
from torch import nn

from detect.config import Config, TrainConfig
from detect.engine.optim import build_lr_scheduler, build_optimizer, lr_factor
from detect.models import build_model

# Distinct decays, so that each param group is recognised by its weight_decay.
DECAY = {"weight": 3e-4, "bias": 2e-4, "norm": 1e-5}


def _train_cfg(**kwargs) -> TrainConfig:
    decays = {"weight_decay": DECAY["weight"], "weight_decay_bias": DECAY["bias"], "weight_decay_norm": DECAY["norm"]}
    return TrainConfig(**decays, **kwargs)


@pytest.mark.parametrize(
    "iteration, expected",
    [
        (0, 0.001),  # warm-up starts at warmup_factor
        (5, 0.001 * 0.5 + 0.5),  # halfway: alpha = 5 / 10
        (9, 0.001 * 0.1 + 0.9),
        (10, 1.0),  # warm-up over
        (29, 1.0),
        (30, 0.1),  # first step: times gamma
        (59, 0.1),
        (60, 0.01),  # second step: times gamma again
        (99, 0.01),
    ],
)
def test_step_schedule_with_warmup(iteration, expected):
    cfg = TrainConfig(max_iter=100, lr_schedule="step", steps=[30, 60], gamma=0.1, warmup_iters=10, warmup_factor=0.001)
    assert lr_factor(cfg, iteration) == pytest.approx(expected, rel=1e-12)


def test_step_inside_warmup_multiplies_the_ramp():
    cfg = TrainConfig(max_iter=100, lr_schedule="step", steps=[5], gamma=0.5, warmup_iters=10, warmup_factor=0.1)
    assert lr_factor(cfg, 4) == pytest.approx(0.1 * 0.6 + 0.4)  # before the step: the ramp alone
    assert lr_factor(cfg, 5) == pytest.approx(0.5 * (0.1 * 0.5 + 0.5))


@pytest.mark.parametrize(
    "iteration, expected",
    [
        (0, 1.0),
        (25, 0.5 * (1 + math.sqrt(0.5))),  # cos(pi / 4)
        (50, 0.5),
        (75, 0.5 * (1 - math.sqrt(0.5))),
        (100, 0.0),
        (120, 0.0),  # past max_iter it stays at zero
    ],
)
def test_cosine_schedule(iteration, expected):
    cfg = TrainConfig(max_iter=100, lr_schedule="cosine", warmup_iters=0)
    assert lr_factor(cfg, iteration) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_schedule_with_warmup():
    cfg = TrainConfig(max_iter=100, lr_schedule="cosine", warmup_iters=10, warmup_factor=0.001)
    assert lr_factor(cfg, 0) == pytest.approx(0.001)
    assert lr_factor(cfg, 5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.05)) * (0.001 * 0.5 + 0.5))
    assert lr_factor(cfg, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_scheduler_sets_base_lr_times_factor_at_every_iteration(schedule):
    cfg = TrainConfig(max_iter=40, base_lr=0.02, lr_schedule=schedule, steps=[20, 30], warmup_iters=8)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=cfg.base_lr)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for iteration in range(cfg.max_iter + 1):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * lr_factor(cfg, iteration), rel=1e-12, abs=1e-15)
        optimizer.step()
        scheduler.step()


def test_unknown_schedule_fails_when_the_scheduler_is_built():
    cfg = TrainConfig(lr_schedule="linear")
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"unknown train.lr_schedule 'linear'.*'step', 'cosine'"):
        build_lr_scheduler(cfg, optimizer)


def _groups_by_kind(optimizer: torch.optim.Optimizer) -> dict[str, list[nn.Parameter]]:
    by_decay = {decay: kind for kind, decay in DECAY.items()}
    groups = {kind: [] for kind in DECAY}
    for group in optimizer.param_groups:
        groups[by_decay[group["weight_decay"]]].extend(group["params"])
    return groups


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_hand_built_module_groups():
    conv = nn.Conv2d(3, 4, 3)
    bn = nn.BatchNorm2d(4)
    gn = nn.GroupNorm(2, 4)
    conv_no_bias = nn.Conv2d(4, 4, 1, bias=False)
    ln = nn.LayerNorm(4)
    frozen = nn.Linear(4, 4).requires_grad_(False)
    head = nn.Linear(4, 4)
    tied = nn.Linear(4, 4)
    tied.weight = head.weight  # shared: must be optimised once
    model = nn.Sequential(conv, bn, gn, conv_no_bias, ln, frozen, head, tied)

    optimizer = build_optimizer(_train_cfg(base_lr=0.5, momentum=0.8), model)
    groups = _groups_by_kind(optimizer)

    assert _ids(groups["norm"]) == _ids([bn.weight, bn.bias, gn.weight, gn.bias, ln.weight, ln.bias])
    assert _ids(groups["bias"]) == _ids([conv.bias, head.bias, tied.bias])
    assert _ids(groups["weight"]) == _ids([conv.weight, conv_no_bias.weight, head.weight])
    every = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(every) == len(_ids(every)) == 12  # no parameter twice, the tied weight included
    assert not _ids(every) & _ids(frozen.parameters())
    assert all(g["lr"] == 0.5 and g["momentum"] == 0.8 for g in optimizer.param_groups)


def _tiny_model(norm: str, freeze_at: int) -> nn.Module:
    cfg = Config()
    cfg.model.backbone.name = "resnet18"
    cfg.model.backbone.norm = norm
    cfg.model.backbone.freeze_at = freeze_at
    cfg.model.fpn.out_channels = 64
    cfg.model.roi_heads.fc_dim = 128
    return build_model(cfg, {1: "a", 5: "b"})


@pytest.mark.parametrize("norm, freeze_at", [("bn", 2), ("gn", 0), ("frozen_bn", 2)])
def test_model_groups_match_a_count_by_module_type(norm, freeze_at):
    model = _tiny_model(norm, freeze_at)
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    expected = {"norm": [], "bias": [], "weight": []}
    frozen = []
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, norm_types):
            params = {"norm": [module.weight, module.bias]}
        else:
            assert isinstance(module, (nn.Conv2d, nn.Linear)), f"unexpected module with parameters: {type(module)}"
            params = {"weight": [module.weight], "bias": [module.bias] if module.bias is not None else []}
        assert _ids(own) == _ids(p for ps in params.values() for p in ps)
        for kind, ps in params.items():
            expected[kind].extend(p for p in ps if p.requires_grad)
            frozen.extend(p for p in ps if not p.requires_grad)

    groups = _groups_by_kind(build_optimizer(_train_cfg(), model))

    for kind in expected:
        assert _ids(groups[kind]) == _ids(expected[kind]), kind
        assert len(groups[kind]) == len(expected[kind]), kind
    assert (len(expected["norm"]) > 0) == (norm != "frozen_bn")  # FrozenBatchNorm2d has buffers only
    assert (len(frozen) > 0) == (freeze_at > 0)
    in_groups = _ids(p for ps in groups.values() for p in ps)
    assert not in_groups & _ids(frozen)
    assert in_groups == _ids(p for p in model.parameters() if p.requires_grad)
