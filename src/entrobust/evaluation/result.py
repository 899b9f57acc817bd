"""The outcome of :func:`~entrobust.evaluation.evaluate`: accuracies, per-example records and the
adversarial examples found (SPEC §8 "Evaluation records").

Everything is kept per *step* — one (ε, attack) pair of the cascade — and per example, so every
number in a table can be traced back to the examples behind it. ``to_dict()`` gives JSON,
``table()`` a readable text table, ``save()``/``load()`` a JSON + safetensors pair.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from entrobust.errors import ConfigError, NotEvaluatedError
from entrobust.io import atomic_write_bytes, atomic_write_json

__all__ = ["STEP_FIELDS", "EvalResult", "Step", "format_eps"]

#: per-step, per-example record tensors (shape ``(S, N)``); NaN / -1 / False where not run
STEP_FIELDS: tuple[str, ...] = ("ran", "success", "first_success", "margin", "loss", "entropy", "distance")
#: per-example clean records (shape ``(N,)``)
CLEAN_FIELDS: tuple[str, ...] = ("clean_correct", "clean_margin", "clean_loss", "clean_entropy")
_TOL = 1e-9


def format_eps(eps: float) -> str:
    """``8/255`` for multiples of 1/255 that are not round decimals, else ``%g``."""
    k = round(eps * 255)
    if k != 0 and abs(k / 255 - eps) < 1e-9 and len(f"{eps:g}") > 5:
        return f"{k}/255"
    return f"{eps:g}"


@dataclass(frozen=True)
class Step:
    """One (ε, attack) pair of the cascade, in the order it runs."""

    index: int
    eps: float
    eps_index: int  # column in :attr:`EvalResult.eps`
    entry_index: int  # row in the suite
    label: str
    norm: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "eps": self.eps,
            "eps_index": self.eps_index,
            "entry_index": self.entry_index,
            "label": self.label,
            "norm": self.norm,
        }


@dataclass
class EvalResult:
    """Per-example worst-case robustness of a model under a suite of attacks.

    Attributes:
        suite: JSON description of the suite (name + rows) that ran.
        labels: row labels (suite order).
        eps: the ε columns, ascending.
        norm: the evaluation's default norm (rows may override it; see ``steps``).
        mode: ``"cascade"`` (each attack only on points still robust) or ``"independent"``.
        steps: the (ε, attack) steps in the order they ran.
        indices: ``(N,)`` dataset indices of the evaluated examples.
        y: ``(N,)`` labels.
        clean: ``clean_correct`` (bool), ``clean_margin``, ``clean_loss``, ``clean_entropy``, each ``(N,)``.
        records: ``STEP_FIELDS`` → ``(S, N)`` tensors: ``ran`` (the step attacked the example),
            ``success`` (it was misclassified at the step's x_adv), ``first_success`` (iteration,
            -1 unknown/never), ``margin`` / ``loss`` / ``entropy`` at x_adv, ``distance`` ‖δ‖.
        broken_step: ``(N,)`` the first step that fooled the example (-1: never).
        adv_x: ``(N, C, H, W)`` the adversarial example of that step (zeros where none), or None.
        seconds: wall time per step; ``meta``: anything else (dataset, seed, batch size, ...).
    """

    suite: dict[str, Any]
    labels: list[str]
    eps: list[float]
    norm: str
    mode: str
    steps: list[Step]
    indices: Tensor
    y: Tensor
    clean: dict[str, Tensor]
    records: dict[str, Tensor]
    broken_step: Tensor
    adv_x: Tensor | None = None
    seconds: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ basic numbers
    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def clean_accuracy(self) -> float:
        return _frac(self.clean["clean_correct"])

    @property
    def adv_found(self) -> Tensor:
        """``(N,)`` bool: an adversarial example was found (at some step)."""
        return self.broken_step >= 0

    def _step_eps(self) -> Tensor:
        return torch.tensor([s.eps for s in self.steps] + [math.inf], dtype=torch.float64)

    @property
    def attacked_eps(self) -> list[float]:
        """The ε columns (ascending) at which at least one attack ran. A column can have none:
        ``evaluate(model, data, "FGSM_4", eps=[0.3])`` has columns 4/255 and 0.3, but its only
        row fixes ε = 4/255."""
        ran = {s.eps_index for s in self.steps}
        return [e for j, e in enumerate(self.eps) if j in ran]

    def _attacked(self, eps: float | None) -> float:
        """``eps`` (default: the largest attacked ε) if an attack ran there, else raise."""
        attacked = self.attacked_eps
        if eps is None:
            if not attacked:
                raise NotEvaluatedError("no attack ran at any eps: there is no robust accuracy")
            return max(attacked)
        e = float(eps)
        if any(abs(a - e) <= _TOL for a in attacked):
            return e
        ran = ", ".join(f"{s.label} at {format_eps(s.eps)}" for s in self.steps) or "none"
        raise NotEvaluatedError(
            f"no attack ran at eps {format_eps(e)}, so there is no robust accuracy there "
            f"(attacks that ran: {ran}); a fixed-eps row (FGSM_4, PGD20-8, ...) runs only at its own eps"
        )

    def robust_mask(self, eps: float | None = None) -> Tensor:
        """``(N,)`` bool: correct and not fooled by any attack at any ε ≤ ``eps`` (default: the
        largest ε at which an attack ran).

        Raises :class:`~entrobust.errors.NotEvaluatedError` when no attack ran at ``eps``: the
        examples' robustness there was never tested, so no mask is returned.
        """
        e = self._attacked(eps)
        se = self._step_eps()
        fooled_eps = se[self.broken_step.clamp(min=-1)]  # index -1 → +inf (never fooled)
        return self.clean["clean_correct"] & ~(fooled_eps <= e + _TOL)

    def robust_accuracy(self, eps: float | None = None) -> float:
        """Worst-case robust accuracy over the suite at ``eps`` (default: the largest ε at which an
        attack ran).

        Raises :class:`~entrobust.errors.NotEvaluatedError`, naming ``eps`` and the attacks that
        did run, when no attack ran at ``eps`` (e.g. ``eps=0.3`` when the suite's only row is
        ``FGSM_4``): the accuracy there was never measured, and the number the cascade would give
        (clean accuracy, or the value at a smaller ε) is no robust accuracy at ``eps``.
        """
        return _frac(self.robust_mask(eps))

    def accuracy_by_eps(self) -> dict[float, float]:
        """Worst-case robust accuracy at every ε column at which an attack ran; columns where no
        attack ran are absent (see :attr:`attacked_eps`)."""
        return {e: self.robust_accuracy(e) for e in self.attacked_eps}

    def step_of(self, label: str, eps: float) -> Step | None:
        """The step that ran row ``label`` at ``eps`` (None when that cell is empty)."""
        for s in self.steps:
            if s.label == label and abs(s.eps - eps) <= _TOL:
                return s
        return None

    def attack_stats(self) -> list[dict[str, Any]]:
        """Per step: ``n_attacked``, ``n_fooled``, ``success_rate`` (on the points it ran on),
        ``accuracy_on_attacked`` (1 − success rate), ``standalone_accuracy`` (fraction of all N
        correct and not fooled by this attack; exact in independent mode, an upper bound in
        cascade mode), ``cumulative_accuracy`` (worst case over every step up to this one)
        and ``seconds``."""
        cc = self.clean["clean_correct"]
        out = []
        for s in self.steps:
            ran = self.records["ran"][s.index]
            succ = self.records["success"][s.index] & ran
            n_att, n_fool = int(ran.sum()), int(succ.sum())
            cum = cc & ~((self.broken_step >= 0) & (self.broken_step <= s.index))
            out.append(
                {
                    **s.to_dict(),
                    "n_attacked": n_att,
                    "n_fooled": n_fool,
                    "success_rate": n_fool / n_att if n_att else 0.0,
                    "accuracy_on_attacked": 1.0 - n_fool / n_att if n_att else 1.0,
                    "standalone_accuracy": _frac(cc & ~succ),
                    "cumulative_accuracy": _frac(cum),
                    "seconds": self.seconds[s.index] if s.index < len(self.seconds) else None,
                }
            )
        return out

    # ------------------------------------------------------------------ per example
    def example_records(self) -> list[dict[str, Any]]:
        """One dict per example: index, label, clean outcome, robust (at the largest ε), the ε
        and row that first fooled it, and at that step (or, if never fooled, at the step with the
        smallest margin) the first-success iteration, margin, loss, entropy and ‖δ‖."""
        out = []
        rec = self.records
        robust = self.robust_mask()
        margin = rec["margin"].clone()
        margin[~rec["ran"]] = math.inf
        for i in range(self.n):
            b = int(self.broken_step[i])
            if b >= 0:
                s: int | None = b
            elif bool(rec["ran"][:, i].any()):
                s = int(margin[:, i].argmin())
            else:
                s = None
            r: dict[str, Any] = {
                "index": int(self.indices[i]),
                "label": int(self.y[i]),
                "clean_correct": bool(self.clean["clean_correct"][i]),
                "clean_margin": float(self.clean["clean_margin"][i]),
                "robust": bool(robust[i]),
                "fooled_eps": self.steps[b].eps if b >= 0 else None,
                "fooled_by": self.steps[b].label if b >= 0 else None,
                "n_attacks": int(rec["ran"][:, i].sum()),
            }
            if s is not None:
                r.update(
                    step=s,
                    eps=self.steps[s].eps,
                    attack=self.steps[s].label,
                    success=bool(rec["success"][s, i]),
                    first_success=int(rec["first_success"][s, i]),
                    margin=_num(rec["margin"][s, i]),
                    loss=_num(rec["loss"][s, i]),
                    entropy=_num(rec["entropy"][s, i]),
                    distance=_num(rec["distance"][s, i]),
                )
            out.append(r)
        return out

    # ------------------------------------------------------------------ output
    def to_dict(self, per_example: bool = True) -> dict[str, Any]:
        """JSON-able summary: accuracies per ε and per step, configuration, optional records."""
        d: dict[str, Any] = {
            "suite": self.suite,
            "norm": self.norm,
            "mode": self.mode,
            "eps": self.eps,
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": {format_eps(e): a for e, a in self.accuracy_by_eps().items()},
            "robust_accuracy_by_eps": [[e, a] for e, a in self.accuracy_by_eps().items()],
            "eps_without_attack": [e for e in self.eps if e not in self.attacked_eps],
            "attacks": self.attack_stats(),
            "total_seconds": sum(self.seconds),
            "meta": self.meta,
        }
        if per_example:
            d["examples"] = self.example_records()
        return d

    def table(self, digits: int = 2) -> str:
        """A text table: rows = attacks, columns = ε, plus clean and worst-case rows (in %).

        In cascade mode a cell is the worst-case accuracy after that row at that ε (later rows
        only attack what earlier rows left robust); in independent mode it is the row's own
        accuracy. Empty cells: the row does not run at that ε; a column where no row runs shows
        "no attack ran" as its worst case, never a number.
        """
        cols = [f"eps={format_eps(e)}" for e in self.eps]
        stats = {(s["label"], s["eps_index"]): s for s in self.attack_stats()}
        key = "cumulative_accuracy" if self.mode == "cascade" else "standalone_accuracy"
        rows: list[list[str]] = [["clean"] + [f"{100 * self.clean_accuracy:.{digits}f}"] * len(cols)]
        for label in self.labels:
            cells = []
            for j in range(len(self.eps)):
                st = stats.get((label, j))
                cells.append("" if st is None else f"{100 * st[key]:.{digits}f}")
            rows.append([label, *cells])
        by_eps = self.accuracy_by_eps()
        rows.append(
            ["worst case"]
            + [f"{100 * by_eps[e]:.{digits}f}" if e in by_eps else "no attack ran" for e in self.eps]
        )
        head = ["attack", *cols]
        widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]

        def fmt(r: list[str]) -> str:
            cells = zip(r, widths, strict=True)
            return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(cells))

        what = "worst-case accuracy after each row" if self.mode == "cascade" else "accuracy per row"
        title = (
            f"suite {self.suite.get('name', '?')} | {self.norm} | {self.n} examples | {self.mode} ({what}, %)"
        )
        rule = "-" * len(fmt(head))
        lines = [title, fmt(head), rule, fmt(rows[0]), *(fmt(r) for r in rows[1:-1]), rule, fmt(rows[-1])]
        # the evaluation's own alarms (randomized model, Square beating the gradient attacks, an
        # audit that failed) are printed with the numbers they qualify, never only logged
        lines += [f"WARNING: {note}" for note in self.meta.get("warnings", [])]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<stem>.json`` (summary + configuration) and ``<stem>.safetensors`` (every
        per-example tensor and the adversarial examples) atomically; return the JSON path."""
        stem = Path(path)
        if stem.suffix in (".json", ".safetensors"):
            stem = stem.with_suffix("")
        tensors = {
            "indices": self.indices,
            "y": self.y,
            "broken_step": self.broken_step,
            **self.clean,
            **{f"step_{k}": v for k, v in self.records.items()},
        }
        if self.adv_x is not None:
            tensors["adv_x"] = self.adv_x
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        atomic_write_bytes(
            stem.with_suffix(".safetensors"), st_save(tensors, metadata={"format": "entrobust-eval"})
        )
        doc = self.to_dict(per_example=False)
        doc.update(
            format="entrobust-eval",
            labels=self.labels,
            steps=[s.to_dict() for s in self.steps],
            seconds=self.seconds,
            tensors=stem.with_suffix(".safetensors").name,
        )
        return atomic_write_json(stem.with_suffix(".json"), doc)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """Read a result written by :meth:`save`."""
        stem = Path(path)
        if stem.suffix in (".json", ".safetensors"):
            stem = stem.with_suffix("")
        try:
            doc = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
            tensors = st_load(stem.with_suffix(".safetensors").read_bytes())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read evaluation result {stem}: {err}") from None
        if doc.get("format") != "entrobust-eval":
            raise ConfigError(f"{stem}.json is not an entrobust evaluation result")
        return cls(
            suite=doc["suite"],
            labels=list(doc["labels"]),
            eps=[float(e) for e in doc["eps"]],
            norm=doc["norm"],
            mode=doc["mode"],
            steps=[Step(**s) for s in doc["steps"]],
            indices=tensors["indices"],
            y=tensors["y"],
            clean={k: tensors[k] for k in CLEAN_FIELDS},
            records={k: tensors[f"step_{k}"] for k in STEP_FIELDS},
            broken_step=tensors["broken_step"],
            adv_x=tensors.get("adv_x"),
            seconds=[float(s) for s in doc.get("seconds", [])],
            meta=dict(doc.get("meta", {})),
        )


def _frac(mask: Tensor) -> float:
    n = mask.numel()
    return float(mask.sum()) / n if n else 0.0


def _num(v: Tensor) -> float | None:
    f = float(v)
    return None if math.isnan(f) else f
