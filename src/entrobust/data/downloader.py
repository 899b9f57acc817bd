"""Download the file-based datasets from their canonical addresses, verified and resumable.

Guarantees:

* **Atomic**: bytes go to ``<file>.part``; only after the checksum matches is it renamed onto
  ``<file>`` with :func:`os.replace`, so ``<file>`` is either absent, the old file, or complete.
* **Verified**: every canonical file has a published MD5 (constants below, with sources). A
  mismatch deletes the ``.part`` and raises :class:`DataError` with the expected and actual hash.
* **Resumable**: after a dropped connection the ``.part`` is kept and the next attempt (or the
  next run) asks for the rest with an HTTP ``Range`` request; a server that ignores ``Range``
  (answers 200) makes us start over. A resumed file that then fails the checksum is fetched once
  more from scratch before giving up. The ``.part`` left after a network failure is the only
  partial file ever left behind — deliberately, so a 170 MB download does not restart from zero.
* **Retries** with exponential backoff on connection errors, timeouts, truncated bodies and
  HTTP 408/429/5xx; other HTTP errors (404, 403) move on to the next mirror at once, and so does
  a mirror that answers with an HTML page (``Content-Type: text/html``: a login or error page
  served with status 200) or whose file fails the checksum. Only when every mirror has failed is
  the error raised, naming each mirror's failure.

Not safe for several processes downloading the same file at once: download on one rank first.
Only :mod:`urllib` is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from entrobust.errors import ConfigError, DataError

__all__ = ["SOURCES", "RemoteFile", "download", "download_file", "file_hash"]


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name on disk, mirror URLs (tried in order) and checksum."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None


def _mirrored(bases: Sequence[str], files: Sequence[tuple[str, str]]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(fn, tuple(b + fn for b in bases), md5=md5) for fn, md5 in files)


# MNIST: mirror list and MD5s as in torchvision `torchvision/datasets/mnist.py` (class MNIST);
# yann.lecun.com is the original host (often refuses automated downloads), the PyTorch team's
# S3 copy comes first.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
# Fashion-MNIST: zalandoresearch/fashion-mnist README ("Get the Data") and torchvision
# `FashionMNIST.resources`; the GitHub copy of the repository's data/fashion/ is the fallback.
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_FASHION_FILES = (
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
)

#: Canonical files of every downloadable dataset. CIFAR: https://www.cs.toronto.edu/~kriz/cifar.html
#: (MD5s published on that page). SVHN: http://ufldl.stanford.edu/housenumbers/ (MD5s as in
#: torchvision `torchvision/datasets/svhn.py`, ``split_list``).
SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": _mirrored(_MNIST_MIRRORS, _MNIST_FILES),
    "fashion-mnist": _mirrored(_FASHION_MIRRORS, _FASHION_FILES),
    "cifar10": _mirrored(
        ("https://www.cs.toronto.edu/~kriz/",),
        (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    ),
    "cifar100": _mirrored(
        ("https://www.cs.toronto.edu/~kriz/",),
        (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    ),
    "svhn": _mirrored(
        ("http://ufldl.stanford.edu/housenumbers/",),
        (
            ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
            ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
        ),
    ),
}

_CHUNK = 1 << 16


class _Transient(Exception):
    """A failure worth retrying (dropped connection, timeout, 5xx, short body)."""


class _Permanent(Exception):
    """A failure that retrying the same URL will not fix (404, 403, ...)."""


def file_hash(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file (``md5`` or ``sha256``), read in chunks."""
    h = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected(md5: str | None, sha256: str | None) -> tuple[str, str | None]:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return "md5", None


