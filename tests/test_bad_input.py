"""The README's bad-input catalogue: each test is one row, named in its docstring as "Row: ...".

Datasets here are a few small generated images with a COCO json or VOC xml
written beside them. A row whose message comes from a tool runs the tool as a
user does and checks its single stderr line and exit status 2.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detect.config import ConfigError, load_config
from detect.data.build import build_dataset
from detect.data.checks import SkippingDataset, check_image_files
from detect.data.coco import CocoDetection
from detect.data.image_io import ImageReadError, read_image
from detect.data.loader import build_test_loader
from detect.data.voc import VOCDetection, parse_voc_xml
from detect.engine.preflight import SkippedImages, check_before_training, check_writable
from detect.engine.trainer import train
from detect.evaluation.coco import load_results

REPO = Path(__file__).parent.parent
CONFIG = REPO / "configs" / "quickstart_shapes.py"
EXIF_ORIENTATION = 0x0112
TINY_MODEL = [
    "model.backbone.name=resnet18", "model.fpn.out_channels=64", "model.roi_heads.fc_dim=128",
    "model.input.min_size=64", "model.input.max_size=96", "model.rpn.pre_nms_topk_train=100",
    "model.rpn.post_nms_topk_train=50", "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=20",
    "data.train_min_sizes=[64]", "data.train_max_size=96", "train.device=cpu", "train.batch_size=2",
    "train.warmup_iters=1", "train.checkpoint_period=0", "train.log_period=1",
]


def _picture(height: int = 24, width: int = 32) -> np.ndarray:
    """A deterministic RGB picture with distinct channels, ``uint8 (H, W, 3)``."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=2).astype(np.uint8)


