"""Loading a checkpoint into a detector: whole for evaluation, fine-tuned onto other classes for training,
and one clear line when a checkpoint meets a config it does not fit."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect.categories import CategoryMap
from detect.checkpoint import CheckpointError, save_checkpoint
from detect.config import Config, apply_overrides, config_to_dict, load_config, save_config
from detect.models import build_model
from detect.models.build import require_backbone_weights
from detect.models.loading import CLASS_ROWS

OLD = {1: "circle", 2: "square", 3: "triangle"}
NEW = {5: "square", 9: "star", 11: "circle"}  # square and circle carried over by name, star new, triangle dropped
TINY = [
    "model.backbone.name=resnet18",
    "model.backbone.norm=bn",
    "model.backbone.freeze_at=0",
    "model.fpn.out_channels=32",
    "model.roi_heads.fc_dim=64",
]


def _cfg(*overrides: str) -> Config:
    cfg = Config()
    apply_overrides(cfg, [*TINY, *overrides])
    return cfg


def _save_run(folder: Path, cfg: Config, classes: dict[int, str], seed: int = 0) -> tuple[Path, dict]:
    """A run folder as training leaves it: model_final.pth carrying its config, and config.py beside it."""
    torch.manual_seed(seed)
    model = build_model(cfg, classes)
    with torch.no_grad():  # every predictor row distinct, so that a row in the wrong place shows
        for key in CLASS_ROWS:
            model.state_dict()[key].copy_(torch.randn_like(model.state_dict()[key]))
    cfg.model.classes = dict(classes)
    save_checkpoint(folder / "model_final.pth", {"model": model.state_dict(), "classes": classes,
                                                 "config": config_to_dict(cfg)})
    save_config(cfg, folder / "config.py")
    return folder / "model_final.pth", {k: v.clone() for k, v in model.state_dict().items()}


def test_same_names_pairs_predictor_indices_by_name():
    here = CategoryMap.from_dict(NEW)  # indices 1: square (id 5), 2: star (9), 3: circle (11)
    source = CategoryMap.from_dict(OLD)  # indices 1: circle, 2: square, 3: triangle
    assert here.same_names(source) == {0: 0, 1: 2, 3: 1}
    assert CategoryMap.from_dict({1: "a"}).same_names(CategoryMap.from_dict({1: "a", 2: "a"})) == {0: 0, 1: 1}


def test_fine_tuning_carries_rows_of_classes_with_the_same_name(tmp_path, capsys):
    weights, old = _save_run(tmp_path, _cfg(), OLD)
    torch.manual_seed(1)
    fresh = build_model(_cfg(), NEW).state_dict()  # what initialisation alone gives under the same seed
    torch.manual_seed(1)
    model = build_model(_cfg(f"model.weights={weights}"), NEW)
    state = model.state_dict()

    assert model.categories == CategoryMap.from_dict(NEW)
    score, deltas = state["roi_heads.predictor.cls_score.weight"], state["roi_heads.predictor.bbox_pred.weight"]
    old_score, old_deltas = old["roi_heads.predictor.cls_score.weight"], old["roi_heads.predictor.bbox_pred.weight"]
    assert score.shape == (4, 64) and deltas.shape == (16, 64)
    for here, there in {0: 0, 1: 2, 3: 1}.items():  # background, square, circle
        assert torch.equal(score[here], old_score[there])
        assert torch.equal(deltas[4 * here : 4 * here + 4], old_deltas[4 * there : 4 * there + 4])
        assert state["roi_heads.predictor.cls_score.bias"][here] == old["roi_heads.predictor.cls_score.bias"][there]
    for key in CLASS_ROWS:  # star, index 2, is new: its rows are the fresh model's
        rows = CLASS_ROWS[key]
        assert torch.equal(state[key][2 * rows : 3 * rows], fresh[key][2 * rows : 3 * rows])
        assert not torch.equal(state[key][2 * rows : 3 * rows], old[key][2 * rows : 3 * rows])
    for key in state:
        if key not in CLASS_ROWS:
            assert torch.equal(state[key], old[key]), key

    tensors = len([k for k in state if not k.endswith("num_batches_tracked")])
    assert capsys.readouterr().out.strip() == (
        f"model.weights={weights}: loaded {tensors} of {tensors} tensors (class scores and box deltas by class); "
        "classes carried over (2): square, circle; new (1): star; dropped (1): triangle"
    )


def test_fine_tuning_leaves_a_head_of_another_width_at_initialisation(tmp_path, capsys):
    weights, old = _save_run(tmp_path, _cfg(), OLD)
    torch.manual_seed(1)
    fresh = build_model(_cfg("model.roi_heads.fc_dim=48"), NEW).state_dict()
    torch.manual_seed(1)
    state = build_model(_cfg("model.roi_heads.fc_dim=48", f"model.weights={weights}"), NEW).state_dict()

    renewed = ["roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc6.bias", "roi_heads.box_head.fc7.weight",
               "roi_heads.box_head.fc7.bias", *CLASS_ROWS]
    for key in state:
        assert torch.equal(state[key], fresh[key] if key in renewed else old[key]), key
    tensors = len([k for k in state if not k.endswith("num_batches_tracked")])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"model.weights={weights}: loaded {tensors - 8} of {tensors} tensors")
    assert "carried over (0); new (3): square, star, circle; dropped (3): circle, square, triangle" in line
    assert line.endswith("left at initialisation (no tensor of that name and shape) (8): " + ", ".join(renewed))


def test_evaluation_takes_the_checkpoints_classes_and_every_tensor(tmp_path, capsys):
    weights, old = _save_run(tmp_path, _cfg(), OLD)
    model = build_model(_cfg(f"model.weights={weights}"))
    assert model.categories == CategoryMap.from_dict(OLD)
    assert all(torch.equal(v, old[k]) for k, v in model.state_dict().items())
    assert capsys.readouterr().out == ""  # nothing to report: all taken


def test_evaluation_with_other_classes_in_the_config_names_both_and_what_fits(tmp_path):
    weights, _ = _save_run(tmp_path, _cfg(), OLD)
    with pytest.raises(ValueError) as error:
        build_model(_cfg(f"model.weights={weights}", f"model.classes={NEW!r}"))
    assert str(error.value) == (
        f"class mismatch: model.weights={weights} has 3 classes (1: circle, 2: square, 3: triangle), model.classes "
        f"has 3 (5: square, 9: star, 11: circle); its run's config {tmp_path / 'config.py'} fits it; "
        "or set model.classes=None to take the checkpoint's"
    )


@pytest.mark.parametrize("fine_tune", [False, True], ids=["evaluate", "fine-tune"])
def test_a_deeper_backbone_names_its_first_extra_tensor(tmp_path, fine_tune):
    """R34 weights in an R18 config, as R101 in R50: the same layers, more blocks in each stage."""
    weights, _ = _save_run(tmp_path, _cfg("model.backbone.name=resnet34"), OLD)
    with pytest.raises(CheckpointError) as error:
        build_model(_cfg(f"model.weights={weights}"), NEW if fine_tune else None)
    # resnet34 has 3, 4, 6, 3 basic blocks per stage, resnet18 2: 8 extra blocks of 10 tensors
    # (conv1, bn1's weight, bias, mean, var, conv2, bn2's four): 80, the first named and 79 more.
    assert str(error.value) == (
        f"{weights} does not fit the config's model: backbone.body.layer1.2.conv1.weight [64, 64, 3, 3] is in the "
        f"checkpoint, not in the model (and 79 more tensors); it was trained with "
        f"model.backbone.name=resnet34; its run's config {tmp_path / 'config.py'} fits it"
    )


def test_a_backbone_of_other_shapes_names_the_tensor_and_both_shapes(tmp_path):
    weights, _ = _save_run(tmp_path, _cfg(), OLD)
    with pytest.raises(CheckpointError, match=(
        r"does not fit the config's model: backbone.body.layer1.0.conv1.weight is \[64, 64, 3, 3\] in the "
        r"checkpoint, \[64, 64, 1, 1\] in the model \(and \d+ more tensors\); it was trained with "
        r"model.backbone.name=resnet18; its run's config .*config.py fits it$"
    )):
        build_model(_cfg("model.backbone.name=resnet50", f"model.weights={weights}"), NEW)


def test_batch_norm_and_frozen_batch_norm_checkpoints_load_each_other(tmp_path):
    """num_batches_tracked is BatchNorm's alone: a bn run fine-tunes with frozen BN and back."""
    weights, old = _save_run(tmp_path, _cfg(), OLD)
    state = build_model(_cfg("model.backbone.norm=frozen_bn", f"model.weights={weights}"), OLD).state_dict()
    assert all(torch.equal(v, old[k]) for k, v in state.items())
    frozen = tmp_path / "frozen"
    weights, old = _save_run(frozen, _cfg("model.backbone.norm=frozen_bn"), OLD)
    state = build_model(_cfg(f"model.weights={weights}")).state_dict()
    assert all(torch.equal(v, old[k]) for k, v in state.items() if k in old)


