"""detect.engine.trainer: resuming, the log, non-finite losses and the checkpoints a run leaves.

Runs are a few iterations of a ResNet-18 FPN on 128-160 px images, on one CPU thread:
under a shared, busy CPU one thread is several times faster than two.
"""

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch

from detect.checkpoint import load_checkpoint
from detect.config import config_from_dict, load_config
from detect.data.build import build_dataset
from detect.data.loader import build_train_loader
from detect.engine.optim import lr_factor
from detect.engine.trainer import train
from detect.models import build_model
from detect.models.faster_rcnn import FasterRCNN

from training_runs import COCO8, COCO8_DATA, CONFIG, TINY

LOG_KEYS = {
    "iteration", "lr", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "total_loss", "time", "data_time", "memory_mb",
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _shapes_cfg(shapes: Path, output_dir: Path, *extra: str):
    data = [
        f"data.train.root={shapes}/train/images",
        f"data.train.ann_file={shapes}/annotations/train.json",
        f"data.val.root={shapes}/val/images",
        f"data.val.ann_file={shapes}/annotations/val.json",
    ]
    return load_config(CONFIG, [*TINY, *data, f"output_dir={output_dir}", *extra])


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _interrupt_at_training_call(monkeypatch, call: int) -> None:
    """Makes the ``call``-th training forward raise KeyboardInterrupt, as a Ctrl-C would."""
    forward = FasterRCNN.forward
    calls = []

    def interrupted(self, *args, **kwargs):
        if self.training:
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(FasterRCNN, "forward", interrupted)


@pytest.fixture(scope="module")
def runs(shapes, tmp_path_factory) -> dict:
    """A 6-iteration run straight through, and the same run stopped in iteration 5 and resumed.

    The stop comes after iteration 4 is logged and one iteration after the
    iteration-3 checkpoint, so the resumed run must redo iteration 4. Two loader
    workers and every augmentation (scale, flip, colour) are on: their random
    draws must continue across the restart too.
    """
    root = tmp_path_factory.mktemp("runs")
    augmented = ["data.num_workers=2", "data.train_min_sizes=[112,128,144]", "data.hflip_prob=0.5", "data.color_jitter=True"]
    settings = ["train.max_iter=6", "train.checkpoint_period=3", *augmented]
    train(_shapes_cfg(shapes, root / "straight", *settings))

    resumed = root / "resumed"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _interrupt_at_training_call(monkeypatch, 5)
        with pytest.raises(KeyboardInterrupt):
            train(_shapes_cfg(shapes, resumed, *settings))
    interrupted_files = sorted(p.name for p in resumed.iterdir())
    interrupted_log = _log(resumed)
    train(_shapes_cfg(shapes, resumed, *settings), resume=True)
    return {
        "straight": root / "straight",
        "resumed": resumed,
        "interrupted_files": interrupted_files,
        "interrupted_log": interrupted_log,
        "cfg": _shapes_cfg(shapes, root / "unused", *settings),
        "shapes": shapes,
    }


def test_interruption_leaves_the_iteration_3_checkpoint(runs):
    assert runs["interrupted_files"] == ["config.py", "last_checkpoint", "log.jsonl", "model_0000003.pth"]
    assert (runs["resumed"] / "last_checkpoint").read_text() == "model_final.pth"
    assert [r["iteration"] for r in runs["interrupted_log"]] == [1, 2, 3, 4]


def test_resumed_run_continues_from_iteration_3(runs):
    # The interruption came after iteration 4 was logged; the resumed run logs 4 again, from the checkpoint at 3.
    assert [r["iteration"] for r in runs["interrupted_log"]] == [1, 2, 3, 4]
    assert [r["iteration"] for r in _log(runs["resumed"])] == [1, 2, 3, 4, 5, 6]


def test_resumed_run_repeats_the_straight_run(runs):
    """Same lr, losses and final weights: model, optimizer, schedule, RNG, data order and augmentation all continue.

    The resumed run is bit-identical on one thread; the tolerance only allows
    for a BLAS that sums in another order.
    """
    straight = {r["iteration"]: r for r in _log(runs["straight"])}
    resumed = {r["iteration"]: r for r in _log(runs["resumed"])}  # the later record of an iteration wins
    assert sorted(straight) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for iteration in straight:
        assert resumed[iteration]["lr"] == straight[iteration]["lr"], iteration
        for key in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"):
            assert resumed[iteration][key] == pytest.approx(straight[iteration][key], rel=1e-5), (iteration, key)

    a = load_checkpoint(runs["straight"] / "model_final.pth")
    b = load_checkpoint(runs["resumed"] / "model_final.pth")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        torch.testing.assert_close(b["model"][name], a["model"][name], rtol=0, atol=1e-6, msg=name)
    # The optimizer's per-parameter state (moments, step counts) continues too.
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys()
        for key in state_a[index]:
            torch.testing.assert_close(state_b[index][key], state_a[index][key], rtol=0, atol=1e-6, msg=key)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert a["iteration"] == b["iteration"] == 6


def test_resumed_log_has_each_iteration_once(runs):
    assert [r["iteration"] for r in _log(runs["resumed"])] == [1, 2, 3, 4, 5, 6]


def test_log_records(runs):
    records = _log(runs["straight"])
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5, 6]  # log_period=1
    for r in records:
        assert set(r) == LOG_KEYS
        assert all(isinstance(v, (int, float)) for v in r.values())
        assert r["total_loss"] == pytest.approx(r["loss_rpn_cls"] + r["loss_rpn_box"] + r["loss_cls"] + r["loss_box"])
        assert r["time"] >= r["data_time"] >= 0 and r["memory_mb"] > 0


