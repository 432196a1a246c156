"""Downloads PASCAL VOC 2007 and 2012 into datasets/VOCdevkit, or checks an existing layout.

    python datasets/prepare_voc.py                               # all three sets, about 2.9 GB
    python datasets/prepare_voc.py --sets 2007/trainval 2007/test
    python datasets/prepare_voc.py --check                       # says what is missing; exit 1 if anything

Interrupted downloads resume on the next run; sets already in place are skipped.
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
    parser.add_argument("--root", default="datasets/VOCdevkit", help="the VOCdevkit folder (default: %(default)s)")
    parser.add_argument("--sets", nargs="+", choices=list(fetch.VOC_ARCHIVES), default=list(fetch.VOC_ARCHIVES))
    prepare_cli.add_arguments(parser, fetch.VOC_URL, "tars")
    args = parser.parse_args(argv)
    if not prepare_cli.run(args, args.sets, fetch.check_voc, fetch.prepare_voc):
        return 1
    sets = ", ".join(f"'{s}'" for s in args.sets)
    print(f"{args.root} is complete ({sets}). Point a config at it with, e.g.:\n"
          f"  data.train.type=voc data.train.root={args.root} data.train.sets=\"[{sets}]\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
