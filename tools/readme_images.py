"""Make the README's images from a finished training run (normally the quick start's).

    python tools/train.py configs/quickstart_shapes.py
    python tools/readme_images.py output/quickstart --output-dir docs/images

Reads RUN_DIR/config.py, model_final.pth, log.jsonl, detections.json, metrics.json and
pr_curves.json, and writes:

- predictions.png: the trained model's detections on the first --num validation images;
- errors.png: the error analysis of the 4 worst validation images (see tools/visualize.py errors);
- losses.png, lr.png, per_class_ap.png, pr_curves.png (see tools/plot.py).
"""

import argparse
from pathlib import Path
from typing import Optional

from detect.config import load_config
from detect.data.build import build_dataset
from detect.data.image_io import read_image, write_image
from detect.engine.trainer import resolve_device
from detect.evaluation.coco import load_results
from detect.gallery import contact_sheet, draw_ranked_errors, rank_errors
from detect.models import build_model, place_model
from detect.plots import plot_run
from detect.predict import Predictor
from detect.tool_errors import exit_on_user_error

NUM_ERROR_IMAGES = 4


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--output-dir", default="docs/images", help="default: %(default)s")
    parser.add_argument("--num", type=int, default=6, help="validation images in predictions.png (default: %(default)s)")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="default: %(default)s")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.device=cpu")
    args = parser.parse_intermixed_args(argv)
    with exit_on_user_error():
        run, out = Path(args.run_dir), Path(args.output_dir)
        cfg = load_config(run / "config.py", [*args.overrides, f"model.weights={run / 'model_final.pth'}"])
        written = plot_run(run, out)

        dataset = build_dataset(cfg.data.val, cfg.data, is_train=False)
        device = resolve_device(cfg.train.device)
        model = place_model(build_model(cfg), device, cfg.train.channels_last)
        predictor = Predictor(model, device, args.score_thresh, cfg.train.amp)
        paths = [Path(dataset.image_info(i)["path"]) for i in range(min(args.num, len(dataset)))]
        rgbs = [read_image(p) for p in paths]
        drawn = [(p.name, predictor.draw(rgb, det)) for p, rgb, det in zip(paths, rgbs, predictor(rgbs))]
        write_image(out / "predictions.png", contact_sheet(drawn))

        ranked = rank_errors(dataset, load_results(run / "detections.json"), 0.5, args.score_thresh)
        write_image(out / "errors.png", contact_sheet(draw_ranked_errors(dataset, ranked, NUM_ERROR_IMAGES)))
    for path in [out / "predictions.png", out / "errors.png", *written]:
        print(path)


if __name__ == "__main__":
    main()
