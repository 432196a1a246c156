"""Score a COCO-format results file against the config's evaluation split, without a model.

    python tools/evaluate.py configs/frcnn_r50_fpn_coco.py --detections output/x/detections.json

Prints the same summary as tools/test.py and writes the same metrics.json.
"""

import argparse
from pathlib import Path

from detect.config import load_config
from detect.data.build import build_dataset
from detect.engine.inference import score_results
from detect.evaluation.coco import load_results
from detect.tool_errors import exit_on_user_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--detections", required=True, help="COCO results json")
    parser.add_argument("--output-dir", help="default: the folder of the detections file")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    with exit_on_user_error():
        cfg = load_config(args.config, args.overrides)
        dataset = build_dataset(cfg.data.val, cfg.data, is_train=False)
        output_dir = Path(args.output_dir or Path(args.detections).parent)
        output_dir.mkdir(parents=True, exist_ok=True)
        score_results(dataset, load_results(args.detections), output_dir)


if __name__ == "__main__":
    main()
