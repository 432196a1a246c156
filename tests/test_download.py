"""download(), extract() and read_md5_file() against a Range-capable server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from detect.data import download as fetch


class _RangeServer(ThreadingHTTPServer):
    """Serves in-memory files; records (path, Range header, bytes sent) per request.

    ``ignore_range`` answers every request with the whole file (200), as some
    servers do; ``truncate`` cuts the next that many bodies in half, as a dropped
    connection would.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.log: list[tuple[str, str | None, int]] = []
        self.ignore_range = False
        self.truncate = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _RangeServer

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        wanted = self.headers.get("Range")
        if data is None:
            self.server.log.append((self.path, wanted, 0))
            self.send_error(404)
            return
        start, status = 0, 200
        if wanted and not self.server.ignore_range:
            start, status = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1]), 206
            if start >= len(data):
                self.server.log.append((self.path, wanted, 0))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.truncate:
            self.server.truncate -= 1
            body = body[: len(body) // 2]
        self.server.log.append((self.path, wanted, len(body)))
        self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

    def log_message(self, *args: object) -> None:
        pass


PAYLOAD = bytes(range(256)) * 400  # 102400 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RangeServer]:
    monkeypatch.setattr(fetch, "RETRY_WAIT_S", 0.0)
    srv = _RangeServer({"/data.bin": PAYLOAD})
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_verifies_and_renames(server: _RangeServer, tmp_path: Path) -> None:
    dest = fetch.download(server.url("/data.bin"), tmp_path / "sub" / "data.bin", PAYLOAD_MD5, chunk_size=4096)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    assert server.log == [("/data.bin", None, len(PAYLOAD))]


def test_complete_file_is_not_downloaded_again(server: _RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    fetch.download(server.url("/data.bin"), dest, PAYLOAD_MD5)
    assert server.log == []


def test_existing_file_with_wrong_md5_is_replaced(server: _RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"stale")
    fetch.download(server.url("/data.bin"), dest, PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD


def test_partial_file_is_resumed_with_range(server: _RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:30000])
    fetch.download(server.url("/data.bin"), dest, PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.log == [("/data.bin", "bytes=30000-", len(PAYLOAD) - 30000)]  # only the rest was sent


def test_dropped_connection_is_resumed_in_the_same_call(server: _RangeServer, tmp_path: Path) -> None:
    server.truncate = 1
    dest = fetch.download(server.url("/data.bin"), tmp_path / "data.bin", PAYLOAD_MD5, chunk_size=4096)
    assert dest.read_bytes() == PAYLOAD
    half = len(PAYLOAD) // 2
    assert server.log == [("/data.bin", None, half), ("/data.bin", f"bytes={half}-", len(PAYLOAD) - half)]


def test_gives_up_after_retries_and_keeps_part(server: _RangeServer, tmp_path: Path) -> None:
    server.truncate = fetch.RETRIES + 1
    with pytest.raises(fetch.DownloadError, match="run again to resume"):
        fetch.download(server.url("/data.bin"), tmp_path / "data.bin", PAYLOAD_MD5)
    part = (tmp_path / "data.bin.part").read_bytes()
    assert 0 < len(part) < len(PAYLOAD) and PAYLOAD.startswith(part)
    fetch.download(server.url("/data.bin"), tmp_path / "data.bin", PAYLOAD_MD5)  # the next run finishes it
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(server: _RangeServer, tmp_path: Path) -> None:
    server.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"x" * 5000)  # must not end up in front of the file
    dest = fetch.download(server.url("/data.bin"), tmp_path / "data.bin", PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.log == [("/data.bin", "bytes=5000-", len(PAYLOAD))]


def test_part_already_complete_is_finished_without_a_body(server: _RangeServer, tmp_path: Path) -> None:
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    dest = fetch.download(server.url("/data.bin"), tmp_path / "data.bin", PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.log == [("/data.bin", f"bytes={len(PAYLOAD)}-", 0)]


def test_md5_mismatch_names_file_and_digests(server: _RangeServer, tmp_path: Path) -> None:
    wrong = "0" * 32
    with pytest.raises(fetch.DownloadError) as error:
        fetch.download(server.url("/data.bin"), tmp_path / "data.bin", wrong)
    message = str(error.value)
    assert "data.bin" in message and wrong in message and PAYLOAD_MD5 in message
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()
    assert (tmp_path / "data.bin.md5-mismatch").read_bytes() == PAYLOAD  # kept for inspection


def test_missing_file_is_an_error_without_retries(server: _RangeServer, tmp_path: Path) -> None:
    with pytest.raises(fetch.DownloadError, match=r"/nope.bin: HTTP 404"):
        fetch.download(server.url("/nope.bin"), tmp_path / "nope.bin")
    assert server.log == [("/nope.bin", None, 0)]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w:gz", symlink: tuple[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
            tf.addfile(info)
    return buffer.getvalue()


def test_extract_zip_and_tar(tmp_path: Path) -> None:
    members = {"top/a.txt": b"a", "top/sub/b.txt": b"b"}
    (tmp_path / "x.zip").write_bytes(_zip(members))
    (tmp_path / "x.tar.gz").write_bytes(_tar(members))
    (tmp_path / "x.tar").write_bytes(_tar(members, mode="w"))
    fetch.extract(tmp_path / "x.zip", tmp_path / "z")
    fetch.extract(tmp_path / "x.tar.gz", tmp_path / "t")
    fetch.extract(tmp_path / "x.tar", tmp_path / "s", strip_components=1)
    for root in (tmp_path / "z" / "top", tmp_path / "t" / "top", tmp_path / "s"):
        assert (root / "a.txt").read_bytes() == b"a" and (root / "sub" / "b.txt").read_bytes() == b"b"


@pytest.mark.parametrize(
    "archive",
    [
        _zip({"ok.txt": b"1", "../evil.txt": b"2"}),
        _zip({"ok.txt": b"1", "/abs/evil.txt": b"2"}),
        _tar({"ok.txt": b"1", "a/../../evil.txt": b"2"}),
        _tar({"ok.txt": b"1"}, symlink=("link", "/etc")),
    ],
    ids=["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-symlink"],
)
def test_extract_rejects_members_escaping_dest(tmp_path: Path, archive: bytes) -> None:
    path = tmp_path / "evil.archive"
    path.write_bytes(archive)
    dest = tmp_path / "out" / "inner"
    with pytest.raises(ValueError, match="evil.archive: member"):
        fetch.extract(path, dest)
    assert not dest.exists() and not (tmp_path / "out" / "evil.txt").exists()  # nothing was written


def test_extract_rejects_non_archives(tmp_path: Path) -> None:
    (tmp_path / "plain.zip").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="plain.zip: not a zip or tar archive"):
        fetch.extract(tmp_path / "plain.zip", tmp_path / "out")


def test_read_md5_file(tmp_path: Path) -> None:
    path = tmp_path / "MD5SUMS"
    path.write_text(f"# mirror\n{PAYLOAD_MD5.upper()}  zips/val2017.zip\n{'a' * 32} *b.tar\n\n")
    assert fetch.read_md5_file(path) == {"val2017.zip": PAYLOAD_MD5, "b.tar": "a" * 32}
    path.write_text("abc  val2017.zip\n")
    with pytest.raises(ValueError, match=r"MD5SUMS:1: expected"):
        fetch.read_md5_file(path)
