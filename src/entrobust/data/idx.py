"""Reader for the IDX format of MNIST and Fashion-MNIST (raw or gzip-compressed).

Format (http://yann.lecun.com/exdb/mnist/, section "FILE FORMATS FOR THE MNIST DATABASE"): a
big-endian header of two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data in C order. Image files
have magic 2051 (``00 00 08 03``, dims N×28×28), label files 2049 (``00 00 08 01``, dims N).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from entrobust.errors import DataError

__all__ = ["read_bytes", "read_idx"]

_DTYPES: dict[int, np.dtype[Any]] = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}  # fmt: skip


def read_bytes(path: Path) -> bytes:
    """All bytes of ``path``, transparently gunzipped when it ends in ``.gz``.

    A truncated or corrupt gzip stream raises :class:`DataError` naming the file.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path}: truncated or corrupt gzip file ({exc}); delete it and download again"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_idx(path: Path, *, expect_ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file into a NumPy array, checking the magic number and the exact length."""
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    magic = int.from_bytes(raw[0:4], "big")
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08x} (not an IDX file, or still compressed?)")
    if expect_ndim is not None and ndim != expect_ndim:
        kind = "image" if expect_ndim == 3 else "label"
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x}: expected an {kind} file with {expect_ndim} "
            f"dimension(s), got {ndim}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{path}: IDX file {what}: header says {dims} ({expected} data bytes), found {got}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
