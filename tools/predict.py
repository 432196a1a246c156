"""Detect objects in images, folders, globs or videos; draw them and write them as JSON.

    python tools/predict.py configs/quickstart_shapes.py --weights output/quickstart/model_final.pth \\
        --input datasets/shapes/val/images --output-dir output/quickstart/predict
    python tools/predict.py CONFIG --weights W --input clip.mp4 "photos/*.jpg" --output-dir out --score-thresh 0.3

Drawn images keep their file names under --output-dir; a video becomes <name>.mp4 there
(same frame count, frame size and frame rate). The JSON (default <output-dir>/predictions.json)
is a list with one record per image or video frame:

    {"file": str, "frame": int (videos only), "width": int, "height": int,
     "detections": [{"box": [x1, y1, x2, y2], "score": float, "label": category id, "name": str}]}

boxes in pixels of the image as read (EXIF orientation applied), by descending score.

Exit status: 0 when every input was processed; 1 when some unreadable inputs were skipped
(each is named on stderr; the others are processed and only they are in the JSON);
2 for a usage error (missing weights, classes that disagree with the checkpoint, ...).
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

from detect.config import load_config
from detect.engine.trainer import resolve_device
from detect.models import build_model
from detect.predict import Predictor, expand_inputs, predict_files, write_records
from detect.tool_errors import exit_on_user_error


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", required=True, help="a detect checkpoint")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH", help="image, folder, glob or video files")
    parser.add_argument("--output-dir", help="where drawn images and videos go")
    parser.add_argument("--output-json", help="default: <output-dir>/predictions.json")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="keep detections scoring at least this (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="images or frames per model call (default: %(default)s)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: the config's train.device")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    if not args.output_dir and not args.output_json:
        parser.error("give --output-dir, --output-json, or both")
    with exit_on_user_error():
        overrides = [*args.overrides, f"model.weights={args.weights}"]
        if args.device:
            overrides.append(f"train.device={args.device}")
        cfg = load_config(args.config, overrides)
        # The model drops detections below its own threshold; lower it so that --score-thresh decides.
        cfg.model.roi_heads.score_thresh = min(cfg.model.roi_heads.score_thresh, args.score_thresh)
        paths = expand_inputs(args.input)
        predictor = Predictor(build_model(cfg), resolve_device(cfg.train.device), args.score_thresh, cfg.train.amp)
        output_dir = Path(args.output_dir) if args.output_dir else None
        run = predict_files(predictor, paths, args.batch_size, output_dir)
        json_path = Path(args.output_json) if args.output_json else output_dir / "predictions.json"
        write_records(json_path, run.records)
    print(f"{len(run.records)} images or frames -> {json_path}" + (f", drawn in {output_dir}" if output_dir else ""))
    if run.skipped:
        print(f"skipped {len(run.skipped)} unreadable input(s); see the messages above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
