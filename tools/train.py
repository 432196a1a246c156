"""Train a detector.

    python tools/train.py configs/frcnn_r50_fpn_coco.py
    python tools/train.py configs/quickstart_shapes.py --output-dir output/shapes train.max_iter=500
    torchrun --nproc_per_node 8 tools/train.py configs/frcnn_r101_coco.py

Writes config.py, log.jsonl, checkpoints (model_final.pth) and metrics.json into the output folder,
and with --tensorboard TensorBoard event files (tensorboard --logdir OUTPUT_DIR).
SIGTERM or Ctrl-C saves a checkpoint after the step in progress, prints the command that
resumes the run, and exits with status 128 + the signal's number.
"""

import argparse
import sys

from detect.config import load_config
from detect.engine import train
from detect.engine.distributed import is_main_process, resume_command
from detect.engine.trainer import TrainingStopped
from detect.tool_errors import exit_on_user_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a config file, e.g. configs/frcnn_r50_fpn_coco.py")
    parser.add_argument("--output-dir", help="where the run is written (default: the config's output_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output folder")
    parser.add_argument("--weights", help="initial detect checkpoint (sets model.weights)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files (train.tensorboard)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_iter=1000")
    args = parser.parse_intermixed_args()
    with exit_on_user_error():
        overrides = list(args.overrides)
        if args.output_dir:
            overrides.append(f"output_dir={args.output_dir}")
        if args.weights:
            overrides.append(f"model.weights={args.weights}")
        if args.tensorboard:
            overrides.append("train.tensorboard=True")
        cfg = load_config(args.config, overrides)
        try:
            train(cfg, resume=args.resume)
        except TrainingStopped as e:
            if is_main_process():
                print(f"{e}\nresume with: {resume_command(sys.argv)}", file=sys.stderr)
            sys.exit(128 + e.signum)  # the shell's status for a process ended by that signal


if __name__ == "__main__":
    main()
