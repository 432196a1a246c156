import json
from pathlib import Path

import cv2
import pytest
import torch

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="session")
def coco8() -> dict:
    """The 8 coco128 images of tests/data/coco8 as RGB float tensors, with their boxes and COCO category ids."""
    ann = json.loads((DATA / "coco8" / "annotations.json").read_text())
    images, targets = [], []
    for info in ann["images"]:
        bgr = cv2.imread(str(DATA / "coco8" / "images" / info["file_name"]))
        images.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255)
        boxes = [a["bbox"] for a in ann["annotations"] if a["image_id"] == info["id"]]
        labels = [a["category_id"] for a in ann["annotations"] if a["image_id"] == info["id"]]
        xyxy = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        xyxy[:, 2:] += xyxy[:, :2]
        targets.append({"boxes": xyxy, "labels": torch.tensor(labels, dtype=torch.int64)})
    return {"images": images, "targets": targets, "categories": {c["id"]: c["name"] for c in ann["categories"]}}
