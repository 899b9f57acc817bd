"""Evidence-driven escalation: which attacks to add to an evaluation after an audit flagged it.

:func:`escalation` maps an audit report (its failing and warning checks) and a stochasticity probe
to the suite rows that see through what the evidence points at (Athalye, Carlini & Wagner 2018,
*Obfuscated Gradients Give a False Sense of Security*; Croce & Hein 2020, AutoAttack):

=====================================================  ===============================================
evidence                                               added rows
=====================================================  ===============================================
always (the documented default of ``--adaptive``)      Square, 5,000 queries (gradient-free)
randomized model (``determinism`` fails, or a probe)   ``autoattack-rand``: APGD-CE/-DLR with EOT,
                                                       scored over draws (Athalye et al. §4.3)
``gradients`` / ``loss-gap`` warn or fail              margin losses: ``apgd-dlr``, ``cw-pgd``
                                                       (100 steps) (Carlini & Wagner 2017; Croce &
                                                       Hein 2020 §3)
``square`` / ``random-search`` warn or fail            Square with 4× the queries (20,000) and
                                                       2 restarts instead of the default row
``strong-attack`` warn or fail                         ``autoattack-standard``
``steps-curve`` / ``single-vs-multi`` /                ``apgd-ce`` with 500 iterations and
``eps-curve`` / ``unbounded`` warn or fail             2 restarts (an attack that has converged)
``transfer-gap`` warn or fail, surrogate known         black-box transfer PGD from the surrogate
                                                       (RU §5.2)
a parameter-free submodule with a zero / missing       no row: the advice ``--bpda NAME`` (BPDA,
input gradient (:func:`nondifferentiable_modules`)     Athalye et al. §4.1)
=====================================================  ===============================================

The evaluation that runs the rows reports the per-example worst case over every row, the
original ones included. :func:`broken_indices` reads which test points a stored evaluation already
broke at a given ε, so the audit (``audit(..., known_broken=...)``) and the escalation attack only
what is still robust.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError

__all__ = [
    "DEFAULT_ROWS",
    "Escalation",
    "broken_indices",
    "escalation",
    "nondifferentiable_modules",
    "stored_accuracy",
]

#: added by ``--adaptive`` whatever the evidence: gradient-free, so masking cannot hide from it
SQUARE_ROW = "square:n_queries=5000:p_init=0.8"
SQUARE_MORE_ROW = "square:n_queries=20000:p_init=0.8:restarts=2"
DEFAULT_ROWS: tuple[str, ...] = (SQUARE_ROW,)
MARGIN_ROWS: tuple[str, ...] = ("apgd-dlr", "cw-pgd:steps=100")
LONG_ROW = "apgd-ce:n_iter=500:restarts=2"
_GRADIENT = ("gradients", "loss-gap")
_SEARCH = ("square", "random-search")
_CONVERGENCE = ("steps-curve", "single-vs-multi", "eps-curve", "unbounded")


@dataclass(frozen=True)
class Escalation:
    """What :func:`escalation` decided: suite rows to add (``rows``, suite-string items), whether a
    black-box transfer row is wanted (``transfer``: needs a surrogate model), one reason per
    decision and advice the caller must act on (a flag to pass)."""

    rows: tuple[str, ...] = ()
    transfer: bool = False
    reasons: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    evidence: dict[str, str] = field(default_factory=dict)

    def suite(self, base: str) -> str:
        """``base`` plus the added rows (rows already in ``base`` are not repeated)."""
        have = {s.strip() for s in base.split(",")}
        return ",".join([base, *(r for r in self.rows if r not in have)])


def _statuses(audit: Any) -> dict[str, str]:
    """check name → status of an :class:`AuditReport` or its ``to_dict()``."""
    if audit is None:
        return {}
    checks = audit.get("checks", []) if isinstance(audit, Mapping) else getattr(audit, "checks", [])
    out: dict[str, str] = {}
    for c in checks:
        name = c.get("name") if isinstance(c, Mapping) else c.name
        status = c.get("status") if isinstance(c, Mapping) else c.status
        out[str(name)] = str(status)
    return out


def escalation(
    audit: Any = None,
    *,
    stochastic: bool = False,
    surrogate: bool = False,
    nondifferentiable: Sequence[str] = (),
    bpda: str | None = None,
) -> Escalation:
    """The rows to add to an evaluation, from the evidence (see the module table).

    Args:
        audit: an :class:`~entrobust.diagnostics.AuditReport`, its ``to_dict()`` (a stored audit)
            or None (no audit: only the probe's evidence counts).
        stochastic: the model gave different logits for the same input (a probe, e.g.
            :func:`entrobust.attacks.engine.is_stochastic`); a failed ``determinism`` check counts
            the same.
        surrogate: a normally trained surrogate model is at hand (a transfer row can run).
        nondifferentiable: submodules whose input gradient is zero or missing
            (:func:`nondifferentiable_modules`).
        bpda: the submodule already wrapped in BPDA (``--bpda``), if any.
    """
    st = _statuses(audit)
    bad = {k: v for k, v in st.items() if v in ("warn", "fail")}
    rows: list[str] = []
    reasons: list[str] = []
    advice: list[str] = []
    transfer = False

    def flagged(names: Iterable[str]) -> list[str]:
        return [f"{n} ({bad[n]})" for n in names if n in bad]

    if stochastic or st.get("determinism") == "fail":
        rows.append("autoattack-rand")
        reasons.append(
            "the model is randomized (same input, different logits): autoattack-rand, APGD with EOT "
            "scored over draws (Athalye et al. 2018 §4.3)"
        )
    if flagged(_GRADIENT):
        rows.extend(MARGIN_ROWS)
        reasons.append(
            f"{', '.join(flagged(_GRADIENT))}: the CE gradient is masked or vanishing; margin losses "
            "apgd-dlr and cw-pgd (Carlini & Wagner 2017; Croce & Hein 2020 §3)"
        )
    if flagged(_SEARCH):
        rows.append(SQUARE_MORE_ROW)
        reasons.append(
            f"{', '.join(flagged(_SEARCH))}: gradient-free search broke points the gradient attacks "
            "could not; Square with 20,000 queries and 2 restarts"
        )
    else:
        rows.append(SQUARE_ROW)
        reasons.append("default: Square with 5,000 queries (gradient-free, Andriushchenko et al. 2020)")
    if flagged(["strong-attack"]):
        rows.append("autoattack-standard")
        reasons.append(
            f"{', '.join(flagged(['strong-attack']))}: a stronger attack found more than the reported "
            "one; AutoAttack standard (Croce & Hein 2020)"
        )
    if flagged(_CONVERGENCE):
        rows.append(LONG_ROW)
        reasons.append(
            f"{', '.join(flagged(_CONVERGENCE))}: the gradient attack has not converged; APGD-CE with "
            "500 iterations and 2 restarts"
        )
    if flagged(["transfer-gap"]):
        if surrogate:
            transfer = True
            reasons.append(
                f"{', '.join(flagged(['transfer-gap']))}: black-box transfer PGD from the normally "
                "trained surrogate (RU §5.2)"
            )
        else:
            advice.append(
                "transfer-gap: a black-box attack beat the white-box one; evaluate a transfer row "
                "from a normally trained surrogate (an experiment evaluation with transfer = true)"
            )
    todo = [m for m in nondifferentiable if m != bpda]
    if todo and not bpda:
        advice.append(
            f"submodule {todo[0]!r} has a zero or missing input gradient (a non-differentiable "
            f"preprocessing?): rerun with --bpda {todo[0]} (BPDA, Athalye et al. 2018 §4.1)"
        )
    return Escalation(tuple(dict.fromkeys(rows)), transfer, tuple(reasons), tuple(advice), bad)


def nondifferentiable_modules(model: nn.Module, x: Tensor, *, limit: int = 8) -> list[str]:
    """Names of parameter-free submodules whose output does not pass a gradient to their input.

    One forward of ``x`` with hooks on the outermost parameter-free submodules (preprocessing
    such as quantization, JPEG or a ``detach``): for each, ∂⟨out, r⟩/∂in for a random r is
    computed; a gradient that is missing or exactly zero everywhere while the input requires one
    marks the module (BPDA's target, Athalye et al. 2018 §4.1). Only the first ``limit`` such
    submodules in call order are tested. The model's mode and parameters are untouched.
    """
    candidates: dict[nn.Module, str] = {}
    skip: set[str] = set()
    for name, mod in model.named_modules():
        if not name or any(name.startswith(s + ".") for s in skip):
            continue
        if sum(p.numel() for p in mod.parameters()) == 0:
            candidates[mod] = name
            skip.add(name)
    seen: list[tuple[str, Tensor, Tensor]] = []

    def hook(mod: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        if len(seen) >= limit or not inputs or not isinstance(inputs[0], Tensor):
            return
        if isinstance(out, Tensor) and inputs[0].requires_grad and out.is_floating_point():
            seen.append((candidates[mod], inputs[0], out))

    handles = [m.register_forward_hook(hook) for m in candidates]
    was = model.training
    model.eval()
    bad: list[str] = []
    try:
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            model(xi)
            for name, inp, out in seen:
                r = torch.randn_like(out)
                if not out.requires_grad:
                    bad.append(name)
                    continue
                (g,) = torch.autograd.grad((out * r).sum(), inp, retain_graph=True, allow_unused=True)
                if g is None or not bool(g.ne(0).any()):
                    bad.append(name)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return list(dict.fromkeys(bad))


def broken_indices(source: Any, eps: float, norm: str = "linf") -> Tensor:
    """Dataset indices of the points a stored evaluation already broke at ``eps`` (or below; a point
    misclassified clean counts as broken), as a sorted ``int64`` tensor.

    ``source``: an :class:`~entrobust.evaluation.EvalResult`; a path to a result saved with
    ``EvalResult.save`` / ``entrobust eval --save`` (``.json`` + ``.safetensors``) or written by
    ``entrobust eval --json`` (its per-example ``examples``); or a list of per-example store rows
    ``{"idx", "success"}`` (a stored worst-case row at this ε). Raises :class:`ConfigError` when
    the evaluation has no attack at (``eps``, ``norm``), or no per-example outcomes.
    """
    from entrobust.evaluation.result import EvalResult

    tol = 1e-6
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") == "entrobust-eval":
            source = EvalResult.load(path)
        else:
            return _broken_from_json(doc, eps, norm, path)
    if isinstance(source, EvalResult):
        if source.norm != norm or not any(abs(e - eps) <= tol for e in source.attacked_eps):
            raise ConfigError(
                f"the evaluation ran no attack at {norm} eps={eps:g} "
                f"(its {source.norm} columns: {', '.join(f'{e:g}' for e in source.attacked_eps)})"
            )
        mask = source.robust_mask(eps)
        return source.indices[~mask].to(torch.long).sort().values
    rows = list(source)
    return torch.tensor(sorted(int(r["idx"]) for r in rows if r.get("success")), dtype=torch.long)


def stored_accuracy(path: str | os.PathLike[str], eps: float, norm: str = "linf") -> float:
    """The worst-case robust accuracy at ``eps`` of an evaluation saved by ``entrobust eval --save``
    or ``--json`` (the audit's ``reference_accuracy``); :class:`ConfigError` when it has none."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("norm") == norm:
        for e, acc in doc.get("robust_accuracy_by_eps", []):
            if abs(float(e) - eps) <= 1e-6:
                return float(acc)
    raise ConfigError(f"{path} has no robust accuracy at {norm} eps={eps:g}")


def _broken_from_json(doc: Mapping[str, Any], eps: float, norm: str, path: Path) -> Tensor:
    examples = doc.get("examples")
    if not examples:
        raise ConfigError(f"{path} has no per-example outcomes (write it with eval --json or --save)")
    attacked = [float(e) for e, _ in doc.get("robust_accuracy_by_eps", [])]
    if doc.get("norm") != norm or not any(abs(e - eps) <= 1e-6 for e in attacked):
        raise ConfigError(f"{path} has no attack at {norm} eps={eps:g}")
    out = []
    for r in examples:
        fooled = r.get("fooled_eps")
        if not r.get("clean_correct", True) or (fooled is not None and float(fooled) <= eps + 1e-6):
            out.append(int(r["index"]))
    return torch.tensor(sorted(out), dtype=torch.long)
