import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import torch

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

# A learning test's seed and where it reports its metrics, so that the spread of its
# metrics over seeds and thread counts can be measured in fresh processes.
LEARNING_SEED_ENV = "DETECT_LEARNING_SEED"
LEARNING_METRICS_ENV = "DETECT_LEARNING_METRICS"


@pytest.fixture
def learning_seed() -> int:
    """The seed of a learning test: 0, or ``$DETECT_LEARNING_SEED`` while a spread is measured."""
    return int(os.environ.get(LEARNING_SEED_ENV, "0"))


@pytest.fixture
def learning_metrics(request: pytest.FixtureRequest, learning_seed: int) -> Iterator[dict]:
    """A dict the test fills with the metrics it asserts on; appended as one JSON line
    (test, seed, threads, metrics) to ``$DETECT_LEARNING_METRICS`` when that is set."""
    metrics: dict = {}
    yield metrics
    path = os.environ.get(LEARNING_METRICS_ENV)
    if path and metrics:
        record = {"test": request.node.nodeid, "seed": learning_seed, "threads": torch.get_num_threads(), **metrics}
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


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
