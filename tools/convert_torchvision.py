"""Convert a torchvision fasterrcnn_resnet50_fpn state_dict into a detect checkpoint.

    python tools/convert_torchvision.py fasterrcnn_resnet50_fpn_coco-258fb6c6.pth frcnn_r50_fpn_tv.pth
    python tools/test.py configs/frcnn_r50_fpn_coco.py --weights frcnn_r50_fpn_tv.pth
"""

import argparse
import sys

import torch

from detect.checkpoint import save_checkpoint
from detect.models.torchvision_compat import convert_fasterrcnn_resnet50_fpn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="torchvision state_dict (.pth)")
    parser.add_argument("output", help="detect checkpoint to write")
    args = parser.parse_args()
    try:
        state_dict = torch.load(args.input, map_location="cpu", weights_only=True)
        checkpoint = convert_fasterrcnn_resnet50_fpn(state_dict, source=args.input)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    save_checkpoint(args.output, checkpoint)
    print(f"wrote {args.output}: {len(checkpoint['model'])} tensors, {len(checkpoint['classes'])} classes")


if __name__ == "__main__":
    main()
