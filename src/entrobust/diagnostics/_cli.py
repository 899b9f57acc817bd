"""Helpers shared by the ``audit``, ``analyze`` and ``certify`` commands (kept out of the CLI modules
so they stay thin, STYLE rule 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from entrobust.errors import ConfigError


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """``"0,0.25,8/255"`` → ``[0.0, 0.25, 0.0313…]`` (``None`` stays ``None``)."""
    if text is None:
        return None
    out: list[float] = []
    for part in text.split(","):
        t = part.strip()
        if not t:
            continue
        try:
            if "/" in t:
                num, den = t.split("/", 1)
                out.append(float(num) / float(den))
            else:
                out.append(float(t))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{what}: {t!r} is not a number (use e.g. 0.3 or 8/255)") from None
    if not out:
        raise ConfigError(f"{what} needs at least one value")
    return out


def default_threat(meta: dict[str, Any], dataset: str | None) -> tuple[str, float]:
    """(norm, ε) for a checkpoint: its training adversary's when it had one, else the dataset's
    (:func:`entrobust.data.default_threat`)."""
    from entrobust.data.info import default_threat as dataset_threat

    adv = ((meta.get("recipe") or {}).get("method") or {}).get("adversary") or {}
    if adv.get("kind", "none") != "none" and isinstance(adv.get("eps"), int | float) and adv["eps"] > 0:
        return str(adv.get("norm", "linf")), float(adv["eps"])
    return dataset_threat(dataset)


def load_target(
    checkpoint: str, device: str, dataset: str | None, split: str, data_root: str | None
) -> tuple[nn.Module, dict[str, Any], str, Any]:
    """``(model, metadata, dataset name, TensorData)`` for a checkpoint and the data it was trained on."""
    from entrobust.checkpoint import load_checkpoint
    from entrobust.data import load_dataset
    from entrobust.runtime import select_device

    model, meta = load_checkpoint(checkpoint, map_location=select_device(device))
    spec = meta.get("model", {}) or {}
    name = dataset or spec.get("dataset") or meta.get("dataset")
    if not name:
        raise ConfigError(f"checkpoint {checkpoint} names no dataset; pass --dataset")
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}; valid: train, test")
    return (
        model,
        meta,
        str(name),
        load_dataset(str(name), "train" if split == "train" else "test", root=data_root),
    )


def out_dir_for(checkpoint: str | None, out: str | None, leaf: str) -> Path:
    """``--out`` if given, else ``<checkpoint's folder>/<leaf>`` (the run directory), else ``./<leaf>``."""
    if out:
        return Path(out)
    if checkpoint:
        from entrobust.checkpoint import checkpoint_paths

        return checkpoint_paths(checkpoint)[1].parent / leaf
    return Path(leaf)
