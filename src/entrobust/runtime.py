"""Runtime basics: device selection, seeding, deterministic mode and CPU thread count."""

from __future__ import annotations

import random
from typing import Any, Literal

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


def set_threads(n: int | None) -> int:
    """Set the number of CPU threads torch uses (``None`` keeps the current value); return it."""
    if n is not None:
        if n < 1:
            raise ConfigError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def rng_state() -> dict[str, Any]:
    """Snapshot of every random generator (Python, NumPy, torch, CUDA), for exact resume.

    Plain containers and tensors only, so a snapshot saved with ``torch.save`` loads back with
    ``torch.load(weights_only=True)`` (the trainer state does this).
    """
    version, mt, gauss = random.getstate()
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
