"""Taking a trained detector out of Python: ONNX, ``torch.export`` programs, and their parity.

The exported model is :class:`DeployableDetector`: one float image ``[3, H, W]`` in 0..1
of any size in, ``boxes [D, 4]`` (pixels of that image), ``scores [D]`` and ``labels [D]``
(the dataset's category ids) out, by descending score: the eager model's contract for one image.

It runs the model's own modules (transform's normalisation, backbone, RPN head, anchors,
RoI pooler, box head, predictor) and re-expresses, for a single image, the three steps
whose eager form cannot be traced with a symbolic image size or a data-dependent number
of boxes: the resize (Python ``min`` over sizes), NMS (torchvision's ``batched_nms``
branches on the box count) and the top-k (``len()`` of a traced size fixes it; a batch's
per-image bookkeeping is not needed for one image).

Shape letters: ``R`` anchors of one image, ``P`` proposals, ``K`` foreground classes, ``D`` detections.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import box_iou

from detect.box_ops import clip_boxes, nonempty
from detect.categories import CategoryMap
from detect.models.faster_rcnn import FasterRCNN
from detect.models.transform import rescale

FORMATS = ("onnx", "export")  # ONNX (.onnx) and torch.export programs (.pt2)
CLASSES_KEY = "classes"  # the {category id: name} JSON stored in the file beside the program
EXAMPLE_SIZE = (480, 640)  # (h, w) of the image traced; any other size runs the same graph


@torch.library.register_fake("torchvision::nms")
def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """NMS's output size while tracing: any count from 0. torchvision's own fake size starts at
    2, which makes an exported program assert at run time when fewer than two detections remain."""
    return boxes.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.long)


class ExportError(ValueError):
    """A model or format that cannot be exported; the message says why in one line."""


class DeployableDetector(nn.Module):
    """A :class:`FasterRCNN` in evaluation mode as a single-image function of tensors only.

    Args:
        model: the detector; its weights are shared, not copied.
    """

    def __init__(self, model: FasterRCNN):
        super().__init__()
        self.model = model.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``image [3, H, W]`` float in 0..1 -> ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``."""
        m = self.model
        x, size = self._resize_and_pad(image)
        if m.backbone_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = m.backbone(x)
        proposals = self._proposals([features[n] for n in m.rpn_features], x.shape[-2:], size)
        heads = m.roi_heads
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)  # (P, 5): image 0
        logits, deltas = heads.predictor(heads.box_head(heads.pooler([features[n] for n in m.roi_features], rois)))
        boxes, scores, labels = self._detections(logits, deltas, proposals, size, x.shape[-2:])
        original = torch.tensor(image.shape[-2:], device=image.device)
        return rescale(boxes, size[0], original), scores, m.categories.to_id(labels)

    def _resize_and_pad(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised, resized as :class:`ImageTransform` does at test time, padded: ``[1, 3, H', W']``,
        and the resized size ``[1, 2]`` (h, w) before padding."""
        t = self.model.transform
        h, w = image.shape[-2:]
        scale = torch.sym_min(t.min_size / torch.sym_min(h, w), t.max_size / torch.sym_max(h, w))
        # interpolate's recompute_scale_factor=True: the output size is floor(size * scale) (> 0: trunc is floor)
        out_h, out_w = torch.sym_int(h * scale), torch.sym_int(w * scale)
        x = t.normalize(image)
        x = F.interpolate(x[None], size=(out_h, out_w), mode="bilinear", align_corners=False)
        stride = t.size_divisible
        x = F.pad(x, (0, (out_w + stride - 1) // stride * stride - out_w, 0, (out_h + stride - 1) // stride * stride - out_h))
        return x, torch.tensor([[out_h, out_w]], device=image.device)

    def _proposals(self, features: list[Tensor], padded_size: tuple[int, int], image_size: Tensor) -> Tensor:
        """The RPN's test-time proposals ``[P, 4]`` of the one image (see :meth:`RPN._proposals`)."""
        rpn = self.model.rpn
        logits, deltas = rpn.head(features)  # (1, R), (1, R, 4)
        level_anchors = rpn.anchor_generator([f.shape[-2:] for f in features], padded_size, logits.device)
        boxes, scores, levels = [], [], []
        offset = 0
        for level, anchors in enumerate(level_anchors):
            size = anchors.shape[0]  # not len(): that would fix the image size
            top = logits[0, offset : offset + size].topk(torch.sym_min(rpn.pre_nms_topk[1], size))
            idx = top.indices
            boxes.append(rpn.box_coder.decode(deltas[0, offset + idx], anchors[idx]).squeeze(-2))  # (k, 1, 4) -> (k, 4)
            scores.append(top.values if rpn.nms_on_logits else torch.sigmoid(top.values))
            levels.append(torch.full_like(idx, level))
            offset += size
        boxes, scores, levels = _keep(clip_boxes(torch.cat(boxes)[None], image_size)[0], torch.cat(scores), torch.cat(levels), rpn.min_box_size)
        kept = _batched_nms(boxes, scores, levels, rpn.nms_thresh, padded_size)[: rpn.post_nms_topk[1]]
        # An image always keeps a proposal; saying so spares per-RoI layers (BatchNorm) an empty-batch branch.
        torch._check(kept.shape[0] > 0)
        return boxes[kept]

    def _detections(
        self, logits: Tensor, deltas: Tensor, proposals: Tensor, size: Tensor, padded_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class-specific boxes, scores and predictor indices 1..K after NMS (see :meth:`RoIHeads._detect`)."""
        heads = self.model.roi_heads
        num_outputs = logits.shape[1]
        scores = F.softmax(logits, dim=-1)[:, 1:].reshape(-1)  # (P, K) -> (P*K)
        boxes = clip_boxes(heads.box_coder.decode(deltas, proposals)[:, 1:].reshape(1, -1, 4), size)[0]  # (P*K, 4)
        labels = torch.arange(1, num_outputs, device=logits.device).expand_as(logits[:, 1:]).reshape(-1)
        high = scores > heads.score_thresh
        boxes, scores, labels = boxes[high], scores[high], labels[high]
        boxes, scores, labels = _keep(boxes, scores, labels, heads.min_box_size)
        kept = _batched_nms(boxes, scores, labels, heads.nms_thresh, padded_size)[: heads.detections_per_image]
        return boxes[kept], scores[kept], labels[kept]


def _keep(boxes: Tensor, scores: Tensor, groups: Tensor, min_size: float) -> tuple[Tensor, Tensor, Tensor]:
    keep = nonempty(boxes, min_size)
    return boxes[keep], scores[keep], groups[keep]


def _batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_thresh: float, image_size: tuple[int, int]) -> Tensor:
    """NMS within each group by torchvision's coordinate trick, with a shift that needs no
    reduction over the boxes (they lie within ``image_size``): kept indices by descending score."""
    shift = groups.to(boxes.dtype) * (torch.sym_max(*image_size) + 1)
    return torchvision.ops.nms(boxes + shift[:, None], scores, iou_thresh)


def export_detector(model: FasterRCNN, outputs: dict[str, str | os.PathLike]) -> None:
    """Writes ``model`` in each format of ``outputs`` ({format: path}) from one trace: ``onnx``
    (an ONNX file) or ``export`` (a ``torch.export`` program, ``.pt2``).

    Both keep the image height and width dynamic and carry the model's classes
    (ONNX: the ``classes`` metadata entry; ``.pt2``: the ``classes`` extra file).

    Raises:
        ExportError: an unknown format (``torchscript`` among them: its tracer would fix
            the image size that the resize depends on), or a model the exporter rejects.
    """
    for fmt in outputs:
        _check_exportable(model, fmt)
    wrapper = DeployableDetector(model.float().cpu())
    example = torch.rand(3, *EXAMPLE_SIZE)
    dims = {1: torch.export.Dim("height", min=32, max=8192), 2: torch.export.Dim("width", min=32, max=8192)}
    classes = json.dumps(model.categories.to_dict())
    fmt = "export"
    try:
        with torch.no_grad():
            program = torch.export.export(wrapper, (example,), dynamic_shapes=(dims,))
            for fmt, path in outputs.items():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                if fmt == "export":
                    torch.export.save(program, path, extra_files={CLASSES_KEY: classes})
                else:
                    _save_onnx(program, example, path, classes)
    except Exception as e:  # the exporters raise many types; the first line names the cause
        raise ExportError(f"cannot export to {fmt}: {type(e).__name__}: {str(e).strip().splitlines()[0]}") from e


def _check_exportable(model: FasterRCNN, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(
            f"cannot export to {fmt!r}: known formats are {', '.join(FORMATS)}"
            + (" (TorchScript's tracer fixes the image size that the test-time resize depends on; "
               "'export' writes torch.export, its successor)" if fmt == "torchscript" else "")
        )
    if fmt == "onnx" and model.roi_heads.pooler.pool_type == "pool":
        raise ExportError(
            "cannot export to onnx: the ONNX exporter has no working translation of RoIPool "
            "(model.roi_heads.pooler_type='pool'); use --format export, or a model with RoIAlign"
        )


def _save_onnx(program: torch.export.ExportedProgram, example: Tensor, path: str | os.PathLike, classes: str) -> None:
    import onnx  # optional dependencies, needed only here: pip install -e .[test]

    onnx_program = torch.onnx.export(
        program, (example,), dynamo=True, verbose=False, input_names=["image"], output_names=["boxes", "scores", "labels"]
    )
    proto = onnx_program.model_proto
    onnx.helper.set_model_props(proto, {CLASSES_KEY: classes})
    onnx.save(proto, path)


class ExportedDetector(nn.Module):
    """An exported file run like the eager model: ``images`` (list of ``[3, H, W]``) -> list of
    dicts of ``boxes``, ``scores``, ``labels``; ``categories`` as the model's. CPU only.

    ONNX files run in onnxruntime's CPU provider; ``.pt2`` programs in PyTorch.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such exported model")
        if path.suffix == ".onnx":
            import onnxruntime  # optional dependency: pip install -e .[test] or onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            classes = session.get_modelmeta().custom_metadata_map.get(CLASSES_KEY)
            self._run = lambda image: tuple(torch.from_numpy(o) for o in session.run(None, {"image": image.numpy()}))
        elif path.suffix == ".pt2":
            extra = {CLASSES_KEY: ""}
            self.program = torch.export.load(path, extra_files=extra).module()
            self._run = self.program
            classes = extra[CLASSES_KEY]
        else:
            raise ValueError(f"{path}: an exported model is a .onnx or .pt2 file (tools/export.py writes them)")
        if not classes:
            raise ValueError(f"{path}: no '{CLASSES_KEY}' entry; export it with tools/export.py")
        self.categories = CategoryMap.from_dict({int(k): v for k, v in json.loads(classes).items()})

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return [dict(zip(("boxes", "scores", "labels"), self._run(image.float().cpu()))) for image in images]


def match_detections(a: dict[str, Tensor], b: dict[str, Tensor], min_iou: float = 0.99, score_tol: float = 1e-3) -> Tensor:
    """For each detection of ``a``, whether ``b`` has one of the same label, IoU > ``min_iou``
    and score within ``score_tol``: ``[D_a]`` bool."""
    if len(a["boxes"]) == 0 or len(b["boxes"]) == 0:
        return torch.zeros(len(a["boxes"]), dtype=torch.bool)
    same = (
        (a["labels"][:, None] == b["labels"][None])
        & (box_iou(a["boxes"].float(), b["boxes"].float()) > min_iou)
        & ((a["scores"][:, None].float() - b["scores"][None].float()).abs() <= score_tol)
    )
    return same.any(dim=1)


@dataclass(frozen=True)
class Parity:
    """One image's comparison: detection counts, how many of each side the other matches,
    and the median seconds per call of each."""

    name: str
    eager: int
    exported: int
    eager_matched: int
    exported_matched: int
    eager_seconds: float
    exported_seconds: float

    @property
    def ok(self) -> bool:
        return self.eager_matched == self.eager and self.exported_matched == self.exported

    def __str__(self) -> str:
        return (
            f"{self.name}: {'OK  ' if self.ok else 'DIFF'} eager {self.eager} detections, {self.eager_matched} matched; "
            f"exported {self.exported}, {self.exported_matched} matched; "
            f"eager {self.eager_seconds * 1000:.0f} ms, exported {self.exported_seconds * 1000:.0f} ms"
        )


@torch.inference_mode()
def check_parity(model: nn.Module, exported: ExportedDetector, image: Tensor, name: str, repeats: int = 3) -> Parity:
    """Runs ``model`` and ``exported`` on ``image [3, H, W]`` and matches their detections both
    ways (:func:`match_detections`); latency is the median of ``repeats`` calls after a warm-up."""
    outputs, seconds = [], []
    for run in (model.eval(), exported):
        run([image])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = run([image])[0]
            times.append(time.perf_counter() - start)
        outputs.append(out)
        seconds.append(float(np.median(times)))
    eager, other = outputs
    return Parity(
        name, len(eager["boxes"]), len(other["boxes"]),
        int(match_detections(eager, other).sum()), int(match_detections(other, eager).sum()), *seconds,
    )
