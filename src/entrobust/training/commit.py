"""A training checkpoint is committed as one unit: weights, metadata, trainer state and history.

An epoch's checkpoint is several files (``last.safetensors`` + ``last.json``, maybe
``best.*``, ``trainer_state.pt``, ``history.json``) that must change together: a crash between
two of them would leave e.g. new weights beside old metadata, or a trainer state ahead of the
published ``last``. So the trainer

1. **stages** every new file completely and durably under a hidden name beside its destination
   (:func:`entrobust.io.stage_bytes`; weights under the name
   :func:`~entrobust.checkpoint.pending_weights_path` gives them, so a half-published checkpoint
   still loads);
2. **commits** by atomically replacing ``commit.json``, a manifest naming every file of the unit
   with its SHA-256 (files this epoch did not rewrite, e.g. an unchanged ``best.*``, are carried
   over from the previous manifest) — this single ``os.replace`` is the commit point;
3. **publishes** the staged files onto their public names, metadata before weights.

:func:`recover` (called before a resume) verifies every public file against the committed
manifest, publishes the staged copy of any that does not match, and deletes every temporary
or staged file left behind — so after it the folder is exactly the last committed unit, and a
crash before a commit point simply means the epoch is trained again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrobust.errors import CheckpointError
from entrobust.io import atomic_write_json, publish, remove_temp_files, sha256_file

__all__ = ["COMMIT_FILE", "StagedFile", "commit_unit", "committed_epoch", "recover"]

COMMIT_FILE = "commit.json"
FORMAT = "entrobust-trainer-commit"
VERSION = 1


@dataclass(frozen=True)
class StagedFile:
    """One file of a unit: its public ``name`` in the run folder, the complete ``staged`` file
    that becomes it, and the SHA-256 of its content."""

    name: str
    staged: Path
    sha256: str


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / COMMIT_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint manifest {path}: {err}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT
        or not isinstance(doc.get("epoch"), int)
        or not isinstance(files, list)
        or not all(
            isinstance(f, dict)
            and isinstance(f.get("name"), str)
            and "/" not in f["name"]
            and isinstance(f.get("sha256"), str)
            and (f.get("staged") is None or (isinstance(f["staged"], str) and "/" not in f["staged"]))
            for f in files
        )
    ):
        raise CheckpointError(f"{path} is not an entrobust checkpoint manifest")
    return doc


def committed_epoch(out: str | Path) -> int | None:
    """The epoch of the last committed unit in run folder ``out`` (``None``: none committed)."""
    doc = _read_manifest(Path(out))
    return None if doc is None else int(doc["epoch"])


def commit_unit(out: str | Path, epoch: int, files: Sequence[StagedFile]) -> None:
    """Commit the staged ``files`` as epoch ``epoch``'s unit, then publish them in order.

    Files of the previous unit that are not in ``files`` stay part of the new unit unchanged.
    """
    out = Path(out)
    previous = _read_manifest(out)
    new = {f.name for f in files}
    entries: list[dict[str, Any]] = [
        {"name": e["name"], "sha256": e["sha256"], "staged": None}
        for e in (previous["files"] if previous is not None else [])
        if e["name"] not in new
    ]
    entries += [{"name": f.name, "sha256": f.sha256, "staged": f.staged.name} for f in files]
    for f in files:
        if f.staged.parent.resolve() != out.resolve():
            raise ValueError(f"staged file {f.staged} is not in the run folder {out}")
    manifest = {"format": FORMAT, "version": VERSION, "epoch": epoch, "files": entries}
    atomic_write_json(out / COMMIT_FILE, manifest)  # the commit point
    for f in files:  # committed: now make the public names show it
        publish(f.staged, out / f.name)


def recover(out: str | Path) -> int | None:
    """Make run folder ``out`` exactly its last committed unit; return that unit's epoch.

    Every file the manifest names must match its recorded SHA-256; one that does not is replaced
    by its staged copy (an interrupted publish). All temporary and staged files are then deleted
    (uncommitted work of an interrupted epoch). Without a manifest (nothing committed yet, or a
    run folder of an older entrobust) only the temporary files are deleted and ``None`` returned.

    Raises:
        CheckpointError: a committed file differs and no staged copy is left (it was changed
            or damaged outside entrobust).
    """
    out = Path(out)
    doc = _read_manifest(out)
    if doc is not None:
        for e in doc["files"]:
            target = out / e["name"]
            if target.is_file() and sha256_file(target) == e["sha256"]:
                continue
            staged = out / e["staged"] if e["staged"] else None
            if staged is not None and staged.is_file() and sha256_file(staged) == e["sha256"]:
                publish(staged, target)
                continue
            raise CheckpointError(
                f"{target} does not match the checkpoint committed at epoch {doc['epoch']} "
                f"({out / COMMIT_FILE}) and no staged copy is left: it was changed or damaged "
                "outside entrobust; restore it or start the run again"
            )
    remove_temp_files(out)
    return None if doc is None else int(doc["epoch"])
