"""detect.config: config files that import each other, overrides, and round trips."""

from pathlib import Path

import pytest

from detect.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)


@pytest.fixture
def config_package(tmp_path: Path) -> Path:
    """``userconfigs/``: a base config and a child that imports and changes it, like the repo's ``configs/``."""
    package = tmp_path / "userconfigs"
    (package / "common").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "common" / "__init__.py").write_text("")
    (package / "common" / "base.py").write_text(
        "from detect.config import Config\n"
        "cfg = Config()\n"
        "cfg.train.max_iter = 10\n"
        "cfg.model.anchors.sizes = [[16.0], [32.0], [64.0], [128.0], [256.0]]\n"
    )
    (package / "child.py").write_text(
        "from userconfigs.common.base import cfg\n"
        "cfg.model.backbone.name = 'resnet101'\n"
        "cfg.train.base_lr = 0.01\n"
    )
    return package


def test_config_file_inherits_by_import(config_package):
    cfg = load_config(config_package / "child.py")
    assert cfg.model.backbone.name == "resnet101"  # set by the child
    assert cfg.train.base_lr == 0.01
    assert cfg.train.max_iter == 10  # inherited from the base
    assert cfg.model.anchors.sizes == [[16.0], [32.0], [64.0], [128.0], [256.0]]
    assert cfg.train.batch_size == Config().train.batch_size  # untouched default


def test_child_assignments_do_not_leak_into_the_base(config_package):
    load_config(config_package / "child.py")
    base = load_config(config_package / "common" / "base.py")
    assert base.model.backbone.name == "resnet50"
    assert base.train.base_lr == Config().train.base_lr


def test_loading_twice_gives_independent_trees(config_package):
    first = load_config(config_package / "child.py")
    second = load_config(config_package / "child.py")
    assert first == second and first is not second
    first.train.max_iter = 5
    first.model.anchors.sizes[0].append(24.0)
    assert second.train.max_iter == 10
    assert second.model.anchors.sizes[0] == [16.0]


def test_overrides_parse_literals_and_bare_strings(config_package):
    cfg = load_config(
        config_package / "child.py",
        [
            "train.max_iter=100",  # int
            "train.base_lr=0.005",  # float
            "train.gamma=1",  # an int where a float is expected becomes a float
            "model.anchors.sizes=[[8], [16], [32], [64], [128]]",  # nested list, items to float
            "data.train_min_sizes=[640, 672]",
            "model.weights=run/model_final.pth",  # a path needs no quotes
            "output_dir=output/my run",
            "data.train.root='quoted/also/works'",
            "model.classes={1: 'a', 7: 'b'}",
            "train.steps=[]",
        ],
    )
    assert cfg.train.max_iter == 100 and type(cfg.train.max_iter) is int
    assert cfg.train.base_lr == 0.005
    assert cfg.train.gamma == 1.0 and type(cfg.train.gamma) is float
    assert cfg.model.anchors.sizes == [[8.0], [16.0], [32.0], [64.0], [128.0]]
    assert all(type(s[0]) is float for s in cfg.model.anchors.sizes)
    assert cfg.data.train_min_sizes == [640, 672]
    assert cfg.model.weights == "run/model_final.pth"
    assert cfg.output_dir == "output/my run"
    assert cfg.data.train.root == "quoted/also/works"
    assert cfg.model.classes == {1: "a", 7: "b"}
    assert cfg.train.steps == []


def test_override_to_none():
    cfg = Config()
    apply_overrides(cfg, ["model.weights=x.pth", "model.classes={3: 'cat'}"])
    apply_overrides(cfg, ["model.weights=None", "model.classes=None"])
    assert cfg.model.weights is None and cfg.model.classes is None


def test_unknown_key_names_it_and_the_nearest_valid_keys():
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), ["model.rpn.nms_tresh=0.5"])
    message = str(info.value)
    assert "'model.rpn.nms_tresh'" in message
    assert "model.rpn.nms_thresh" in message.split("nearest valid keys:")[1]


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="model.backbone.name"):
        apply_overrides(Config(), ["model.backbone.nam.x=1"])
    with pytest.raises(ConfigError, match="is a section"):
        apply_overrides(Config(), ["model.rpn=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_iter=abc", "train.max_iter expects int, got 'abc'"),
        ("train.max_iter=1.5", "train.max_iter expects int, got 1.5"),
        ("train.max_iter=True", "train.max_iter expects int, got True"),
        ("train.base_lr=fast", "train.base_lr expects float"),
        ("model.anchors.sizes=[1, 2]", r"model.anchors.sizes\[0\] expects a list"),
        ("data.train_min_sizes=800", "data.train_min_sizes expects a list"),
        ("model.fpn.enabled=1", "model.fpn.enabled expects bool"),
        ("model.classes=[1, 2]", "model.classes expects a dict"),
    ],
)
def test_wrong_type_is_an_error(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Config(), ["train.max_iter"])


def test_missing_file_and_file_without_cfg(tmp_path):
    with pytest.raises(ConfigError, match="not found.*nothere.py"):
        load_config(tmp_path / "nothere.py")
    bad = tmp_path / "bad.py"
    bad.write_text("cfg = {'model': 1}\n")
    with pytest.raises(ConfigError, match="bad.py.*found dict"):
        load_config(bad)


def _changed_config() -> Config:
    cfg = Config()
    apply_overrides(
        cfg,
        [
            "model.backbone.name=resnet101",
            "model.weights=run/model_final.pth",
            "model.classes={1: 'person', 7: 'train', 90: 'toothbrush'}",
            "model.anchors.sizes=[[16], [32], [64], [128], [256]]",
            "model.roi_heads.smooth_l1_beta=0.0",
            "data.train.sets=['2007/trainval', '2012/trainval']",
            "train.steps=[100, 200]",
            "train.base_lr=0.0123456789",
            "output_dir=out dir/with 'quotes'",
        ],
    )
    return cfg


def test_dump_config_round_trip(tmp_path):
    cfg = _changed_config()
    path = tmp_path / "resolved.py"
    path.write_text(dump_config(cfg))
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.model.classes == {1: "person", 7: "train", 90: "toothbrush"}
    assert loaded.model.roi_heads.smooth_l1_beta == 0.0
    assert loaded != Config()  # the round trip carries the changes, not just defaults


def test_dict_round_trip():
    cfg = _changed_config()
    data = config_to_dict(cfg)
    assert data["model"]["rpn"]["nms_thresh"] == 0.7
    rebuilt = config_from_dict(data)
    assert rebuilt == cfg and rebuilt is not cfg


@pytest.mark.parametrize("text", ["3.10", "1e-3", "0x10"])
def test_number_like_text_for_a_string_key_is_kept_as_typed(text):
    cfg = Config()
    apply_overrides(cfg, [f"output_dir={text}"])
    assert cfg.output_dir == text


def test_allowed_values_are_the_builders_tables():
    """The allowed values checked at load are exactly what the builders that read each key accept."""
    from detect.config import BACKBONE_NAMES, CHOICES, DATASET_TYPES, NORMS
    from detect.data.build import BUILDERS
    from detect.models.backbones import RESNETS, norm_layer

    assert set(BACKBONE_NAMES) == set(RESNETS) | {"vgg16"}
    assert tuple(BUILDERS) == DATASET_TYPES
    for norm in NORMS:
        assert callable(norm_layer(norm))
    with pytest.raises(ValueError, match="unknown norm"):
        norm_layer("syncbn")
    defaults = Config()
    for key, allowed in CHOICES.items():  # every default is allowed, and every key exists
        node = defaults
        for part in key.split("."):
            node = getattr(node, part)
        assert node in allowed, key
