"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every writer creates a temporary file *in the destination's directory* (so the final
``os.replace`` is a rename within one file system, which POSIX and Windows make atomic),
flushes and ``fsync``s it, renames it over the destination and finally ``fsync``s the directory
so the rename itself survives a crash. If anything fails the temporary file is removed and the
destination is left untouched.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]

StrPath = str | os.PathLike[str]


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp(path: Path) -> Path:
    """Create an empty, exclusive temporary file beside ``path`` (mode 0o666 minus the umask)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path to write; on success it atomically becomes ``path``.

    Use it with writers that want a file name (``torch.save``, ``safetensors`` ...)::

        with atomic_path("model.safetensors") as tmp:
            save_file(tensors, tmp)

    Parent directories are created. On an exception inside the block the temporary file is
    deleted, ``path`` keeps its previous content and the exception propagates.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have used its own handle: fsync here
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: StrPath, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
    return Path(path)


def atomic_write_text(path: StrPath, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``encoding``, default UTF-8); return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: StrPath, obj: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    """Serialize ``obj`` with :func:`json.dumps` (``kwargs`` pass through) and write atomically.

    Serialization happens before the file is touched, so an unserializable object leaves no
    trace.
    """
    text = json.dumps(obj, indent=indent, **kwargs)
    return atomic_write_text(path, text + "\n")
