"""detect.engine.distributed: BatchNorm under DDP and the command that resumes a run."""

import shlex
import sys

import pytest
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detect.engine.distributed import batchnorm_for_ddp, resume_command


def _net(norm: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3), norm, nn.ReLU(), nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)))


def test_batchnorm_becomes_syncbatchnorm_on_cuda_keeping_its_parameters():
    net = _net(nn.BatchNorm2d(8))
    weight, running_mean = net[1].weight, net[1].running_mean
    converted, sync_buffers = batchnorm_for_ddp(net, "cuda")
    assert converted is net and not sync_buffers
    assert [type(m) for m in converted.modules() if "Norm" in type(m).__name__] == [nn.SyncBatchNorm] * 2
    assert converted[1].weight is weight and converted[1].running_mean is running_mean  # the optimizer still holds them


def test_batchnorm_on_the_cpu_stays_and_needs_its_statistics_broadcast():
    converted, sync_buffers = batchnorm_for_ddp(_net(nn.BatchNorm2d(8)), "cpu")
    assert sync_buffers
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_constant_buffers_are_not_broadcast_every_step(device_type):
    for norm in (FrozenBatchNorm2d(8), nn.GroupNorm(4, 8)):
        net = nn.Sequential(nn.Conv2d(3, 8, 3), norm)
        converted, sync_buffers = batchnorm_for_ddp(net, device_type)
        assert not sync_buffers and type(converted[1]) is type(norm)
    untracked = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, track_running_stats=False))
    assert not batchnorm_for_ddp(untracked, "cpu")[1]


def test_resume_command_of_a_single_process(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    argv = ["tools/train.py", "configs/a b.py", "--output-dir", "out", "train.max_iter=30"]
    assert resume_command(argv) == shlex.join([sys.executable, *argv, "--resume"])
    assert resume_command([*argv, "--resume"]) == shlex.join([sys.executable, *argv, "--resume"])


def test_resume_command_under_torchrun(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    argv = ["tools/train.py", "configs/x.py"]
    assert resume_command(argv) == "torchrun --nproc_per_node 8 tools/train.py configs/x.py --resume"
    monkeypatch.setenv("GROUP_WORLD_SIZE", "4")
    assert resume_command(argv) == (
        "torchrun --nproc_per_node 8 --nnodes 4 <rendezvous options> tools/train.py configs/x.py --resume (on every node)"
    )
