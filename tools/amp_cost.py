"""What bf16 autocast costs in AP: the same config trained and evaluated in bf16 and in float32, over seeds.

    python tools/amp_cost.py configs/quickstart_shapes.py --seeds 42 1 2 --output-dir output/amp_cost
    python tools/amp_cost.py configs/quickstart_shapes.py --seeds 42 1 --output-dir output/amp_cost \\
        --eval-override data.val.root=datasets/shapes_2000/val/images \\
        --eval-override data.val.ann_file=datasets/shapes_2000/annotations/val.json

For every seed, ``tools/train.py`` trains the config with ``train.amp=bf16`` and with
``train.amp=off`` (``OUTPUT/seed{S}_{bf16,off}``), and ``tools/test.py`` evaluates each
model in both precisions (``.../eval_{bf16,off}``). A finished training or evaluation is
not run again, and an interrupted training resumes, so the command can be rerun with
more seeds. ``--eval-override`` applies to the evaluations only, for instance a larger
validation set than the one training watched.

Writes ``runs.json`` (every evaluation's COCO metrics), ``summary.json`` and
``summary.md``. The cost of the fast mode is the paired difference, seed by seed,
between bf16 training evaluated in bf16 and float32 training evaluated in float32.
Its mean comes with its standard error, because the seed alone moves a short
training's AP by several points.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from detect.spread import mean_and_error

REPO = Path(__file__).resolve().parent.parent
PRECISIONS = ("bf16", "off")  # train.amp values: bf16 autocast, float32


def run_tool(tool: str, *args: str) -> None:
    command = [sys.executable, str(REPO / "tools" / tool), *args]
    print("+", " ".join(command), flush=True)
    status = subprocess.run(command).returncode
    if status != 0:
        sys.exit(f"tools/{tool} exited with status {status} (its message is above); rerun this command to continue")


def train_and_evaluate(config: str, seed: int, out: Path, overrides: list[str], eval_overrides: list[str]) -> dict:
    """Trains ``config`` with ``seed`` in both precisions and evaluates each model in both; their bbox metrics."""
    metrics = {}
    for train_amp in PRECISIONS:
        run = out / f"seed{seed}_{train_amp}"
        if not (run / "model_final.pth").is_file():
            resume = ["--resume"] if (run / "last_checkpoint").is_file() else []
            run_tool("train.py", config, "--output-dir", str(run), *resume, *overrides, f"train.amp={train_amp}", f"train.seed={seed}")
        for eval_amp in PRECISIONS:
            evaluation = run / f"eval_{eval_amp}"
            if not (evaluation / "metrics.json").is_file():
                run_tool(
                    "test.py", str(run / "config.py"), "--weights", str(run / "model_final.pth"),
                    "--output-dir", str(evaluation), f"train.amp={eval_amp}", *eval_overrides,
                )
            bbox = json.loads((evaluation / "metrics.json").read_text())["bbox"]
            metrics[f"train_{train_amp}/eval_{eval_amp}"] = {k: v for k, v in bbox.items() if k != "per_class"}
    return metrics


def summarize(runs: dict[int, dict], metric: str = "AP") -> dict:
    """Per seed, ``metric`` of the four (training, evaluation) precisions; the fast mode's and bf16 inference's costs."""
    seeds = sorted(runs)

    def value(seed: int, train_amp: str, eval_amp: str) -> float:
        return runs[seed][f"train_{train_amp}/eval_{eval_amp}"][metric]

    fast_mode = [value(s, "bf16", "bf16") - value(s, "off", "off") for s in seeds]
    inference = [value(s, t, "bf16") - value(s, t, "off") for s in seeds for t in PRECISIONS]
    return {
        "metric": metric,
        "seeds": seeds,
        "per_seed": {s: {f"train_{t}/eval_{e}": value(s, t, e) for t in PRECISIONS for e in PRECISIONS} for s in seeds},
        "bf16_training": mean_and_error([value(s, "bf16", "bf16") for s in seeds]),
        "float32_training": mean_and_error([value(s, "off", "off") for s in seeds]),
        "fast_mode_minus_float32": mean_and_error(fast_mode),
        "bf16_minus_float32_inference_same_model": mean_and_error(inference),
    }


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(summary: dict) -> str:
    """The per-seed table and the mean differences as Markdown."""
    m = summary["metric"]
    lines = [
        f"| seed | bf16 training, bf16 eval | bf16 training, fp32 eval | fp32 training, fp32 eval | fp32 training, bf16 eval | {m}: bf16/bf16 - fp32/fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for seed, v in summary["per_seed"].items():
        cells = [v["train_bf16/eval_bf16"], v["train_bf16/eval_off"], v["train_off/eval_off"], v["train_off/eval_bf16"]]
        lines.append(f"| {seed} | " + " | ".join(_number(c) for c in cells) + f" | {_number(cells[0] - cells[2])} |")
    for label, key in (
        ("bf16 training and evaluation minus float32", "fast_mode_minus_float32"),
        ("bf16 minus float32 evaluation of the same model", "bf16_minus_float32_inference_same_model"),
    ):
        s = summary[key]
        lines.append(f"\n{label}: mean {_number(s['mean'])} {m}, sd {_number(s['sd'])}, standard error {_number(s['standard_error'])} (n = {s['n']})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a config file, e.g. configs/quickstart_shapes.py")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds (train.seed)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--eval-override", action="append", default=[], metavar="key=value", help="a config override for the evaluations only")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for training, e.g. train.max_iter=400")
    args = parser.parse_intermixed_args()  # overrides may follow --seeds and --eval-override
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds repeats a seed: {args.seeds}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    runs = {s: train_and_evaluate(args.config, s, args.output_dir, args.overrides, args.eval_override) for s in args.seeds}
    (args.output_dir / "runs.json").write_text(json.dumps({str(s): r for s, r in runs.items()}, indent=2) + "\n")
    summary = summarize(runs)
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = format_table(summary)
    (args.output_dir / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
