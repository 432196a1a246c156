"""Time detect's R50-FPN Faster R-CNN beside torchvision's (and Detectron2's where importable).

    python tools/benchmark.py --json docs/benchmark/cpu.json     # the full run (33 minutes on 2 cores)
    python tools/benchmark.py --toy --json /tmp/toy.json          # every step at toy size
    python tools/benchmark.py --markdown docs/benchmark/cpu.json  # the README tables of a run

Every peer gets the same seeded random weights, made realistic on real images
(detect/benchmark/weights.py), the same images at the test size, and the same
top-k, NMS and score thresholds; each runs in its own process, in fp32 and in
bf16 autocast with channels-last. See detect/benchmark/ for what is measured and how.
"""

import argparse
import glob
import json
import sys
from pathlib import Path

from detect.benchmark.report import markdown
from detect.benchmark.suite import TOY, Plan, run_benchmark
from detect.benchmark.weights import COCO8_IMAGES
from detect.tool_errors import exit_on_user_error



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", help="glob of the images (default: tests/data/coco8's)")
    parser.add_argument("--toy", action="store_true", help="every step at toy size, 1 repeat")
    parser.add_argument("--peers", nargs="+", help="of detect, torchvision, detectron2 (default: all importable)")
    parser.add_argument("--repeats", type=int, help="timed calls per figure (default 3; toy 1)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--markdown", metavar="JSON", help="only print the tables of this earlier run")
    args = parser.parse_args()
    if args.markdown:
        if not Path(args.markdown).is_file():
            parser.error(f"--markdown {args.markdown}: no such file (a run's --json output)")
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    paths = sorted(glob.glob(args.images)) if args.images else COCO8_IMAGES
    if not paths:
        print(f"error: --images {args.images}: no file matches", file=sys.stderr)
        sys.exit(2)
    plan = TOY if args.toy else Plan()
    if args.repeats:
        plan = Plan(**{**plan.__dict__, "repeats": args.repeats})
    with exit_on_user_error():
        result = run_benchmark(plan, paths, args.peers, log=lambda line: print(line, file=sys.stderr))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
