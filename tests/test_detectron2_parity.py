"""detect against Detectron2 itself: a converted model-zoo pickle gives Detectron2's detections.

Skipped where ``detectron2`` cannot be imported (it is not a dependency). A seeded
random-weight Detectron2 model of each family gets realistic frozen-BN statistics
(each BN normalises its input on a real image, then applies a random scale and
shift) and sharper RPN and class logits, so that proposals rank like a trained
model's and random detections clear the 0.05 threshold. It is saved in the
model-zoo pickle format, converted, and loaded through its ``configs/zoo`` config.

Images are resized beforehand, so that both models see the same pixels: the
resizing of the input is the data pipeline's (Detectron2 resizes uint8 images
with PIL), not the model's. Sizes and proposal counts are reduced on both sides
to keep the CPU time small.

Both backbones run in float64, the heads in float32: a deep random network
amplifies float32 rounding (Detectron2's frozen BN rounds differently from
torchvision's) to 1e-4 in the RPN's deltas, which moves proposals by 0.05 px and,
through RoIAlign's adaptive sampling grid, scores by 5e-4.
"""

import pickle

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from conftest import REPO
from detect import build_model, load_config
from detect.benchmark.weights import standardise_frozen_bn
from detect.checkpoint import save_checkpoint
from detect.models.detectron2_compat import coco_classes, convert_model_zoo, load_pickle

pytest.importorskip("detectron2")
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model as build_d2_model  # noqa: E402

# family -> (shorter image side, proposals kept after NMS, number of coco8 images)
FAMILIES = {
    "R_50_FPN_1x": (480, 1000, 4),
    "R_101_C4_3x": (320, 300, 2),
    "X_101_32x8d_FPN_3x": (320, 1000, 2),
}
COCO_IDS = torch.tensor(sorted(coco_classes(80)))


def _make_realistic(model: torch.nn.Module, image: dict) -> None:
    """One pass that sets every frozen BN from the statistics of its input, then scales the logits."""
    generator = torch.Generator().manual_seed(0)
    hooks = []

    def set_statistics(bn: FrozenBatchNorm2d, args: tuple) -> None:
        standardise_frozen_bn(bn, args[0], generator)

    def sharpen(layer: torch.nn.Module, target_std: float):
        def hook(_, args: tuple) -> None:
            if not getattr(layer, "sharpened", False):
                layer.sharpened = True  # before calling the layer, which runs this hook again
                layer.weight.mul_(target_std / layer(args[0]).std())

        return hook

    for bn in [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]:
        done = []  # the first call sets the statistics (C4's res5 sees a batch of RoIs)

        def once(m: FrozenBatchNorm2d, args: tuple, done: list = done) -> None:
            if not done:
                set_statistics(m, args)
                done.append(True)

        hooks.append(bn.register_forward_pre_hook(once))
    rpn_logits = model.proposal_generator.rpn_head.objectness_logits
    cls_score = model.roi_heads.box_predictor.cls_score
    hooks.append(rpn_logits.register_forward_pre_hook(sharpen(rpn_logits, 2.0)))
    hooks.append(cls_score.register_forward_pre_hook(sharpen(cls_score, 2.0)))
    with torch.no_grad():
        model([image])
    for h in hooks:
        h.remove()


def _to_float32(module: torch.nn.Module, args: tuple, features: dict) -> dict:
    return {name: x.float() for name, x in features.items()}


def _resized(image: torch.Tensor, min_size: int) -> torch.Tensor:
    """Shorter side exactly ``min_size``, so that detect's own test-time resize is the identity."""
    h, w = image.shape[-2:]
    size = (min_size, round(w * min_size / h)) if h <= w else (round(h * min_size / w), min_size)
    return F.interpolate(image[None], size=size, mode="bilinear")[0].clamp(0, 1)


@pytest.fixture(scope="module", params=list(FAMILIES))
def outputs(request, tmp_path_factory, coco8):
    """Detections and proposals of Detectron2 and of detect for one family, on the same images."""
    family = request.param
    min_size, post_nms, num_images = FAMILIES[family]
    d2_cfg = get_cfg()
    d2_cfg.merge_from_file(model_zoo.get_config_file(f"COCO-Detection/faster_rcnn_{family}.yaml"))
    d2_cfg.MODEL.DEVICE = "cpu"
    d2_cfg.MODEL.RPN.POST_NMS_TOPK_TEST = post_nms
    torch.manual_seed(0)
    reference = build_d2_model(d2_cfg).eval()
    images = [_resized(image, min_size).double() for image in coco8["images"][:num_images]]
    # Detectron2's input: BGR on 0..255, at the size it was given
    d2_inputs = [{"image": i.flip(0) * 255, "height": i.shape[1], "width": i.shape[2]} for i in images]
    _make_realistic(reference, {**d2_inputs[-1], "image": d2_inputs[-1]["image"].float()})

    path = tmp_path_factory.mktemp("weights") / f"{family}.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in reference.state_dict().items()}}, f, protocol=2)
    checkpoint, arch = convert_model_zoo(load_pickle(path), str(path))
    assert family.startswith(arch)
    save_checkpoint(path.with_suffix(".pth"), checkpoint)
    cfg = load_config(
        REPO / f"configs/zoo/d2_faster_rcnn_{family}.py",
        [f"model.weights={path.with_suffix('.pth')}", f"model.input.min_size={min_size}", f"model.rpn.post_nms_topk_test={post_nms}"],
    )
    model = build_model(cfg).eval()
    for backbone in (reference.backbone, model.backbone):
        backbone.double().register_forward_hook(_to_float32)

    captured = {}

    def capture(name: str):
        def hook(module: torch.nn.Module, args: tuple, output: tuple) -> None:
            captured[name] = output[0]

        return hook

    h1 = reference.proposal_generator.register_forward_hook(capture("d2"))
    h2 = model.rpn.register_forward_hook(capture("detect"))
    d2_detections, detect_detections, d2_proposals, detect_proposals = [], [], [], []
    with torch.no_grad():
        for image, d2_input in zip(images, d2_inputs):
            captured.clear()
            instances = reference([d2_input])[0]["instances"]
            d2_detections.append(
                {
                    "boxes": instances.pred_boxes.tensor,
                    "scores": instances.scores,
                    "labels": COCO_IDS[instances.pred_classes],
                }
            )
            detect_detections.append(model([image])[0])
            d2_proposals.append(captured["d2"][0].proposal_boxes.tensor)
            detect_proposals.append(captured["detect"].boxes)
    h1.remove()
    h2.remove()
    return family, d2_detections, detect_detections, d2_proposals, detect_proposals


