"""Converting torchvision's ``fasterrcnn_resnet50_fpn`` weights into a detect checkpoint."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

# torchvision name -> detect name; everything else keeps its name.
RENAMES = {
    "rpn.head.conv.0.0.": "rpn.head.conv.",
    "rpn.head.conv.": "rpn.head.conv.",  # torchvision before 0.13
    "rpn.head.cls_logits.": "rpn.head.objectness.",
    "rpn.head.bbox_pred.": "rpn.head.deltas.",
    "roi_heads.box_predictor.": "roi_heads.predictor.",
}
EXPECTED_PREFIXES = ("backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.box_head.fc6.", "roi_heads.box_head.fc7.", "roi_heads.box_predictor.")
RESNET50_BLOCKS = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}


def convert_fasterrcnn_resnet50_fpn(state_dict: dict[str, Tensor], source: str = "checkpoint") -> dict[str, Any]:
    """Returns a detect checkpoint (``model`` and ``classes``) for ``configs/frcnn_r50_fpn_coco.py``.

    Raises ValueError naming ``source`` when the weights are of another architecture.
    """
    if isinstance(state_dict.get("model"), dict):  # torchvision's reference training scripts wrap it
        state_dict = state_dict["model"]
    _check_architecture(state_dict, source)
    model = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        for old, new in RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        model[key] = value
    num_outputs = state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
    return {"model": model, "classes": _classes(num_outputs), "config": None}


def _check_architecture(state_dict: dict[str, Tensor], source: str) -> None:
    unknown = [k for k in state_dict if not k.startswith(EXPECTED_PREFIXES)]
    problems = [f"unexpected keys {unknown[:3]}"] if unknown else []
    for layer, blocks in RESNET50_BLOCKS.items():
        if f"backbone.body.{layer}.{blocks - 1}.conv3.weight" not in state_dict or f"backbone.body.{layer}.{blocks}.conv1.weight" in state_dict:
            problems.append(f"{layer} is not ResNet-50's ({blocks} bottleneck blocks)")
    fc6 = state_dict.get("roi_heads.box_head.fc6.weight")
    if fc6 is None or fc6.shape[1] != 256 * 7 * 7:
        problems.append("no two-FC box head on 256 x 7 x 7 RoI features")
    if problems:
        raise ValueError(f"{source} is not a torchvision fasterrcnn_resnet50_fpn state_dict: {'; '.join(problems)}")


def _classes(num_outputs: int) -> dict[int, str]:
    """COCO's 90 category ids for torchvision's 91-way COCO predictor; numbered names otherwise."""
    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    if num_outputs == len(names):
        return {i: names[i] for i in range(1, num_outputs)}
    return {i: f"class_{i}" for i in range(1, num_outputs)}
