"""Host memory of a COCO training dataset at COCO scale.

:func:`write_synthetic_coco` writes a json shaped like train2017's (118k
images, 828k annotations with polygon segmentations, ~560 MB at ``scale=1``).
:func:`measure_data_memory` builds :class:`detect.data.coco.CocoDetection` on it
in a fresh interpreter (this file run as a script, so that nothing of the
caller's memory counts) and reports:

- ``build_s``, ``build_cpu_s``: wall and CPU seconds to build the dataset (CPU
  time is the steadier figure on a shared machine);
- ``rss_baseline_mb``: the process after importing torch and detect, before the build;
  ``rss_after_build_mb`` after it, ``rss_dataset_mb`` the difference, ``peak_rss_mb`` the high-water mark;
- ``workers``: for each DataLoader worker (forked as training forks them) after
  it has read ``items`` random items' ``annotations`` and ``image_info`` (the
  annotation arrays; no image is decoded, so no image file is needed), its own
  memory: ``uss_mb`` (``Private_Clean + Private_Dirty`` of ``/proc/PID/smaps_rollup``),
  ``pss_mb`` and ``rss_mb``, then the same after a full ``gc.collect()``
  (``*_after_gc_mb``: the pages a collection's visit of every object copies);
- ``worker_baseline``: the same for workers forked before the dataset was built.

``code`` picks the checkout whose ``detect`` is measured, to compare two versions; the
figures name its git version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np

FULL_IMAGES = 118_287
FULL_ANNOTATIONS = 828_000
CROWD_FRACTION = 0.01  # crowd regions carry an RLE mask instead of polygons
# COCO's 80 category ids run 1..90 with these gaps.
CATEGORY_GAPS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
MB = 2**20


def write_synthetic_coco(path: Path, scale: float = 1.0, seed: int = 0) -> dict[str, int]:
    """Writes a seeded COCO instances json of ``scale`` times train2017's size.

    Image records carry the same fields as COCO's; each annotation has a box
    inside its image and a polygon of 6 to 60 points in the box (two decimals,
    as in COCO), which makes the file's size per annotation that of train2017.

    Returns:
        ``{"images": I, "annotations": A, "bytes": size of the file}``.
    """
    rng = np.random.default_rng(seed)
    num_images = max(1, round(FULL_IMAGES * scale))
    num_annotations = round(FULL_ANNOTATIONS * scale)
    image_ids = rng.permutation(600_000)[:num_images] + 1
    heights = rng.integers(240, 641, num_images)
    widths = rng.integers(240, 641, num_images)
    images = [
        {
            "license": 1, "file_name": f"{i:012d}.jpg", "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
            "height": int(h), "width": int(w), "date_captured": "2013-11-14 16:28:13",
            "flickr_url": f"http://farm4.staticflickr.com/1/{i}_0000000000_z.jpg", "id": int(i),
        }
        for i, h, w in zip(image_ids, heights, widths)
    ]
    category_ids = [c for c in range(1, 91) if c not in CATEGORY_GAPS]
    categories = [{"supercategory": "thing", "id": c, "name": f"class {c}"} for c in category_ids]
    with open(path, "w") as f:
        f.write('{"info": {"description": "synthetic COCO-sized instances"}, "licenses": [], "images": ')
        f.write(json.dumps(images))
        f.write(', "annotations": [')
        for start in range(0, num_annotations, 20_000):
            count = min(20_000, num_annotations - start)
            chunk = _synthetic_annotations(rng, start, count, heights, widths, image_ids, category_ids)
            f.write((", " if start else "") + ", ".join(json.dumps(a) for a in chunk))
        f.write('], "categories": ')
        f.write(json.dumps(categories))
        f.write("}")
    return {"images": num_images, "annotations": num_annotations, "bytes": path.stat().st_size}


def _synthetic_annotations(
    rng: np.random.Generator, first_id: int, count: int, heights: np.ndarray, widths: np.ndarray,
    image_ids: np.ndarray, category_ids: list[int],
) -> list[dict[str, Any]]:
    rows = rng.integers(len(image_ids), size=count)
    h, w = heights[rows], widths[rows]
    box_w, box_h = rng.uniform(1, 0.6 * w), rng.uniform(1, 0.6 * h)
    x, y = rng.uniform(0, w - box_w), rng.uniform(0, h - box_h)
    crowd = rng.random(count) < CROWD_FRACTION
    points = rng.integers(6, 61, count)
    labels = rng.choice(category_ids, count)
    annotations = []
    for k in range(count):
        if crowd[k]:
            segmentation: Any = {"counts": rng.integers(0, 400, 200).tolist(), "size": [int(h[k]), int(w[k])]}
        else:
            u = rng.random((points[k], 2)) * (box_w[k], box_h[k]) + (x[k], y[k])
            segmentation = [np.round(u.ravel(), 2).tolist()]
        annotations.append({
            "segmentation": segmentation, "area": round(float(box_w[k] * box_h[k]) * 0.6, 2), "iscrowd": int(crowd[k]),
            "image_id": int(image_ids[rows[k]]),
            "bbox": [round(float(v), 2) for v in (x[k], y[k], box_w[k], box_h[k])],
            "category_id": int(labels[k]), "id": first_id + k + 1,
        })
    return annotations


def measure_data_memory(ann_file: Path, workers: int = 4, items: int = 200, code: Optional[Path] = None) -> dict[str, Any]:
    """Builds the training dataset of ``ann_file`` in a fresh interpreter and measures its memory.

    Args:
        workers: DataLoader workers to fork.
        items: items each worker reads before it is measured.
        code: the checkout whose ``detect`` is measured; by default the one of this file.

    Returns:
        The figures described in the module docstring.
    """
    code = code or Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, str(Path(__file__).resolve()), str(ann_file), str(workers), str(items)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"code": checkout_version(code), **json.loads(done.stdout.strip().splitlines()[-1])}


def checkout_version(code: Path) -> str | None:
    """``git describe --always --dirty`` of the checkout ``code`` (None outside git): the figures
    name the code they measured, not a path of the machine they ran on."""
    done = subprocess.run(["git", "-C", str(code), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _memory_mb() -> dict[str, float]:
    """This process's ``VmRSS`` and ``VmHWM`` (peak) from ``/proc/self/status``, in MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def _own_memory_mb() -> dict[str, float]:
    """``uss`` (private clean + dirty), ``pss`` and ``rss`` of this process from ``/proc/self/smaps_rollup``, MiB."""
    kb = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        kb[key] = int(rest.split()[0])
    return {
        "uss_mb": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024,
        "pss_mb": kb["Pss"] / 1024,
        "rss_mb": kb["Rss"] / 1024,
    }