def test_frozen_bn_training_needs_its_imagenet_file(tmp_path):
    missing = tmp_path / "weights" / "resnet50-0676ba61.pth"
    cfg = Config()
    cfg.model.backbone.weights = str(missing)
    with pytest.raises(FileNotFoundError) as error:
        require_backbone_weights(cfg.model)
    assert str(error.value) == (
        f"model.backbone.weights={missing} is not a file, and model.backbone.norm=frozen_bn needs ImageNet weights: "
        f"download https://download.pytorch.org/models/resnet50-0676ba61.pth into {missing.parent}/, or train from "
        "scratch with model.backbone.weights=None model.backbone.norm=bn (or gn)"
    )
    cfg.model.backbone.weights = None
    cfg.model.backbone.name = "resnet101"
    with pytest.raises(FileNotFoundError, match=(
        r"^model.backbone.weights is not set, and model.backbone.norm=frozen_bn needs ImageNet weights: download "
        r"https://download.pytorch.org/models/resnet101-63fe2227.pth and set model.backbone.weights to its path, or "
    )):
        require_backbone_weights(cfg.model)


@pytest.mark.parametrize("config, file_name", [
    ("frcnn_r50_fpn_coco.py", "resnet50-0676ba61.pth"),
    ("frcnn_r50_fpn_coco_3x.py", "resnet50-0676ba61.pth"),
    ("frcnn_r101_fpn_coco.py", "resnet101-63fe2227.pth"),
    ("frcnn_r101_fpn_coco_3x.py", "resnet101-63fe2227.pth"),
])
def test_pretrained_configs_name_their_imagenet_file_and_training_without_it_is_one_line(
    config, file_name, tmp_path, monkeypatch, capsys
):
    assert load_config(REPO / "configs" / config).model.backbone.weights == f"weights/{file_name}"
    monkeypatch.chdir(tmp_path)  # no weights/ folder here, whatever the checkout holds
    code, err = _run_tool("train", [str(REPO / "configs" / config), f"output_dir={tmp_path / 'out'}"], monkeypatch, capsys)
    assert code == 2
    assert err == (
        f"error: model.backbone.weights=weights/{file_name} is not a file, and model.backbone.norm=frozen_bn needs "
        f"ImageNet weights: download https://download.pytorch.org/models/{file_name} into weights/, or train from "
        "scratch with model.backbone.weights=None model.backbone.norm=bn (or gn)\n"
    )


