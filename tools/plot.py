"""Plot a training run: losses, learning rate, and after evaluation per-class AP and precision-recall curves.

    python tools/plot.py output/quickstart
    python tools/plot.py output/quickstart --output-dir docs/images

Reads RUN_DIR/log.jsonl (and metrics.json, pr_curves.json when present) and writes
losses.png, lr.png, per_class_ap.png and pr_curves.png (default: RUN_DIR/plots).
"""

import argparse
from pathlib import Path
from typing import Optional

from detect.plots import plot_run
from detect.tool_errors import exit_on_user_error


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training output folder")
    parser.add_argument("--output-dir", help="default: RUN_DIR/plots")
    args = parser.parse_intermixed_args(argv)
    with exit_on_user_error():
        written = plot_run(args.run_dir, args.output_dir or Path(args.run_dir) / "plots")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
