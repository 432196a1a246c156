import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import torch

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

# A learning test's seed and where it reports its metrics, so that the spread of its
# metrics over seeds and thread counts can be measured in fresh processes
# (tools/learning_spread.py).
LEARNING_SEED_ENV = "DETECT_LEARNING_SEED"
LEARNING_METRICS_ENV = "DETECT_LEARNING_METRICS"
# Learning thresholds are measured on 1 and 2 intra-op threads: a run's numbers depend
# on its thread count (the order of floating-point sums), so no run uses more.
LEARNING_MAX_THREADS = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip, saying why, where no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def learning_seed() -> int:
    """The seed of a learning test: 0, or ``$DETECT_LEARNING_SEED`` while a spread is measured."""
    return int(os.environ.get(LEARNING_SEED_ENV, "0"))


@pytest.fixture
def learning_cpu() -> Iterator[int]:
    """A learning run's CPU settings, restored afterwards; yields its thread count.

    Threads: torch's default (``$OMP_NUM_THREADS``, else the cores) capped at
    LEARNING_MAX_THREADS. Denormals flushed to zero, as the trainer does on a CPU.
    """
    saved = torch.get_num_threads()
    threads = min(saved, LEARNING_MAX_THREADS)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    yield threads
    torch.set_flush_denormal(False)
    torch.set_num_threads(saved)


@pytest.fixture
def learning_metrics(request: pytest.FixtureRequest, learning_seed: int, learning_cpu: int) -> Iterator[dict]:
    """A dict the test fills with the metrics it asserts on, for a run on ``learning_cpu``'s settings.

    Appended as one JSON line (test, seed, threads, seconds, cpu_seconds, metrics) to
    ``$DETECT_LEARNING_METRICS`` when that is set, also when an assertion fails. On a
    busy machine ``cpu_seconds`` (all threads) tells the run's cost better than the wall time.
    """
    metrics: dict = {}
    start, start_cpu = time.perf_counter(), time.process_time()
    yield metrics
    path = os.environ.get(LEARNING_METRICS_ENV)
    if path and metrics:
        record = {
            "test": request.node.nodeid,
            "seed": learning_seed,
            "threads": learning_cpu,
            "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(time.process_time() - start_cpu, 1),
            **metrics,
        }
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


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module's tests: small models run no faster on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shapes dataset of 4 training and 2 validation images of 256-320 px a side."""
    from datasets.make_shapes import make_split

    root = tmp_path_factory.mktemp("shapes")
    make_split(root, "train", 4, seed=0)
    make_split(root, "val", 2, seed=0)
    return root