def test_weights_are_needed_only_where_training_starts_from_imagenet(tmp_path):
    cfg = Config()
    cfg.model.backbone.weights = str(tmp_path / "absent.pth")
    cfg.model.weights = str(tmp_path / "detector.pth")  # the detector checkpoint brings the backbone
    require_backbone_weights(cfg.model)
    for norm in ("bn", "gn"):
        cfg = Config()
        cfg.model.backbone.norm = norm
        require_backbone_weights(cfg.model)
    cfg = Config()
    cfg.model.backbone.name = "vgg16"
    require_backbone_weights(cfg.model)
    present = tmp_path / "present.pth"
    present.write_bytes(b"")
    cfg = Config()
    cfg.model.backbone.weights = str(present)
    require_backbone_weights(cfg.model)


REPO = Path(__file__).parent.parent
SHAPES = {i + 1: name for i, name in enumerate(("circle", "square", "triangle", "star", "cross", "ring", "hexagon"))}


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_tool(name: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stderr) of tools/<name>.py called as from a shell."""
    monkeypatch.setattr(sys, "argv", [f"tools/{name}.py", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _tool(name).main()
    return exit_.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    """A quick-start run folder: its config.py and a model_final.pth that carries the config."""
    run = tmp_path_factory.mktemp("quickstart")
    weights, _ = _save_run(run, load_config(REPO / "configs" / "quickstart_shapes.py"), SHAPES)
    return weights


@pytest.mark.parametrize("tool", ["predict", "test", "train"])
def test_a_checkpoint_of_another_architecture_is_one_line_naming_the_config_that_fits(
    tool, quickstart_run, tmp_path, monkeypatch, capsys
):
    """The new user's mistake: the R50-FPN COCO config with the quick start's ResNet-18 checkpoint."""
    ann_file = _coco_json(tmp_path)
    args = {
        "predict": ["--input", str(tmp_path), "--output-dir", str(tmp_path / "out")],
        "test": ["--output-dir", str(tmp_path / "out")],
        "train": [f"data.train.root={tmp_path}", f"data.train.ann_file={ann_file}", f"data.val.root={tmp_path}",
                  f"data.val.ann_file={ann_file}", f"output_dir={tmp_path / 'out'}", "data.num_workers=0"],
    }[tool]
    code, err = _run_tool(tool, [str(REPO / "configs" / "frcnn_r50_fpn_coco.py"), "--weights", str(quickstart_run),
                                 *args], monkeypatch, capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert re.fullmatch(
        f"error: {re.escape(str(quickstart_run))} does not fit the config's model: "
        r"backbone\.body\.layer1\.0\.conv1\.weight is \[64, 64, 3, 3\] in the checkpoint, \[64, 64, 1, 1\] in the "
        r"model \(and \d+ more tensors\); it was trained with model\.backbone\.name=resnet18 model\.backbone\.norm=bn "
        r"model\.backbone\.freeze_at=0 model\.fpn\.out_channels=64 \(and \d+ more model settings\); "
        f"its run's config {re.escape(str(quickstart_run.parent / 'config.py'))} fits it\n",
        err,
    ), err


def test_a_checkpoint_of_other_classes_is_one_line_where_the_config_fixes_the_classes(
    quickstart_run, tmp_path, monkeypatch, capsys
):
    code, err = _run_tool("test", [str(quickstart_run.parent / "config.py"), "--weights", str(quickstart_run),
                                   f"output_dir={tmp_path}", "model.classes={1: 'cat', 2: 'dog'}"], monkeypatch, capsys)
    assert code == 2
    assert err == (
        f"error: class mismatch: model.weights={quickstart_run} has 7 classes (1: circle, 2: square, 3: triangle, "
        "4: star, 5: cross, 6: ring, ...), model.classes has 2 (1: cat, 2: dog); its run's config "
        f"{quickstart_run.parent / 'config.py'} fits it; or set model.classes=None to take the checkpoint's\n"
    )


def _coco_json(folder: Path) -> Path:
    """One image with one box: enough for training to reach the model's construction."""
    cv2.imwrite(str(folder / "a.jpg"), np.full((64, 64, 3), 128, np.uint8))
    path = folder / "train.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [8, 8, 20, 20], "area": 400, "iscrowd": 0}],
        "categories": [{"id": 3, "name": "circle"}],
    }))
    return path
