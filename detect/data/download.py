"""Fetching the public datasets: resumable downloads, safe extraction, layout checks.

``datasets/prepare_coco.py`` and ``datasets/prepare_voc.py`` only parse their
arguments and call :func:`prepare_coco` / :func:`prepare_voc`; their ``--check``
calls :func:`check_coco` / :func:`check_voc`, which return a list of precise
problems (empty when the layout is complete).

What :func:`download` leaves on disk:
- ``<dest>`` exists only once its md5 matched, because the file is streamed into
  ``<dest>.part`` and renamed atomically after the check.
- ``<dest>.part`` is an interrupted download; the next call resumes it with an
  HTTP ``Range`` request (a server that ignores Range restarts it from byte 0).
- ``<dest>.md5-mismatch`` is a finished download whose md5 did not match. It is
  kept, not deleted, in case the published checksum rather than the file is
  wrong, and it is moved away from ``.part`` because resuming from a corrupt
  prefix would fail the same way on every later run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
TIMEOUT_S = 60.0
RETRIES = 3  # further attempts after an interrupted one, each resuming where the last stopped
RETRY_WAIT_S = 2.0  # times the attempt number


class DownloadError(RuntimeError):
    """A download that could not complete, or whose md5 did not match."""


@dataclass(frozen=True)
class Archive:
    """One published dataset archive: where it lives below a base URL, and its md5."""

    path: str  # relative to the base URL, e.g. "zips/val2017.zip"
    md5: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


# Published checksums, as listed by torchvision.datasets.VOCDetection (VOC) and by
# PaddleDetection's and MLCommons' COCO download scripts (COCO).
COCO_URL = "http://images.cocodataset.org/"
COCO_ARCHIVES = {
    "annotations": Archive("annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c"),
    "train": Archive("zips/train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2"),
    "val": Archive("zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80"),
}
COCO_IMAGE_COUNTS = {"train": 118287, "val": 5000}

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/"
VOC_ARCHIVES = {
    "2007/trainval": Archive("voc2007/VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
    "2007/test": Archive("voc2007/VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
    "2012/trainval": Archive("voc2012/VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),
}
VOC_IMAGE_COUNTS = {"2007/trainval": 5011, "2007/test": 4952, "2012/trainval": 11540}


def download(url: str, dest: str | os.PathLike, md5: str | None = None, chunk_size: int = CHUNK_SIZE) -> Path:
    """Downloads ``url`` to ``dest``, resuming, verifying and renaming atomically.

    Args:
        url: an http(s) URL.
        dest: the final file path; its folder is created.
        md5: expected hex digest; None skips the check (an existing ``dest`` is then trusted).
        chunk_size: bytes per read and write.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: on an HTTP error, on running out of retries (``.part`` is
            kept for the next call to resume), or on an md5 mismatch.
    """
    dest = Path(dest)
    if dest.is_file():
        if md5 is None or file_md5(dest) == md5:
            logger.info("%s: already downloaded", dest)
            return dest
        logger.warning("%s: md5 differs from %s; downloading it again", dest, md5)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _PartFile(dest.with_name(dest.name + ".part"))
    for attempt in range(1, RETRIES + 2):
        try:
            if _continue(url, part, chunk_size):
                break
            reason = f"connection closed after byte {part.size}"
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
            reason = f"HTTP {e.code} {e.reason}"
        except (OSError, HTTPException) as e:  # URLError, timeouts and resets are OSErrors
            reason = f"{type(e).__name__}: {e}"
        if attempt > RETRIES:
            raise DownloadError(
                f"{url}: gave up after {attempt} attempts ({reason}); {part.size} bytes are in {part.path}, "
                "run again to resume"
            )
        logger.warning("%s: attempt %d interrupted (%s); resuming", dest.name, attempt, reason)
        time.sleep(RETRY_WAIT_S * attempt)
    actual = part.digest.hexdigest()
    if md5 is not None and actual != md5:
        kept = dest.with_name(dest.name + ".md5-mismatch")
        os.replace(part.path, kept)
        raise DownloadError(
            f"md5 mismatch for {dest.name} from {url}: expected {md5}, got {actual}; the file is kept as {kept} "
            "(delete it and run again to re-download)"
        )
    os.replace(part.path, dest)
    return dest


class _PartFile:
    """``<dest>.part`` and the md5 of the bytes it holds, updated with every write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.md5()
        self.size = 0
        if path.is_file():
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    self.digest.update(chunk)
                    self.size += len(chunk)

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.digest = hashlib.md5()
        self.size = 0