def _coco(tmp_path: Path, count: int = 3, annotations: list | None = None) -> tuple[Path, Path, dict]:
    """``count`` 32x24 JPEGs and their json; one 10x8 box per image unless ``annotations`` is given."""
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    raw = {"images": [], "annotations": [], "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]}
    for i in range(1, count + 1):
        Image.fromarray(_picture()).save(images / f"{i}.jpg", quality=95)
        raw["images"].append({"id": i, "file_name": f"{i}.jpg", "height": 24, "width": 32})
        raw["annotations"].append({"id": 100 + i, "image_id": i, "category_id": 3, "bbox": [2, 3, 10, 8]})
    if annotations is not None:
        raw["annotations"] = annotations
    for ann in raw["annotations"]:
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    return images, _write_json(tmp_path, raw), raw


def _write_json(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(raw))
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _tool(tool: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(
        [sys.executable, f"tools/{tool}", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _error_line(result: subprocess.CompletedProcess) -> str:
    """The tool's error: exit status 2, no traceback, and ``error: ...`` as the last line, on a line of its own."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr, result.stderr[-3000:]
    last = result.stderr.rstrip("\n").split("\n")[-1]
    assert last.startswith("error: ")
    return last


# Image files


def test_missing_image_file(tmp_path):
    """Row: a missing image file."""
    images, ann, _ = _coco(tmp_path)
    (images / "2.jpg").unlink()
    dataset = CocoDetection(images, ann)
    expected = rf"2.jpg: image file not found \({ann} image id 2\); 1 of 3 images of data.train are missing"
    with pytest.raises(ImageReadError, match=expected):
        check_image_files(dataset, "data.train", "error")
    with pytest.raises(ImageReadError, match=rf"2.jpg: image file not found \({ann} image id 2\)"):
        dataset[1]


@pytest.mark.parametrize(
    "name, damage, reason",
    [
        ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
        ("truncated.jpg", _truncate, "image file is truncated"),
        ("truncated.png", _truncate, "image file is truncated"),
        ("text.jpg", lambda p: p.write_text("not an image"), "cannot identify image file"),
    ],
)
def test_zero_byte_truncated_or_non_image_file(tmp_path, name, damage, reason):
    """Row: a zero-byte, truncated or non-image file."""
    path = tmp_path / name
    Image.fromarray(_picture(240, 320)).save(path)
    damage(path)
    with pytest.raises(ImageReadError, match=rf"{name}: cannot decode image \({reason}.*\): truncated, corrupt or not an image"):
        read_image(path)


def test_truncated_jpeg_that_opencv_fills_with_grey(tmp_path):
    """Row: a zero-byte, truncated or non-image file (OpenCV decodes this one with a grey fill)."""
    path = tmp_path / "cut.jpg"
    Image.fromarray(_picture(240, 320)).save(path, quality=95)
    _truncate(path)
    assert cv2.imread(str(path)) is not None  # what used to be trained on
    with pytest.raises(ImageReadError, match="cut.jpg: cannot decode image"):
        read_image(path)


def test_grayscale_and_rgba(tmp_path):
    """Row: grayscale, RGBA images are loaded correctly."""
    rgb = _picture()
    Image.fromarray(rgb[:, :, 0], mode="L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 40, np.uint8)]), mode="RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "gray.png"), np.repeat(rgb[:, :, :1], 3, axis=2))
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped, colour untouched


def test_sixteen_bit_png(tmp_path):
    """Row: a 16-bit PNG is loaded correctly (its high byte)."""
    values = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)  # 0 .. 65195
    cv2.imwrite(str(tmp_path / "gray16.png"), values)
    colour = np.stack([values, values // 2, 65535 - values], axis=2)  # RGB
    cv2.imwrite(str(tmp_path / "rgb16.png"), colour[:, :, ::-1].copy())  # OpenCV writes BGR
    assert np.array_equal(read_image(tmp_path / "gray16.png"), np.repeat((values >> 8)[:, :, None], 3, axis=2).astype(np.uint8))
    assert np.array_equal(read_image(tmp_path / "rgb16.png"), (colour >> 8).astype(np.uint8))


def test_cmyk_jpeg(tmp_path):
    """Row: a CMYK JPEG is loaded correctly."""
    cmyk = np.zeros((16, 24, 4), dtype=np.uint8)
    cmyk[:, 8:16, 0] = 255  # pure cyan
    cmyk[:, 16:, 3] = 255  # pure black
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=100)
    rgb = read_image(path).astype(int)
    # White, cyan, black by hand; and OpenCV, an independent decoder, agrees within 2.
    assert np.abs(rgb[:, :8] - [255, 255, 255]).max() <= 2
    assert np.abs(rgb[:, 8:16] - [0, 255, 255]).max() <= 2
    assert np.abs(rgb[:, 16:]).max() <= 2
    assert np.abs(rgb - cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)).max() <= 2


@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, -1), (8, 1)])  # 180, 90 clockwise, 90 anticlockwise
def test_exif_rotated_image(tmp_path, orientation, turn):
    """Row: an EXIF-rotated image is loaded as displayed."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "rotated.jpg"
    stored = _picture()
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    plain = tmp_path / "plain.jpg"
    Image.fromarray(stored).save(plain, quality=100)
    rgb = read_image(path)
    assert rgb.shape == np.rot90(stored, turn).shape
    assert np.array_equal(rgb, np.rot90(read_image(plain), turn))
    # OpenCV applies the orientation of JPEGs itself.
    assert np.abs(rgb.astype(int) - cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)).max() <= 1


def test_image_size_differs_from_its_record(tmp_path):
    """Row: an image whose size differs from its record."""
    images, _, raw = _coco(tmp_path)
    raw["images"][0]["height"] = 32
    raw["images"][0]["width"] = 24  # as if the annotator saw it rotated
    dataset = CocoDetection(images, _write_json(tmp_path, raw))
    with pytest.raises(ImageReadError, match=r"1.jpg: decoded image is 24x32 .* image id 1 says height=32, width=24"):
        dataset[0]


# Annotations


def test_zero_size_boxes_and_boxes_outside_the_image(tmp_path, caplog):
    """Row: boxes that are zero-size or outside the image."""
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 0, 8]},  # zero width
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 3, 5, 5]},  # right of the 32 px wide image
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [-4, 20, 10, 10]},  # partly outside: clipped
    ]
    images, ann, _ = _coco(tmp_path, count=1, annotations=annotations)
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetection(images, ann)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # once, with the count, not one line per box
    assert "left out 2 boxes with zero width or height inside the image" in warnings[0]
    assert "annotation id 1 " in warnings[0] and "annotation id 2 " in warnings[0]
    target = dataset.annotations(0)
    assert target["boxes"].tolist() == [[0.0, 20.0, 6.0, 24.0]]  # x -4..6, y 20..30 clipped to 32x24
    assert target["labels"].tolist() == [7]


