"""Downloads COCO 2017 detection into datasets/coco, or checks an existing layout.

    python datasets/prepare_coco.py                    # train + val, about 19 GB
    python datasets/prepare_coco.py --splits val       # val2017 and the annotations only
    python datasets/prepare_coco.py --check            # says what is missing; exit 1 if anything

Interrupted downloads resume on the next run; parts already in place are skipped.
The work is done by detect.data.download; see datasets/README.md for the layout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from detect.data import download as fetch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="datasets/coco", help="the layout's folder (default: %(default)s)")
    parser.add_argument("--splits", nargs="+", choices=sorted(fetch.COCO_IMAGE_COUNTS), default=["train", "val"])
    parser.add_argument("--check", action="store_true", help="only check the layout; download nothing")
    parser.add_argument("--base-url", default=fetch.COCO_URL, help="a mirror with the official paths below it")
    parser.add_argument("--archive-dir", help="where the zips are kept (default: ROOT/archives)")
    parser.add_argument("--md5-file", help="md5sum-format checksums replacing the published ones, e.g. a mirror's")
    parser.add_argument("--no-verify", action="store_true", help="skip md5 checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.check:
            problems = fetch.check_coco(args.root, args.splits)
        else:
            checksums = fetch.read_md5_file(args.md5_file) if args.md5_file else None
            problems = fetch.prepare_coco(args.root, args.splits, args.base_url, args.archive_dir, checksums,
                                          verify=not args.no_verify)
    except (fetch.DownloadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if problems:
        print(f"{args.root} is incomplete:", *(f"  {p}" for p in problems), sep="\n", file=sys.stderr)
        return 1
    print(f"{args.root} is complete ({', '.join(args.splits)}). Point a config at it with:")
    for split in args.splits:
        print(f"  data.{split}.root={args.root}/{split}2017 "
              f"data.{split}.ann_file={args.root}/annotations/instances_{split}2017.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
