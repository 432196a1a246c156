"""Loading a detect checkpoint into a built detector: whole, or fine-tuned onto other classes.

Evaluation and prediction build the model with the checkpoint's classes, and every
tensor must fit by name and shape. Training from ``model.weights`` builds it with the
dataset's classes and fine-tunes:

- the backbone must fit whole: another depth or width (R101 weights in an R50
  config) is an error, never a half-loaded network;
- every other tensor whose name and shape fit is loaded; the rest keep their
  initialisation and are named in the log line;
- the class-specific predictor outputs (class scores, class-specific box deltas) go
  row by row: background and each class whose name the checkpoint also has keep
  their trained rows, new classes keep their fresh initialisation, and the
  checkpoint's other classes are dropped.

A tensor that does not fit where it must is named with both shapes, in one line that
also says which config fits the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from detect.categories import CategoryMap
from detect.checkpoint import CheckpointError
from detect.config import Config, config_to_dict, flat_config
from detect.models.faster_rcnn import FasterRCNN

# The class-specific outputs and their predictor rows per class: one logit, four box deltas.
CLASS_ROWS = {
    "roi_heads.predictor.cls_score.weight": 1,
    "roi_heads.predictor.cls_score.bias": 1,
    "roi_heads.predictor.bbox_pred.weight": 4,
    "roi_heads.predictor.bbox_pred.bias": 4,
}
MUST_FIT_WHEN_FINE_TUNING = ("backbone.",)
NOT_SHAPING = ("model.weights", "model.classes", "model.backbone.weights")  # where a model started, or its labels
SHOWN = 8  # names per list in a message


@dataclass(frozen=True)
class FineTuneReport:
    """What fine-tuning took from a checkpoint; ``str()`` is its one log line."""

    source: str
    loaded: int  # tensors taken from the checkpoint, the class-specific ones by rows
    total: int
    fresh: tuple[str, ...]  # tensors left at their initialisation
    carried: tuple[str, ...]  # class names
    new: tuple[str, ...]
    dropped: tuple[str, ...]

    def __str__(self) -> str:
        line = (
            f"model.weights={self.source}: loaded {self.loaded} of {self.total} tensors (class scores and box deltas "
            f"by class); classes carried over {_names(self.carried)}; new {_names(self.new)}; "
            f"dropped {_names(self.dropped)}"
        )
        if self.fresh:
            line += f"; left at initialisation (no tensor of that name and shape) {_names(self.fresh)}"
        return line


def load_detector_weights(model: FasterRCNN, checkpoint: dict[str, Any], cfg: Config, fine_tune: bool) -> FineTuneReport | None:
    """Loads ``checkpoint`` (read from ``cfg.model.weights``) into ``model``.

    Args:
        model: built with the checkpoint's classes (``fine_tune=False``) or the dataset's.
        checkpoint: a detect checkpoint (``model``, ``classes`` and usually ``config``).
        cfg: the config ``model`` was built from, for the message when they do not fit.
        fine_tune: take what fits, predictor rows by class name (training); else every tensor.

    Returns:
        What was taken when fine-tuning, else None.

    Raises:
        CheckpointError: naming the first tensor that does not fit where it must, both shapes,
            and the config that fits.
    """
    own, state = model.state_dict(), checkpoint["model"]
    problems = mismatches(own, state, MUST_FIT_WHEN_FINE_TUNING if fine_tune else ("",))
    if problems:
        more = f" (and {len(problems) - 1} more tensors)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"{cfg.model.weights} does not fit the config's model: {problems[0]}{more}{fitting_config(checkpoint, cfg)}"
        )
    merged = {key: state[key] if _fits(key, own, state) else value for key, value in own.items()}
    if not fine_tune:
        model.load_state_dict(merged)
        return None
    source = CategoryMap.from_dict(checkpoint["classes"])
    pairs = _class_rows(own, state, model.categories, source, cfg.model.weights)
    for key, rows in CLASS_ROWS.items():
        merged[key] = own[key].clone()
        for here, there in pairs.items():
            merged[key][here * rows : (here + 1) * rows] = state[key][there * rows : (there + 1) * rows]
    model.load_state_dict(merged)
    counted = [k for k in own if not k.endswith("num_batches_tracked")]
    fresh = tuple(k for k in counted if (not pairs if k in CLASS_ROWS else not _fits(k, own, state)))
    carried = {here for here in pairs if here}
    taken = set(pairs.values())
    return FineTuneReport(
        source=str(cfg.model.weights),
        loaded=len(counted) - len(fresh),
        total=len(counted),
        fresh=fresh,
        carried=tuple(n for i, n in enumerate(model.categories.names, 1) if i in carried),
        new=tuple(n for i, n in enumerate(model.categories.names, 1) if i not in carried),
        dropped=tuple(n for i, n in enumerate(source.names, 1) if i not in taken),
    )


def mismatches(own: dict[str, Tensor], state: dict[str, Tensor], prefixes: tuple[str, ...]) -> list[str]:
    """Each tensor under ``prefixes`` that ``own`` (the model's) and ``state`` (the checkpoint's)
    do not share with one shape, described; model order first, then the checkpoint's extras.

    ``num_batches_tracked`` may be on either side alone: BatchNorm and frozen BN load each other.
    """
    problems = []
    for key, value in own.items():
        if not key.startswith(prefixes) or key.endswith("num_batches_tracked"):
            continue
        if key not in state:
            problems.append(f"{key} {_shape(value)} is in the model, not in the checkpoint")
        elif state[key].shape != value.shape:
            problems.append(f"{key} is {_shape(state[key])} in the checkpoint, {_shape(value)} in the model")
    for key, value in state.items():
        if key.startswith(prefixes) and key not in own and not key.endswith("num_batches_tracked"):
            problems.append(f"{key} {_shape(value)} is in the checkpoint, not in the model")
    return problems


def fitting_config(checkpoint: dict[str, Any], cfg: Config) -> str:
    """``"; it was trained with model.x=.. ; its run's config DIR/config.py fits it"``, as far as known."""
    hints = []
    trained = checkpoint.get("config")
    if isinstance(trained, dict):
        theirs = {k: v for k, v in flat_config(trained).items() if k.startswith("model.")}
        ours = flat_config(config_to_dict(cfg))
        differ = [k for k, v in theirs.items() if k not in NOT_SHAPING and ours.get(k) != v]
        if differ:
            shown = " ".join(f"{k}={_literal(theirs[k])}" for k in differ[:4])
            more = f" (and {len(differ) - 4} more model settings)" if len(differ) > 4 else ""
            hints.append(f"it was trained with {shown}{more}")
    run_config = Path(str(cfg.model.weights)).parent / "config.py"
    if run_config.is_file():
        hints.append(f"its run's config {run_config} fits it")
    return "".join(f"; {h}" for h in hints)


def _class_rows(own: dict[str, Tensor], state: dict[str, Tensor], here: CategoryMap, source: CategoryMap, path: Any) -> dict[int, int]:
    """``{predictor index here: index in the checkpoint}`` of the rows to carry over; empty when
    the checkpoint's predictor does not fit (another box-head width: it stays fresh)."""
    for key, rows in CLASS_ROWS.items():
        if key not in state or state[key].shape[1:] != own[key].shape[1:]:
            return {}
        if state[key].shape[0] != (source.num_classes + 1) * rows:
            raise CheckpointError(
                f"{path}: {key} has {state[key].shape[0]} rows, but the checkpoint's {source.num_classes} classes "
                f"and background need {(source.num_classes + 1) * rows}"
            )
    return here.same_names(source)


def _fits(key: str, own: dict[str, Tensor], state: dict[str, Tensor]) -> bool:
    return key in state and state[key].shape == own[key].shape


def _shape(t: Tensor) -> str:
    return str(list(t.shape))


def _literal(value: Any) -> str:
    """A value as typed in a ``key=value`` override."""
    return value if isinstance(value, str) else repr(value).replace(" ", "")


def _names(names: tuple[str, ...]) -> str:
    """``"(3): a, b, c"``; the first SHOWN names of a longer list."""
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    return f"({len(names)}): {shown}" if names else "(0)"