@pytest.mark.parametrize(
    "bbox, message",
    [
        ([2, 3, -1, 8], r"annotation id 1: field bbox = \[2, 3, -1, 8\] has a negative width or height"),
        ([2, 3, float("nan"), 8], r"annotation id 1: field bbox = \[2, 3, nan, 8\], expected 4 finite numbers"),
    ],
)
def test_negative_or_nan_box(tmp_path, bbox, message):
    """Row: boxes that are negative or NaN."""
    images, ann, _ = _coco(tmp_path, count=1, annotations=[{"id": 1, "image_id": 1, "category_id": 3, "bbox": bbox}])
    with pytest.raises(ValueError, match=message):
        CocoDetection(images, ann)


def test_voc_empty_or_nan_box(tmp_path):
    """Row: boxes that are negative or NaN (VOC)."""
    def xml(box: str) -> Path:
        path = tmp_path / "a.xml"
        path.write_text(f"<annotation><size><width>32</width><height>24</height></size><object><name>dog</name>"
                        f"<bndbox>{box}</bndbox></object></annotation>")
        return path

    with pytest.raises(ValueError, match=r"a.xml: object 0 field bndbox = \(xmin=9.0, ymin=1.0, xmax=4.0, ymax=5.0\) is empty"):
        parse_voc_xml(xml("<xmin>9</xmin><ymin>1</ymin><xmax>4</xmax><ymax>5</ymax>"), "2007", "a")
    with pytest.raises(ValueError, match=r"a.xml: object 0 field bndbox/ymin = 'nan' is not a finite number"):
        parse_voc_xml(xml("<xmin>1</xmin><ymin>nan</ymin><xmax>4</xmax><ymax>5</ymax>"), "2007", "a")


def test_annotations_without_area(tmp_path, caplog):
    """Row: annotations without area."""
    images, _, raw = _coco(tmp_path, count=2)
    del raw["annotations"][1]["area"]
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetection(images, _write_json(tmp_path, raw))
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'instances.json'}: 1 of 2 annotations have no area; their box area is used (for APs, APm, APl)"
    ]
    assert dataset.load_coco().anns[102]["area"] == 80.0  # 10 x 8


def test_unknown_category(tmp_path):
    """Row: an unknown category."""
    images, ann, _ = _coco(tmp_path, count=1, annotations=[{"id": 5, "image_id": 1, "category_id": 9, "bbox": [1, 1, 4, 4]}])
    with pytest.raises(ValueError, match=r"annotation id 5: field category_id = 9 is not among the json's categories \[3, 7\]"):
        CocoDetection(images, ann)


@pytest.mark.parametrize("key, index", [("images", 2), ("annotations", 1)])
def test_duplicate_image_or_annotation_ids(tmp_path, key, index):
    """Row: duplicate image or annotation ids."""
    images, _, raw = _coco(tmp_path)
    raw[key][index]["id"] = raw[key][0]["id"]
    ann = _write_json(tmp_path, raw)
    first = raw[key][0]["id"]
    with pytest.raises(ValueError, match=rf"{key}\[{index}\] \(id {first}\): repeats the id of {key}\[0\]"):
        CocoDetection(images, ann)


def test_duplicate_voc_image_in_a_set(tmp_path):
    """Row: duplicate image ids (VOC: an image listed twice)."""
    lists = tmp_path / "VOC2007" / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("000005\n000007\n000005\n")
    with pytest.raises(ValueError, match=r"train.txt: image '000005' is already listed in VOC set '2007/train'"):
        VOCDetection(tmp_path, ["2007/train"])


