"""tools/predict.py end to end on a folder (with a corrupt file and an EXIF-rotated one) and a video.

The model is untrained: random weights already give confident, arbitrary detections,
which is all that the plumbing (batching, thresholds, JSON, drawing) needs.
"""

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detect.checkpoint import save_checkpoint
from detect.config import load_config
from detect.models import build_model
from detect.predict import expand_inputs, output_paths

REPO = Path(__file__).parent.parent
CONFIG = str(REPO / "configs" / "quickstart_shapes.py")
CLASSES = {1: "circle", 2: "square", 3: "triangle"}
TINY = [
    "model.fpn.out_channels=64",
    "model.input.min_size=64",  # the model runs at 64x85; boxes still come back in 160x120 pixels
    "model.input.max_size=96",
    "model.rpn.pre_nms_topk_test=200",
    "model.rpn.post_nms_topk_test=100",
    "model.roi_heads.detections_per_image=20",
    "train.device=cpu",
]
W, H = 160, 120  # of every test image and video frame as stored
NUM_FRAMES, FPS = 5, 10.0


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


predict_tool = load_tool("predict")


def run_predict(capsys, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of tools/predict.py; a usage error's SystemExit gives its code."""
    capsys.readouterr()
    try:
        code = predict_tool.main([CONFIG, *args, *TINY])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def check_schema(records: list, is_video: bool) -> None:
    """The predictions.json contract of tools/predict.py, checked field by field."""
    assert isinstance(records, list)
    for i, record in enumerate(records):
        where = f"record {i}"
        expected_keys = {"file", "width", "height", "detections"} | ({"frame"} if is_video else set())
        assert set(record) == expected_keys, where
        assert isinstance(record["file"], str)
        if is_video:
            assert isinstance(record["frame"], int) and record["frame"] >= 0, where
        assert isinstance(record["width"], int) and record["width"] > 0, where
        assert isinstance(record["height"], int) and record["height"] > 0, where
        scores = []
        for det in record["detections"]:
            assert set(det) == {"box", "score", "label", "name"}, where
            box = det["box"]
            assert isinstance(box, list) and len(box) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in box), where
            x1, y1, x2, y2 = box
            assert 0 <= x1 <= x2 <= record["width"] and 0 <= y1 <= y2 <= record["height"], f"{where}: box {box}"
            assert isinstance(det["score"], float) and 0.0 <= det["score"] <= 1.0, where
            assert det["label"] in CLASSES and det["name"] == CLASSES[det["label"]], where
            scores.append(det["score"])
        assert scores == sorted(scores, reverse=True), f"{where}: detections not by descending score"


