"""datasets/prepare_coco.py and prepare_voc.py against fake archives served on 127.0.0.1.

The fakes are packed like the real archives (same names and member paths) but
hold 2 images per split, so the published image counts are patched to match.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from detect.data import download as fetch

REPO = Path(__file__).resolve().parents[1]


def _script(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _QuietHandler(SimpleHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self) -> None:
        self.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, folder it serves, paths requested so far)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    requested: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder, requested
    server.shutdown()
    server.server_close()


def _publish(folder: Path, relative: str, data: bytes) -> str:
    """Writes a served file; returns its md5sum line."""
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{hashlib.md5(data).hexdigest()}  {path.name}\n"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _fake_coco(folder: Path) -> str:
    """Serves tiny train2017.zip, val2017.zip and annotations_trainval2017.zip; returns their md5sum lines."""
    sums = ""
    annotations = {}
    for split, ids in (("train", (9, 25)), ("val", (139, 285))):
        images = {f"{split}2017/{i:012d}.jpg": b"\xff\xd8fake" for i in ids}
        sums += _publish(folder, f"zips/{split}2017.zip", _zip(images))
        coco = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 4, "height": 4} for i in ids],
                "annotations": [], "categories": [{"id": 1, "name": "person"}]}
        annotations[f"annotations/instances_{split}2017.json"] = json.dumps(coco).encode()
    return sums + _publish(folder, "annotations/annotations_trainval2017.zip", _zip(annotations))


def _fake_voc(folder: Path) -> str:
    """Serves the three VOC tars with 2 images per set; returns their md5sum lines."""
    sums = ""
    for name, ids in (("2007/trainval", ("000005", "000007")), ("2007/test", ("000001", "000002")),
                      ("2012/trainval", ("2008_000002", "2008_000003"))):
        year, split = name.split("/")
        voc = f"VOCdevkit/VOC{year}"
        members = {f"{voc}/ImageSets/Main/{split}.txt": "\n".join(ids).encode() + b"\n"}
        for i in ids:
            members[f"{voc}/Annotations/{i}.xml"] = b"<annotation/>"
            members[f"{voc}/JPEGImages/{i}.jpg"] = b"\xff\xd8fake"
        sums += _publish(folder, fetch.VOC_ARCHIVES[name].path, _tar(members))
    return sums


def test_prepare_coco_downloads_extracts_and_checks(mirror, tmp_path, monkeypatch, capsys) -> None:
    base_url, folder, requested = mirror
    monkeypatch.setattr(fetch, "COCO_IMAGE_COUNTS", {"train": 2, "val": 2})
    (tmp_path / "MD5SUMS").write_text(_fake_coco(folder))
    root = tmp_path / "coco"
    args = ["--root", str(root), "--base-url", base_url, "--md5-file", str(tmp_path / "MD5SUMS")]
    prepare = _script("prepare_coco")

    assert prepare.main(args) == 0
    assert sorted(p.name for p in (root / "val2017").iterdir()) == ["000000000139.jpg", "000000000285.jpg"]
    assert (root / "annotations" / "instances_train2017.json").is_file()
    assert sorted(requested) == ["/annotations/annotations_trainval2017.zip", "/zips/train2017.zip",
                                 "/zips/val2017.zip"]
    assert prepare.main(["--check", "--root", str(root)]) == 0
    assert prepare.main(args) == 0 and len(requested) == 3  # a complete layout downloads nothing

    (root / "val2017" / "000000000139.jpg").unlink()
    (root / "annotations" / "instances_val2017.json").unlink()
    capsys.readouterr()
    assert prepare.main(["--check", "--root", str(root)]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        f"  missing {root}/annotations/instances_val2017.json",
        f"  {root}/val2017 has 1 images, expected 2",
    ]


def test_prepare_coco_single_split_fetches_only_it(mirror, tmp_path, monkeypatch) -> None:
    base_url, folder, requested = mirror
    monkeypatch.setattr(fetch, "COCO_IMAGE_COUNTS", {"train": 2, "val": 2})
    (tmp_path / "MD5SUMS").write_text(_fake_coco(folder))
    args = ["--root", str(tmp_path / "coco"), "--splits", "val", "--base-url", base_url,
            "--md5-file", str(tmp_path / "MD5SUMS")]
    assert _script("prepare_coco").main(args) == 0
    assert sorted(requested) == ["/annotations/annotations_trainval2017.zip", "/zips/val2017.zip"]


def test_prepare_coco_rejects_archive_not_matching_published_md5(mirror, tmp_path, capsys) -> None:
    base_url, folder, _ = mirror
    _fake_coco(folder)
    assert _script("prepare_coco").main(["--root", str(tmp_path / "coco"), "--base-url", base_url]) == 1
    err = capsys.readouterr().err
    assert "md5 mismatch for annotations_trainval2017.zip" in err
    assert fetch.COCO_ARCHIVES["annotations"].md5 in err


def test_coco_check_cli_lists_everything_missing(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    result = subprocess.run([sys.executable, str(REPO / "datasets" / "prepare_coco.py"), "--check", "--root",
                             str(root)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{root} is incomplete:",
        f"  missing {root}/annotations/instances_train2017.json",
        f"  missing {root}/train2017",
        f"  missing {root}/annotations/instances_val2017.json",
        f"  {root}/val2017 has 0 images, expected 5000",
    ]


def test_prepare_voc_downloads_extracts_and_checks(mirror, tmp_path, monkeypatch, capsys) -> None:
    base_url, folder, requested = mirror
    monkeypatch.setattr(fetch, "VOC_IMAGE_COUNTS", dict.fromkeys(fetch.VOC_ARCHIVES, 2))
    (tmp_path / "MD5SUMS").write_text(_fake_voc(folder))
    devkit = tmp_path / "VOCdevkit"
    args = ["--root", str(devkit), "--base-url", base_url, "--md5-file", str(tmp_path / "MD5SUMS")]
    prepare = _script("prepare_voc")

    assert prepare.main(args) == 0
    assert (devkit / "VOC2007" / "JPEGImages" / "000001.jpg").is_file()  # the leading VOCdevkit/ is stripped
    assert (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert len(requested) == 3
    assert prepare.main(["--check", "--root", str(devkit)]) == 0
    assert prepare.main(args) == 0 and len(requested) == 3

    (devkit / "VOC2007" / "JPEGImages" / "000002.jpg").unlink()
    (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").unlink()
    capsys.readouterr()
    assert prepare.main(["--check", "--root", str(devkit)]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        f"  {devkit}/VOC2007/JPEGImages lacks 1 of the 2 files listed in "
        f"{devkit}/VOC2007/ImageSets/Main/test.txt, e.g. 000002.jpg",
        f"  missing {devkit}/VOC2012/ImageSets/Main/trainval.txt",
    ]


def test_voc_check_cli_lists_everything_missing(tmp_path: Path) -> None:
    devkit = tmp_path / "VOCdevkit"
    result = subprocess.run([sys.executable, str(REPO / "datasets" / "prepare_voc.py"), "--check", "--root",
                             str(devkit), "--sets", "2007/trainval", "2007/test"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{devkit} is incomplete:",
        f"  missing {devkit}/VOC2007/ImageSets/Main/trainval.txt",
        f"  missing {devkit}/VOC2007/Annotations",
        f"  missing {devkit}/VOC2007/JPEGImages",
        f"  missing {devkit}/VOC2007/ImageSets/Main/test.txt",
    ]