def _user_agent() -> str:
    from entrobust import __version__

    return f"entrobust/{__version__} (python-urllib)"


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, label: str) -> bool:
    """One HTTP request appending to (or restarting) ``part``; returns whether it resumed."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # the .part may already be complete; the checksum decides
            return True
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise _Permanent(f"HTTP {exc.code} {exc.reason}") from None
    with resp:
        status = getattr(resp, "status", 200)
        resumed = bool(offset) and status == 206
        if resumed:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {offset}-"):
                part.unlink()
                raise _Transient(f"server answered Range bytes={offset}- with {crange!r}; restarting")
        else:
            offset = 0  # no Range asked, or the server ignored it: start over
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml"):  # an error or login page, not the file
            raise _Permanent(f"answered with an HTML page ({ctype}), not the file")
        length_hdr = resp.headers.get("Content-Length")
        length = int(length_hdr) if length_hdr and length_hdr.isdigit() else None
        received = 0
        from tqdm import tqdm

        with (
            open(part, "ab" if resumed else "wb") as f,
            tqdm(
                total=None if length is None else offset + length,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress or not sys.stderr.isatty(),
                leave=False,
            ) as bar,
        ):
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                f.flush()
                os.fsync(f.fileno())
        if length is not None and received < length:
            raise _Transient(f"connection closed after {offset + received} of {offset + length} bytes")
    return resumed


def download_file(
    urls: str | Sequence[str],
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Fetch ``dest`` from the first mirror in ``urls`` that works, verified and atomically.

    An existing ``dest`` whose checksum matches is kept as is (nothing is fetched). Each mirror is
    tried ``1 + retries`` times, sleeping ``backoff · 2^k`` seconds between attempts. Raises
    :class:`DataError` naming the file on a checksum mismatch (expected and actual hash given,
    the download deleted) or when every attempt failed (a resumable ``.part`` may remain).
    """
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    if timeout <= 0:
        raise ConfigError(f"timeout must be > 0, got {timeout}")
    mirrors = [urls] if isinstance(urls, str) else list(urls)
    if not mirrors:
        raise ConfigError(f"no URL given for {dest}")
    algorithm, expected = _expected(md5, sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and (expected is None or file_hash(dest, algorithm) == expected):
        return dest
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    mismatch: str | None = None  # set when the mirror tried last served a file failing the checksum
    restarted = False
    for url in mirrors:
        mismatch = None
        attempt = 0
        while attempt <= retries:
            try:
                resumed = _fetch_once(url, part, timeout, progress, dest.name)
            except _Permanent as exc:
                errors.append(f"{url}: {exc}")
                break
            except (
                _Transient,
                urllib.error.URLError,
                http.client.HTTPException,
                ConnectionError,
                TimeoutError,
            ) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                attempt += 1
                if attempt <= retries:
                    time.sleep(backoff * 2 ** (attempt - 1))
                continue
            except OSError as exc:
                raise DataError(f"{part}: cannot write the download ({exc})") from None
            actual = file_hash(part, algorithm) if expected is not None else None
            if expected is not None and actual != expected:
                part.unlink()
                if resumed and not restarted:  # a stale or mismatched .part: one clean retry
                    restarted = True
                    continue
                mismatch = (
                    f"{dest.name}: checksum mismatch: expected {algorithm} {expected}, got {actual} "
                    f"(downloaded from {url}); the download was deleted"
                )
                errors.append(f"{url}: checksum mismatch ({algorithm} {actual})")
                break  # this mirror serves something else: try the next one
            os.replace(part, dest)
            return dest
    if mismatch is not None:
        earlier = errors[:-1]
        raise DataError(mismatch + (f"; other mirrors: {'; '.join(earlier[-3:])}" if earlier else ""))
    if part.exists() and part.stat().st_size == 0:
        part.unlink()  # nothing worth resuming
    kept = f"; the partial download {part} is kept and will be resumed" if part.exists() else ""
    raise DataError(f"{dest.name}: download failed ({'; '.join(errors[-4:])}){kept}")


def download(
    name: str,
    root: str | Path | None = None,
    *,
    urls: Mapping[str, str | Sequence[str]] | None = None,
    base_url: str | None = None,
    checksums: Mapping[str, str] | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 1.0,
) -> list[Path]:
    """Download every file of dataset ``name`` into ``root/<name>/``; return their paths.

    ``urls`` maps a file name to the URL(s) to use instead of the canonical mirrors;
    ``base_url`` replaces the mirrors for every file (``base_url + filename``); ``checksums`` maps
    a file name to its expected MD5 (32 hex digits) or SHA-256 (64) — all three exist so a local
    mirror (or a test's loopback server) can stand in. Embedded datasets need nothing: ``[]``.
    Files already present with the right checksum are not fetched again.
    """
    from entrobust.data.datasets import DATASETS, default_root
    from entrobust.data.info import DATASET_INFO

    DATASETS.get(name)
    if DATASET_INFO[name].embedded:
        return []
    if name not in SOURCES:
        raise ConfigError(f"no download source known for dataset {name!r}")
    target = (Path(root).expanduser() if root is not None else default_root()) / name
    out = []
    for rf in SOURCES[name]:
        mirrors: Sequence[str] = rf.urls
        if base_url is not None:
            mirrors = [base_url.rstrip("/") + "/" + rf.filename]
        if urls and rf.filename in urls:
            u = urls[rf.filename]
            mirrors = [u] if isinstance(u, str) else list(u)
        md5, sha256 = rf.md5, rf.sha256
        if checksums and rf.filename in checksums:
            digest = checksums[rf.filename]
            if len(digest) not in (32, 64):
                raise ConfigError(f"checksum for {rf.filename} must be an MD5 (32 hex) or SHA-256 (64 hex)")
            md5, sha256 = (digest, None) if len(digest) == 32 else (None, digest)
        out.append(
            download_file(
                mirrors,
                target / rf.filename,
                md5=md5,
                sha256=sha256,
                retries=retries,
                timeout=timeout,
                progress=progress,
                backoff=backoff,
            )
        )
    return out
