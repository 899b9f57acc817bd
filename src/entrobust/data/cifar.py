"""Readers for the CIFAR-10 / CIFAR-100 "python version" batches, with a safe unpickler.

Format (https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout"): each batch file is a
pickled dict with ``data`` — a 10000×3072 (CIFAR-10 batches) or 50000/10000×3072 (CIFAR-100
``train``/``test``) uint8 array, each row the 1024 red, then green, then blue values of a
32×32 image in row-major order — and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100).
The files were written by Python 2, so keys load as ``bytes`` with ``encoding="bytes"``.

Pickle can run arbitrary code, so batches are read with :class:`SafeUnpickler`, which only
resolves the handful of globals a dict of NumPy arrays needs and refuses everything else.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from entrobust.errors import DataError

__all__ = ["SafeUnpickler", "UnsafePickleError", "read_cifar_archive", "read_cifar_batch", "safe_load_pickle"]

_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # protocol-5 pickles of arrays (NumPy >= 1.16): frombuffer(...).reshape(...); no object dtype
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        # Python 3 pickles ``bytes`` at protocol <= 2 as _codecs.encode(str, "latin1"); harmless.
        ("_codecs", "encode"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global that :class:`SafeUnpickler` does not allow."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only NumPy-array reconstruction globals.

    Containers, numbers and strings need no globals; any other global (``os.system``,
    ``builtins.eval``, ``subprocess.Popen``, ...) raises :class:`pickle.UnpicklingError` before
    it can be called.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load global {module}.{name} (not a NumPy array part)")


def safe_load_pickle(f: IO[bytes], source: str) -> Any:
    """Unpickle ``f`` with :class:`SafeUnpickler`; any failure becomes a :class:`DataError`."""
    try:
        return SafeUnpickler(f, encoding="bytes").load()
    except UnsafePickleError as exc:
        raise DataError(f"{source}: unsafe pickle refused: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        zlib.error,
    ) as exc:
        raise DataError(f"{source}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None


def _parse_batch(obj: Any, source: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in d:
            raise DataError(f"{source}: missing key {key!r} (found {sorted(map(str, d))})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DataError(f"{source}: 'data' must be a uint8 N×3072 array, got {desc}")
    try:
        labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: {label_key!r} is not a list of integers ({exc})") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{source}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_batch(path: Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Images (N×3×32×32 uint8) and labels of one extracted batch file."""
    try:
        with open(path, "rb") as f:
            return _parse_batch(safe_load_pickle(f, str(path)), str(path), label_key)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_cifar_archive(
    archive: Path, members: Iterable[str], label_key: str = "labels"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read the named batches straight out of a ``.tar.gz`` archive, in the order given.

    The archive is scanned once and only the requested members are decompressed into memory;
    nothing is extracted to disk. A truncated or corrupt archive raises :class:`DataError`.
    """
    wanted = list(members)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    if f is not None:
                        found[member.name] = f.read()
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise DataError(
            f"{archive}: truncated or corrupt tar.gz archive ({exc}); delete it and download again"
        ) from None
    missing = [m for m in wanted if m not in found]
    if missing:
        raise DataError(f"{archive}: archive lacks member(s) {', '.join(missing)}")
    out = []
    for name in wanted:
        source = f"{archive}:{name}"
        out.append(_parse_batch(safe_load_pickle(io.BytesIO(found[name]), source), source, label_key))
    return out
