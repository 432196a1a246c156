"""tools/compare.py and detect.reports: run folders -> the paper's Tables 7 and 8 with the runs' numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Optional

import pytest

from detect.config import Config, save_config
from detect.reports import (
    COCO_VAL, VOC07_07_12, Gain, RunError, backbone_label, build_report, chart_figure, identify_benchmark, read_run,
    read_runs, write_chart,
)

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "tools" / "compare.py"
QUICKSTART = REPO / "configs" / "quickstart_shapes.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def voc07_config(backbone: str) -> Config:
    cfg = Config()
    cfg.model.backbone.name = backbone
    cfg.model.fpn.enabled = False
    cfg.data.train.type = cfg.data.val.type = "voc"
    cfg.data.train.root = cfg.data.val.root = "datasets/VOCdevkit"
    cfg.data.train.sets = ["2012/trainval", "2007/trainval"]  # the order does not matter
    cfg.data.val.sets = ["2007/test"]
    return cfg


COCO_VAL_ANN = "datasets/coco/annotations/instances_val2017.json"


def coco_config(backbone: str, fpn: bool = False, ann_file: str = COCO_VAL_ANN) -> Config:
    cfg = Config()
    cfg.model.backbone.name = backbone
    cfg.model.fpn.enabled = fpn
    cfg.data.val.ann_file = ann_file
    return cfg


def make_run(folder: Path, cfg: Optional[Config], metrics: Optional[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    if cfg is not None:
        save_config(cfg, folder / "config.py")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def voc_metrics(map_11point: Optional[float], map_area: Optional[float]) -> dict[str, Any]:
    bbox = {"AP": 40.0, "AP50": 70.0, "AP75": 40.0, "APs": None, "APm": 30.0, "APl": 45.0, "per_class": {}}
    return {"bbox": bbox, "voc": {"mAP": map_area, "mAP_11point": map_11point, "per_class": {}}}


def coco_metrics(ap: float, ap50: float) -> dict[str, Any]:
    return {"bbox": {"AP": ap, "AP50": ap50, "AP75": 0.0, "APs": 0.0, "APm": 0.0, "APl": 0.0, "per_class": {}}}


def table_rows(report: str) -> dict[str, list[str]]:
    """First cell -> the row's cells, for the table rows of a Markdown report."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    return rows


def test_backbone_labels() -> None:
    assert backbone_label(voc07_config("vgg16")) == "VGG-16"
    assert backbone_label(voc07_config("resnet101")) == "ResNet-101"  # C4, the paper's design
    assert backbone_label(coco_config("resnet50", fpn=True)) == "ResNet-50-FPN"


def test_benchmarks_from_config() -> None:
    assert identify_benchmark(voc07_config("vgg16")) is VOC07_07_12
    assert identify_benchmark(coco_config("vgg16")) is COCO_VAL
    voc07_only = voc07_config("vgg16")
    voc07_only.data.train.sets = ["2007/trainval"]  # not the paper's 07+12
    assert identify_benchmark(voc07_only).paper == {}
    assert identify_benchmark(voc07_only).name == "datasets/VOCdevkit 2007/test"
    shapes = identify_benchmark(coco_config("resnet18", True, "datasets/shapes/annotations/val.json"))
    assert shapes.paper == {} and shapes.name == "datasets/shapes/annotations/val.json"


def test_gain_by_hand() -> None:
    assert str(Gain.of(70.0, 75.0)) == "+5.0 (+7.1%)"  # 5 / 70 = 7.14%
    assert str(Gain.of(21.2, 27.2)) == "+6.0 (+28.3%)"  # the paper's "28% relative"
    assert str(Gain.of(75.0, 70.0)) == "-5.0 (-6.7%)"
    assert Gain.of(None, 70.0) is None


def test_voc_table(tmp_path: Path) -> None:
    vgg = make_run(tmp_path / "vgg", voc07_config("vgg16"), voc_metrics(70.0, 72.0))
    r101 = make_run(tmp_path / "r101", voc07_config("resnet101"), voc_metrics(75.0, 78.0))
    report = build_report(read_runs([vgg, r101]))
    assert "## VOC 2007 test (07+12)" in report
    rows = table_rows(report)
    assert rows["method"] == ["method", "training data", "test data", "mAP (%)", "paper", "mAP, area (%)", "run"]
    assert rows["VGG-16"] == ["VGG-16", "07+12", "VOC 07 test", "70.0", "73.2", "72.0", f"`{vgg}`"]
    assert rows["ResNet-101"] == ["ResNet-101", "07+12", "VOC 07 test", "75.0", "76.4", "78.0", f"`{r101}`"]
    # 75 - 70 = +5.0, 5 / 70 = +7.1%; paper 76.4 - 73.2 = +3.2, 3.2 / 73.2 = +4.4%; area 6 / 72 = +8.3%
    gain = rows["ResNet-101 over VGG-16"]
    assert gain == ["ResNet-101 over VGG-16", "", "", "+5.0 (+7.1%)", "+3.2 (+4.4%)", "+6.0 (+8.3%)", ""]


