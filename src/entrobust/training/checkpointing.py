"""The trainer's run folder: config, per-epoch checkpoints as one committed unit, and resume.

``<out>/config.json`` / ``config.toml`` are written at the start. After each epoch
:meth:`Checkpointer.write` stages ``best.*`` (if improved), ``last.*`` and ``trainer_state.pt``
(on checkpoint epochs) and ``history.json``, and commits them as one unit
(:mod:`entrobust.training.commit`). :meth:`Checkpointer.load_state` first restores the folder to
the last committed unit, then reads the trainer state with ``torch.load(weights_only=True)`` and
refuses a config that differs in more than :data:`RESUMABLE_CHANGES`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from entrobust import distributed
from entrobust.distributed import DistInfo
from entrobust.errors import CheckpointError, ConfigError
from entrobust.io import (
    atomic_write_json,
    atomic_write_text,
    new_staged,
    remove_temp_files,
    sha256_file,
    stage_bytes,
)
from entrobust.training.commit import COMMIT_FILE, StagedFile, commit_unit, recover
from entrobust.training.config import TrainConfig

__all__ = ["RESUMABLE_CHANGES", "STATE_FILE", "STATE_FORMAT", "STATE_VERSION", "Checkpointer"]

STATE_FORMAT = "entrobust-trainer-state"
STATE_VERSION = 1
STATE_FILE = "trainer_state.pt"

#: config keys that may differ between an interrupted run and its resumption
RESUMABLE_CHANGES = frozenset(
    {"epochs", "device", "threads", "data_root", "checkpoint_every", "accel", "sync_batchnorm"}
)


class Checkpointer:
    """Writes and reads one run folder ``out_dir`` (rank 0 writes; every rank waits for it)."""

    def __init__(self, out_dir: Path, config: TrainConfig, dist: DistInfo) -> None:
        self.out_dir = out_dir
        self.config = config
        self.dist = dist

    def write_config(self, resuming: bool) -> None:
        """``config.json`` and ``config.toml``; a fresh start first forgets an earlier attempt's
        manifest and staged files."""
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            (self.out_dir / COMMIT_FILE).unlink(missing_ok=True)
            remove_temp_files(self.out_dir)
        atomic_write_json(self.out_dir / "config.json", self.config.to_dict())
        atomic_write_text(self.out_dir / "config.toml", self.config.to_toml())

    def write(
        self,
        *,
        epoch: int,
        final: bool,
        improved: bool,
        metrics: dict[str, Any],
        model: nn.Module,
        history: list[dict[str, Any]],
        state: Callable[[], dict[str, Any]],
    ) -> None:
        """Write epoch ``epoch``'s files on rank 0 (``state()`` builds the trainer state when it is
        due), then wait so no rank reads a checkpoint before rank 0 has written it."""
        if self.dist.is_main:
            self._write(epoch, final, improved, metrics, model, history, state)
        distributed.barrier()

    def _write(
        self,
        epoch: int,
        final: bool,
        improved: bool,
        metrics: dict[str, Any],
        model: nn.Module,
        history: list[dict[str, Any]],
        state: Callable[[], dict[str, Any]],
    ) -> None:
        """Stage this epoch's files and commit them as one unit: ``best.*`` if improved, ``last.*``
        and the trainer state on checkpoint epochs, and the history; published in that order,
        each checkpoint's metadata before its weights."""
        every = self.config.checkpoint_every
        if not final and epoch % every != 0 and not improved:
            return
        meta = {"epoch": epoch, "metrics": metrics, "recipe": self.config.to_dict()}
        out = self.out_dir
        staged: list[StagedFile] = []
        try:
            if improved:
                staged += self._stage_checkpoint("best", model, meta)
            full = final or epoch % every == 0
            if full:
                staged += self._stage_checkpoint("last", model, meta)
            text = (json.dumps(history, indent=2) + "\n").encode("utf-8")
            staged.append(self._stage(out / "history.json", text))
            if full:
                path = new_staged(out / STATE_FILE)
                staged.append(StagedFile(STATE_FILE, path, ""))  # so a failing save removes it
                torch.save(state(), path)
                staged[-1] = StagedFile(STATE_FILE, path, sha256_file(path))
        except BaseException:
            for f in staged:
                f.staged.unlink(missing_ok=True)
            raise
        commit_unit(out, epoch, staged)

    @staticmethod
    def _stage(path: Path, data: bytes) -> StagedFile:
        return StagedFile(path.name, stage_bytes(path, data), hashlib.sha256(data).hexdigest())

    def _stage_checkpoint(self, stem: str, model: nn.Module, meta: dict[str, Any]) -> list[StagedFile]:
        """Stage checkpoint ``<out>/<stem>``, metadata first (so it is published before its weights,
        which loaders find under their staged name until then)."""
        from entrobust.checkpoint import encode_checkpoint, pending_weights_path

        weights, json_path, data, text = encode_checkpoint(self.out_dir / stem, model, metadata=meta)
        sha = hashlib.sha256(data).hexdigest()
        staged_weights = stage_bytes(weights, data, staged=pending_weights_path(weights, sha))
        return [self._stage(json_path, text.encode("utf-8")), StagedFile(weights.name, staged_weights, sha)]

    def load_state(self) -> dict[str, Any]:
        """The trainer state of the last committed unit (the folder is restored to it first).

        Raises :class:`CheckpointError` when there is none or it cannot be read, and
        :class:`ConfigError` when the config differs in keys outside :data:`RESUMABLE_CHANGES`.
        """
        if self.dist.is_main:
            recover(self.out_dir)  # back to exactly the last committed unit; temporary files go
        distributed.barrier()
        path = self.out_dir / STATE_FILE
        if not path.exists():
            raise CheckpointError(f"nothing to resume: {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"cannot read trainer state {path}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not an entrobust trainer state")
        saved = json.loads(state["config"])
        current = self.config.to_dict()
        diff = sorted(
            k
            for k in set(saved) | set(current)
            if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
        )
        if diff:
            raise ConfigError(
                f"cannot resume {self.out_dir}: the config differs in {', '.join(diff)} "
                f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
            )
        return state
