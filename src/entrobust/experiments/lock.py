"""One writer per workspace: an advisory lock held while ``entrobust run`` / ``demo`` works.

Two runners on one workspace would train the same runs twice and overwrite each other's status
rows, so :func:`run_experiment <entrobust.experiments.runner.run_experiment>` holds this lock
for its whole duration. It is an ``fcntl.flock`` on ``<workspace>/entrobust.lock``:

* the kernel releases it when its holder dies (even ``kill -9``), so a lock is never stale — the
  next runner takes it over and says whose it was;
* the holder writes its pid, host, start time and command line into the file, so a second runner
  can name it: it stops at once with that message, or with ``wait=True`` (``--wait``) it waits
  for the holder to finish and then starts (resuming whatever was done meanwhile);
* commands that only read (``runs``, ``report``, ``claims``) never take it.

``flock`` works on local file systems and on NFS (Linux ≥ 2.6.12 emulates it with byte-range
locks). On platforms without :mod:`fcntl` (Windows) no lock is taken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from entrobust.errors import EntrobustError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "WorkspaceBusyError", "lock_holder", "workspace_lock"]

LOCK_FILE = "entrobust.lock"


class WorkspaceBusyError(EntrobustError):
    """Another process holds the workspace lock."""


def lock_holder(workspace: str | Path) -> dict[str, Any] | None:
    """What the lock file of ``workspace`` says about its (last) holder, or None."""
    try:
        text = (Path(workspace) / LOCK_FILE).read_text(encoding="utf-8")
        info = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
    text = f"pid {info.get('pid')} on {info.get('host')} (since {since}"
    if info.get("command"):
        text += f": {info['command']}"
    return text + ")"


def _try_lock(fd: int, wait: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


@contextmanager
def workspace_lock(
    workspace: str | Path, *, wait: bool = False, log: Callable[[str], Any] | None = None
) -> Iterator[Path]:
    """Hold the lock of ``workspace`` (created if needed) for the ``with`` block.

    Raises :class:`WorkspaceBusyError` naming the holder's pid when another process holds it,
    unless ``wait`` — then blocks until the holder finishes (``log`` says so once).
    """
    ws = Path(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    path = ws / LOCK_FILE
    if fcntl is None:  # pragma: no cover - Windows
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd, False):
            holder = _describe(lock_holder(ws))
            if not wait:
                raise WorkspaceBusyError(
                    f"workspace {ws} is in use by {holder}; wait for it to finish, or add --wait "
                    f"(run_experiment(..., wait=True)) to start as soon as it does"
                )
            if log is not None:
                log(f"workspace {ws} is in use by {holder}; waiting for it to finish")
            _try_lock(fd, True)
        old = lock_holder(ws)
        if old and log is not None and old.get("host") == socket.gethostname():
            pid = old.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and not _alive(pid):
                log(f"taking over the lock of {_describe(old)}, which ended without releasing it")
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released cleanly: nothing to report to the next holder
    finally:
        os.close(fd)  # closing the descriptor releases the flock