def test_logged_lr_is_the_lr_the_iteration_used(runs):
    cfg = runs["cfg"].train
    records = _log(runs["straight"])
    # Iteration k (1-based) makes update k - 1 of the schedule.
    assert [r["lr"] for r in records] == [pytest.approx(cfg.base_lr * lr_factor(cfg, k - 1)) for k in range(1, 7)]


def test_non_finite_loss_names_the_iteration_the_losses_and_the_images(shapes, tmp_path, monkeypatch):
    forward = FasterRCNN.forward
    calls = []

    def nan_at_second_call(self, *args, **kwargs):
        losses = forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) == 2:
                losses["loss_box"] = losses["loss_box"] * float("nan")
        return losses

    monkeypatch.setattr(FasterRCNN, "forward", nan_at_second_call)
    cfg = _shapes_cfg(shapes, tmp_path, "train.max_iter=3", "train.checkpoint_period=0")
    with pytest.raises(FloatingPointError) as info:
        train(cfg)
    message = str(info.value)
    assert "iteration 2" in message
    assert "'loss_box': nan" in message
    for key in ("loss_rpn_cls", "loss_rpn_box", "loss_cls"):
        assert f"'{key}': " in message
    # The second batch of the run's data order (the loader's own tests pin that order down).
    dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
    loader = build_train_loader(dataset, 2, 0, cfg.data.aspect_ratio_grouping, cfg.train.seed)
    _, targets = list(itertools.islice(loader, 2))[1]
    file_names = {dataset.image_info(i)["image_id"]: dataset.image_info(i)["file_name"] for i in range(len(dataset))}
    for target in targets:
        assert f"{target['image_id']} ({file_names[target['image_id']]})" in message
    assert not (tmp_path / "model_final.pth").exists()


def test_unknown_lr_schedule_fails_before_training(shapes, tmp_path):
    with pytest.raises(ValueError, match="train.lr_schedule = 'linear' is not one of 'step', 'cosine'"):
        train(_shapes_cfg(shapes, tmp_path, "train.max_iter=3", "train.lr_schedule=linear"))
    assert not (tmp_path / "log.jsonl").exists()
    assert not list(tmp_path.glob("*.pth"))


@pytest.fixture(scope="module")
def coco8_run(tmp_path_factory) -> Path:
    """Two iterations on coco8 (COCO's non-contiguous category ids), a checkpoint after each."""
    run = tmp_path_factory.mktemp("coco8_run")
    train(load_config(CONFIG, [*TINY, *COCO8_DATA, "train.max_iter=2", "train.checkpoint_period=1", f"output_dir={run}"]))
    return run


def _coco8_classes() -> dict[int, str]:
    ann = json.loads((COCO8 / "annotations.json").read_text())
    return {c["id"]: c["name"] for c in ann["categories"]}


def test_every_checkpoint_carries_classes_config_and_iteration(coco8_run):
    classes = _coco8_classes()
    assert max(classes) == 90 and len(classes) == 80  # ids with gaps
    checkpoints = sorted(coco8_run.glob("*.pth"))
    assert [p.name for p in checkpoints] == ["model_0000001.pth", "model_final.pth"]
    for path, iteration in zip(checkpoints, [1, 2]):
        checkpoint = load_checkpoint(path)
        assert checkpoint["classes"] == classes, path.name
        assert checkpoint["iteration"] == iteration
        cfg = config_from_dict(checkpoint["config"])
        assert cfg.model.classes == classes
        assert cfg.train.max_iter == 2 and cfg.model.backbone.name == "resnet18"
    assert (coco8_run / "last_checkpoint").read_text() == "model_final.pth"


def test_model_final_alone_rebuilds_the_trained_model(coco8_run, tmp_path, coco8):
    # Only the run's config.py and model_final.pth: no dataset is needed to know the classes.
    shutil.copy(coco8_run / "config.py", tmp_path / "config.py")
    shutil.copy(coco8_run / "model_final.pth", tmp_path / "model_final.pth")
    overrides = [f"model.weights={tmp_path}/model_final.pth", "model.roi_heads.score_thresh=0.0"]
    cfg = load_config(tmp_path / "config.py", overrides)
    model = build_model(cfg).eval()

    trained = load_checkpoint(tmp_path / "model_final.pth")["model"]
    state = model.state_dict()
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[k], trained[k]) for k in state)
    assert model.categories.to_dict() == _coco8_classes()
    with torch.inference_mode():
        (detections,) = model([coco8["images"][0]])
    assert len(detections["labels"]) > 0
    assert set(detections["labels"].tolist()) <= set(_coco8_classes())


def test_a_log_record_averages_the_iterations_since_the_last(runs, tmp_path):
    """log_period=3 logs the mean of the losses that log_period=1 logs one by one; without loader
    workers, as the augmentation does not depend on them."""
    settings = ["train.max_iter=6", "train.checkpoint_period=0", "train.log_period=3",
                "data.train_min_sizes=[112,128,144]", "data.hflip_prob=0.5", "data.color_jitter=True"]
    train(_shapes_cfg(runs["shapes"], tmp_path, *settings))
    every = {r["iteration"]: r for r in _log(runs["straight"])}
    records = _log(tmp_path)
    assert [r["iteration"] for r in records] == [3, 6]
    for record in records:
        window = [every[i] for i in range(record["iteration"] - 2, record["iteration"] + 1)]
        assert record["lr"] == window[-1]["lr"]
        for key in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "total_loss"):
            assert record[key] == pytest.approx(sum(r[key] for r in window) / 3, rel=1e-6), (record["iteration"], key)