def _continue(url: str, part: _PartFile, chunk_size: int) -> bool:
    """One request appending to ``part`` from its current size; True once the file is complete."""
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not part.size:
            raise
        # Nothing lies past our offset: .part is either the whole file or longer than it.
        header = e.headers.get("Content-Range")
        if header and _content_range(header)[1] == part.size:
            return True
        part.restart()
        return False
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != part.size:
                raise DownloadError(f"{url}: asked for bytes from {part.size}, server sent them from {start}")
        else:  # 200: the whole file, because we asked for all of it or the server ignores Range
            if part.size:
                logger.warning("%s: server ignored the Range request; restarting from byte 0", url)
            part.restart()
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
        bar = tqdm(total=total, initial=part.size, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.path.name[: -len(".part")])
        with bar, open(part.path, "ab") as f:
            while chunk := response.read(chunk_size):
                f.write(chunk)
                part.digest.update(chunk)
                part.size += len(chunk)
                bar.update(len(chunk))
    # http.client ends a body cut short without an error, so the length is the only sign.
    return total is None or part.size == total


def _content_range(header: str) -> tuple[int | None, int | None]:
    """``bytes 10-99/100`` -> (10, 100); ``bytes */100`` -> (None, 100); an unknown total is None."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", header.strip())
    if match is None:
        raise DownloadError(f"unreadable Content-Range header {header!r}")
    start, total = match.groups()
    return (int(start) if start else None), (None if total == "*" else int(total))


def extract(archive: str | os.PathLike, dest_dir: str | os.PathLike, strip_components: int = 0) -> None:
    """Extracts a zip or tar (plain, .gz, .bz2, .xz) archive into ``dest_dir``.

    Every member is checked before anything is written, so a hostile archive
    writes nothing: an absolute name or one with a ``..`` component (zip-slip),
    and any tar member that is not a regular file or folder (a link could point
    outside ``dest_dir``), raise ValueError naming the archive and member.

    Args:
        archive: the archive file.
        dest_dir: created if needed.
        strip_components: leading name components to drop, as ``tar
            --strip-components``; members with nothing left are skipped.
    """
    archive, dest = Path(archive), Path(dest_dir)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            plan = [(_target(archive, i.filename, dest, strip_components), i) for i in zf.infolist()]
            _write(archive, plan, lambda i: i.is_dir(), zf.open)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()):
                    raise ValueError(f"{archive}: member {m.name!r} is a link or special file; "
                                     "only regular files and folders are extracted")
            plan = [(_target(archive, m.name, dest, strip_components), m) for m in members]
            _write(archive, plan, lambda m: m.isdir(), tf.extractfile)
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")


def _target(archive: Path, name: str, dest: Path, strip_components: int) -> Path | None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts:
        raise ValueError(f"{archive}: member {name!r} is absolute or contains '..'; "
                         f"refusing a path that could land outside {dest}")
    parts = parts[strip_components:]
    return dest.joinpath(*parts) if parts else None


def _write(archive: Path, plan: list[tuple[Path | None, Any]], is_dir: Callable[[Any], bool],
           open_member: Callable[[Any], Any]) -> None:
    for target, member in tqdm(plan, desc=f"extract {archive.name}", unit="file"):
        if target is None:
            continue
        if is_dir(member):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_SIZE)


def file_md5(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex md5 of a file, read in chunks so that archives of any size fit in memory."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_md5_file(path: str | os.PathLike) -> dict[str, str]:
    """Reads ``md5sum`` output (``<hex>  <file name>`` per line) into {file name: hex}."""
    table = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"\s*([0-9a-fA-F]{32})\s+\*?(.+?)\s*", line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected '<32 hex digits>  <file name>', got {line!r}")
        table[Path(match[2]).name] = match[1].lower()
    return table


def check_coco(root: str | os.PathLike, splits: Sequence[str] = ("train", "val")) -> list[str]:
    """Problems with a COCO 2017 layout: ``annotations/instances_<split>2017.json`` and
    ``<split>2017/`` holding the published number of images, per split."""
    root = Path(root)
    problems = []
    for split in _known(splits, COCO_IMAGE_COUNTS, "COCO split"):
        annotations = root / "annotations" / f"instances_{split}2017.json"
        if not annotations.is_file():
            problems.append(f"missing {annotations}")
        problems += _check_image_count(root / f"{split}2017", COCO_IMAGE_COUNTS[split])
    return problems


def _check_image_count(folder: Path, expected: int) -> list[str]:
    if not folder.is_dir():
        return [f"missing {folder}"]
    found = sum(1 for entry in os.scandir(folder) if entry.name.endswith(".jpg"))
    return [] if found == expected else [f"{folder} has {found} images, expected {expected}"]


def check_voc(devkit: str | os.PathLike, sets: Sequence[str] = tuple(VOC_ARCHIVES)) -> list[str]:
    """Problems with a VOCdevkit layout, for sets such as ``2007/trainval``: the image
    list ``VOC<year>/ImageSets/Main/<split>.txt`` with the published count, and an
    ``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg`` for every listed id."""
    problems = []
    for name in _known(sets, VOC_IMAGE_COUNTS, "VOC set"):
        year, split = name.split("/")
        voc = Path(devkit) / f"VOC{year}"
        id_list = voc / "ImageSets" / "Main" / f"{split}.txt"
        ids = []
        if not id_list.is_file():
            problems.append(f"missing {id_list}")
        else:
            ids = id_list.read_text().split()
            if len(ids) != VOC_IMAGE_COUNTS[name]:
                problems.append(f"{id_list} lists {len(ids)} images, expected {VOC_IMAGE_COUNTS[name]}")
        for folder, suffix in ((voc / "Annotations", ".xml"), (voc / "JPEGImages", ".jpg")):
            if not folder.is_dir():
                problems.append(f"missing {folder}")
                continue
            present = set(os.listdir(folder))
            missing = [i + suffix for i in ids if i + suffix not in present]
            if missing:
                problems.append(f"{folder} lacks {len(missing)} of the {len(ids)} files listed in {id_list}, "
                                f"e.g. {', '.join(missing[:3])}")
    return list(dict.fromkeys(problems))  # 2007 trainval and test share folders: report each once


def _known(names: Sequence[str], table: Mapping[str, int], what: str) -> Sequence[str]:
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r}; known: {', '.join(table)}")
    return names


def prepare_coco(root: str | os.PathLike, splits: Sequence[str] = ("train", "val"), base_url: str = COCO_URL,
                 archive_dir: str | os.PathLike | None = None, checksums: Mapping[str, str] | None = None,
                 verify: bool = True) -> list[str]:
    """Downloads and extracts what a COCO 2017 layout lacks, then checks it.

    Args:
        root: the layout's folder (``datasets/coco``).
        splits: "train" and/or "val"; the annotation archive comes with either.
        base_url: the official host or a mirror with the same relative paths.
        archive_dir: where archives are kept; default ``<root>/archives``.
        checksums: {archive file name: md5} replacing the published ones (a mirror's own).
        verify: False skips the md5 checks.

    Returns:
        :func:`check_coco`'s problems after preparing; empty on success.
    """
    root = Path(root)
    needed = []
    if any(not (root / "annotations" / f"instances_{s}2017.json").is_file() for s in splits):
        needed.append("annotations")
    needed += [s for s in _known(splits, COCO_IMAGE_COUNTS, "COCO split")
               if _check_image_count(root / f"{s}2017", COCO_IMAGE_COUNTS[s])]
    for key in COCO_ARCHIVES:
        if key in needed:
            extract(_fetch(COCO_ARCHIVES[key], base_url, archive_dir or root / "archives", checksums, verify), root)
        elif key == "annotations" or key in splits:
            logger.info("COCO %s: already in place under %s", key, root)
    return check_coco(root, splits)


def prepare_voc(devkit: str | os.PathLike, sets: Sequence[str] = tuple(VOC_ARCHIVES), base_url: str = VOC_URL,
                archive_dir: str | os.PathLike | None = None, checksums: Mapping[str, str] | None = None,
                verify: bool = True) -> list[str]:
    """Downloads and extracts the VOC sets that a VOCdevkit layout lacks, then checks it.

    Args:
        devkit: the VOCdevkit folder; the archives' leading ``VOCdevkit/`` is
            stripped so that any folder name works.
        sets: some of ``2007/trainval``, ``2007/test``, ``2012/trainval``.
        base_url, archive_dir, checksums, verify: as for :func:`prepare_coco`.

    Returns:
        :func:`check_voc`'s problems after preparing; empty on success.
    """
    devkit = Path(devkit)
    for name in _known(sets, VOC_IMAGE_COUNTS, "VOC set"):
        if not check_voc(devkit, [name]):
            logger.info("VOC %s: already in place under %s", name, devkit)
            continue
        path = _fetch(VOC_ARCHIVES[name], base_url, archive_dir or devkit / "archives", checksums, verify)
        extract(path, devkit, strip_components=1)
    return check_voc(devkit, sets)


def _fetch(archive: Archive, base_url: str, archive_dir: str | os.PathLike,
           checksums: Mapping[str, str] | None, verify: bool) -> Path:
    md5 = (checksums or {}).get(archive.name, archive.md5) if verify else None
    url = base_url.rstrip("/") + "/" + archive.path
    return download(url, Path(archive_dir) / archive.name, md5)
