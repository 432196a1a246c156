"""tools/visualize.py (data, errors) and tools/readme_images.py on a real (tiny) training run."""

import json
from pathlib import Path

import cv2
import pytest
from test_plot import REPO, load_tool, png_size, train_tiny_run

from detect.config import load_config
from detect.data.build import build_dataset
from detect.gallery import MAX_CELL, rank_errors

CONFIG = str(REPO / "configs" / "quickstart_shapes.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def data_overrides(tiny_run) -> list[str]:
    """The run's data paths, as overrides of the quick-start config."""
    cfg = load_config(tiny_run / "config.py")
    return [
        f"data.{split}.{key}={getattr(getattr(cfg.data, split), key)}"
        for split in ("train", "val")
        for key in ("root", "ann_file")
    ] + ["data.train_min_sizes=[128]", "data.train_max_size=160"]


def image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("augmented", [False, True])
def test_data_draws_the_split_and_a_grid(tiny_run, data_overrides, tmp_path, augmented):
    extra = ["--augmented"] if augmented else []
    load_tool("visualize").main(["data", CONFIG, "--num", "3", *extra, "--output-dir", str(tmp_path), *data_overrides])
    cfg = load_config(CONFIG, data_overrides)
    dataset = build_dataset(cfg.data.train, cfg.data, is_train=False)
    drawn = sorted(p.name for p in tmp_path.glob("0*"))
    assert drawn == [f"{i:03d}_{Path(dataset.image_info(i)['file_name']).name}" for i in range(3)]
    for i, name in enumerate(drawn):
        info = dataset.image_info(i)
        width, height = image_size(tmp_path / name)
        if augmented:  # resized so the shorter side is 128 (or the longer 160)
            assert min(width, height) == 128 or max(width, height) == 160
        else:
            assert (width, height) == (info["width"], info["height"])
    grid_w, grid_h = png_size(tmp_path / "grid.png")
    assert grid_w > 0 and grid_h > 0 and max(grid_w, grid_h) <= 2 * MAX_CELL + 3 * 4


def test_errors_draws_the_worst_images_first_with_a_summary(tiny_run, data_overrides, tmp_path):
    detections = tiny_run / "detections.json"
    load_tool("visualize").main(["errors", CONFIG, "--detections", str(detections), "--output-dir", str(tmp_path),
                                 "--num", "2", "--score-thresh", "0.0", *data_overrides])
    summary = json.loads((tmp_path / "summary.json").read_text())
    cfg = load_config(CONFIG, data_overrides)
    dataset = build_dataset(cfg.data.val, cfg.data, is_train=False)
    results = json.loads(detections.read_text())
    assert summary["images"] == len(dataset) == 3
    assert summary["detections"] == len(results)
    assert sum(summary["counts"].values()) == len(results) + summary["counts"]["missed"]
    assert set(summary["counts"]) == {"true_positive", "duplicate", "wrong_class", "localization", "background", "missed"}
    worst = summary["worst"]
    assert [w["rank"] for w in worst] == [0, 1]
    assert worst[0]["error_score"] >= worst[1]["error_score"]
    ranked = rank_errors(dataset, results, 0.5, 0.0)
    assert all(worst[0]["error_score"] >= r.errors.error_score for r in ranked)
    for w in worst:
        assert w["file"].startswith(f"{w['rank']:03d}_")
        info = next(dataset.image_info(i) for i in range(len(dataset)) if dataset.image_info(i)["image_id"] == w["image_id"])
        width, height = image_size(tmp_path / w["file"])
        assert width == info["width"] and height > info["height"]  # the legend strip goes below
    png_size(tmp_path / "grid.png")


def test_errors_rejects_detections_of_unknown_images(tiny_run, data_overrides, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}]))
    with pytest.raises(SystemExit) as exit_info:
        load_tool("visualize").main(["errors", CONFIG, "--detections", str(bad), "--output-dir", str(tmp_path / "o"),
                                     *data_overrides])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.strip().count("\n") == 0 and "999" in err


def test_readme_images_from_a_run(tiny_run, tmp_path):
    load_tool("readme_images").main([str(tiny_run), "--output-dir", str(tmp_path), "--num", "2", "--score-thresh", "0.0"])
    names = {"predictions.png", "errors.png", "losses.png", "lr.png", "per_class_ap.png", "pr_curves.png"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for name in names:
        png_size(tmp_path / name)
