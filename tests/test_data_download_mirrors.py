"""The downloader moves on from a bad mirror (an HTML page answered with 200, a file failing the
checksum) to the next, and only promises to resume a partial download that kept some bytes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from entrobust.data import download_file
from entrobust.errors import DataError

FAST = {"progress": False, "backoff": 0.0, "timeout": 5.0}
BLOB = bytes(range(256)) * 400
HTML = b"<!doctype html><html><body>Please log in</body></html>"


@dataclass
class _Route:
    body: bytes
    content_type: str = "application/octet-stream"
    stall_after_headers: float = 0.0


@dataclass
class _Mirrors:
    """A loopback server answering each path from ``routes``; ``close`` joins every handler."""

    routes: dict[str, _Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        mirrors = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with mirrors.lock:
                    mirrors.requests.append(self.path)
                route = mirrors.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.flush()
                    time.sleep(route.stall_after_headers)
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = False  # server_close() joins the handler threads
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> list[str]:
        """Stop, wait for every handler, and return the paths requested in order."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
        return list(self.requests)


@pytest.fixture
def mirrors() -> Iterator[_Mirrors]:
    m = _Mirrors()
    yield m
    m.close()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_html_page_with_status_200_moves_on_to_the_next_mirror(tmp_path: Path, mirrors: _Mirrors) -> None:
    mirrors.routes["/a/f.bin"] = _Route(HTML, "text/html; charset=utf-8")
    mirrors.routes["/b/f.bin"] = _Route(BLOB)
    urls = [mirrors.url + "/a/f.bin", mirrors.url + "/b/f.bin"]
    out = download_file(urls, tmp_path / "f.bin", sha256=_sha(BLOB), **FAST)
    assert out.read_bytes() == BLOB
    assert mirrors.close() == ["/a/f.bin", "/b/f.bin"]  # the HTML mirror once, not retried
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_checksum_mismatch_moves_on_to_the_next_mirror(tmp_path: Path, mirrors: _Mirrors) -> None:
    mirrors.routes["/a/f.bin"] = _Route(BLOB[::-1])  # an outdated or corrupt copy
    mirrors.routes["/b/f.bin"] = _Route(BLOB)
    urls = [mirrors.url + "/a/f.bin", mirrors.url + "/b/f.bin"]
    out = download_file(urls, tmp_path / "f.bin", sha256=_sha(BLOB), **FAST)
    assert out.read_bytes() == BLOB
    assert mirrors.close() == ["/a/f.bin", "/b/f.bin"]


def test_every_mirror_bad_names_each_failure_and_leaves_nothing(tmp_path: Path, mirrors: _Mirrors) -> None:
    mirrors.routes["/a/f.bin"] = _Route(HTML, "text/html")
    mirrors.routes["/b/f.bin"] = _Route(BLOB[::-1])
    urls = [mirrors.url + "/a/f.bin", mirrors.url + "/b/f.bin"]
    with pytest.raises(DataError) as ei:
        download_file(urls, tmp_path / "f.bin", sha256=_sha(BLOB), **FAST)
    msg = str(ei.value)
    assert "f.bin: checksum mismatch" in msg and "/b/f.bin" in msg
    assert "/a/f.bin: answered with an HTML page" in msg
    assert mirrors.close() == ["/a/f.bin", "/b/f.bin"]
    assert list(tmp_path.iterdir()) == []


def test_stalled_download_with_no_bytes_promises_no_resume(tmp_path: Path, mirrors: _Mirrors) -> None:
    mirrors.routes["/f.bin"] = _Route(BLOB, stall_after_headers=0.8)  # headers, then silence
    with pytest.raises(DataError, match=r"f\.bin: download failed .*timed out") as ei:
        download_file(
            mirrors.url + "/f.bin", tmp_path / "f.bin", retries=0, progress=False, backoff=0.0, timeout=0.2
        )
    assert "resumed" not in str(ei.value)
    mirrors.close()
    assert list(tmp_path.iterdir()) == []  # no empty .part left behind either
