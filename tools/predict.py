"""Detect objects in images, folders, globs or videos; draw them and write them as JSON.

    python tools/predict.py configs/quickstart_shapes.py --weights output/quickstart/model_final.pth \\
        --input datasets/shapes/val/images --output-dir output/quickstart/predict
    python tools/predict.py CONFIG --weights W --input clip.mp4 "photos/*.jpg" --output-dir out --score-thresh 0.3
    python tools/predict.py --model model.onnx --input photos --output-dir out     # an exported model (tools/export.py)
    torchrun --nproc_per_node 4 tools/predict.py CONFIG --weights W --input photos --output-json out.json [--resume]

Drawn images keep their file names under --output-dir; a video becomes <name>.mp4 there
(same frame count, frame size and frame rate). The JSON (default <output-dir>/predictions.json)
is a list with one record per image or video frame:

    {"file": str, "frame": int (videos only), "width": int, "height": int,
     "detections": [{"box": [x1, y1, x2, y2], "score": float, "label": category id, "name": str}]}

boxes in pixels of the image as read (EXIF orientation applied), by descending score;
images first, then videos' frames, each in input order.

--model runs a .onnx (onnxruntime, CPU) or .pt2 (torch.export) file instead of a checkpoint;
it keeps the score threshold it was exported with, so --score-thresh can only raise it.
Under torchrun, each process predicts every N-th input file and rank 0 merges their parts
into the same JSON one process writes. Progress is kept in <json>.parts/ until the merge:
rerun a killed run with --resume and the files already done are not predicted again.

Exit status: 0 when every input was processed; 1 when some unreadable inputs were skipped
(each is named on stderr; the others are processed and only they are in the JSON);
2 for a usage error (missing weights, classes that disagree with the checkpoint, ...).
"""

import argparse
import sys
from pathlib import Path
from typing import Optional

import torch

from detect.config import load_config
from detect.engine.distributed import init_distributed
from detect.engine.trainer import resolve_device
from detect.export import ExportedDetector
from detect.models import build_model, place_model
from detect.predict import Predictor, expand_inputs
from detect.prediction_parts import predict_in_parts
from detect.tool_errors import exit_on_user_error


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="the model's config (not with --model)")
    parser.add_argument("--weights", help="a detect checkpoint")
    parser.add_argument("--model", help="an exported .onnx or .pt2 file, instead of CONFIG and --weights")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH", help="image, folder, glob or video files")
    parser.add_argument("--output-dir", help="where drawn images and videos go")
    parser.add_argument("--output-json", help="default: <output-dir>/predictions.json")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="keep detections scoring at least this (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="images or frames per model call (default: %(default)s)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: the config's train.device")
    parser.add_argument("--resume", action="store_true", help="skip the inputs a killed run with the same output finished")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    if not args.output_dir and not args.output_json:
        parser.error("give --output-dir, --output-json, or both")
    if args.model and (args.config or args.weights or args.overrides or args.device == "cuda"):
        parser.error("--model runs an exported file on the CPU as it was exported: no CONFIG, --weights, key=value or --device cuda")
    if not args.model and not (args.config and args.weights):
        parser.error("give CONFIG and --weights, or --model")
    with exit_on_user_error():
        paths = expand_inputs(args.input)
        if args.model:
            rank, world_size, _ = init_distributed("cpu")
            predictor = Predictor(ExportedDetector(args.model), torch.device("cpu"), args.score_thresh)
        else:
            predictor, rank, world_size = _checkpoint_predictor(args)
        output_dir = Path(args.output_dir) if args.output_dir else None
        json_path = Path(args.output_json) if args.output_json else output_dir / "predictions.json"
        run = predict_in_parts(predictor, paths, args.batch_size, json_path, output_dir, args.resume, rank, world_size)
    if run is None:  # not rank 0
        return 0
    print(f"{len(run.records)} images or frames -> {json_path}" + (f", drawn in {output_dir}" if output_dir else ""))
    if run.skipped:
        print(f"skipped {len(run.skipped)} unreadable input(s); see the messages above", file=sys.stderr)
        return 1
    return 0


def _checkpoint_predictor(args: argparse.Namespace) -> tuple[Predictor, int, int]:
    overrides = [*args.overrides, f"model.weights={args.weights}"]
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides)
    # The model drops detections below its own threshold; lower it so that --score-thresh decides.
    cfg.model.roi_heads.score_thresh = min(cfg.model.roi_heads.score_thresh, args.score_thresh)
    device = resolve_device(cfg.train.device)
    rank, world_size, _ = init_distributed(device.type)  # before the model moves: it picks this process's GPU
    model = place_model(build_model(cfg), device, cfg.train.channels_last)
    return Predictor(model, device, args.score_thresh, cfg.train.amp), rank, world_size


if __name__ == "__main__":
    sys.exit(main())
