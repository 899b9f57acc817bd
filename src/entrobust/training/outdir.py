"""What a training run may do with its output folder, decided before anything is built or written.

:func:`check_out_dir` reads the folder (never writes it) and answers whether training starts
afresh or resumes, or refuses:

==================================================  ==================  ===========================
the folder holds                                    ``resume=False``    ``resume=True``
==================================================  ==================  ===========================
nothing (missing or empty)                          start               refuse: nothing to resume
a run of this config that finished ≥ 1 epoch        refuse: resume it   resume
a run of this config stopped before epoch 1 ended   start (a note)      start afresh (a note)
anything else (another config, unrelated files)     refuse              refuse
==================================================  ==================  ===========================

``overwrite=True`` turns every refusal of a fresh start into "start": only then are existing run
files (:data:`RUN_FILES`) replaced; other files in the folder are left alone. "This config" means
the same :class:`~entrobust.training.TrainConfig` up to the keys a resume may change
(:data:`~entrobust.training.checkpointing.RESUMABLE_CHANGES`: epochs, device, threads, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from entrobust.errors import CheckpointError, ConfigError

__all__ = ["RUN_FILES", "STATE_MARKERS", "check_out_dir", "remove_run_files"]

#: files whose presence means a run finished (and committed) at least one epoch: the trainer state
#: and the commit manifest of :mod:`entrobust.training.commit` (a resume restores from it)
STATE_MARKERS: tuple[str, ...] = ("trainer_state.pt", "commit.json")

#: the files a training run writes into its folder (the trainer's and ``entrobust train``'s)
RUN_FILES: tuple[str, ...] = (
    *STATE_MARKERS,
    "config.json",
    "config.toml",
    "history.json",
    "last.safetensors",
    "last.json",
    "best.safetensors",
    "best.json",
    "test.json",
)


def _plain(config: Any) -> dict[str, Any]:
    """The config as it reads back from ``config.json`` (tuples become lists)."""
    data: dict[str, Any] = json.loads(json.dumps(config.to_dict()))
    return data


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The run's ``config.json``, or ``None`` when it is missing or not a JSON object."""
    try:
        data = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    from entrobust.training.checkpointing import RESUMABLE_CHANGES

    return sorted(
        k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
    )


def _listing(out: Path, limit: int = 4) -> str:
    names = sorted(p.name for p in out.iterdir())
    more = f", … ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_out_dir(
    out: str | Path, config: Any, *, resume: bool = False, overwrite: bool = False
) -> tuple[bool, str | None]:
    """Decide whether training ``config`` into ``out`` resumes, starts, or must not run.

    Reads ``out`` and writes nothing (see the module docstring for the rules).

    Args:
        out: the run's output folder.
        config: the :class:`~entrobust.training.TrainConfig` about to be trained.
        resume: the caller asked to continue the run in ``out`` (``--resume``).
        overwrite: the caller allows existing run files in ``out`` to be replaced (``--overwrite``).

    Returns:
        ``(resume, note)``: whether to restore the trainer state, and a line to show the user
        (``None`` when there is nothing to say).

    Raises:
        ConfigError: ``out`` is not a folder, holds something other than a run of this config
            (without ``overwrite``), or holds a finished epoch of this config (without ``resume``);
            or both ``resume`` and ``overwrite`` were asked for.
        CheckpointError: ``resume`` was asked for but ``out`` holds no run of this config.
    """
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("give --resume (continue the run) or --overwrite (start it again), not both")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {out} is a file, not a folder")
    empty = not out.exists() or not any(out.iterdir())
    has_state = any((out / name).exists() for name in STATE_MARKERS)
    if resume and has_state:
        return True, None  # the trainer compares the stored config when it loads the state
    if overwrite or empty:
        if resume:
            raise CheckpointError(
                f"nothing to resume: {out} holds no training run; "
                "drop --resume (resume=False) to start one there"
            )
        return False, None
    saved, current = _saved_config(out), _plain(config)
    is_run = saved is not None and {"dataset", "model"} <= set(saved) <= set(current)
    diff = _differences(saved, current) if saved is not None and is_run else None
    if diff == [] and not has_state:  # this config, stopped before its first epoch ended
        what = "nothing to resume" if resume else "restarting"
        return False, f"{what}: {out} holds this config but no finished epoch; starting afresh"
    if diff == []:
        raise ConfigError(
            f"{out} already holds a training run of this config; pass resume=True (--resume) to continue it, "
            "--overwrite to start it again, or choose another output directory"
        )
    if diff:
        more = f", … ({len(diff)} keys)" if len(diff) > 6 else ""
        found = f"a run of another config (it differs in {', '.join(diff[:6])}{more})"
    else:
        found = f"files that are not a run of this config ({_listing(out)})"
    if resume:
        raise CheckpointError(
            f"nothing to resume: {out} holds no trainer state of this config but {found}; choose another "
            "--out, or drop --resume and pass --overwrite to start this config there"
        )
    raise ConfigError(
        f"{out} is not empty: it holds {found}; choose another (new or empty) --out, "
        "or pass --overwrite (overwrite=True) to replace the run files there"
    )


def remove_run_files(out: str | Path) -> list[str]:
    """Delete the :data:`RUN_FILES` in ``out`` (``--overwrite``); other files stay. Returns the
    names removed."""
    removed = []
    for name in RUN_FILES:
        p = Path(out) / name
        if p.is_file():
            p.unlink()
            removed.append(name)
    return removed
