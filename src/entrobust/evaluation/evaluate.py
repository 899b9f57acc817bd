"""``evaluate``: robust accuracy as the per-example worst case over a suite of attacks and ε.

How the cascade works (SPEC §3 conventions, §8; AutoAttack's ``run_standard_evaluation`` in
``fra31/auto-attack`` does the same for one ε):

1. Clean pass: examples the model already misclassifies are not attacked.
2. The ε values are visited in ascending order; at each ε the suite's rows run in order.
   Row r at ε attacks only examples that are still robust: correct, and not fooled by an earlier
   row at this ε nor by any row at a smaller ε (the ε-balls are nested, so an example fooled at ε
   is fooled at every larger ε and is never attacked again).
3. An example is robust at ε when no row at any ε' ≤ ε fooled it.

``mode="independent"`` instead runs every row on every clean-correct example (the papers'
per-row tables, e.g. RU Table 1), and still reports the worst case.

Determinism and resume: the examples a step attacks are a pure function of earlier results, they
are split into fixed batches, and each (ε, row, batch) chunk runs with a seed derived from
(seed, ε, row label, batch index) — both the attack's own ``seed`` and torch's global RNG. An
interrupted run resumed from ``state_path`` therefore reproduces a straight run exactly.

Sharding (SPEC §7): under an initialised ``torch.distributed`` process group (``torchrun``) the
clean pass splits its batches round-robin over the W ranks, and each step runs its chunks in
*rounds* of W — rank r attacks chunk ``lo + r`` of the round, then every rank gathers the round's
CPU results (:func:`entrobust.evaluation.sharding.sharded_map`) and applies them in chunk order.
A chunk's numbers depend only on its examples and its seed, never on the rank that ran it, so every
rank ends with the same :class:`EvalResult`, equal record for record to one process's (on the same
kind of device). Only rank 0 shows progress and writes the resume state (after every round; the
other ranks receive what rank 0 read by broadcast, so no shared filesystem is needed), and a run
interrupted with W ranks resumes with any number of ranks. ``seconds`` of a step is the sum over
ranks of the time spent in its chunks (compute time, not wall time).
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import os
import re
import time
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import entrobust
from entrobust import accel, distributed
from entrobust.attacks.base import Attack, entropy_of, frozen, margin_of
from entrobust.attacks.engine import is_stochastic
from entrobust.attacks.inputs import check_finite, check_label_range, check_labels, check_layout, check_logits
from entrobust.attacks.threat import NORMS, ThreatModel, flat_norm
from entrobust.errors import ConfigError, DataError
from entrobust.evaluation.result import CLEAN_FIELDS, STEP_FIELDS, EvalResult, Step, format_eps
from entrobust.evaluation.robust import correct
from entrobust.evaluation.sharding import on_main, sharded_map
from entrobust.evaluation.state import EvalState
from entrobust.evaluation.suites import Suite, SuiteEntry, build_entry, get_suite, parse_value
from entrobust.progress import Progress

__all__ = [
    "build_plan",
    "chunk_seed",
    "evaluate",
    "looks_like_probabilities",
    "model_fingerprint",
    "parse_eps",
]

Mode = Literal["cascade", "independent"]
DataLike = Any  # TensorData | tuple[Tensor, Tensor] | str (dataset name → test split)
_KEY = 1e-10  # ε values closer than this are the same column


# ------------------------------------------------------------------------------ inputs
def _as_data(data: DataLike) -> tuple[Tensor, Tensor, str | None]:
    """(x float32 in [0,1] on CPU, y int64, dataset name)."""
    from entrobust.data.tensordata import TensorData

    if isinstance(data, str):
        from entrobust.data import load_dataset

        data = load_dataset(data, "test")
    if isinstance(data, TensorData):
        d = data.to_float()
        check_finite(d.x, f"data {data.name}: images", error=DataError)
        return d.x, d.y, data.name
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise DataError("data must be (x, y) tensors, a TensorData or a dataset name")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"data: x {tuple(x.shape)} and y {tuple(y.shape)} do not match (need N×... and N)"
            )
        if not x.is_floating_point():
            raise DataError(f"data: images must be float in [0, 1] or uint8, got {x.dtype}")
        check_labels(y, x.shape[0], "data: labels", error=DataError)
        check_finite(x, "data: images", error=DataError)
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise DataError("data: images must lie in [0, 1] (normalization belongs inside the model)")
        return x.detach().cpu().float(), y.detach().cpu().long(), None
    raise DataError(f"data must be (x, y), a TensorData or a dataset name, got {type(data).__name__}")


def _as_model(model: nn.Module | str | os.PathLike[str]) -> tuple[nn.Module, str | None]:
    if isinstance(model, nn.Module):
        return model, None
    from entrobust.checkpoint import load_checkpoint

    m, meta = load_checkpoint(model)
    spec = meta.get("model", {}) if isinstance(meta, dict) else {}
    return m, spec.get("dataset") or meta.get("dataset")


EpsLike = float | str | Sequence[float | str]


def parse_eps(eps: EpsLike | None, what: str = "eps") -> list[float]:
    """ε values from numbers and/or strings — ``0.3``, ``"8/255"``, ``"0.1,8/255"`` or a list of
    those — parsed as the CLI's ``--eps`` and experiment files do (:func:`parse_value`).

    Raises :class:`ConfigError` for a value that is not a number, negative or not finite.
    """
    if eps is None:
        return []
    items: list[Any] = [eps] if isinstance(eps, (int, float, str)) else list(eps)
    vals: list[float] = []
    for item in items:
        parts = [p for p in item.split(",") if p.strip()] if isinstance(item, str) else [item]
        if isinstance(item, str) and not parts:
            raise ConfigError(f"{what}: {item!r} holds no value (use e.g. 0.3 or 8/255)")
        for part in parts:
            v = parse_value(part) if isinstance(part, str) else part
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                shown = part.strip() if isinstance(part, str) else part
                raise ConfigError(f"{what}: {shown!r} is not a number (use e.g. 0.3 or 8/255)")
            e = float(v)
            if not math.isfinite(e) or e < 0:
                raise ConfigError(f"{what} must be finite and >= 0, got {e}")
            vals.append(e)
    return vals


def _check_eps_sizes(steps: Sequence[Step], x: Tensor, allow_large_eps: bool) -> None:
    """Refuse, before any work, a step whose ε makes the ball contain the whole box."""
    for s in steps:
        try:
            ThreatModel(s.norm, s.eps, allow_large_eps=allow_large_eps).check_input(x[:1])
        except ConfigError as err:
            raise ConfigError(f"suite row {s.label!r} at eps {format_eps(s.eps)}: {err}") from None


def build_plan(suite: Suite, eps: Sequence[float], norm: str) -> tuple[list[float], list[Step]]:
    """The ε columns (ascending) and the ordered (ε, row) steps of the cascade.

    Rows without a fixed ε run at every value of ``eps``; rows with one (RU names) run only there.
    """
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    free = sorted({round(e / _KEY) for e in eps})
    fixed = {round(e.eps / _KEY) for e in suite.entries if e.eps is not None}
    if suite.needs_eps and not free:
        rows = ", ".join(e.label for e in suite.entries if e.eps is None)
        raise ConfigError(f"suite {suite.name!r} needs eps values for rows without a fixed eps ({rows})")
    keys = sorted(set(free) | fixed)
    cols = [k * _KEY for k in keys]
    steps: list[Step] = []
    for j, k in enumerate(keys):
        for r, entry in enumerate(suite.entries):
            runs = (entry.eps is None and k in free) or (
                entry.eps is not None and round(entry.eps / _KEY) == k
            )
            if runs:
                e = entry.eps if entry.eps is not None else cols[j]
                steps.append(Step(len(steps), float(e), j, r, entry.label, entry.norm or norm))
    return cols, steps


def chunk_seed(seed: int, eps: float, label: str, batch: int) -> int:
    """The seed of one (ε, row, batch) chunk: independent of when a run was interrupted."""
    keys = [seed, zlib.crc32(label.encode()), round(eps * 1e9), batch]
    return int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class and ``state_dict`` (names, dtypes, shapes, values)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _data_fingerprint(x: Tensor, y: Tensor, indices: Tensor) -> str:
    h = hashlib.sha256()
    for t in (x, y, indices):
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _device_of(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        from entrobust.runtime import select_device

        return select_device(str(device))
    p = next(iter(model.parameters()), None)
    if p is None:
        b = next(iter(model.buffers()), None)
        return b.device if b is not None else torch.device("cpu")
    return p.device


def _build_attack(entry: SuiteEntry, eps: float, norm: str, allow_large_eps: bool = False) -> Attack:
    return build_entry(entry, eps, norm, allow_large_eps=allow_large_eps)


# ------------------------------------------------------------------------------ records
def _empty_records(s: int, n: int) -> dict[str, Tensor]:
    nan = torch.full((s, n), math.nan)
    return {
        "ran": torch.zeros(s, n, dtype=torch.bool),
        "success": torch.zeros(s, n, dtype=torch.bool),
        "first_success": torch.full((s, n), -1, dtype=torch.long),
        "margin": nan.clone(),
        "loss": nan.clone(),
        "entropy": nan.clone(),
        "distance": nan.clone(),
    }


def _clean_pass(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    bs: int,
    device: torch.device,
    amp: str = "off",
    indices: Tensor | None = None,
) -> dict[str, Tensor]:
    """Clean predictions batch by batch (batches round-robin over ranks, gathered in order).

    Checks the model's output (``(B, classes)`` logits) and the labels against its width; an
    error names the example by its dataset index (``indices``)."""

    @torch.no_grad()
    def one(i: int) -> dict[str, Tensor]:
        xb, yb = x[i * bs : (i + 1) * bs].to(device), y[i * bs : (i + 1) * bs].to(device)
        with accel.autocast(device, amp):
            logits = check_logits(model(xb), xb.shape[0])
        where = indices[i * bs : (i + 1) * bs] if indices is not None else None
        check_label_range(logits.shape[1], {"data: labels": yb}, error=DataError, index=where)
        logits = logits.float()
        return {
            "clean_correct": logits.argmax(1).eq(yb).cpu(),
            "clean_margin": margin_of(logits, yb).cpu(),
            "clean_loss": F.cross_entropy(logits, yb, reduction="none").cpu(),
            "clean_entropy": entropy_of(logits).cpu(),
        }

    if x.shape[0] == 0:
        return {
            "clean_correct": torch.zeros(0, dtype=torch.bool),
            **{k: torch.zeros(0) for k in CLEAN_FIELDS[1:]},
        }
    with frozen(model, "eval"):
        parts = sharded_map(one, range(-(-x.shape[0] // bs)))
    return {k: torch.cat([p[k] for p in parts]) for k in CLEAN_FIELDS}


def _targets(clean_correct: Tensor, broken: Tensor, step: int, mode: Mode) -> Tensor:
    """Positions (ascending) the step attacks, as a function of results before ``step``."""
    if mode == "independent":
        return clean_correct.nonzero().flatten()
    alive = (broken < 0) | (broken >= step)
    return (clean_correct & alive).nonzero().flatten()


def _check_threat(res_x: Tensor, x: Tensor, eps: float, norm: str, label: str) -> Tensor:
    dist = flat_norm(res_x - x, norm)
    tol = 1e-5 * max(1.0, eps) + 1e-6
    if bool((dist > eps + tol).any()) or float(res_x.min()) < -1e-6 or float(res_x.max()) > 1 + 1e-6:
        raise RuntimeError(
            f"attack {label!r} left its threat model (max ‖δ‖ {float(dist.max()):.6g} > ε {eps:g})"
        )
    return dist


# ------------------------------------------------------------------------------ main entry
def evaluate(
    model: nn.Module | str | os.PathLike[str],
    data: DataLike,
    suite: str | Suite | Sequence[SuiteEntry] = "quick",
    eps: EpsLike | None = None,
    norm: str = "linf",
    *,
    batch_size: int = 250,
    max_examples: int | None = None,
    device: str | torch.device | None = None,
    state_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    seed: int = 0,
    keep_examples: bool = True,
    mode: Mode = "cascade",
    dataset: str | None = None,
    amp: str = "off",
    fp32_check: int = 0,
    allow_large_eps: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on ``data`` under ``suite`` at every ``eps``; see the module docstring.

    Args:
        model: any ``nn.Module`` taking [0, 1] images (normalization inside), or a checkpoint path.
        data: a :class:`~entrobust.data.TensorData`, an ``(x, y)`` pair (float [0, 1] or uint8
            images) or a dataset name (its test split).
        suite: a registered suite name, a custom suite string (``"pgd:steps=40,fgsm"``), a
            :class:`Suite` or a list of :class:`SuiteEntry`.
        eps: ε values (pixel units; any order): numbers and/or strings such as ``"8/255"``
            (:func:`parse_eps`). ``None``: the suite's default for the dataset. Rows with a fixed
            ε (RU names) ignore it; an ε at which no row runs stays a column of the result
            whose accuracy is "no attack ran" (see :meth:`EvalResult.robust_accuracy`).
        norm: norm of rows that do not fix their own.
        batch_size: examples per attack call.
        max_examples: evaluate a seeded random subset of this size (kept in dataset order);
            random rather than the first N because some splits are sorted by class.
        device: where the model runs (default: where its parameters are); the model is moved.
        state_path: directory for resume state; rerunning with the same arguments continues.
        progress: report each attack step on stderr with the current robust accuracy: a bar
            with ETA on a terminal, one line per step otherwise (:mod:`entrobust.progress`).
        seed: base seed of the subset and of every chunk's attack randomness.
        keep_examples: keep the adversarial examples found (``EvalResult.adv_x``).
        mode: ``"cascade"`` (default) or ``"independent"`` (every row on every correct example).
        dataset: dataset name for suite variants and default ε (default: from ``data`` or the
            checkpoint).
        amp: ``"off"`` (float32) or ``"bf16"``: the clean pass and every attack run under
            :func:`entrobust.accel.autocast`; records are computed from ``logits.float()``.
        fp32_check: with ``amp="bf16"``, re-run a seeded sample of up to this many attacked
            examples in float32 and record how many outcomes differ in
            ``result.meta["fp32_check"]`` (a warning is issued when any do); see ``_fp32_check``.
        allow_large_eps: run an ε at least the image box's diameter (ℓ∞ ε ≥ 1, ℓ2 ε ≥ √d), whose
            ball contains every image; refused by default as ε in 0–255 units (``8`` for ``8/255``).

    Under ``torch.distributed`` (e.g. ``torchrun``) the work is sharded over the ranks and every
    rank returns the same result, equal to a single process's; see the module docstring.

    Returns:
        :class:`EvalResult`. Raises :class:`ConfigError` for bad arguments (including a too-large
        ε, above), an unknown suite, a model that does not return ``(N, classes)`` logits or a
        resume state made with other arguments; :class:`DataError` for bad data: NaN / inf
        pixels (the message counts them and names the first example and position), pixels
        outside [0, 1], channels-last (NHWC) images, non-integer labels or labels the model has
        no logit for.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if mode not in ("cascade", "independent"):
        raise ConfigError(f"mode must be 'cascade' or 'independent', got {mode!r}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    accel.check_amp(amp)
    if fp32_check < 0:
        raise ConfigError(f"fp32_check must be >= 0, got {fp32_check}")
    net, ckpt_dataset = _as_model(model)
    if isinstance(net, nn.parallel.DistributedDataParallel):
        net = net.module  # ranks run different chunks: DDP's per-forward collectives would hang
    x_all, y_all, data_name = _as_data(data)
    check_layout(x_all, net, "data: images", error=DataError)
    dataset = dataset or ckpt_dataset or data_name
    the_suite = get_suite(suite, dataset)
    eps_values = parse_eps(eps)
    if not eps_values and the_suite.needs_eps:
        eps_values = list(the_suite.default_eps(dataset) or [])
    cols, steps = build_plan(the_suite, eps_values, norm)
    _check_eps_sizes(steps, x_all, allow_large_eps)
    # build (not run) every attack first: bad options fail before any work
    attacks = {
        step.index: _build_attack(the_suite.entries[step.entry_index], step.eps, step.norm, allow_large_eps)
        for step in steps
    }

    n_all = int(y_all.shape[0])
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be >= 1, got {max_examples}")
    if max_examples is not None and max_examples < n_all:
        g = torch.Generator().manual_seed(seed)
        indices = torch.randperm(n_all, generator=g)[:max_examples].sort().values
    else:
        indices = torch.arange(n_all)
    x, y = x_all[indices], y_all[indices]
    n = int(y.shape[0])

    dev = _device_of(net, device)
    net.to(dev)
    fp = {
        "model": model_fingerprint(net),
        "data": _data_fingerprint(x, y, indices),
        "suite": the_suite.describe(),
        "eps": [repr(e) for e in cols],
        "steps": [s.to_dict() for s in steps],
        "norm": norm,
        "mode": mode,
        "batch_size": batch_size,
        "seed": seed,
        "keep_examples": keep_examples,
    }
    if amp != "off":
        fp["amp"] = amp  # absent for float32, so states written before amp existed still resume
    state = EvalState(state_path, fp) if state_path is not None else None
    main = distributed.is_main()

    records = _empty_records(len(steps), n)
    broken = torch.full((n,), -1, dtype=torch.long)
    seconds = [0.0] * len(steps)
    adv_x = torch.zeros_like(x) if keep_examples else None
    clean: dict[str, Tensor] | None = None
    start_step, start_chunk = 0, 0

    if state is not None:
        # rank 0 owns the state directory; the others get what it read (no shared filesystem needed)
        loaded = on_main(lambda: _load_state(state, adv_x))
        if loaded is not None:
            tensors, prog, adv_loaded = loaded
            clean = {k: tensors[k] for k in CLEAN_FIELDS}
            records = {k: tensors[f"step_{k}"] for k in STEP_FIELDS}
            broken = tensors["broken_step"]
            seconds = [float(s) for s in prog["seconds"]]
            start_step, start_chunk = int(prog["step"]), int(prog["chunk"])
            if adv_x is not None and adv_loaded is not None:
                adv_x = adv_loaded

    if clean is None:
        clean = _clean_pass(net, x, y, batch_size, dev, amp, indices)
        if state is not None and main:
            _commit(state, clean, records, broken, seconds, 0, 0)

    world = distributed.world_size()
    bar: Progress | None = None
    try:
        for step in steps[start_step:]:
            targets = _targets(clean["clean_correct"], broken, step.index, mode)
            chunks = [targets[i : i + batch_size] for i in range(0, targets.numel(), batch_size)]
            first = start_chunk if step.index == start_step else 0
            attack = attacks[step.index] if first < len(chunks) else None
            bar = Progress(
                "eval",
                f"{step.label} eps={format_eps(step.eps)}",
                targets.numel(),
                unit="examples",
                initial=sum(len(c) for c in chunks[:first]),
                enabled=progress and main,
            )

            # rounds of W chunks: rank r runs chunk lo + r, every rank applies all W in chunk order
            for lo in range(first, len(chunks), world):
                hi = min(lo + world, len(chunks))
                assert attack is not None
                job = functools.partial(
                    _compute_chunk, attack, net, x, y, chunks, broken, step, seed, dev, amp, keep_examples
                )
                outs = sharded_map(job, range(lo, hi))
                for b, out in zip(range(lo, hi), outs, strict=True):
                    pos = chunks[b]
                    newly = _apply_chunk(records, broken, step.index, pos, out)
                    seconds[step.index] += out["seconds"]
                    if adv_x is not None and bool(newly.any()):
                        adv_x[pos[newly]] = out["adv"].to(adv_x.dtype)
                        if state is not None and main:
                            state.write_adv(step.index, b, pos[newly], adv_x[pos[newly]])
                if state is not None and main:
                    nxt = (step.index, hi) if hi < len(chunks) else (step.index + 1, 0)
                    _commit(state, clean, records, broken, seconds, *nxt)
                acc = _cum_acc(clean["clean_correct"], broken, step.index)
                bar.set_postfix(f"robust {100 * acc:.1f}%")
                bar.update(sum(len(c) for c in chunks[lo:hi]))
            if state is not None and main and not chunks:
                _commit(state, clean, records, broken, seconds, step.index + 1, 0)
            start_chunk = 0
            bar.close()
    finally:
        if bar is not None:
            bar.close()

    meta: dict[str, Any] = {
        "dataset": dataset,
        "batch_size": batch_size,
        "seed": seed,
        "max_examples": max_examples,
        "device": str(dev),
        "model_sha256": fp["model"],
        "entrobust_version": entrobust.__version__,
        "torch_version": torch.__version__,
        "world_size": world,
        "amp": amp,
    }
    if amp != "off" and fp32_check > 0:
        report = _fp32_check(
            net,
            x,
            y,
            the_suite,
            steps,
            clean,
            broken,
            records,
            mode,
            batch_size,
            seed,
            dev,
            fp32_check,
            allow_large_eps,
        )
        meta["fp32_check"] = report
        if report["disagree"] and main:  # every rank holds the same report; rank 0 speaks
            warnings.warn(
                f"bf16 and float32 disagree on {report['disagree']} of {report['checked']} re-checked "
                "attack outcomes (result.meta['fp32_check']); report float32 numbers (amp='off') "
                "if the difference matters",
                stacklevel=2,
            )

    notes = _sanity_notes(net, x, the_suite, steps, clean, broken, mode, batch_size, dev)
    if notes:
        meta["warnings"] = notes
        if main:
            for note in notes:
                warnings.warn(note, RuntimeWarning, stacklevel=2)

    return EvalResult(
        suite=the_suite.describe(),
        labels=the_suite.labels,
        eps=cols,
        norm=norm,
        mode=mode,
        steps=steps,
        indices=indices,
        y=y,
        clean=clean,
        records=records,
        broken_step=broken,
        adv_x=adv_x,
        seconds=seconds,
        meta=meta,
    )


def _sanity_notes(
    net: nn.Module,
    x: Tensor,
    suite: Suite,
    steps: Sequence[Step],
    clean: dict[str, Tensor],
    broken: Tensor,
    mode: Mode,
    batch_size: int,
    dev: torch.device,
) -> list[str]:
    """AutoAttack's ``checks.py`` alarms, for every suite (not only the ``AutoAttack`` class):

    * the model's outputs change between identical calls (randomized: use EOT,
      ``autoattack-rand``) — unless the suite already scores over several draws;
    * the outputs look like probabilities, not logits (``check_range_output``,
      :func:`looks_like_probabilities`): CE on probabilities saturates and DLR is meaningless;
    * Square lowering the cascade's robust accuracy after the gradient attacks at some ε
      (``check_square_sr``: the gradients may be masked).
    """
    from entrobust.attacks.autoattack import RANDOMIZED_NOTE, square_check

    notes: list[str] = []
    if x.shape[0]:
        xb = x[:batch_size].to(dev)
        with frozen(net, "eval"):
            stochastic = is_stochastic(net, xb)
            with torch.no_grad():
                if looks_like_probabilities(net(xb)):
                    notes.append(PROBABILITIES_NOTE)
        uses_draws = any(
            e.attack == "autoattack-rand" or int(e.kwargs.get("draws", 1) or 1) > 1 for e in suite.entries
        )
        if stochastic and not uses_draws:
            notes.append(RANDOMIZED_NOTE)
    if mode == "cascade":
        by_eps: dict[float, dict[str, float]] = {}
        for step in steps:
            acc = by_eps.setdefault(step.eps, {"clean": _cum_acc(clean["clean_correct"], broken, -1)})
            is_square = suite.entries[step.entry_index].attack == "square"
            acc["square" if is_square else step.label] = _cum_acc(clean["clean_correct"], broken, step.index)
        for e, acc in by_eps.items():
            notes += [f"eps={format_eps(e)}: {n}" for n in square_check(acc)]
    return notes


PROBABILITIES_NOTE = (
    "the model's outputs look like probabilities (every row non-negative and summing to 1), not "
    "logits: the attacks' losses (CE on a softmax of probabilities, DLR, margins) are then flattened "
    "and robust accuracy is overstated; remove the final softmax (AutoAttack checks.py: "
    "check_range_output)"
)


def looks_like_probabilities(out: Tensor, tol: float = 1e-5) -> bool:
    """True when every row of ``out`` (B × C model outputs) lies in [0, 1] and sums to 1 —
    softmax probabilities rather than logits (AutoAttack ``checks.py: check_range_output``)."""
    if out.dim() != 2 or out.shape[0] == 0 or out.shape[1] < 2:
        return False
    out = out.detach().float()
    return bool(
        float(out.min()) > -tol and float(out.max()) < 1 + tol and ((out.sum(1) - 1).abs() < tol).all()
    )


def _load_state(
    state: EvalState, adv_x: Tensor | None
) -> tuple[dict[str, Tensor], dict[str, Any], Tensor | None] | None:
    """Open ``state`` (creating it or checking its fingerprint) and read the last commit."""
    state.open()
    loaded = state.load()
    if loaded is None:
        return None
    tensors, prog = loaded
    adv = None
    if adv_x is not None:
        adv = torch.zeros_like(adv_x)
        _restore_adv(state, adv, tensors["broken_step"], int(prog["step"]), int(prog["chunk"]))
    return tensors, prog, adv


def _compute_chunk(
    attack: Attack,
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    chunks: Sequence[Tensor],
    broken: Tensor,
    step: Step,
    seed: int,
    dev: torch.device,
    amp: str,
    keep_examples: bool,
    b: int,
) -> dict[str, Any]:
    """Attack chunk ``b`` of ``step``; CPU results, the same whichever rank computes them."""
    pos = chunks[b]
    t0 = time.perf_counter()
    xb = x[pos].to(dev)
    with accel.autocast(dev, amp):
        res = _run_chunk(attack, net, xb, y[pos].to(dev), chunk_seed(seed, step.eps, step.label, b))
    dist = _check_threat(res.x_adv, xb, step.eps, step.norm, step.label).cpu()
    succ = res.success.cpu().bool()
    draws = int(getattr(attack, "draws", 1) or 1)
    if draws > 1:  # a randomized model (autoattack-rand): broken unless most draws are right
        with accel.autocast(dev, amp):
            succ = ~correct(net, res.x_adv, y[pos].to(dev), draws=draws).cpu()
    newly = succ & (broken[pos] < 0)  # chunks of a step are disjoint: the same when applied
    return {
        "success": succ,
        "first_success": res.first_success.cpu().long(),
        "margin": res.margin.detach().float().cpu(),
        "loss": res.loss.detach().float().cpu(),
        "entropy": res.entropy.detach().float().cpu(),
        "distance": dist.float(),
        "adv": res.x_adv[newly.to(res.x_adv.device)].detach().float().cpu() if keep_examples else None,
        "seconds": time.perf_counter() - t0,
    }


def _apply_chunk(
    records: dict[str, Tensor], broken: Tensor, s: int, pos: Tensor, out: dict[str, Any]
) -> Tensor:
    """Write one chunk's results into the records; return the mask of examples it broke first."""
    records["ran"][s, pos] = True
    for k in ("success", "first_success", "margin", "loss", "entropy", "distance"):
        records[k][s, pos] = out[k]
    newly = out["success"] & (broken[pos] < 0)
    broken[pos[newly]] = s
    return newly