def test_malformed_json_or_voc_xml(tmp_path):
    """Row: malformed JSON or VOC XML."""
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        CocoDetection(tmp_path, tmp_path / "broken.json")
    (tmp_path / "broken.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match="broken.xml: not valid XML"):
        parse_voc_xml(tmp_path / "broken.xml", "2007", "broken")


def test_images_without_annotations(tmp_path, caplog):
    """Row: images without annotations."""
    annotations = [{"id": 1, "image_id": 2, "category_id": 3, "bbox": [1, 1, 4, 4]}]
    images, ann, _ = _coco(tmp_path, count=3, annotations=annotations)
    with caplog.at_level(logging.WARNING):
        training = CocoDetection(images, ann, filter_empty=True)
    assert training.image_ids == [2]
    assert [r.getMessage() for r in caplog.records] == [f"{ann}: left out 2 of 3 images without a usable box (filter_empty)"]
    assert CocoDetection(images, ann).image_ids == [1, 2, 3]  # evaluation keeps them


def test_dataset_left_with_no_usable_image(tmp_path):
    """Row: a dataset left with no usable image."""
    images, ann, _ = _coco(tmp_path, count=2, annotations=[])
    cfg = load_config(CONFIG, [f"data.train.root={images}", f"data.train.ann_file={ann}"])
    with pytest.raises(ValueError, match=rf"{ann}: no image with a usable box .*; nothing to train on"):
        build_dataset(cfg.data.train, cfg.data, is_train=True)
    for path in images.iterdir():
        path.unlink()
    (images / "unrelated.txt").write_text("")
    dataset = CocoDetection(images, ann)
    with pytest.raises(ValueError, match=r"2 of 2 images of data.train are missing: no usable image under data.train.root"):
        check_image_files(dataset, "data.train", "skip")


# data.bad_images=skip


def test_skip_leaves_bad_images_out_also_in_loader_workers(tmp_path):
    """Row: data.bad_images=skip (a truncated and a missing image, read in a loader worker)."""
    images, ann, _ = _coco(tmp_path, count=4)
    _truncate(images / "2.jpg")
    (images / "3.jpg").unlink()
    dataset = SkippingDataset(CocoDetection(images, ann))
    skipped = SkippedImages("skip")
    ids = []
    for _, targets in build_test_loader(dataset, batch_size=2, num_workers=1):
        skipped.update(targets)
        ids += [t["image_id"] for t in targets]
    assert ids == [1, 4, 4, 4]  # 2 and 3 are replaced by the next usable image
    assert len(skipped) == 2
    assert [m.split(":")[0] for m in skipped.messages] == [str(images / "2.jpg"), str(images / "3.jpg")]
    with pytest.raises(ImageReadError, match="2.jpg: cannot decode image"):
        CocoDetection(images, ann)[1]  # the default, data.bad_images=error


def test_skip_count_in_log_summary_and_metrics(tmp_path, capsys):
    """Row: data.bad_images=skip (the count in log.jsonl, the final summary and metrics.json)."""
    images, ann, _ = _coco(tmp_path, count=4)
    _truncate(images / "2.jpg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(CONFIG, [*TINY_MODEL, f"data.train.root={images}", f"data.train.ann_file={ann}",
                                   f"data.val.root={tmp_path / 'val' / 'images'}", f"data.val.ann_file={_val(tmp_path)}",
                                   "data.num_workers=0", "data.bad_images=skip", "data.aspect_ratio_grouping=False",
                                   "train.max_iter=2", f"output_dir={tmp_path / 'run'}"])
        metrics = train(cfg)
    finally:
        torch.set_num_threads(threads)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_images"] for r in log][-1] == 1
    named = [m for r in log for m in r["skipped"]]  # each image named once, in the record after it was met
    assert len(named) == 1 and named[0].startswith(f"{images / '2.jpg'}: cannot decode image")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["skipped_images"] == 1
    assert metrics["skipped_images"] == 1
    out = capsys.readouterr()
    assert "training left out 1 unusable images (data.bad_images=skip)" in out.out
    assert f"skipped: {images / '2.jpg'}: cannot decode image" in out.err


def _val(tmp_path: Path) -> Path:
    """A separate, intact evaluation split."""
    (tmp_path / "val").mkdir(exist_ok=True)
    return _coco(tmp_path / "val", count=1)[1]


# Configs, folders and tools


