"""detect against torchvision's fasterrcnn_resnet50_fpn on the same weights and real images."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection import _utils as tv_utils
from torchvision.ops import box_iou

from conftest import REPO
from detect import build_model, load_config
from detect.models import place_model
from detect.checkpoint import save_checkpoint
from detect.export import match_detections
from detect.models.torchvision_compat import convert_fasterrcnn_resnet50_fpn


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    with torch.no_grad():  # sharper class scores, so random weights give detections above 0.05
        reference.roi_heads.box_predictor.cls_score.weight.mul_(4.0)
    path = tmp_path_factory.mktemp("weights") / "converted.pth"
    save_checkpoint(path, convert_fasterrcnn_resnet50_fpn(reference.state_dict()))
    cfg = load_config(REPO / "configs/frcnn_r50_fpn_coco.py", [f"model.weights={path}"])
    return reference, build_model(cfg).eval()


def _in_layout(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` as built (NCHW), or a copy placed channels-last as it runs on the CPU by default."""
    return place_model(copy.deepcopy(model), torch.device("cpu"), channels_last=True) if channels_last else model


@pytest.mark.parametrize("channels_last", [False, True])
def test_detections_match_torchvision(models, coco8, channels_last):
    reference, model = models
    model = _in_layout(model, channels_last)
    images = coco8["images"][:3]
    with torch.no_grad():
        expected, got = reference(images), model(images)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 20  # the comparison has substance
        assert match_detections(e, g, score_tol=1e-4).all() and match_detections(g, e, score_tol=1e-4).all()
        assert len(e["boxes"]) == len(g["boxes"])


def test_rpn_proposals_match_torchvision(models, coco8):
    reference, model = models
    images = coco8["images"][3:5]
    # Both RPNs read torchvision's features: the random RPN's top-k and NMS sit on near-ties that a
    # 1e-6 relative change of the features (detect folds frozen BN into its convolutions) reorders.
    with torch.no_grad():
        image_list, _ = reference.transform(images)
        features = reference.backbone(image_list.tensors)
        expected, _ = reference.rpn(image_list, features)
        batch, _ = model.transform(images)
        assert torch.equal(batch.tensors, image_list.tensors)
        proposals, _ = model.rpn(list(features.values()), batch.image_sizes, batch.padded_size, None)
    for i, e in enumerate(expected):
        g = proposals.boxes[proposals.image_index == i]
        assert len(g) == len(e) == 1000
        iou = box_iou(e, g)
        assert (iou.max(dim=1).values > 0.999).all() and (iou.max(dim=0).values > 0.999).all()


class _FirstCandidatesSampler:
    """torchvision's sampler interface, taking the lowest-indexed candidates instead of random ones."""

    def __init__(self, sampler: tv_utils.BalancedPositiveNegativeSampler):
        self.batch_size_per_image = sampler.batch_size_per_image
        self.positive_fraction = sampler.positive_fraction

    def __call__(self, matched_idxs):
        pos_masks, neg_masks = [], []
        for labels in matched_idxs:
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos = torch.zeros_like(labels, dtype=torch.uint8)
            neg = torch.zeros_like(labels, dtype=torch.uint8)
            pos[positive[:num_pos]] = 1
            neg[negative[:num_neg]] = 1
            pos_masks.append(pos)
            neg_masks.append(neg)
        return pos_masks, neg_masks


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_losses_match_torchvision(models, coco8, channels_last):
    reference, model = models
    model = _in_layout(model, channels_last)
    # Images already at torchvision's training scale (shorter side 800), so its resize is the identity.
    images, targets = [], []
    for image, target in zip(coco8["images"][:2], coco8["targets"][:2]):
        scale = 800 / min(image.shape[-2:])
        resized = F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True)[0]
        ratio = torch.tensor(resized.shape[-2:]) / torch.tensor(image.shape[-2:])
        images.append(resized.clamp(0, 1))
        targets.append({"boxes": target["boxes"] * ratio[[1, 0, 1, 0]], "labels": target["labels"]})
    reference.train()
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # torchvision's untrained backbone uses BatchNorm; its running statistics equal detect's frozen BN
    reference.rpn.fg_bg_sampler = _FirstCandidatesSampler(reference.rpn.fg_bg_sampler)
    reference.roi_heads.fg_bg_sampler = _FirstCandidatesSampler(reference.roi_heads.fg_bg_sampler)
    model.train()
    model.rpn.sampler.shuffle = False
    model.roi_heads.sampler.shuffle = False
    try:
        expected = reference(images, targets)
        got = model(images, targets)
    finally:
        reference.eval()
        model.eval()
        model.rpn.sampler.shuffle = True
        model.roi_heads.sampler.shuffle = True
    names = {
        "loss_objectness": "loss_rpn_cls",
        "loss_rpn_box_reg": "loss_rpn_box",
        "loss_classifier": "loss_cls",
        "loss_box_reg": "loss_box",
    }
    for tv_name, name in names.items():
        torch.testing.assert_close(got[name], expected[tv_name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(("asked", "expected"), [(None, True), (False, False), (True, True)])
def test_place_model_layout_on_the_cpu(models, asked, expected):
    placed = place_model(copy.deepcopy(models[1]), torch.device("cpu"), asked)
    convs = [m.weight for m in placed.modules() if isinstance(m, nn.Conv2d)]
    layout = torch.channels_last if expected else torch.contiguous_format
    assert all(w.is_contiguous(memory_format=layout) for w in convs)
    assert placed.backbone_channels_last == expected