def _fp32_check(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    suite: Suite,
    steps: Sequence[Step],
    clean: dict[str, Tensor],
    broken: Tensor,
    records: dict[str, Tensor],
    mode: Mode,
    batch_size: int,
    seed: int,
    dev: torch.device,
    budget: int,
    allow_large_eps: bool = False,
) -> dict[str, Any]:
    """Re-run a seeded sample of bf16 chunks in float32; count attack outcomes that differ.

    Whole chunks are re-run, with the composition and seed they had in the bf16 run (rebuilt from
    the final ``broken_step`` exactly as a resume does), because a seeded attack's per-example
    noise can depend on the example's place in the batch (APGD, Square, random starts): only the
    same chunk gives a like-for-like comparison. Chunks are drawn in a seeded random order until
    ``budget`` examples are covered; the last one is compared on its first examples only. The
    re-runs are sharded over ranks like the evaluation itself.
    """
    jobs: list[tuple[Step, int, Tensor]] = []
    for step in steps:
        targets = _targets(clean["clean_correct"], broken, step.index, mode)
        for b, i in enumerate(range(0, targets.numel(), batch_size)):
            jobs.append((step, b, targets[i : i + batch_size]))
    order = torch.randperm(len(jobs), generator=torch.Generator().manual_seed(seed)).tolist()
    picked: list[tuple[Step, int, Tensor, int]] = []
    covered = 0
    for j in order:
        if covered >= budget:
            break
        step, b, pos = jobs[j]
        take = min(int(pos.numel()), budget - covered)
        picked.append((step, b, pos, take))
        covered += take
    picked.sort(key=lambda t: (t[0].index, t[1]))

    def rerun(k: int) -> Tensor:
        step, b, pos, take = picked[k]
        attack = _build_attack(suite.entries[step.entry_index], step.eps, step.norm, allow_large_eps)
        xb, yb = x[pos].to(dev), y[pos].to(dev)
        res = _run_chunk(attack, net, xb, yb, chunk_seed(seed, step.eps, step.label, b))
        return res.success.cpu().bool()[:take]

    fp32_success = sharded_map(rerun, range(len(picked)))
    per_row: dict[str, dict[str, int]] = {}
    checked = disagree = 0
    for (step, _b, pos, take), ok32 in zip(picked, fp32_success, strict=True):
        bf16 = records["success"][step.index, pos[:take]]
        diff = int((bf16 != ok32).sum())
        row = per_row.setdefault(step.label, {"checked": 0, "disagree": 0})
        row["checked"] += take
        row["disagree"] += diff
        checked += take
        disagree += diff
    return {"checked": checked, "disagree": disagree, "chunks": len(picked), "per_row": per_row}


