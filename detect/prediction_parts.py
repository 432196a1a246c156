"""Prediction over several processes (torchrun), written as it goes so that a killed run resumes.

Each process takes every ``world_size``-th input file from ``rank`` on (images and
videos alike, whole files) and appends one JSON line per finished file to its part,
``<json>.parts/rank<r>.jsonl``: ``{"file": str, "records": [...], "skipped": str or null}``.
Rank 0 then merges the parts into the JSON list one process writes: the records of
the files in :func:`detect.predict.predict_files` order (images, then videos, each
in input order). With ``resume``, files found in the parts are not predicted again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch.distributed as dist

from detect.predict import PredictionRun, Predictor, is_video, output_paths, predict_files, write_records


def parts_dir(json_path: Path) -> Path:
    return json_path.with_name(json_path.name + ".parts")


def read_parts(folder: Path) -> dict[str, dict[str, Any]]:
    """Finished files by name, from every part in ``folder`` (a line cut short by a kill is ignored)."""
    done: dict[str, dict[str, Any]] = {}
    for part in sorted(folder.glob("rank*.jsonl")):
        for line in part.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[entry["file"]] = entry
    return done


def merge_parts(paths: Sequence[Path], done: dict[str, dict[str, Any]]) -> PredictionRun:
    """The records and skip messages of ``paths`` in one process's order (images, then videos)."""
    run = PredictionRun()
    for path in [p for p in paths if not is_video(p)] + [p for p in paths if is_video(p)]:
        entry = done.get(str(path))
        if entry is None:
            raise RuntimeError(f"{path}: no process recorded it; rerun with --resume")
        run.records.extend(entry["records"])
        if entry["skipped"] is not None:
            run.skipped.append(entry["skipped"])
    return run


def predict_in_parts(
    predictor: Predictor,
    paths: Sequence[Path],
    batch_size: int,
    json_path: Path,
    output_dir: Optional[Path] = None,
    resume: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Optional[PredictionRun]:
    """Predicts this process's share of ``paths`` into its part; rank 0 merges all into ``json_path``.

    Every process must call it (it waits for the others). Returns the merged run on
    rank 0 (the parts folder is removed once merged), None on the other ranks.
    """
    if output_dir is not None:
        output_paths(paths, output_dir)  # a collision between any two inputs fails on every rank
    folder = parts_dir(json_path)
    if rank == 0 and not resume and folder.exists():
        shutil.rmtree(folder)
    _barrier(world_size)
    done = read_parts(folder) if resume else {}
    todo = [p for p in paths if str(p) not in done]
    _barrier(world_size)  # every process has read the parts before any appends to them
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"rank{rank}.jsonl", "a") as part:

        def file_done(path: Path, records: list[dict[str, Any]], skipped: Optional[str]) -> None:
            part.write(json.dumps({"file": str(path), "records": records, "skipped": skipped}) + "\n")
            part.flush()

        predict_files(predictor, todo[rank::world_size], batch_size, output_dir, on_file=file_done)
    _barrier(world_size)
    if rank != 0:
        return None
    run = merge_parts(paths, read_parts(folder))
    write_records(json_path, run.records)
    shutil.rmtree(folder)
    return run


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