def _worker_figures(dataset: Any, workers: int, items: int) -> list[dict[str, Any]]:
    """Forks ``workers`` DataLoader workers, as training does, that each read ``items`` items of
    ``dataset`` and report their memory."""
    import torch

    from detect.data.loader import start_workers

    class Reader(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[dict[str, Any]]:
            import gc

            worker = torch.utils.data.get_worker_info().id
            count = len(dataset) if dataset is not None else 0
            indices = np.random.default_rng(worker).integers(count, size=items) if count else []
            for index in indices:
                dataset.annotations(int(index))
                dataset.image_info(int(index))
            figures = {"worker": worker, "items_read": len(indices), **_own_memory_mb()}
            gc.collect()
            yield {**figures, **{f"{k[:-3]}_after_gc_mb": v for k, v in _own_memory_mb().items()}}

    loader = torch.utils.data.DataLoader(
        Reader(), batch_size=None, num_workers=workers, multiprocessing_context="fork"
    )
    return sorted(start_workers(loader), key=lambda r: r["worker"])


def _measure(ann_file: Path, workers: int, items: int) -> dict[str, Any]:
    """The measuring process: figures before the build, of the build, and of the workers."""
    import torch  # noqa: F401  (part of the baseline: a training process has it)

    from detect.data.coco import CocoDetection

    baseline = _memory_mb()["VmRSS"]
    worker_baseline = _worker_figures(None, workers, items)
    start, start_cpu = time.perf_counter(), time.process_time()
    dataset = CocoDetection(ann_file.parent, ann_file, filter_empty=True)
    build_s, build_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    after = _memory_mb()
    return {
        "ann_file": ann_file.name,
        "json_mb": ann_file.stat().st_size / MB,
        "items": len(dataset),
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "rss_baseline_mb": baseline,
        "rss_after_build_mb": after["VmRSS"],
        "rss_dataset_mb": after["VmRSS"] - baseline,
        "peak_rss_mb": after["VmHWM"],
        "workers": _worker_figures(dataset, workers, items),
        "worker_baseline": worker_baseline,
    }


if __name__ == "__main__":
    del sys.path[0]  # this file's folder: its modules must not shadow top-level ones
    print(json.dumps(_measure(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
