"""The environment of a child ``python`` process started by a test (tests only).

The child imports this checkout's ``src`` first (not whatever ``entrobust`` is installed) and
computes with one thread, as the test process does (``tests/conftest.py``), so numbers it writes
take the same floating-point path as the test's own.
"""

from __future__ import annotations

import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with this checkout's ``src`` first on ``PYTHONPATH``, one OpenMP thread, and
    ``extra`` variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env
