"""Evaluate a checkpoint on the config's evaluation split.

    python tools/test.py configs/frcnn_r50_fpn_coco.py --weights output/frcnn_r50_fpn_coco/model_final.pth

Prints the COCO summary (and the VOC table on VOC data) and writes detections.json
(COCO results format, the dataset's own ids) and metrics.json into the output folder.
"""

import argparse
from pathlib import Path

import torch

from detect.config import load_config
from detect.engine import evaluate_model
from detect.engine.distributed import init_distributed
from detect.engine.trainer import resolve_device
from detect.models import build_model, place_model
from detect.tool_errors import exit_on_user_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", required=True, help="a detect checkpoint")
    parser.add_argument("--output-dir", help="default: <config's output_dir>/test")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    with exit_on_user_error():
        cfg = load_config(args.config, [*args.overrides, f"model.weights={args.weights}"])
        device = resolve_device(cfg.train.device)
        _, _, local_rank = init_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
        model = place_model(build_model(cfg), device, cfg.train.channels_last)
        evaluate_model(model, cfg, Path(args.output_dir or Path(cfg.output_dir) / "test"), device)


if __name__ == "__main__":
    main()
