"""The command line that datasets/prepare_coco.py and prepare_voc.py share: download, or --check."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from detect.data import download as fetch


def add_arguments(parser: argparse.ArgumentParser, base_url: str, archives: str) -> None:
    """The options after ``--root`` and the parts to fetch; ``archives`` names them in help ("zips", "tars")."""
    parser.add_argument("--check", action="store_true", help="only check the layout; download nothing")
    parser.add_argument("--base-url", default=base_url, help="a mirror with the official paths below it")
    parser.add_argument("--archive-dir", help=f"where the {archives} are kept (default: ROOT/archives)")
    parser.add_argument("--md5-file", help="md5sum-format checksums replacing the published ones, e.g. a mirror's")
    parser.add_argument("--no-verify", action="store_true", help="skip md5 checks")


def run(
    args: argparse.Namespace,
    parts: Sequence[str],
    check: Callable[[str, Sequence[str]], list[str]],
    prepare: Callable[..., list[str]],
) -> bool:
    """Checks or prepares ``parts`` under ``args.root``; prints what is wrong and returns whether all is in place."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.check:
            problems = check(args.root, parts)
        else:
            checksums = fetch.read_md5_file(args.md5_file) if args.md5_file else None
            problems = prepare(args.root, parts, args.base_url, args.archive_dir, checksums, verify=not args.no_verify)
    except (fetch.DownloadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    if problems:
        print(f"{args.root} is incomplete:", *(f"  {p}" for p in problems), sep="\n", file=sys.stderr)
        return False
    return True
