"""detect, torchvision and Detectron2 behind one interface, built from the same weights to do the same work.

Every peer takes the same images (float ``[3, H, W]`` RGB in 0..1, already at the
test size, so that no peer's resize changes the size), normalises them with
torchvision's mean and std, pads to a multiple of 32, and uses the top-k, NMS and
score thresholds of :class:`Work`, which are detect's config values. Detectron2 does
not resize inside its model; torchvision and detect run their (identity-scale)
bilinear resize, which is part of their preprocessing time.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from detect.config import IMAGENET_MEAN, IMAGENET_STD, SHIPPED_ROOT, load_config

CONFIG = SHIPPED_ROOT / "configs" / "frcnn_r50_fpn_coco.py"
PEERS = ("detect", "torchvision", "detectron2")


@dataclass(frozen=True)
class Work:
    """What every peer computes: the RPN's and RoI heads' counts and thresholds."""

    pre_nms_topk_train: int
    post_nms_topk_train: int
    pre_nms_topk_test: int  # per FPN level
    post_nms_topk_test: int  # per image
    rpn_nms_thresh: float
    rpn_batch_size_per_image: int
    roi_batch_size_per_image: int
    score_thresh: float
    nms_thresh: float
    detections_per_image: int

    @classmethod
    def from_detect_config(cls, **overrides) -> Work:
        """detect's values in configs/frcnn_r50_fpn_coco.py (torchvision's defaults too), with ``overrides``."""
        model = load_config(CONFIG, check_device=False).model
        rpn, heads = model.rpn, model.roi_heads
        work = cls(
            pre_nms_topk_train=rpn.pre_nms_topk_train,
            post_nms_topk_train=rpn.post_nms_topk_train,
            pre_nms_topk_test=rpn.pre_nms_topk_test,
            post_nms_topk_test=rpn.post_nms_topk_test,
            rpn_nms_thresh=rpn.nms_thresh,
            rpn_batch_size_per_image=rpn.batch_size_per_image,
            roi_batch_size_per_image=heads.batch_size_per_image,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_image=heads.detections_per_image,
        )
        return dataclasses.replace(work, **overrides)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Peer:
    """One model: ``infer`` (detections as torchvision's dicts), ``losses`` (a scalar), and the
    modules whose calls mark the stage boundaries: ``backbone`` (+ FPN), ``rpn``, ``roi_heads``
    and ``predictor`` (the RoI head's last layer; after it comes post-processing)."""

    name: str
    model: nn.Module

    def set_size(self, h: int, w: int) -> None:
        """Test and training size: the images' own, so that a peer's resize keeps them as they are."""

    def infer(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        return self.model(images)

    def losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        return sum(self.model(images, targets).values())

    def stage_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError


class Torchvision(Peer):
    name = "torchvision"

    def __init__(self, state: dict[str, Tensor] | None, work: Work):
        """``state`` None: the seeded random initialisation."""
        from detect.benchmark.weights import SEED, build_torchvision

        self.model = build_torchvision(
            SEED,
            rpn_pre_nms_top_n_train=work.pre_nms_topk_train,
            rpn_post_nms_top_n_train=work.post_nms_topk_train,
            rpn_pre_nms_top_n_test=work.pre_nms_topk_test,
            rpn_post_nms_top_n_test=work.post_nms_topk_test,
            rpn_nms_thresh=work.rpn_nms_thresh,
            rpn_batch_size_per_image=work.rpn_batch_size_per_image,
            box_batch_size_per_image=work.roi_batch_size_per_image,
            box_score_thresh=work.score_thresh,
            box_nms_thresh=work.nms_thresh,
            box_detections_per_img=work.detections_per_image,
        )
        if state is not None:
            self.model.load_state_dict(state)

    def set_size(self, h: int, w: int) -> None:
        self.model.transform.min_size = (min(h, w),)
        self.model.transform.max_size = max(h, w)

    def stage_modules(self) -> dict[str, nn.Module]:
        m = self.model
        return {"backbone": m.backbone, "rpn": m.rpn, "roi_heads": m.roi_heads, "predictor": m.roi_heads.box_predictor}


class Detect(Peer):
    name = "detect"

    def __init__(self, state: dict[str, Tensor], work: Work):
        from detect.models import build_model, place_model
        from detect.checkpoint import save_checkpoint
        from detect.models.torchvision_compat import convert_fasterrcnn_resnet50_fpn

        overrides = [
            f"model.rpn.{key}={getattr(work, key)}"
            for key in ("pre_nms_topk_train", "post_nms_topk_train", "pre_nms_topk_test", "post_nms_topk_test")
        ]
        overrides += [
            f"model.rpn.nms_thresh={work.rpn_nms_thresh}",
            f"model.rpn.batch_size_per_image={work.rpn_batch_size_per_image}",
            f"model.roi_heads.batch_size_per_image={work.roi_batch_size_per_image}",
            f"model.roi_heads.score_thresh={work.score_thresh}",
            f"model.roi_heads.nms_thresh={work.nms_thresh}",
            f"model.roi_heads.detections_per_image={work.detections_per_image}",
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "detect.pth"
            save_checkpoint(path, convert_fasterrcnn_resnet50_fpn(state, "the benchmark's weights"))
            cfg = load_config(CONFIG, [f"model.weights={path}", *overrides], check_device=False)
            self.model = place_model(build_model(cfg), torch.device("cpu"), cfg.train.channels_last)

    def set_size(self, h: int, w: int) -> None:
        self.model.transform.min_size = min(h, w)
        self.model.transform.max_size = max(h, w)

    def stage_modules(self) -> dict[str, nn.Module]:
        m = self.model
        return {"backbone": m.backbone, "rpn": m.rpn, "roi_heads": m.roi_heads, "predictor": m.roi_heads.predictor}


class Detectron2(Peer):
    """Detectron2's R50-FPN model-zoo config, set to torchvision's network and detect's work.

    Differences that remain: exact (unrounded) anchors on nominal strides, and NMS on
    logits; these move boxes slightly, not the amount of work.
    """

    name = "detectron2"

    def __init__(self, state: dict[str, Tensor], work: Work):
        from detectron2 import model_zoo
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        from detect.benchmark.weights import (
            NUM_CLASSES,
            TRAINABLE_LAYERS,
            detectron2_state_dict,
        )

        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision's ResNet: the stride in the 3x3 conv
        cfg.MODEL.BACKBONE.FREEZE_AT = 5 - TRAINABLE_LAYERS
        cfg.INPUT.FORMAT = "RGB"
        cfg.MODEL.PIXEL_MEAN = [255 * m for m in IMAGENET_MEAN]
        cfg.MODEL.PIXEL_STD = [255 * s for s in IMAGENET_STD]
        cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = work.pre_nms_topk_train
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = work.post_nms_topk_train
        cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = work.pre_nms_topk_test
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = work.post_nms_topk_test
        cfg.MODEL.RPN.NMS_THRESH = work.rpn_nms_thresh
        cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = work.rpn_batch_size_per_image
        cfg.MODEL.RPN.SMOOTH_L1_BETA = 1.0 / 9
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES - 1
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = work.roi_batch_size_per_image
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = work.score_thresh
        cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = work.nms_thresh
        cfg.TEST.DETECTIONS_PER_IMAGE = work.detections_per_image
        cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlign"  # torchvision's unaligned RoIAlign
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
        cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 1.0 / 9
        self.model = build_model(cfg)
        missing, unexpected = self.model.load_state_dict(detectron2_state_dict(state), strict=False)
        if missing or unexpected:
            raise ValueError(f"Detectron2's R50-FPN does not take the converted weights: missing {missing[:4]}, unexpected {unexpected[:4]}")

    def _inputs(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> list[dict]:
        from detectron2.structures import Boxes, Instances

        inputs = [{"image": image * 255, "height": image.shape[1], "width": image.shape[2]} for image in images]
        for x, target in zip(inputs, targets or []):
            x["instances"] = Instances(
                (x["height"], x["width"]), gt_boxes=Boxes(target["boxes"]), gt_classes=target["labels"] - 1
            )
        return inputs

    def infer(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        outputs = []
        for output in self.model(self._inputs(images)):
            instances = output["instances"]
            outputs.append({"boxes": instances.pred_boxes.tensor, "scores": instances.scores, "labels": instances.pred_classes + 1})
        return outputs

    def losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        from detectron2.utils.events import EventStorage

        with EventStorage(0):  # where Detectron2's training logs its statistics
            return sum(self.model(self._inputs(images, targets)).values())

    def stage_modules(self) -> dict[str, nn.Module]:
        m = self.model
        return {"backbone": m.backbone, "rpn": m.proposal_generator, "roi_heads": m.roi_heads, "predictor": m.roi_heads.box_predictor}


def build_peer(name: str, state: dict[str, Tensor], work: Work) -> Peer:
    """The peer ``name`` (one of PEERS) with torchvision's state dict ``state``."""
    peers = {"detect": Detect, "torchvision": Torchvision, "detectron2": Detectron2}
    if name not in peers:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(peers)}")
    return peers[name](state, work)
