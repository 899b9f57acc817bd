"""Resume state of an evaluation: a directory that a killed run continues from.

Layout (no pickle anywhere; every write is atomic, :mod:`entrobust.io`):

* ``state.json`` — the fingerprint of the run's arguments (model weights hash, data hash, suite,
  ε, norm, batch size, seed, ...), written once; a run with other arguments is refused.
* ``records.safetensors`` — every per-example record tensor; its safetensors metadata holds the
  progress (next step, next chunk, seconds per step). Rewritten after every chunk: this write is
  the commit point, so records and progress can never disagree.
* ``adv/s<step>-b<chunk>.safetensors`` — the adversarial examples a chunk found (``index``,
  ``x_adv``), written *before* the commit; files of uncommitted chunks are simply redone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from entrobust.errors import ConfigError
from entrobust.io import atomic_write_bytes, atomic_write_json

__all__ = ["EvalState", "fingerprint_hash"]

FORMAT = "entrobust-eval-state"
VERSION = 1


def fingerprint_hash(fingerprint: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``fingerprint``."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


class EvalState:
    """Read and write the resume state of one evaluation in directory ``path``."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"resume state {self.path} exists and is not a directory")
        self.fingerprint = fingerprint
        self.key = fingerprint_hash(fingerprint)

    @property
    def records_path(self) -> Path:
        return self.path / "records.safetensors"

    def adv_path(self, step: int, chunk: int) -> Path:
        return self.path / "adv" / f"s{step:04d}-b{chunk:05d}.safetensors"

    # -------------------------------------------------------------------------- opening
    def open(self) -> None:
        """Create the directory and ``state.json``, or check an existing one matches."""
        meta_path = self.path / "state.json"
        if meta_path.is_file():
            try:
                doc = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ConfigError(f"corrupt resume state {meta_path}: {err}") from None
            if doc.get("format") != FORMAT:
                raise ConfigError(f"{meta_path} is not an entrobust evaluation state")
            old = doc.get("fingerprint", {})
            if fingerprint_hash(old) != self.key:
                diff = sorted(
                    k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k)
                )
                raise ConfigError(
                    f"resume state {self.path} belongs to an evaluation with other arguments "
                    f"(different: {', '.join(diff)}); use another --resume-state path or delete it"
                )
            return
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta_path, {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint})

    # -------------------------------------------------------------------------- records
    def load(self) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """``(tensors, progress)`` of the last committed chunk, or ``None`` when nothing was."""
        if not self.records_path.is_file():
            return None
        try:
            with safe_open(str(self.records_path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = st_load(self.records_path.read_bytes())
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"corrupt resume records {self.records_path}: {err}") from None
        if meta.get("format") != FORMAT or meta.get("key") != self.key:
            raise ConfigError(f"resume records {self.records_path} do not belong to this evaluation")
        return tensors, json.loads(meta["progress"])

    def commit(self, tensors: dict[str, Tensor], progress: dict[str, Any]) -> None:
        """Atomically replace the records and progress."""
        meta = {"format": FORMAT, "key": self.key, "progress": json.dumps(progress)}
        data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
        atomic_write_bytes(self.records_path, data)

    # -------------------------------------------------------------------------- adversarial examples
    def write_adv(self, step: int, chunk: int, index: Tensor, x_adv: Tensor) -> None:
        data = st_save({"index": index.cpu().contiguous(), "x_adv": x_adv.detach().cpu().contiguous()})
        atomic_write_bytes(self.adv_path(step, chunk), data)

    def read_adv(self, step: int, chunk: int) -> tuple[Tensor, Tensor] | None:
        p = self.adv_path(step, chunk)
        if not p.is_file():
            return None
        try:
            t = st_load(p.read_bytes())
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"corrupt adversarial examples in resume state {p}: {err}") from None
        return t["index"], t["x_adv"]
