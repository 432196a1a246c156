"""Downloads COCO 2017 detection into datasets/coco, or checks an existing layout.

    python datasets/prepare_coco.py                    # train + val, about 19 GB
    python datasets/prepare_coco.py --splits val       # val2017 and the annotations only
    python datasets/prepare_coco.py --check            # says what is missing; exit 1 if anything

Interrupted downloads resume on the next run; parts already in place are skipped.
The work is done by detect.data.download; see datasets/README.md for the layout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from detect.data import download as fetch
from detect.data import prepare_cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="datasets/coco", help="the layout's folder (default: %(default)s)")
    parser.add_argument("--splits", nargs="+", choices=sorted(fetch.COCO_IMAGE_COUNTS), default=["train", "val"])
    prepare_cli.add_arguments(parser, fetch.COCO_URL, "zips")
    args = parser.parse_args(argv)
    if not prepare_cli.run(args, args.splits, fetch.check_coco, fetch.prepare_coco):
        return 1
    print(f"{args.root} is complete ({', '.join(args.splits)}). Point a config at it with:")
    for split in args.splits:
        print(f"  data.{split}.root={args.root}/{split}2017 "
              f"data.{split}.ann_file={args.root}/annotations/instances_{split}2017.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
