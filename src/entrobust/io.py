"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every writer creates a temporary file *in the destination's directory* (so the final
``os.replace`` is a rename within one file system, which POSIX and Windows make atomic),
flushes and ``fsync``s it, renames it over the destination and finally ``fsync``s the directory
so the rename itself survives a crash. If anything fails the temporary file is removed and the
destination is left untouched. A file that is rewritten keeps its permission bits (a private
``0600`` file stays private).

Several files that must change together (a training checkpoint: weights, metadata, trainer
state, history) are *staged* first — :func:`stage_bytes` / :func:`new_staged` write complete,
fsynced files under hidden names ``.<name>.<token>.pending`` beside their destinations — and
then *published* one by one with :func:`publish` once a single atomic write (a manifest) has
committed them. :func:`remove_temp_files` deletes what an interrupted writer left behind.

:func:`config_hash` names a configuration by the hash of its canonical JSON (run ids, stage
hashes, the report's recipe groups).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "config_hash",
    "is_temp_name",
    "new_staged",
    "publish",
    "remove_temp_files",
    "sha256_file",
    "stage_bytes",
]

TEMP_SUFFIXES = (".tmp", ".pending")

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


def _keep_mode(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the permission bits of an existing ``target`` (so a rewrite never widens them)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def _new_temp(path: Path, suffix: str = ".tmp") -> Path:
    """Create an empty, exclusive temporary file beside ``path`` (mode 0o666 minus the umask)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
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

    Parent directories are created. An existing ``path`` keeps its permission bits. On an
    exception inside the block the temporary file is deleted, ``path`` keeps its previous content
    and the exception propagates.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have used its own handle: fsync here
            os.fsync(f.fileno())
        _keep_mode(tmp, target)
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


# ------------------------------------------------------------------------------- staged writes


def sha256_file(path: StrPath) -> str:
    """Hex SHA-256 of the file at ``path`` (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable SHA-256 (hex, 16 chars) of a JSON-serializable configuration: key order does not
    matter, so the same settings always give the same run id, stage hash and report group."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary or staged file of this module (``.<name>.<token>.tmp``)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIXES)


def new_staged(path: StrPath) -> Path:
    """Create an empty hidden file ``.<name>.<token>.pending`` beside ``path`` and return it.

    Write it (e.g. ``torch.save(obj, staged)``), then :func:`publish` it once committed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _new_temp(target, ".pending")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def stage_bytes(path: StrPath, data: bytes, *, staged: StrPath | None = None) -> Path:
    """Write ``data`` completely and durably to a staged file for ``path``; return the staged path.

    ``staged`` names the staged file (it is overwritten); by default a fresh
    ``.<name>.<token>.pending`` beside ``path`` is used. ``path`` itself is not touched.
    """
    tmp = Path(staged) if staged is not None else new_staged(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def publish(staged: StrPath, path: StrPath) -> Path:
    """Atomically move the complete file ``staged`` onto ``path`` (keeping ``path``'s mode).

    The staged file must be in ``path``'s directory. The rename is made durable.
    """
    src, target = Path(staged), Path(path)
    _fsync_file(src)
    _keep_mode(src, target)
    os.replace(src, target)
    _fsync_dir(target.parent)
    return target


def remove_temp_files(directory: StrPath, *, prefix: str = ".") -> list[Path]:
    """Delete the temporary and staged files (:func:`is_temp_name`) directly in ``directory``.

    Only names starting with ``prefix`` are considered (e.g. ``".last.safetensors."``); the
    directory's subfolders are not searched. Returns the deleted paths. Call it only when no
    other writer is working in ``directory``.
    """
    d = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and is_temp_name(name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