def _same_boxes(a: torch.Tensor, b: torch.Tensor, min_iou: float) -> torch.Tensor:
    """``[A, B]``: IoU above ``min_iou``, or corners within 0.01 px (slivers of zero width or height)."""
    return (box_iou(a, b) > min_iou) | ((a[:, None] - b[None]).abs().amax(dim=-1) < 1e-2)


def _matched(a: dict, b: dict) -> torch.Tensor:
    """For each detection of ``a``, whether ``b`` has one of the same label and box, its score within 1e-4."""
    same = _same_boxes(a["boxes"], b["boxes"], 0.99) & (a["labels"][:, None] == b["labels"][None])
    return (same & ((a["scores"][:, None] - b["scores"][None]).abs() < 1e-4)).any(dim=1)


def test_detections_match_detectron2(outputs):
    family, d2_detections, detect_detections, _, _ = outputs
    for expected, got in zip(d2_detections, detect_detections):
        assert len(expected["boxes"]) > 20  # the comparison has substance
        assert len(got["boxes"]) == len(expected["boxes"])
        # the figures: IoU and score gap to the nearest same-label detection
        same_label = expected["labels"][:, None] == got["labels"][None]
        distance = torch.where(same_label, (expected["boxes"][:, None] - got["boxes"][None]).abs().amax(dim=-1), float("inf"))
        nearest = distance.argmin(dim=1)
        iou = box_iou(expected["boxes"], got["boxes"])[torch.arange(len(nearest)), nearest]
        proper = (expected["boxes"][:, 2:] - expected["boxes"][:, :2]).amin(dim=1) > 0.1
        gap = (expected["scores"] - got["scores"][nearest]).abs()
        print(
            f"{family}: {len(got['boxes'])} detections, min IoU {iou[proper].min():.6f} ({(~proper).sum()} slivers), "
            f"max corner distance {distance.min(dim=1).values.max():.2e} px, max score gap {gap.max():.2e}"
        )
        assert _matched(expected, got).all() and _matched(got, expected).all()


def test_rpn_proposals_match_detectron2(outputs):
    family, _, _, d2_proposals, detect_proposals = outputs
    for expected, got in zip(d2_proposals, detect_proposals):
        assert len(got) == len(expected) > 100
        # The same box: IoU > 0.999, or corners within 0.01 px for the slivers clipped at the border
        same = _same_boxes(expected, got, 0.999)
        worst = (expected[:, None] - got[None]).abs().amax(dim=-1).min(dim=1).values.max()
        print(f"{family}: {len(got)} proposals, largest corner distance to the nearest proposal {worst:.2e} px")
        assert same.any(dim=1).all() and same.any(dim=0).all(), family


def _caffe2_name(name: str) -> str:
    """Detectron2's ResNet name -> the Caffe2 name of its ImageNet pickles (``res2_0_branch2a_bn_gamma``)."""
    norm = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}
    parts = name.split(".")
    if parts[0] == "stem":
        return "conv1_w" if parts[-1] == "weight" and len(parts) == 3 else f"res_conv1_bn_{norm[parts[-1]]}"
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[parts[2]]
    base = f"{parts[0]}_{parts[1]}_{branch}"
    return f"{base}_w" if len(parts) == 4 else f"{base}_bn_{norm[parts[-1]]}"


@pytest.mark.parametrize(
    "depth, groups, width, stride_in_1x1, name",
    [(50, 1, 64, True, "resnet50"), (101, 32, 8, False, "resnext101_32x8d")],
    ids=["R-50.pkl", "X-101-32x8d.pkl"],
)
def test_imagenet_pickle_gives_detectron2_features(tmp_path, depth, groups, width, stride_in_1x1, name):
    """A Caffe2-format ImageNet pickle, read by Detectron2's checkpointer and by detect: equal C2-C5."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone

    from detect.models.backbones import ResNetTrunk, build_resnet

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NUM_GROUPS = groups
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = width
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    torch.manual_seed(0)
    reference = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    blobs = {}
    for key, value in reference.state_dict().items():
        if key.endswith("norm.running_var"):
            value = torch.rand(value.shape) + 0.5
        elif key.endswith(("norm.running_mean", "norm.bias")):
            value = torch.randn(value.shape) * 0.1
        elif key.endswith("norm.weight"):
            value = torch.rand(value.shape) + 0.5
        blobs[_caffe2_name(key)] = value.numpy()
    path = tmp_path / "imagenet.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    DetectionCheckpointer(reference).load(str(path))
    trunk = ResNetTrunk(build_resnet(name, "frozen_bn", str(path), stride_in_1x1), num_stages=4, freeze_at=0).eval()
    x = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), trunk(x)
    for level in range(2, 6):
        e, g = expected[f"res{level}"], got[f"c{level}"]
        error = ((g - e).norm() / e.norm()).item()
        print(f"{path.name} as {name}: C{level} relative error {error:.2e}")
        assert error < 1e-5