def test_config_unknown_key_wrong_type_or_missing_file(tmp_path):
    """Row: a config with an unknown key, a wrong type or a missing file."""
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_itr'; nearest valid keys: train.max_iter"):
        load_config(CONFIG, ["train.max_itr=3"])
    with pytest.raises(ConfigError, match=r"train.max_iter expects int, got 'many' \(str\)"):
        load_config(CONFIG, ["train.max_iter=many"])
    mine = tmp_path / "mine.py"
    mine.write_text("from configs.quickstart_shapes import cfg\ncfg.train.max_itr = 3\n")
    with pytest.raises(ConfigError, match=rf"{mine}: unknown config key 'train.max_itr'; nearest valid keys: train.max_iter"):
        load_config(mine)
    with pytest.raises(ConfigError, match=rf"config file not found: {REPO}/configs/quickstart_shapes; did you mean {CONFIG}\?"):
        load_config(REPO / "configs" / "quickstart_shapes")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.amp=bf15", r"train.amp = 'bf15' is not one of 'off', 'bf16', 'fp16' \(did you mean 'bf16'\?\)"),
        ("train.optimizer=adam", r"train.optimizer = 'adam' is not one of 'sgd', 'adamw'"),
        ("train.lr_schedule=poly", r"train.lr_schedule = 'poly' is not one of 'step', 'cosine'"),
        ("model.backbone.norm=syncbn", r"model.backbone.norm = 'syncbn' is not one of 'frozen_bn', 'bn', 'gn'"),
        ("model.roi_heads.pooler_type=max", r"model.roi_heads.pooler_type = 'max' is not one of 'align', 'pool'"),
        ("data.val.type=yolo", r"data.val.type = 'yolo' is not one of 'coco', 'voc'"),
        ("data.bad_images=ignore", r"data.bad_images = 'ignore' is not one of 'error', 'skip'"),
        ("train.device=gpu", r"train.device = 'gpu' is not one of 'auto', 'cpu', 'cuda'"),
    ],
)
def test_config_value_not_among_the_allowed_ones(override, message):
    """Row: a config with a value that is not one of the allowed ones."""
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, [override])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_config_fp16_without_cuda():
    """Row: train.amp=fp16 or train.device=cuda without CUDA."""
    with pytest.raises(ConfigError, match=r"train.amp = 'fp16' needs a CUDA device .* use train.amp=bf16 on the CPU"):
        load_config(CONFIG, ["train.amp=fp16"])
    with pytest.raises(ConfigError, match=r"train.device = 'cuda' but this machine has no CUDA device"):
        load_config(CONFIG, ["train.device=cuda"])
    assert load_config(CONFIG, ["train.amp=fp16"], check_device=False).train.amp == "fp16"  # a run made elsewhere