def _run_chunk(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Any:
    """Run ``attack`` on one chunk with a fixed seed (attack generator and torch's global RNG)."""
    attack.seed = seed
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return attack(model, x, y, return_info=True)


def _cum_acc(clean_correct: Tensor, broken: Tensor, step: int) -> float:
    ok = clean_correct & ~((broken >= 0) & (broken <= step))
    return float(ok.sum()) / max(1, ok.numel())


def _commit(
    state: EvalState,
    clean: dict[str, Tensor],
    records: dict[str, Tensor],
    broken: Tensor,
    seconds: list[float],
    step: int,
    chunk: int,
) -> None:
    tensors = {**clean, **{f"step_{k}": v for k, v in records.items()}, "broken_step": broken}
    state.commit(tensors, {"step": step, "chunk": chunk, "seconds": seconds})


_ADV_NAME = re.compile(r"s(\d+)-b(\d+)\.safetensors\Z")


def _restore_adv(state: EvalState, adv_x: Tensor, broken: Tensor, step: int, chunk: int) -> None:
    """Load the adversarial examples of every committed chunk; check none is missing."""
    have = torch.zeros(broken.shape[0], dtype=torch.bool)
    folder = Path(state.path) / "adv"
    for p in sorted(folder.glob("s*-b*.safetensors")) if folder.is_dir() else []:
        m = _ADV_NAME.match(p.name)
        if not m:
            continue
        s, b = int(m.group(1)), int(m.group(2))
        if (s, b) >= (step, chunk):
            continue  # written by a chunk that never committed: it will be redone
        got = state.read_adv(s, b)
        if got is None:
            continue
        idx, xa = got
        adv_x[idx] = xa.to(adv_x.dtype)
        have[idx] = True
    missing = (broken >= 0) & ~have
    if bool(missing.any()):
        raise ConfigError(
            f"resume state {state.path} lacks the adversarial examples of {int(missing.sum())} "
            "examples; delete the state directory and start again"
        )
