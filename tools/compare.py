"""Compare finished runs with the ResNet paper's detection results (its Tables 7 and 8).

    python tools/compare.py output/frcnn_vgg16_voc output/frcnn_r101_voc
    python tools/compare.py output/frcnn_*_coco --output coco.md --chart coco.png

Reads each run folder's config.py and metrics.json, prints a Markdown table per
benchmark (VOC 2007 test (07+12), COCO val, or other data named by its path)
with the paper's numbers beside the run's and ResNet-101's gain over VGG-16,
writes it to --output, and draws the numbers as a bar chart (--chart, default:
the report's path with .png).
"""

import argparse
from pathlib import Path

from detect.reports import build_report, read_runs, write_chart
from detect.tool_errors import exit_on_user_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders written by tools/train.py")
    parser.add_argument("--output", default="report.md", help="the Markdown report (default: %(default)s)")
    parser.add_argument("--chart", help="the PNG bar chart (default: the report's path with .png)")
    args = parser.parse_args()
    with exit_on_user_error():
        runs = read_runs(args.runs)
        report = build_report(runs)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        chart = Path(args.chart) if args.chart else output.with_suffix(".png")
        write_chart(runs, chart)
        print(report)
        print(f"wrote {output} and {chart}")


if __name__ == "__main__":
    main()
