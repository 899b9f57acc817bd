"""Runtime basics: device selection, seeding, deterministic mode and CPU thread count."""

from __future__ import annotations

import os
import random
from typing import Literal

import numpy as np
import torch

from entrobust.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def select_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name`` (``auto`` prefers CUDA, then MPS, then CPU).

    Raises :class:`ConfigError` for an unknown name or a device this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, mps")
    if base == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available on this machine")
    if base == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available on this machine")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random generators."""
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Opt into deterministic algorithms (slower on GPU; CPU kernels are already deterministic)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def set_threads(n: int | None) -> int:
    """Set the number of CPU threads torch uses (``None`` keeps the current value); return it."""
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def rng_state() -> dict[str, object]:
    """Snapshot of every random generator, for exact resume."""
    state: dict[str, object] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, object]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    random.setstate(state["python"])  # type: ignore[arg-type]
    np.random.set_state(state["numpy"])  # type: ignore[arg-type]
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # type: ignore[arg-type]
