"""Look at a dataset's ground truth, or at a model's errors on it, worst images first.

    python tools/visualize.py data configs/quickstart_shapes.py --output-dir output/vis/data
    python tools/visualize.py data configs/quickstart_shapes.py --augmented --num 8 --output-dir output/vis/aug
    python tools/visualize.py errors configs/quickstart_shapes.py \\
        --detections output/quickstart/detections.json --output-dir output/vis/errors

data: the first N images of a split with their ground-truth boxes, as stored or (--augmented)
after the training transforms, plus grid.png, a contact sheet of them.

errors: every image of the config's evaluation split (data.val) is judged against the detections
(true positive, duplicate, wrong class, localization, background, missed; see
detect/evaluation/errors.py); the N worst (most false positives plus missed objects) are drawn
as 000_<name>, 001_<name>, ... with grid.png, and summary.json holds the counts per kind,
overall and per class, and the worst images' scores.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch

from detect.config import load_config
from detect.data.build import build_dataset
from detect.data.image_io import write_image
from detect.evaluation.coco import load_results
from detect.gallery import contact_sheet, draw_ground_truth, draw_ranked_errors, error_summary, rank_errors, write_gallery
from detect.tool_errors import exit_on_user_error


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="draw ground-truth boxes of a dataset split")
    data.add_argument("config")
    data.add_argument("--split", choices=["train", "val"], default="train", help="default: %(default)s")
    data.add_argument("--augmented", action="store_true", help="after the training transforms (resize, flip, ...)")
    data.add_argument("--num", type=int, default=16, help="images to draw (default: %(default)s)")
    data.add_argument("--seed", type=int, default=0, help="seeds the augmentation draws (default: %(default)s)")
    data.add_argument("--output-dir", required=True)
    data.add_argument("overrides", nargs="*", metavar="key=value")

    errors = commands.add_parser("errors", help="draw detections against ground truth, worst images first")
    errors.add_argument("config")
    errors.add_argument("--detections", required=True, help="COCO results json, e.g. <run>/detections.json")
    errors.add_argument("--output-dir", required=True)
    errors.add_argument("--iou", type=float, default=0.5, help="IoU of a hit (default: %(default)s)")
    errors.add_argument("--score-thresh", type=float, default=0.5, help="ignore detections below (default: %(default)s)")
    errors.add_argument("--num", type=int, default=16, help="images to draw (default: %(default)s)")
    errors.add_argument("overrides", nargs="*", metavar="key=value")
    return parser, {"data": data, "errors": errors}


def visualize_data(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    ds_cfg = cfg.data.train if args.split == "train" else cfg.data.val
    dataset = build_dataset(ds_cfg, cfg.data, is_train=args.augmented)
    torch.manual_seed(args.seed)  # the training transforms draw from torch's generator
    gallery = draw_ground_truth(dataset, args.num)
    output_dir = Path(args.output_dir)
    write_gallery(gallery, output_dir)
    write_image(output_dir / "grid.png", contact_sheet(gallery))
    print(f"{len(gallery)} images and grid.png -> {output_dir}")


def visualize_errors(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    dataset = build_dataset(cfg.data.val, cfg.data, is_train=False)
    ranked = rank_errors(dataset, load_results(args.detections), args.iou, args.score_thresh)
    gallery = draw_ranked_errors(dataset, ranked, args.num)
    output_dir = Path(args.output_dir)
    write_gallery(gallery, output_dir)
    write_image(output_dir / "grid.png", contact_sheet(gallery))
    summary = {"iou": args.iou, "score_thresh": args.score_thresh, **error_summary(dataset, ranked, args.num)}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    counts = ", ".join(f"{kind} {n}" for kind, n in summary["counts"].items())
    print(f"{summary['images']} images: {counts}\n{len(gallery)} worst images, grid.png and summary.json -> {output_dir}")


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, commands = build_parsers()
    if not argv or argv[0] not in commands:
        parser.parse_args(argv)  # prints the usage, or the help for -h
        return
    # Subcommand parsers are parsed on their own: argparse cannot intermix through subparsers,
    # and intermixing lets key=value overrides come after the options.
    args = commands[argv[0]].parse_intermixed_args(argv[1:])
    if args.num < 1:
        commands[argv[0]].error(f"--num must be at least 1, got {args.num}")
    with exit_on_user_error():
        {"data": visualize_data, "errors": visualize_errors}[argv[0]](args)


if __name__ == "__main__":
    main()