def test_own_config_in_another_folder_inherits_the_shipped_ones(tmp_path, monkeypatch):
    """Row: a user's config file in their own folder that inherits a shipped config."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("from configs.frcnn_r50_fpn_coco import cfg\ncfg.train.max_iter = 7\n")
    assert load_config("mine.py").train.max_iter == 7
    assert load_config(REPO / "configs" / "frcnn_r50_fpn_coco.py").train.max_iter == 90000  # not leaked
    hint = r"config file not found: configs/quickstart_shapes; did you mean .*configs/quickstart_shapes.py\?"
    with pytest.raises(ConfigError, match=hint):
        load_config("configs/quickstart_shapes")
    (tmp_path / "broken.py").write_text("from configs.quickstart_shapes import cfg\nimport no_such_module\n")
    with pytest.raises(ConfigError, match=r"broken.py, line 2: ModuleNotFoundError: No module named 'no_such_module'"):
        load_config("broken.py")


def test_warmup_longer_than_training_warns(tmp_path):
    """Row: train.warmup_iters >= train.max_iter."""
    images, ann, _ = _coco(tmp_path)
    cfg = load_config(CONFIG, [f"data.train.root={images}", f"data.train.ann_file={ann}", f"data.val.root={images}",
                               f"data.val.ann_file={ann}", "train.max_iter=10", "train.warmup_iters=10",
                               f"output_dir={tmp_path / 'run'}"])
    with pytest.warns(UserWarning, match="train.warmup_iters=10 >= train.max_iter=10: the learning rate never reaches"):
        check_before_training(cfg, build_dataset(cfg.data.train, cfg.data, is_train=True))


def test_output_folder_that_cannot_be_written(tmp_path):
    """Row: an output folder that cannot be written, reported before any training starts."""
    images, ann, _ = _coco(tmp_path)
    (tmp_path / "file").write_text("")  # a file where a folder is needed: unwritable even for root
    output = tmp_path / "file" / "run"
    with pytest.raises(ValueError, match=rf"output_dir = {output}: cannot write there"):
        check_writable(output)
    cfg = load_config(CONFIG, [*TINY_MODEL, f"data.train.root={images}", f"data.train.ann_file={ann}",
                               f"data.val.root={images}", f"data.val.ann_file={ann}", f"output_dir={output}"])
    with pytest.raises(ValueError, match="cannot write there"):
        train(cfg)


def test_wrong_val_folder_is_found_before_training(tmp_path):
    """Row: a missing or empty image folder, or a wrong data.val.root, found before training starts."""
    images, ann, _ = _coco(tmp_path)
    (tmp_path / "empty").mkdir()
    common = [*TINY_MODEL, f"data.train.root={images}", f"data.train.ann_file={ann}", f"data.val.ann_file={ann}"]
    for root, message in [(tmp_path / "nowhere", "folder not found"), (tmp_path / "empty", "the folder is empty")]:
        cfg = load_config(CONFIG, [*common, f"data.val.root={root}", f"output_dir={tmp_path / 'run'}"])
        with pytest.raises(FileNotFoundError, match=rf"data.val.root = {root}: {message}"):
            train(cfg)
    assert not (tmp_path / "run").exists()  # nothing written


def test_tool_missing_image_folder_is_one_line(tmp_path):
    """Row: a missing or empty image folder (tools/train.py)."""
    images, ann, _ = _coco(tmp_path)
    line = _error_line(_tool("train.py", CONFIG, "--output-dir", tmp_path / "run", f"data.train.root={tmp_path}/none",
                             f"data.train.ann_file={ann}", f"data.val.root={images}", f"data.val.ann_file={ann}"))
    assert line == f"error: data.train.root = {tmp_path}/none: folder not found"
    assert not (tmp_path / "run").exists()


def test_tool_bad_setting_fails_before_writing_anything(tmp_path):
    """Row: a config with a value that is not one of the allowed ones (tools/train.py)."""
    line = _error_line(_tool("train.py", CONFIG, "--output-dir", tmp_path / "run", "train.amp=bf15"))
    assert line == "error: train.amp = 'bf15' is not one of 'off', 'bf16', 'fp16' (did you mean 'bf16'?)"
    assert not (tmp_path / "run").exists()  # no config.py, no empty log.jsonl


def test_tool_worker_error_is_one_line(tmp_path):
    """Row: a zero-byte, truncated or non-image file met by a loader worker (tools/train.py)."""
    images, ann, _ = _coco(tmp_path, count=2)
    _truncate(images / "2.jpg")
    val = _val(tmp_path)
    result = _tool("train.py", CONFIG, "--output-dir", tmp_path / "run", *TINY_MODEL, f"data.train.root={images}",
                   f"data.train.ann_file={ann}", f"data.val.root={tmp_path / 'val' / 'images'}", f"data.val.ann_file={val}",
                   "data.num_workers=1", "data.aspect_ratio_grouping=False", "train.max_iter=1")
    line = _error_line(result)
    assert line.startswith(f"error: {images / '2.jpg'}: cannot decode image (") and "truncated" in line.lower()
    assert line.endswith(f"({ann} image id 2)")
    assert "DataLoader worker" not in result.stderr


def test_tool_evaluate_given_predictions_json(tmp_path):
    """Row: tools/evaluate.py given tools/predict.py's predictions.json."""
    images, ann, _ = _coco(tmp_path)
    (tmp_path / "run" / "predict").mkdir(parents=True)
    (tmp_path / "run" / "detections.json").write_text("[]")
    predictions = tmp_path / "run" / "predict" / "predictions.json"
    predictions.write_text(json.dumps([{"file": "a.jpg", "width": 32, "height": 24, "detections": []}]))
    line = _error_line(_tool("evaluate.py", CONFIG, "--detections", predictions, f"data.val.root={images}",
                             f"data.val.ann_file={ann}"))
    assert line == (
        f"error: {predictions}: not in COCO results format but tools/predict.py's format (image files, not dataset "
        f"image ids); give the detections.json that tools/test.py and tools/train.py write, "
        f"e.g. {tmp_path / 'run' / 'detections.json'}"
    )
    with pytest.raises(ValueError, match="not in COCO results format"):
        load_results(predictions)
