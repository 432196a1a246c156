"""Running a detector over a dataset, and evaluating what it found."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn
from tqdm import tqdm

from detect.config import AMP_MODES, Config
from detect.data.build import Dataset, build_dataset
from detect.data.image_io import to_float_image
from detect.data.loader import build_test_loader
from detect.engine.distributed import all_gather_objects, is_main_process
from detect.evaluation.coco import save_metrics, to_coco_results
from detect.evaluation.dataset import EvaluationReport, evaluate_detections

Predictions = dict[Union[int, str], dict[str, Tensor]]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA, fp16 on CUDA, nothing for ``off``."""
    if amp == "off":
        return contextlib.nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in AMP_MODES:
        raise ValueError(f"unknown train.amp {amp!r}; known: {', '.join(map(repr, AMP_MODES))}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs CUDA; use bf16 on the CPU")
    return torch.autocast(device.type, dtype=dtypes[amp])


@torch.inference_mode()
def predict_dataset(model: nn.Module, dataset: Dataset, batch_size: int, num_workers: int, device: torch.device, amp: str = "off") -> Predictions:
    """Detections for every image of ``dataset`` (all processes' shares gathered), by image id."""
    was_training = model.training
    model.eval()
    predictions: Predictions = {}
    loader = build_test_loader(dataset, batch_size, num_workers)
    for images, targets in tqdm(loader, desc="inference", unit="batch", disable=not is_main_process(), dynamic_ncols=True):
        with autocast(device, amp):
            outputs = model([to_float_image(image.to(device, non_blocking=True)) for image in images])
        for target, output in zip(targets, outputs):
            predictions[target["image_id"]] = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in output.items()}
    model.train(was_training)
    merged: Predictions = {}
    for part in all_gather_objects(predictions):
        merged.update(part)
    return merged


def evaluate_model(model: nn.Module, cfg: Config, output_dir: str | os.PathLike, device: torch.device) -> EvaluationReport | None:
    """Runs ``model`` over ``cfg.data.val``, writes detections.json and metrics.json; the report on the main process."""
    dataset = build_dataset(cfg.data.val, cfg.data, is_train=False)
    predictions = predict_dataset(model, dataset, cfg.test.batch_size, cfg.data.num_workers, device, cfg.train.amp)
    if not is_main_process():
        return None
    results = to_coco_results(predictions)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "detections.json", results)
    return score_results(dataset, results, output_dir)


def score_results(dataset: Dataset, results: list[dict[str, Any]], output_dir: Path) -> EvaluationReport:
    """Evaluates COCO-format results; writes metrics.json, pr_curves.json and prints the summary."""
    report = evaluate_detections(dataset, results)
    save_metrics(report.metrics, output_dir / "metrics.json")
    write_json(output_dir / "pr_curves.json", report.curves)
    print(report.text)
    return report


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
