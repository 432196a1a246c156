"""How far bf16 autocast moves a training step's gradients, beside the noise the step has anyway.

Training in bf16 and in float32 from the same seed ends in models several AP apart
in either direction, so comparing finished trainings cannot tell a small cost of
bf16 from chance. This compares single steps instead: the same model and batch,
with the gradient of the summed losses in float32 as the reference, and

- ``float32_again``: float32 again with the same sampling seed; zero unless the step is
  not deterministic, the floor of every other column;
- ``bf16_same_proposals``: bf16 with the reference's proposals, so that the same anchors
  and RoIs are sampled: the rounding alone;
- ``bf16``: bf16 as training runs it: rounded objectness scores rank the proposals
  differently, so NMS keeps, and the sampler draws, other RoIs;
- ``float32_other_samples``: float32 with another sampling seed, other anchors and
  RoIs of the same images: noise every step has;
- ``batch_against_mean``: the reference against the mean of all batches' references:
  the noise of drawing a batch.

Each is the relative difference ``|g - g_ref| / |g_ref|`` per parameter group (the first
two parts of a parameter's name) and over all parameters, with the losses' differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from detect.engine.inference import autocast
from detect.spread import mean_and_error

# name: (train.amp, added to the sampling seed, the reference's proposals replayed)
VARIANTS = {
    "float32_again": ("off", 0, False),
    "bf16_same_proposals": ("bf16", 0, True),
    "bf16": ("bf16", 0, False),
    "float32_other_samples": ("off", 1, False),
}
ALL = "all"


class ProposalReplay:
    """Records the proposals of one forward pass of ``model.rpn`` and hands them to later passes."""

    def __init__(self, rpn: nn.Module) -> None:
        self.mode: str | None = None  # "record", "replay" or None
        self.proposals: Any = None
        self._handle = rpn.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: tuple[Any, Any]) -> tuple[Any, Any] | None:
        proposals, losses = output
        if self.mode == "record":
            self.proposals = proposals
        elif self.mode == "replay":
            return self.proposals, losses
        return None

    def remove(self) -> None:
        self._handle.remove()


def step_gradients(model: nn.Module, images: list[Tensor], targets: list[dict[str, Tensor]], amp: str, seed: int) -> tuple[dict[str, float], dict[str, Tensor]]:
    """The losses of one training forward pass and the float32 gradients of their sum, by parameter name."""
    torch.manual_seed(seed)  # the anchor and RoI samplers draw from the global generator
    model.zero_grad(set_to_none=True)
    with autocast(images[0].device, amp):
        losses = model(images, targets)
    sum(losses.values()).backward()
    gradients = {name: p.grad.detach().float().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, gradients


def parameter_group(name: str) -> str:
    return ".".join(name.split(".")[:2])


def relative_differences(gradients: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, float]:
    """``|g - g_ref| / |g_ref|`` per parameter group and over all parameters (:data:`ALL`)."""
    squares: dict[str, list[float]] = {}
    for name, ref in reference.items():
        difference = float((gradients[name] - ref).square().sum())
        norm = float(ref.square().sum())
        for group in (ALL, parameter_group(name)):
            totals = squares.setdefault(group, [0.0, 0.0])
            totals[0] += difference
            totals[1] += norm
    return {group: math.sqrt(d / n) if n > 0 else math.nan for group, (d, n) in squares.items()}


def measure(model: nn.Module, batches: Iterator, num_batches: int, seed: int) -> dict[str, Any]:
    """Every variant's gradient differences from the float32 reference on ``num_batches`` batches.

    Args:
        model: in training mode, on the device the batches' tensors are on.
        batches: yields ``(images, targets)`` as the training loop passes them to the model.
        seed: the sampling seed of the reference and of the variants that keep it.

    Returns:
        ``relative_difference``: {variant: {group: mean over batches}}; ``losses``:
        {variant: {loss: {n, mean, sd, standard_error}}} of the variant's loss minus the
        reference's; ``reference_losses``: {loss: mean}; ``per_batch``: every value.
    """
    replay = ProposalReplay(model.rpn)
    per_batch: list[dict[str, Any]] = []
    references = []
    try:
        for _ in range(num_batches):
            images, targets = next(batches)
            replay.mode = "record"
            reference_losses, reference = step_gradients(model, images, targets, "off", seed)
            record: dict[str, Any] = {"losses": {"reference": reference_losses}, "relative_difference": {}}
            for variant, (amp, seed_offset, replayed) in VARIANTS.items():
                replay.mode = "replay" if replayed else None
                losses, gradients = step_gradients(model, images, targets, amp, seed + seed_offset)
                record["losses"][variant] = losses
                record["relative_difference"][variant] = relative_differences(gradients, reference)
            references.append(reference)
            per_batch.append(record)
    finally:
        replay.remove()
    mean_gradient = {name: torch.stack([r[name] for r in references]).mean(0) for name in references[0]}
    for record, reference in zip(per_batch, references):
        record["relative_difference"]["batch_against_mean"] = relative_differences(reference, mean_gradient)
    columns = [*VARIANTS, "batch_against_mean"]
    groups = list(per_batch[0]["relative_difference"]["bf16"])
    loss_names = list(per_batch[0]["losses"]["reference"])
    return {
        "batches": num_batches,
        "relative_difference": {
            column: {g: sum(r["relative_difference"][column][g] for r in per_batch) / num_batches for g in groups} for column in columns
        },
        "reference_losses": {k: sum(r["losses"]["reference"][k] for r in per_batch) / num_batches for k in loss_names},
        "losses": {
            variant: {k: mean_and_error([r["losses"][variant][k] - r["losses"]["reference"][k] for r in per_batch]) for k in loss_names}
            for variant in VARIANTS
        },
        "per_batch": per_batch,
    }


def format_report(name: str, result: dict[str, Any]) -> str:
    """One model's gradient and loss differences as Markdown tables."""
    columns = list(result["relative_difference"])
    lines = [f"### {name} ({result['batches']} batches)", "", "| parameters | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for group in result["relative_difference"][columns[0]]:
        lines.append(f"| {group} | " + " | ".join(f"{result['relative_difference'][c][group]:.4f}" for c in columns) + " |")
    lines += ["", "| loss | float32 | " + " | ".join(f"{v} minus float32" for v in result["losses"]) + " |", "|---" * (len(result["losses"]) + 2) + "|"]
    for loss, value in result["reference_losses"].items():
        cells = []
        for variant in result["losses"]:
            s = result["losses"][variant][loss]
            error = f" ± {s['standard_error']:.5f}" if s["standard_error"] is not None else ""
            cells.append(f"{s['mean']:+.5f}{error}")
        lines.append(f"| {loss} | {value:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