def test_coco_table(tmp_path: Path) -> None:
    r101 = make_run(tmp_path / "r101", coco_config("resnet101"), coco_metrics(ap=26.0, ap50=47.0))
    vgg = make_run(tmp_path / "vgg", coco_config("vgg16"), coco_metrics(ap=20.0, ap50=40.0))
    fpn = make_run(tmp_path / "fpn", coco_config("resnet50", fpn=True), coco_metrics(ap=37.5, ap50=58.0))
    rows = table_rows(build_report(read_runs([r101, vgg, fpn])))
    assert rows["method"] == ["method", "mAP@.5 (%)", "paper", "mAP@[.5, .95] (%)", "paper", "run"]
    assert rows["ResNet-101"][:5] == ["ResNet-101", "47.0", "48.4", "26.0", "27.2"]
    assert rows["VGG-16"][:5] == ["VGG-16", "40.0", "41.5", "20.0", "21.2"]
    assert rows["ResNet-50-FPN"][:5] == ["ResNet-50-FPN", "58.0", "—", "37.5", "—"]  # not in the paper
    # ours: 7 / 40 = 17.5%, 6 / 20 = 30%; paper: 6.9 / 41.5 = 16.6%, 6.0 / 21.2 = 28.3%
    assert rows["ResNet-101 over VGG-16"][1:5] == ["+7.0 (+17.5%)", "+6.9 (+16.6%)", "+6.0 (+30.0%)", "+6.0 (+28.3%)"]


def test_several_runs_of_a_backbone_are_averaged(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / name, voc07_config(backbone), voc_metrics(value, value))
            for name, backbone, value in [("vgg_a", "vgg16", 69.0), ("vgg_b", "vgg16", 71.0),
                                          ("r101", "resnet101", 77.0)]]
    rows = table_rows(build_report(read_runs(runs)))
    assert rows["ResNet-101 over VGG-16 (means of 2 and 1 runs)"][3] == "+7.0 (+10.0%)"  # 77 - 70


def test_unknown_benchmark_has_no_paper_numbers(tmp_path: Path) -> None:
    val = "datasets/shapes/annotations/val.json"
    vgg = make_run(tmp_path / "vgg", coco_config("vgg16", ann_file=val), coco_metrics(ap=50.0, ap50=80.0))
    r101 = make_run(tmp_path / "r101", coco_config("resnet101", ann_file=val), coco_metrics(ap=60.0, ap50=88.0))
    coco = make_run(tmp_path / "coco", coco_config("vgg16"), coco_metrics(ap=21.0, ap50=41.0))
    report = build_report(read_runs([vgg, r101, coco]))
    # The paper's benchmark comes first, whatever the order of the folders.
    assert report.index("## COCO val") < report.index(f"## {val}")
    shapes_table = report[report.index(f"## {val}"):]
    rows = table_rows(shapes_table)
    assert rows["VGG-16"][:5] == ["VGG-16", "80.0", "—", "50.0", "—"]
    assert rows["ResNet-101 over VGG-16"][1:5] == ["+8.0 (+10.0%)", "—", "+10.0 (+20.0%)", "—"]
    assert "Not a benchmark of the paper" in shapes_table


