"""Export a trained detector to ONNX or a torch.export program, and check it against the eager model.

    python tools/export.py configs/quickstart_shapes.py --weights output/quickstart/model_final.pth \\
        --format onnx --output output/quickstart/model.onnx --check datasets/shapes/val/images/00000*.jpg

The file takes one float image [3, H, W] in 0..1 of any size and returns boxes [D, 4] (pixels
of that image), scores [D] and labels [D] (category ids), by descending score; detections
below the config's model.roi_heads.score_thresh are dropped inside it.

--check runs the file beside the eager model on each image and prints, per image, whether
every detection of each is matched by the other (same label, IoU > 0.99, score within 1e-3)
and the latency of both. Exit status: 0, or 1 when --check finds a difference, or 2 for a
usage error or a model that cannot be exported (one line saying why).
"""

import argparse
import sys
from typing import Optional

from detect.config import load_config
from detect.data.image_io import image_to_tensor, read_image, to_float_image
from detect.export import FORMATS, ExportedDetector, check_parity, export_detector
from detect.models import build_model
from detect.predict import expand_inputs
from detect.tool_errors import exit_on_user_error


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", required=True, help="a detect checkpoint")
    parser.add_argument("--format", required=True, choices=[*FORMATS, "torchscript"], help="onnx (.onnx) or export (torch.export, .pt2)")
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--check", nargs="+", metavar="IMAGE", help="images (files, folders, globs) to compare on")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)
    suffix = {"onnx": ".onnx", "export": ".pt2"}.get(args.format)
    if suffix and not args.output.endswith(suffix):
        parser.error(f"--format {args.format} writes a {suffix} file: name --output accordingly")
    with exit_on_user_error():
        cfg = load_config(args.config, [*args.overrides, f"model.weights={args.weights}"])
        paths = expand_inputs(args.check) if args.check else []
        images = [to_float_image(image_to_tensor(read_image(p))) for p in paths]
        model = build_model(cfg).eval()
        export_detector(model, {args.format: args.output})
        print(f"wrote {args.output}")
        if not images:
            return 0
        exported = ExportedDetector(args.output)
        results = [check_parity(model, exported, image, str(path)) for path, image in zip(paths, images)]
    for result in results:
        print(result)
    failed = sum(not r.ok for r in results)
    print(f"parity: {len(results) - failed}/{len(results)} images match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