def noise_image(rng: np.random.Generator) -> np.ndarray:
    """Blocky noise: enough structure for random features to fire on."""
    small = rng.integers(0, 256, size=(H // 8, W // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_NEAREST)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(folder / name), noise_image(rng))
    # Stored 160x120 with EXIF orientation 6 ("rotate 90 clockwise to display"): read as 120x160.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(noise_image(rng)).save(folder / "c_rotated.jpg", exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "notes.txt").write_text("not an image: ignored by folder expansion")

    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for _ in range(NUM_FRAMES):
        writer.write(noise_image(rng))
    writer.release()

    torch.manual_seed(0)
    cfg = load_config(CONFIG, [*TINY, f"model.classes={CLASSES!r}"])
    model = build_model(cfg)
    with torch.no_grad():  # a low background logit makes random features score as objects, over a wide range
        model.roi_heads.predictor.cls_score.bias[0] = -3.0
    weights = root / "tiny.pth"
    save_checkpoint(weights, {"model": model.state_dict(), "classes": model.categories.to_dict(), "config": None})
    return {"root": root, "folder": folder, "video": video, "weights": weights}


@pytest.fixture(scope="module")
def predicted(files) -> dict:
    """One run over the folder and the video, as a user would type it (overrides after options)."""
    out_dir = files["root"] / "out"
    code = predict_tool.main(
        [CONFIG, "--weights", str(files["weights"]), "--input", str(files["folder"]), str(files["video"]),
         "--output-dir", str(out_dir), "--score-thresh", "0.3", "--batch-size", "2", *TINY]
    )
    records = json.loads((out_dir / "predictions.json").read_text())
    return {"code": code, "out_dir": out_dir, "records": records}


def test_folder_skips_the_corrupt_file_and_processes_the_others(predicted):
    assert predicted["code"] == 1  # some input was skipped
    images = [r for r in predicted["records"] if "frame" not in r]
    assert [Path(r["file"]).name for r in images] == ["a.jpg", "b.png", "c_rotated.jpg"]
    check_schema(images, is_video=False)
    sizes = {Path(r["file"]).name: (r["width"], r["height"]) for r in images}
    assert sizes == {"a.jpg": (W, H), "b.png": (W, H), "c_rotated.jpg": (H, W)}  # EXIF applied
    assert sum(len(r["detections"]) for r in images) > 0
    for name, (width, height) in sizes.items():
        drawn = cv2.imread(str(predicted["out_dir"] / name))
        assert drawn is not None and drawn.shape == (height, width, 3)
    assert not (predicted["out_dir"] / "broken.jpg").exists()


def test_corrupt_file_is_named_on_stderr(files, capsys):
    code, _, err = run_predict(capsys, "--weights", str(files["weights"]), "--input", str(files["folder"] / "broken.jpg"),
                               str(files["folder"] / "a.jpg"), "--output-json", str(files["root"] / "one.json"))
    assert code == 1
    assert "broken.jpg" in err and "skipped" in err
    records = json.loads((files["root"] / "one.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["a.jpg"]


def test_video_records_every_frame_and_is_redrawn_alike(files, predicted):
    frames = [r for r in predicted["records"] if "frame" in r]
    check_schema(frames, is_video=True)
    assert [r["frame"] for r in frames] == list(range(NUM_FRAMES))
    assert all(r["file"] == str(files["video"]) and (r["width"], r["height"]) == (W, H) for r in frames)
    capture = cv2.VideoCapture(str(predicted["out_dir"] / "clip.mp4"))
    assert capture.isOpened()
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (H, W, 3)
        count += 1
    assert count == NUM_FRAMES
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()


def test_score_thresh_filters_exactly(files, predicted, capsys):
    frames = [r for r in predicted["records"] if "frame" in r]
    scores = sorted(d["score"] for r in frames for d in r["detections"])
    assert scores and min(scores) >= 0.3
    thresh = scores[len(scores) // 2]  # the median: about half must go
    json_path = files["root"] / "high.json"
    code, _, _ = run_predict(capsys, "--weights", str(files["weights"]), "--input", str(files["video"]),
                             "--output-json", str(json_path), "--score-thresh", str(thresh), "--batch-size", "2")
    assert code == 0
    high = json.loads(json_path.read_text())
    check_schema(high, is_video=True)
    for low_record, high_record in zip(frames, high, strict=True):
        expected = [d for d in low_record["detections"] if d["score"] >= thresh]
        assert len(high_record["detections"]) == len(expected)
        for got, want in zip(high_record["detections"], expected):
            assert got["label"] == want["label"]
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            assert got["box"] == pytest.approx(want["box"], abs=1e-3)


def test_missing_weights_is_a_one_line_error(files, capsys):
    code, _, err = run_predict(capsys, "--weights", str(files["root"] / "nope.pth"), "--input", str(files["folder"]),
                               "--output-json", str(files["root"] / "x.json"))
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error:") and "nope.pth" in err


def test_classes_disagreeing_with_the_checkpoint_are_a_one_line_error(files, capsys):
    code, _, err = run_predict(capsys, "--weights", str(files["weights"]), "--input", str(files["folder"]),
                               "--output-json", str(files["root"] / "x.json"), "model.classes={1: 'circle', 2: 'square'}")
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error:") and "class mismatch" in err


def test_expand_inputs_takes_folders_globs_and_files_once(files):
    folder = files["folder"]
    found = expand_inputs([str(folder), str(folder / "*.png"), str(files["video"]), str(folder / "notes.txt")])
    names = [p.name for p in found]
    # A folder's notes.txt is passed over, a named one is taken; b.png comes once.
    assert names == ["a.jpg", "b.png", "broken.jpg", "c_rotated.jpg", "clip.avi", "notes.txt"]
    with pytest.raises(FileNotFoundError, match="missing"):
        expand_inputs([str(folder / "missing")])
    with pytest.raises(FileNotFoundError, match="no image or video file"):
        expand_inputs([str(folder / "*.txt")])


def test_output_paths_refuse_collisions_and_overwriting_inputs(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first, second = tmp_path / "x" / "a.jpg", tmp_path / "y" / "a.jpg"
    with pytest.raises(ValueError, match="both be drawn"):
        output_paths([first, second], tmp_path / "out")
    with pytest.raises(ValueError, match="overwrite"):
        output_paths([first], tmp_path / "x")
    assert output_paths([tmp_path / "v.avi"], tmp_path / "out") == {tmp_path / "v.avi": tmp_path / "out" / "v.mp4"}
