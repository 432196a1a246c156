"""FasterRCNN's public contract: torchvision-style inputs and outputs, checked at the boundary."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from detect.config import Config, apply_overrides
from detect.models import build_model

CLASSES = {1: "a", 7: "b", 90: "c"}  # non-contiguous dataset ids -> predictor indices 1, 2, 3


@pytest.fixture(scope="module")
def model():
    cfg = Config()
    apply_overrides(
        cfg,
        [
            "model.backbone.name=resnet18",
            "model.backbone.norm=bn",
            f"model.classes={CLASSES!r}",
            "model.input.min_size=128",
            "model.input.max_size=1000",
            "model.anchors.sizes=[[16], [32], [64], [128], [256]]",
            "model.rpn.pre_nms_topk_test=300",
            "model.rpn.post_nms_topk_test=100",
            "model.roi_heads.fc_dim=64",
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _image(h: int = 64, w: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _target(boxes, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


@torch.no_grad()
def test_boxes_are_in_original_image_pixels(model):
    image = _image(64, 80)  # resized by 128 / 64 = 2 to 128 x 160 inside the model
    (result,) = model([image])
    assert len(result["boxes"]) > 10  # random weights, 3 classes: many scores above 0.05
    # The same pipeline by hand: detections in resized pixels, then divided by the scale 2.
    batch, _ = model.transform([image])
    assert batch.image_sizes.tolist() == [[128, 160]]
    features = model.backbone(batch.tensors)
    proposals, _ = model.rpn([features[n] for n in model.rpn_features], batch.image_sizes, batch.padded_size, None)
    detections, _ = model.roi_heads([features[n] for n in model.roi_features], proposals, batch.image_sizes, None)
    torch.testing.assert_close(result["boxes"], detections.boxes / 2)
    assert (result["boxes"] >= 0).all()
    assert (result["boxes"][:, [0, 2]] <= 80).all() and (result["boxes"][:, [1, 3]] <= 64).all()


@torch.no_grad()
def test_upsampled_image_gives_scaled_boxes(model):
    image = _image(64, 80)
    # 2x bilinear: both images reach the model's network at 128 x 160 (scales 2 and 1).
    upsampled = F.interpolate(image[None], scale_factor=2.0, mode="bilinear", align_corners=False)[0]
    (small,) = model([image])
    (large,) = model([upsampled])
    assert len(small["boxes"]) > 10
    assert len(small["boxes"]) == len(large["boxes"])
    # Each detection of the small image, doubled, is a detection of the large one.
    same = (
        (box_iou(small["boxes"] * 2, large["boxes"]) > 0.999)
        & (small["labels"][:, None] == large["labels"][None])
        & ((small["scores"][:, None] - large["scores"][None]).abs() < 1e-4)
    )
    assert same.any(dim=1).all() and same.any(dim=0).all()


@pytest.mark.parametrize("index, category_id", [(2, 7), (3, 90)])
@torch.no_grad()
def test_labels_are_dataset_category_ids(model, index, category_id):
    predictor = model.roi_heads.predictor.cls_score
    saved = predictor.bias.clone()
    try:
        predictor.bias.zero_()
        predictor.bias[index] = 20.0  # every RoI scores predictor index `index` highest
        (result,) = model([_image()])
    finally:
        predictor.bias.copy_(saved)
    assert len(result["labels"]) > 0
    assert set(result["labels"].tolist()) == {category_id}
    assert result["labels"].dtype == torch.int64


def test_inputs_are_not_mutated(model):
    images = [_image(64, 80, 1), _image(72, 64, 2)]
    targets = [_target([[5, 6, 40, 50]], [7]), _target([[1, 2, 30, 33], [10, 10, 60, 70]], [90, 1])]
    images_before = [i.clone() for i in images]
    targets_before = [{k: v.clone() for k, v in t.items()} for t in targets]
    try:
        model.train()
        model(images, targets)
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        model.eval()
    for image, before in zip(images, images_before):
        assert torch.equal(image, before)
    for target, before in zip(targets, targets_before):
        assert target.keys() == before.keys()
        for key in before:
            assert torch.equal(target[key], before[key]) and target[key].dtype == before[key].dtype


@pytest.fixture
def training(model):
    model.train()
    yield model
    model.eval()


def test_training_returns_exactly_the_four_losses(training):
    losses = training([_image()], [_target([[5, 6, 40, 50]], [90])])
    assert sorted(losses) == ["loss_box", "loss_cls", "loss_rpn_box", "loss_rpn_cls"]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    "bad_box",
    [
        [20.0, 5.0, 20.0, 30.0],  # zero width
        [20.0, 30.0, 40.0, 5.0],  # y2 < y1
        [float("nan"), 5.0, 40.0, 30.0],
    ],
)
def test_degenerate_box_names_target_and_box(training, bad_box):
    targets = [_target([[5, 6, 40, 50]], [1]), _target([[1, 2, 30, 33], bad_box], [7, 90])]
    with pytest.raises(ValueError, match=r"target at index 1: box 1 \[.*\] must be finite with x2 > x1 and y2 > y1"):
        training([_image(), _image()], targets)


def test_unknown_label_names_it(training):
    targets = [_target([[5, 6, 40, 50]], [1]), _target([[1, 2, 30, 33]], [3])]
    with pytest.raises(ValueError, match=r"target at index 1: labels \[3\] are not among the model's category ids \[1, 7, 90\]"):
        training([_image(), _image()], targets)


def test_training_without_targets_is_an_error(training):
    with pytest.raises(ValueError, match="training needs targets"):
        training([_image()])


def test_malformed_inputs_name_the_index(training):
    with pytest.raises(ValueError, match=r"image at index 1: expected a float tensor \[3, H, W\].*\(1, 64, 80\)"):
        training([_image(), _image()[:1]], [_target([[5, 6, 40, 50]], [1])] * 2)
    with pytest.raises(ValueError, match="target at index 0: 'labels' must be an integer tensor"):
        training([_image()], [{"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1.0])}])
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        training([_image(), _image()], [_target([[5, 6, 40, 50]], [1])])