def test_missing_values_show_a_dash(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", voc07_config("vgg16"), voc_metrics(None, None))
    assert table_rows(build_report([read_run(run)]))["VGG-16"][3:6] == ["—", "73.2", "—"]


def test_missing_files_name_the_folder_and_file(tmp_path: Path) -> None:
    no_metrics = make_run(tmp_path / "no_metrics", voc07_config("vgg16"), None)
    no_config = make_run(tmp_path / "no_config", None, voc_metrics(70.0, 70.0))
    with pytest.raises(RunError, match=r"no_metrics has no metrics\.json"):
        read_run(no_metrics)
    with pytest.raises(RunError, match=r"no_config has no config\.py"):
        read_run(no_config)
    with pytest.raises(RunError, match="run folder not found: .*absent"):
        read_run(tmp_path / "absent")
    with pytest.raises(RunError) as both:  # every bad folder is named at once
        read_runs([no_metrics, no_config])
    assert "no_metrics" in str(both.value) and "no_config" in str(both.value)


def test_voc_run_without_voc_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", voc07_config("vgg16"), coco_metrics(ap=40.0, ap50=70.0))
    with pytest.raises(RunError, match=r"metrics\.json: has no 'voc' section"):
        read_run(run)


def test_chart_is_a_png(tmp_path: Path) -> None:
    runs = [make_run(tmp_path / "vgg", coco_config("vgg16"), coco_metrics(ap=20.0, ap50=40.0)),
            make_run(tmp_path / "voc", voc07_config("resnet101"), voc_metrics(75.0, 78.0)),
            make_run(tmp_path / "empty", voc07_config("vgg16"), voc_metrics(None, None))]  # no bar, no error
    write_chart(read_runs(runs), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == PNG_MAGIC


def test_chart_titles_fit_in_the_figure(tmp_path: Path) -> None:
    """A benchmark named by a long data path gets a wrapped title, whole inside the chart."""
    ann_file = "/tmp/pytest-of-someone/pytest-123/test_compare_two_trained_runs0/shapes/annotations/val.json"
    coco = [make_run(tmp_path / name, coco_config("resnet18", True, ann_file), coco_metrics(1.0, 2.0)) for name in "ab"]
    runs = read_runs(coco + [make_run(tmp_path / "voc", voc07_config("vgg16"), voc_metrics(70.0, 72.0))])
    figure = chart_figure(runs)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    titles = [axes.title for axes in figure.axes]
    assert len(titles) == 3  # COCO's two compared metrics, VOC 2007's one
    for title in titles:
        extent = title.get_window_extent(renderer)
        assert 0 <= extent.x0 and extent.x1 <= figure.bbox.width, title.get_text()
    assert titles[0].get_text() == "VOC 2007 test (07+12): mAP (%)"  # short titles stay on one line
    wrapped = titles[1].get_text()
    assert "\n" in wrapped and wrapped.replace("\n", "").replace(" ", "") == f"{ann_file}:mAP@.5(%)"


def test_cli_error_exits_2_naming_the_file(tmp_path: Path) -> None:
    run = make_run(tmp_path / "unfinished", voc07_config("vgg16"), None)
    result = subprocess.run([sys.executable, str(COMPARE), str(run), "--output", str(tmp_path / "r.md")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert "unfinished has no metrics.json" in result.stderr and "Traceback" not in result.stderr


def _make_shapes() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_shapes", REPO / "datasets" / "make_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_compare_two_trained_runs(tmp_path: Path) -> None:
    """tools/train.py twice for 3 iterations on a few synthetic images, then tools/compare.py on both."""
    shapes = _make_shapes()
    data = tmp_path / "shapes"
    shapes.make_split(data, "train", num_images=2, seed=0)
    shapes.make_split(data, "val", num_images=1, seed=0)
    fast = ["model.backbone.name=resnet18", "model.fpn.out_channels=64", "train.max_iter=3", "train.batch_size=2",
            "data.num_workers=0", "model.input.min_size=128", "model.input.max_size=128", "data.train_min_sizes=[128]",
            "data.train_max_size=128", "test.batch_size=2", "train.device=cpu",
            f"data.train.root={data / 'train' / 'images'}", f"data.val.root={data / 'val' / 'images'}",
            f"data.train.ann_file={data / 'annotations' / 'train.json'}",
            f"data.val.ann_file={data / 'annotations' / 'val.json'}"]
    runs = [tmp_path / "run_a", tmp_path / "run_b"]
    for seed, run in enumerate(runs):
        trained = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(QUICKSTART),
                                  "--output-dir", str(run), *fast, f"train.seed={seed}"],
                                 cwd=REPO, capture_output=True, text=True)
        assert trained.returncode == 0, trained.stderr[-3000:]
    report_path = tmp_path / "report" / "report.md"
    result = subprocess.run([sys.executable, str(COMPARE), *map(str, runs), "--output", str(report_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = report_path.read_text()
    assert report in result.stdout
    assert f"## {data / 'annotations' / 'val.json'}" in report  # named by its val data path
    rows = [line for line in report.splitlines() if line.startswith("| ResNet-18-FPN |")]
    assert len(rows) == 2 and all("| — |" in row for row in rows)
    chart = report_path.with_suffix(".png").read_bytes()
    assert chart[:8] == PNG_MAGIC and len(chart) > 1000
