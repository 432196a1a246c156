"""How far bf16 autocast moves a training step's gradients, beside the noise the step has anyway.

    python tools/amp_gradients.py configs/quickstart_shapes.py --batches 8 \\
        --weights init output/amp_cost/seed3_off/model_0000500.pth output/amp_cost/seed3_off/model_final.pth \\
        --json output/amp_gradients.json

For each model (``init``: the config's own initialisation with ``train.seed``) and each of
the first ``--batches`` training batches (the loader seeded with ``train.seed``, so every
model sees the same images), the gradient of the summed losses in float32 is compared
with the same step in bf16, in bf16 with the float32 step's proposals, and in float32
with other sampled anchors and RoIs; ``detect/engine/amp_gradients.py`` says what each
column means. Prints Markdown tables and writes them beside the JSON (``.md``), which
also holds every batch's values.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from detect.config import load_config
from detect.data.build import build_dataset, dataset_classes
from detect.data.loader import build_train_loader, start_workers, stop_workers
from detect.engine.amp_gradients import format_report, measure
from detect.engine.trainer import batch_to_device, resolve_device, seed_everything
from detect.models import build_model, place_model
from detect.tool_errors import exit_on_user_error


def on_device(batches: Iterator, device: torch.device) -> Iterator:
    for images, targets in batches:
        yield batch_to_device(images, targets, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--weights", nargs="+", required=True, help="detect checkpoints, or init for the config's initialisation")
    parser.add_argument("--batches", type=int, default=8, help="training batches per model (default 8)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    if args.batches < 2:
        parser.error(f"--batches must be at least 2 (the batch noise needs a mean), got {args.batches}")
    results, reports = {}, []
    with exit_on_user_error():
        cfg = load_config(args.config, args.overrides)
        device = resolve_device(cfg.train.device)
        if device.type == "cpu":
            torch.set_flush_denormal(True)  # as training does
        dataset = build_dataset(cfg.data.train, cfg.data, is_train=True)
        for weights in args.weights:
            seed_everything(cfg.train.seed)
            if weights == "init":
                model = build_model(cfg, dataset_classes(dataset))
            else:
                model = build_model(load_config(args.config, [*args.overrides, f"model.weights={weights}"]))
            model = place_model(model, device, cfg.train.channels_last).train()
            loader = build_train_loader(dataset, cfg.train.batch_size, cfg.data.num_workers, cfg.data.aspect_ratio_grouping, cfg.train.seed)
            batches = start_workers(loader)
            try:
                results[weights] = measure(model, on_device(batches, device), args.batches, cfg.train.seed)
            finally:
                stop_workers(batches)
            reports.append(format_report(weights, results[weights]))
            print(reports[-1], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"config": args.config, "overrides": args.overrides, "device": str(device), "models": results}, indent=1) + "\n")
    args.json.with_suffix(".md").write_text("\n".join(reports))


if __name__ == "__main__":
    main()
