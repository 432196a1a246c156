"""Downloads PASCAL VOC 2007 and 2012 into datasets/VOCdevkit, or checks an existing layout.

    python datasets/prepare_voc.py                               # all three sets, about 2.9 GB
    python datasets/prepare_voc.py --sets 2007/trainval 2007/test
    python datasets/prepare_voc.py --check                       # says what is missing; exit 1 if anything

Interrupted downloads resume on the next run; sets already in place are skipped.
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
    parser.add_argument("--root", default="datasets/VOCdevkit", help="the VOCdevkit folder (default: %(default)s)")
    parser.add_argument("--sets", nargs="+", choices=list(fetch.VOC_ARCHIVES), default=list(fetch.VOC_ARCHIVES))
    parser.add_argument("--check", action="store_true", help="only check the layout; download nothing")
    parser.add_argument("--base-url", default=fetch.VOC_URL, help="a mirror with the official paths below it")
    parser.add_argument("--archive-dir", help="where the tars are kept (default: ROOT/archives)")
    parser.add_argument("--md5-file", help="md5sum-format checksums replacing the published ones, e.g. a mirror's")
    parser.add_argument("--no-verify", action="store_true", help="skip md5 checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.check:
            problems = fetch.check_voc(args.root, args.sets)
        else:
            checksums = fetch.read_md5_file(args.md5_file) if args.md5_file else None
            problems = fetch.prepare_voc(args.root, args.sets, args.base_url, args.archive_dir, checksums,
                                         verify=not args.no_verify)
    except (fetch.DownloadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if problems:
        print(f"{args.root} is incomplete:", *(f"  {p}" for p in problems), sep="\n", file=sys.stderr)
        return 1
    sets = ", ".join(f"'{s}'" for s in args.sets)
    print(f"{args.root} is complete ({sets}). Point a config at it with, e.g.:\n"
          f"  data.train.type=voc data.train.root={args.root} data.train.sets=\"[{sets}]\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
