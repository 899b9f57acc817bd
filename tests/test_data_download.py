"""The downloader against a loopback HTTP server: verify, retry, resume, never leave a partial file."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import entrobust.data.downloader as dl
from entrobust.data import RemoteFile, download, download_file, load_dataset, make_fake_dataset
from entrobust.errors import DataError


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    bytes_sent: int = 0
    fail_next: int = 0  # answer 503 this many times
    cut_next: int = 0  # send half the body then drop the connection this many times
    stall_next: int = 0  # answer only after ``unstall`` is set, this many times
    unstall: threading.Event = field(default_factory=threading.Event)
    range_support: bool = True
    active: int = 0  # handlers still running; guarded by ``lock``
    lock: threading.Lock = field(default_factory=threading.Lock)
    idle: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.idle = threading.Condition(self.lock)


class _Server:
    def __init__(self) -> None:
        self.state = _State()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with state.lock:
                    state.active += 1
                try:
                    self._answer()
                finally:
                    with state.lock:
                        state.active -= 1
                        state.idle.notify_all()

            def _answer(self) -> None:
                with state.lock:
                    state.requests.append((self.path, self.headers.get("Range")))
                    fail = state.fail_next > 0
                    state.fail_next -= fail
                    cut = not fail and state.cut_next > 0
                    state.cut_next -= cut
                    stall = state.stall_next > 0
                    state.stall_next -= stall
                if stall:
                    state.unstall.wait(30)
                if fail:
                    self.send_error(503, "Service Unavailable")
                    return
                body = state.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                rng = self.headers.get("Range")
                status, start = 200, 0
                if rng and state.range_support:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:]
                if cut:
                    payload = payload[: len(payload) // 2]
                try:
                    self.wfile.write(payload)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    return
                with state.lock:
                    state.bytes_sent += len(payload)
                if cut:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def settled(self, timeout: float = 10.0) -> _State:
        """The state once every request handler has returned.

        A handler counts the bytes it sent after its write returns, which can be after the client
        has read them all; reading the counters before the handlers finish is a race.
        """
        with self.state.lock:
            assert self.state.idle.wait_for(lambda: self.state.active == 0, timeout), "handlers still running"
        return self.state

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _blob(n: int = 200_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


FAST = {"progress": False, "backoff": 0.0, "timeout": 5.0}


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --------------------------------------------------------------------------- whole datasets


def test_download_dataset_then_load(tmp_path: Path, server: _Server) -> None:
    src = make_fake_dataset("mnist", tmp_path / "src", n_train=20, n_test=10)
    sums = {}
    for p in src.iterdir():
        server.state.files[f"/mnist/{p.name}"] = p.read_bytes()
        sums[p.name] = _md5(p.read_bytes())
    root = tmp_path / "data"
    paths = download("mnist", root, base_url=server.url + "/mnist/", checksums=sums, **FAST)
    assert sorted(p.name for p in paths) == sorted(sums)
    assert _leftovers(root / "mnist") == sorted(sums)  # no .part left
    train = load_dataset("mnist", "train", root=root)
    assert len(train) == 20
    n = len(server.settled().requests)
    download("mnist", root, base_url=server.url + "/mnist/", checksums=sums, **FAST)
    assert len(server.settled().requests) == n  # verified files are not fetched again


def test_load_dataset_download_true_uses_sources(
    tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_fake_dataset("cifar10", tmp_path / "src", n_train=15, n_test=5) / "cifar-10-python.tar.gz"
    blob = archive.read_bytes()
    server.state.files["/kriz/cifar-10-python.tar.gz"] = blob
    remote = RemoteFile(
        "cifar-10-python.tar.gz",
        (server.url + "/kriz/cifar-10-python.tar.gz",),
        sha256=hashlib.sha256(blob).hexdigest(),
    )
    monkeypatch.setitem(dl.SOURCES, "cifar10", (remote,))
    real = dl.download
    monkeypatch.setattr(dl, "download", lambda name, root: real(name, root, **FAST))
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"download\('cifar10', "):
        load_dataset("cifar10", "test", root=root)
    test = load_dataset("cifar10", "test", root=root, download=True)
    assert len(test) == 5 and (root / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == blob


def test_embedded_dataset_needs_no_download(tmp_path: Path) -> None:
    assert download("mnist5k", tmp_path) == []
    assert _leftovers(tmp_path) == []


def test_canonical_sources_have_checksums() -> None:
    assert set(dl.SOURCES) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"}
    for files in dl.SOURCES.values():
        for f in files:
            assert f.urls and all(
                u.startswith(("http://", "https://")) and u.endswith(f.filename) for u in f.urls
            )
            assert f.md5 is not None and len(f.md5) == 32
    assert dl.SOURCES["cifar10"][0].md5 == "c58f30108f718f92721af3b95e74349a"


# --------------------------------------------------------------------------- single files


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, server: _Server) -> None:
    server.state.files["/f.bin"] = _blob()
    with pytest.raises(
        DataError, match=r"f\.bin: checksum mismatch: expected md5 0{32}, got [0-9a-f]{32}"
    ) as ei:
        download_file(server.url + "/f.bin", tmp_path / "f.bin", md5="0" * 32, **FAST)
    assert _md5(_blob()) in str(ei.value)
    assert _leftovers(tmp_path) == []


def test_server_errors_are_retried(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    server.state.fail_next = 2
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), retries=3, **FAST)
    assert out.read_bytes() == blob and len(server.settled().requests) == 3


def test_persistent_server_error_fails_cleanly(tmp_path: Path, server: _Server) -> None:
    server.state.files["/f.bin"] = _blob()
    server.state.fail_next = 100
    with pytest.raises(DataError, match=r"f\.bin: download failed .*HTTP 503"):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(_blob()), retries=2, **FAST)
    assert len(server.settled().requests) == 3
    assert _leftovers(tmp_path) == []


def test_connection_cut_mid_file_resumes_on_retry(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    server.state.cut_next = 1
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert out.read_bytes() == blob
    (_, r1), (_, r2) = server.settled().requests
    assert r1 is None and r2 == f"bytes={len(blob) // 2}-"
    assert server.settled().bytes_sent == len(blob)  # nothing fetched twice
    assert _leftovers(tmp_path) == ["f.bin"]


def test_failed_download_keeps_only_a_resumable_part(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    server.state.cut_next = 1
    with pytest.raises(
        DataError, match=r"connection closed after 100000 of 200000 bytes.*kept and will be resumed"
    ):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), retries=0, **FAST)
    assert _leftovers(tmp_path) == ["f.bin.part"]  # never a partial final file
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), retries=0, **FAST)
    assert out.read_bytes() == blob and server.settled().requests[-1][1] == "bytes=100000-"
    assert _leftovers(tmp_path) == ["f.bin"]


def test_part_file_is_resumed_with_range(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    (tmp_path / "f.bin.part").write_bytes(blob[:123_456])
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert out.read_bytes() == blob
    assert server.settled().requests == [("/f.bin", "bytes=123456-")]
    assert server.settled().bytes_sent == len(blob) - 123_456


def test_server_without_range_support_restarts(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    server.state.range_support = False
    (tmp_path / "f.bin.part").write_bytes(b"\xff" * 5000)  # would corrupt the file if appended to
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert out.read_bytes() == blob and len(server.settled().requests) == 1


def test_stale_part_is_refetched_from_scratch(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    (tmp_path / "f.bin.part").write_bytes(b"\x00" * 1000)  # not a prefix of the real file
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert out.read_bytes() == blob
    assert [r for _, r in server.settled().requests] == ["bytes=1000-", None]


def test_complete_part_answered_416_is_accepted(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    (tmp_path / "f.bin.part").write_bytes(blob)
    out = download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert out.read_bytes() == blob and server.settled().bytes_sent == 0


def test_missing_url_falls_back_to_next_mirror(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/good/f.bin"] = blob
    urls = [server.url + "/bad/f.bin", server.url + "/good/f.bin"]
    out = download_file(urls, tmp_path / "f.bin", sha256=hashlib.sha256(blob).hexdigest(), retries=3, **FAST)
    assert out.read_bytes() == blob
    assert [p for p, _ in server.settled().requests] == ["/bad/f.bin", "/good/f.bin"]  # 404 is not retried
    with pytest.raises(DataError, match=r"f2\.bin: download failed .*/bad/f2\.bin: HTTP 404"):
        download_file(server.url + "/bad/f2.bin", tmp_path / "f2.bin", **FAST)


def test_existing_file_verified_or_replaced(tmp_path: Path, server: _Server) -> None:
    blob = _blob()
    server.state.files["/f.bin"] = blob
    (tmp_path / "f.bin").write_bytes(blob)
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert server.settled().requests == []
    (tmp_path / "f.bin").write_bytes(b"corrupt")
    download_file(server.url + "/f.bin", tmp_path / "f.bin", md5=_md5(blob), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == blob and len(server.settled().requests) == 1


def test_timeout_is_retried(tmp_path: Path, server: _Server) -> None:
    blob = _blob(10_000)
    server.state.files["/f.bin"] = blob
    server.state.stall_next = 1  # the first answer never comes while the client waits
    try:
        out = download_file(
            server.url + "/f.bin",
            tmp_path / "f.bin",
            md5=_md5(blob),
            progress=False,
            backoff=0.0,
            timeout=1.0,
        )
    finally:
        server.state.unstall.set()
    assert out.read_bytes() == blob and len(server.settled().requests) == 2


def test_connection_refused_is_a_data_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(DataError, match=r"f\.bin: download failed"):
        download_file(f"http://127.0.0.1:{port}/f.bin", tmp_path / "f.bin", retries=1, **FAST)
    assert _leftovers(tmp_path) == []
