"""Convert a Detectron2 model-zoo Faster R-CNN (.pkl) into a detect checkpoint.

    python tools/convert_detectron2.py model_final_280758.pkl d2_faster_rcnn_R_50_FPN_1x.pth
    python tools/test.py configs/zoo/d2_faster_rcnn_R_50_FPN_1x.py --weights d2_faster_rcnn_R_50_FPN_1x.pth

The pickle is read with an unpickler that admits only numpy arrays, numbers,
strings and containers. FPN and C4 models of ResNet-50/101/152 and ResNeXt convert;
anything else (Mask R-CNN, RetinaNet, ...) is refused with what was found.
"""

import argparse

from detect.checkpoint import save_checkpoint
from detect.models.detectron2_compat import convert_model_zoo, load_pickle
from detect.tool_errors import exit_on_user_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="Detectron2 model-zoo checkpoint (.pkl)")
    parser.add_argument("output", help="detect checkpoint to write (.pth)")
    args = parser.parse_args()
    with exit_on_user_error():
        checkpoint, arch = convert_model_zoo(load_pickle(args.input), source=args.input)
        save_checkpoint(args.output, checkpoint)
    print(
        f"wrote {args.output}: {len(checkpoint['model'])} tensors, {len(checkpoint['classes'])} classes, "
        f"{arch}: use configs/zoo/d2_faster_rcnn_{arch}_*.py"
    )


if __name__ == "__main__":
    main()
