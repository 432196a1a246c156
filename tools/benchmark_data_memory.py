"""Host memory and build time of a COCO training dataset at COCO scale (see detect.data.memory_benchmark).

    python tools/benchmark_data_memory.py --out memory.json                 # full size, ~560 MB json
    python tools/benchmark_data_memory.py --scale 0.01 --out memory.json
    python tools/benchmark_data_memory.py --ann-file /tmp/coco.json --code /path/to/other/checkout

Writes the synthetic json into a temporary folder (or reuses --ann-file, written
there first if missing), builds the training dataset in a fresh process and
prints and writes the figures as JSON.
"""

import argparse
import json
import tempfile
from pathlib import Path

from detect.data.memory_benchmark import measure_data_memory, write_synthetic_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of train2017's size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ann-file", type=Path, help="reuse this json; written first if it does not exist")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers to measure")
    parser.add_argument("--items", type=int, default=200, help="items each worker reads before it is measured")
    parser.add_argument("--code", type=Path, help="checkout whose detect is measured (default: this one)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if not 0 < args.scale <= 1:
        parser.error(f"--scale {args.scale}: expected a fraction in (0, 1]")
    if args.workers < 1 or args.items < 1:
        parser.error(f"--workers {args.workers} --items {args.items}: both must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = args.ann_file or Path(tmp) / "instances.json"
        written = None
        if not ann_file.exists():
            written = write_synthetic_coco(ann_file, args.scale, args.seed)
        figures = measure_data_memory(ann_file, args.workers, args.items, args.code)
    result = {"synthetic": written, "scale": args.scale, "seed": args.seed, **figures}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
