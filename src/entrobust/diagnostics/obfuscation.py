"""Gradient-obfuscation audit: is the reported robustness real, or are the attacks being fooled?

Checks from Athalye, Carlini & Wagner (2018, §3.1 "Identifying obfuscated gradients"), Carlini
et al. (2019, "On evaluating adversarial robustness", §7 checklist) and the sanity checks of RU
§5.2 and App. C (Ju et al. 2020). Each check returns pass / warn / fail with the numbers it used:

===================  =================================================================================
``determinism``      the same input twice must give the same logits; a randomized model is attacked
                     with EOT (Athalye et al. 2018 §4.3) and scored over several draws by every
                     other check, and must be evaluated with ``autoattack-rand``
``loss-gap``         PGD on the margin (CW) loss must not beat PGD on cross-entropy: masking of the CE
                     gradient alone (saturated / smoothed softmax) is otherwise unseen
``square``           the gradient-free Square attack (Andriushchenko et al. 2020) must not break
                     points the gradient attacks could not (AutoAttack ``checks.py``)
``strong-attack``    APGD-CE / APGD-DLR (Croce & Hein 2020), or a stronger stored result, must not
                     find much more than the audit's PGD (a weak attack overstates robustness)
``transfer-gap``     white-box PGD accuracy must not exceed black-box (transfer) PGD accuracy from a
                     normally trained surrogate (RU §5.2: "a clear indication of gradient obfuscation")
``random-search``    among points PGD failed to break, random search (RU App. C.1: 10,000 samples in
                     the ε-ball and on its vertices) must not find adversarial examples
``eps-curve``        accuracy vs ε must fall monotonically and reach ≈ 0 at large ε (RU §5.2, Fig. 1)
``steps-curve``      accuracy vs PGD steps k ∈ {8, …, 256}, step size max(1/510, 2ε/k), must converge
                     (RU §5.2, Fig. 2)
``unbounded``        an unbounded attack (DeepFool ℓ2, then PGD at the largest ε the box allows) must
                     reach 100 % success
``single-vs-multi``  FGSM must not beat PGD (a single step beating many steps means the gradient
                     is locally useless)
``gradients``        fraction of examples whose input gradient of the CE loss is exactly zero
                     (sign-PGD cannot move), near zero relative to the margin's gradient
                     (saturated softmax), or not finite
===================  =================================================================================

Thresholds live in :class:`AuditThresholds` (documented there); every accuracy comparison uses
the tolerance ``max(tolerance, 2/n)`` so that one or two examples of sampling noise never fail a
check. The report passes when no check fails.

Cost: the ε curve and the steps curve each run as one stacked pass (per-example ε; per-example
step size with checkpoints of the longest run of each step size), only clean-correct points are
attacked, and ``known_broken`` hands the audit the points a stored evaluation already broke, which
the random search, Square and the strong attack then skip (``benchmarks/bench_audit.py``).

Under ``torch.distributed`` (``torchrun``) every per-example pass splits its batches round-robin
over the ranks and gathers the per-example outcomes in batch order
(:func:`entrobust.evaluation.sharding.sharded_map`); every attack is seeded with ``seed`` and a
fresh generator per call, so a batch's outcome does not depend on the rank or the world size, and
every rank returns the report a single process would (timings aside). The on-the-fly surrogate is
trained on every rank and rank 0's weights are broadcast; only rank 0 calls ``log``.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust import distributed
from entrobust.attacks import Attack, ThreatModel, build_attack
from entrobust.attacks.base import fp32_attack_math, frozen, margin_of
from entrobust.attacks.engine import ProjectedGradient, accuracy_over_draws
from entrobust.diagnostics._util import DataLike, as_xy, model_device, pyplot
from entrobust.errors import ConfigError
from entrobust.evaluation.robust import clean_correct, robust_correct
from entrobust.evaluation.sharding import on_main, sharded_map
from entrobust.io import atomic_write_text

Status = Literal["pass", "warn", "fail"]

#: the checks :func:`audit` can run, in the order it runs them
AUDIT_CHECKS: tuple[str, ...] = (
    "determinism",
    "gradients",
    "loss-gap",
    "single-vs-multi",
    "transfer-gap",
    "random-search",
    "square",
    "strong-attack",
    "eps-curve",
    "steps-curve",
    "unbounded",
)
T = TypeVar("T")
_ORDER = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class Check:
    """One audit check: its name, status, the evidence numbers and a sentence explaining them."""

    name: str
    status: Status
    evidence: dict[str, Any]
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "evidence": self.evidence,
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class AuditThresholds:
    """Decision thresholds of the audit (accuracies and rates are fractions in [0, 1]).

    * ``tolerance`` — accuracy differences up to ``max(tolerance, 2/n)`` are noise (default 1 pp).
    * ``transfer_fail`` — white-box minus black-box accuracy above this fails; any positive gap
      beyond the tolerance warns (default 2 pp).
    * ``random_search_fail`` — fraction of PGD-robust points broken by random search (or Square)
      above this fails (with at least ``min_fail_hits`` hits); any break warns (default 1 %;
      RU App. C.1 saw 5–15 % on EntM/LS/ADP and 0 % on PAT).
    * ``eps_final_pass`` / ``eps_final_warn`` — accuracy at the largest ε: pass at or below the
      first (default 2 %), warn at or below the second (default 10 %), else fail; a rise between
      consecutive ε above the tolerance warns, above 3× the tolerance fails.
    * ``steps_drop_warn`` — accuracy still falling between the last two step counts by more
      than the tolerance warns, by more than this fails (default 3 pp).
    * ``unbounded_pass`` / ``unbounded_warn`` — success rate of the unbounded attack (defaults
      99 % / 90 %).
    * ``single_step_fail`` — FGSM accuracy this far below PGD accuracy fails; beyond the
      tolerance warns (default 3 pp).
    * ``zero_grad_warn`` / ``zero_grad_fail`` — fraction of exactly-zero or near-zero input
      gradients (defaults 1 % / 5 %); any non-finite gradient fails.
    * ``near_zero_ratio`` — ‖∇CE‖₂ at most this times ‖∇margin‖₂ counts as near zero (1e-30:
      softmax saturated at a margin ≳ 69 nats, far beyond honest models).
    * ``min_fail_hits`` — random search and Square fail only with at least this many broken
      points that are also more than ``random_search_fail`` of the points searched; fewer warn
      (with 25 points, one lucky hit is 4 %: too little evidence to fail).
    * ``loss_gap_fail`` — margin-loss PGD this far below CE-PGD fails (default 3 pp), if the gap
      is also more than ``gap_relative`` (default 20 %) of the CE-PGD accuracy; a smaller gap warns
      (CE-PGD is often a few points weaker than margin-PGD on honest models too).
    * ``strong_gap_fail`` — APGD (or the reference) this far below the audit's gradient attack
      (worst case of CE- and margin-PGD) fails (3 pp, and ``gap_relative`` of it).
    * ``determinism_rtol`` — relative logit change between identical forwards above which the
      model counts as randomized (default 1e-5); ``eot_iter`` / ``draws`` — EOT forwards per
      gradient and scoring draws used for a randomized model (defaults 10 / 10).

    Every comparison ignores differences below 1e-6 (float noise: 0.030000001 is not > 0.03).
    """

    tolerance: float = 0.01
    transfer_fail: float = 0.02
    random_search_fail: float = 0.01
    eps_final_pass: float = 0.02
    eps_final_warn: float = 0.10
    steps_drop_warn: float = 0.03
    unbounded_pass: float = 0.99
    unbounded_warn: float = 0.90
    single_step_fail: float = 0.03
    zero_grad_warn: float = 0.01
    zero_grad_fail: float = 0.05
    near_zero_ratio: float = 1e-30
    min_fail_hits: int = 3
    loss_gap_fail: float = 0.03
    strong_gap_fail: float = 0.03
    gap_relative: float = 0.2
    determinism_rtol: float = 1e-5
    eot_iter: int = 10
    draws: int = 10


@dataclass
class AuditReport:
    """The audit's checks, the two curves and the settings that produced them."""

    checks: list[Check]
    threat: dict[str, Any]
    n: int
    clean_accuracy: float
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> Status:
        """The worst status of any check."""
        worst: Status = "pass"
        for c in self.checks:
            if _ORDER[c.status] > _ORDER[worst]:
                worst = c.status
        return worst

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return self.status != "fail"

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; have: {', '.join(c.name for c in self.checks)}")

    def table(self) -> str:
        """A plain-text table: one line per check with its status and key evidence."""
        t = self.threat
        lines = [
            f"gradient-obfuscation audit: {t['norm']} ε = {t['eps']:.4g}, n = {self.n}, "
            f"clean accuracy {self.clean_accuracy:.4f}",
        ]
        w = max(len(c.name) for c in self.checks) if self.checks else 10
        lines.append(f"{'check'.ljust(w)}  status  evidence")
        lines.append("-" * (w + 60))
        for c in self.checks:
            ev = ", ".join(f"{k}={_fmt(v)}" for k, v in c.evidence.items() if not isinstance(v, list | dict))
            lines.append(f"{c.name.ljust(w)}  {c.status.upper():<6}  {ev}")
        lines.append("-" * (w + 60))
        lines.append(f"overall: {self.status.upper()} ({self.seconds:.1f} s)")
        for c in self.checks:
            if c.status != "pass":
                lines.append(f"  {c.name}: {c.explanation}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "passed": self.passed,
            "threat": self.threat,
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "checks": [c.to_dict() for c in self.checks],
            "curves": self.curves,
            "settings": self.settings,
            "seconds": self.seconds,
        }

    def plot_eps_curve(self, path: str | Path) -> Path:
        """Accuracy vs ε (RU Fig. 1 style)."""
        c = self.curves.get("eps")
        if not c:
            raise ConfigError("this report has no accuracy-vs-ε curve")
        return _line_plot(
            c["eps"],
            c["accuracy"],
            path,
            xlabel=f"ε ({self.threat['norm']})",
            title="Accuracy vs ε (must fall to ≈ 0)",
            mark=float(self.threat["eps"]),
        )

    def plot_steps_curve(self, path: str | Path) -> Path:
        """Accuracy vs number of PGD steps (RU Fig. 2 style), log-2 x axis."""
        c = self.curves.get("steps")
        if not c:
            raise ConfigError("this report has no accuracy-vs-steps curve")
        return _line_plot(
            c["steps"],
            c["accuracy"],
            path,
            xlabel="PGD steps k (step size max(1/510, 2ε/k))",
            title=f"Accuracy vs steps at ε = {self.threat['eps']:.4g} (must converge)",
            logx=True,
        )

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``audit.json``, ``audit_eps.png`` and ``audit_steps.png`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "audit.json"}
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=2, default=_json_default))
        if self.curves.get("eps"):
            paths["eps"] = self.plot_eps_curve(out / "audit_eps.png")
        if self.curves.get("steps"):
            paths["steps"] = self.plot_steps_curve(out / "audit_steps.png")
        return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _line_plot(
    xs: Sequence[float],
    ys: Sequence[float],
    path: str | Path,
    *,
    xlabel: str,
    title: str,
    mark: float | None = None,
    logx: bool = False,
) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
    ax.plot(xs, ys, marker="o")
    if mark is not None:
        ax.axvline(mark, color="C3", linestyle="--", linewidth=1, label="threat ε")
        ax.legend()
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([str(int(v)) for v in xs])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("robust accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- evaluation helpers


def _per_batch(fn: Callable[[Tensor, Tensor], T], x: Tensor, y: Tensor, batch_size: int) -> list[T]:
    """``fn`` on each consecutive batch of ``(x, y)``, in order; under ``torch.distributed`` the
    batches run round-robin on the ranks and every rank gets all results (same as one process,
    because every attack the audit builds is seeded and so does not depend on batch order)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, x.shape[0], batch_size)
    return sharded_map(lambda i: fn(x[i : i + batch_size], y[i : i + batch_size]), starts)


def _still_correct(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> Tensor:
    """Correct by one forward, or by a strict majority of ``draws`` forwards (randomized model)."""
    if draws > 1:
        return accuracy_over_draws(model, x, y, draws) > 0.5
    return model(x).argmax(1).eq(y)


def _correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, draws: int = 1) -> Tensor:
    return clean_correct(model, x, y, batch_size=batch_size, draws=draws)


def _attack_correct(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    draws: int = 1,
    only: Tensor | None = None,
) -> Tensor:
    """Per example: still classified correctly after ``attack`` (clean mistakes count as broken).

    ``only`` (bool, per example): attack just these points and count the others as broken — pass
    the clean-correct mask, whose complement is broken without any attack (a pure saving)."""
    if only is not None:
        mask = torch.zeros(x.shape[0], dtype=torch.bool)
        idx = only.nonzero().squeeze(1)
        if idx.numel():
            mask[idx] = _attack_correct(model, attack, x[idx], y[idx], batch_size, draws)
        return mask
    return robust_correct(model, attack, x, y, batch_size=batch_size, draws=draws)


def _eps_curve(
    model: nn.Module,
    threat: ThreatModel,
    x: Tensor,
    y: Tensor,
    clean: Tensor,
    grid: Sequence[float],
    batch_size: int,
    draws: int,
    pgd_attack: Callable[..., Attack],
    steps: int,
) -> list[float]:
    """Accuracy of ``steps``-step PGD at every ε of ``grid``, each ε attacking every clean-correct
    point independently (a rise between ε values stays visible), all ε in one batched pass: the
    (ε, point) pairs are stacked and each batch is attacked with a per-example ε tensor."""
    idx = clean.nonzero().squeeze(1)
    attacked = [e for e in grid if e > 0]
    ok = torch.zeros(len(attacked), idx.numel(), dtype=torch.bool)
    if idx.numel() and attacked:
        xs = x[idx].repeat(len(attacked), *([1] * (x.dim() - 1)))
        ys = y[idx].repeat(len(attacked))
        es = torch.tensor(attacked, dtype=x.dtype).repeat_interleave(idx.numel())
        dev = model_device(model)

        def one(i: int) -> Tensor:
            xb, yb = xs[i : i + batch_size].to(dev), ys[i : i + batch_size].to(dev)
            t = threat.with_eps(es[i : i + batch_size].to(dev), allow_large_eps=True)
            x_adv = pgd_attack(t, steps=steps)(model, xb, yb)
            with frozen(model, "eval"), torch.no_grad():
                return _still_correct(model, x_adv, yb, draws).cpu()

        parts = sharded_map(one, range(0, xs.shape[0], batch_size))
        ok = torch.cat(parts).view(len(attacked), idx.numel())
    n = max(x.shape[0], 1)
    accs, j = [], 0
    for e in grid:
        if e > 0:
            accs.append(float(ok[j].sum()) / n)
            j += 1
        else:
            accs.append(float(clean.sum()) / n)
    return accs


class _PerExampleStep(ProjectedGradient):
    """The audit's PGD with a step size given per example: the steps curve's configurations,
    whose step sizes differ, stacked in one batch (every other setting as ``pgd``)."""

    def __init__(self, threat: ThreatModel, alpha: Tensor, **kwargs: Any) -> None:
        super().__init__(threat, **kwargs)
        self.alpha = alpha

    def step_sizes(self, threat: ThreatModel, x: Tensor) -> Tensor:
        return self.alpha.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))


def _steps_curve(
    model: nn.Module,
    threat: ThreatModel,
    x: Tensor,
    y: Tensor,
    clean: Tensor,
    steps_grid: Sequence[int],
    sizes: Sequence[float],
    batch_size: int,
    draws: int,
    seed: int,
    eot: int,
) -> list[float]:
    """Accuracy after ``k``-step PGD (step size ``sizes[i]`` for ``steps_grid[i]``) for every k, in
    one pass: PGD keeps no state but the iterate (uniform start, no momentum, last iterate), so the
    k-step result of a step size is the k-th iterate of a longer run with that step size. The
    distinct step sizes' runs are stacked in one batch (longest first) and a run leaves the batch
    after its last checkpoint, so each step size costs its longest k alone instead of the sum of
    its k. Every point starts where the separate ``pgd`` call would start it (the seeded start
    pattern is shared by the batch), so the numbers are those of separate calls up to float
    rounding. Only clean-correct points are attacked (the others count as broken); a pass takes
    ``batch_size`` points, so the model sees up to (number of step sizes) × ``batch_size`` rows."""
    runs: dict[float, list[int]] = {}
    for k, size in zip(steps_grid, sizes, strict=True):
        runs.setdefault(float(size), []).append(int(k))
    order = sorted(runs, key=lambda a: -max(runs[a]))  # longest run first: active rows are a prefix
    last = [max(runs[a]) for a in order]
    marks = sorted({k for ks in runs.values() for k in ks})
    idx = clean.nonzero().squeeze(1)
    got: dict[tuple[float, int], Tensor] = {}
    if idx.numel():
        dev = model_device(model)
        chunk = batch_size  # points per pass; the model sees up to len(order) × chunk rows

        def one(i: int) -> dict[tuple[float, int], Tensor]:
            xb, yb = x[idx[i : i + chunk]].to(dev), y[idx[i : i + chunk]].to(dev)
            m = xb.shape[0]
            xs = xb.repeat(len(order), *([1] * (xb.dim() - 1)))
            ys = yb.repeat(len(order))
            alpha = torch.tensor(order, dtype=xs.dtype, device=dev).repeat_interleave(m)
            atk = _PerExampleStep(threat, alpha, steps=1, seed=seed, eot_iter=eot)
            out: dict[tuple[float, int], Tensor] = {}
            with frozen(model, "eval"), fp32_attack_math(model, xs) as net:
                with torch.enable_grad():
                    x_adv = atk.start(threat, xs, atk.generator()).detach()
                done = 0
                for k in marks:
                    rows = m * sum(1 for n in last if n >= k)  # runs still going at step k
                    seg = _PerExampleStep(threat, alpha[:rows], steps=k - done, seed=seed, eot_iter=eot)
                    with torch.enable_grad():
                        x_adv = seg.run(
                            net, xs[:rows], ys[:rows], None, threat, seg.objective(False), None,
                            x_start=x_adv[:rows],
                        )[0].detach()  # fmt: skip
                    done = k
                    x_out = threat.project(x_adv, xs[:rows])
                    with torch.no_grad():
                        for j, a in enumerate(order):
                            if k in runs[a]:
                                part = slice(j * m, (j + 1) * m)
                                out[(a, k)] = _still_correct(net, x_out[part], yb, draws).cpu()
            return out

        parts = sharded_map(one, range(0, idx.numel(), chunk))
        for key in parts[0] if parts else ():
            got[key] = torch.cat([pt[key] for pt in parts])
    n = max(x.shape[0], 1)
    if not idx.numel():
        return [0.0] * len(steps_grid)
    return [float(got[(float(a), int(k))].sum()) / n for k, a in zip(steps_grid, sizes, strict=True)]


def _acc(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else float("nan")


def _max_eps(threat: ThreatModel, x: Tensor) -> float:
    """The largest useful ε: the box diameter in the threat norm (1 for ℓ∞, √D for ℓ2 on [0, 1])."""
    span = threat.upper - threat.lower
    return span if threat.norm == "linf" else span * math.sqrt(x[0].numel())


def _over(value: float, limit: float) -> bool:
    """``value > limit`` beyond float noise: 0.030000001 does not exceed 0.03."""
    return value > limit + 1e-6


def _gap_status(gap: float, fail: float, tol: float, relative: float = 0.0, base: float = 0.0) -> Status:
    """fail beyond ``max(fail, tol)`` and beyond ``relative · base``, warn beyond ``tol``, else pass."""
    if _over(gap, max(fail, tol)) and _over(gap, relative * base):
        return "fail"
    return "warn" if _over(gap, tol) else "pass"


def _hits_status(hits: int, searched: int, th: AuditThresholds) -> Status:
    """pass with no hit; fail with ≥ ``min_fail_hits`` hits that are also more than
    ``random_search_fail`` of the searched points; anything in between warns."""
    if hits == 0:
        return "pass"
    if hits >= th.min_fail_hits and _over(hits / max(searched, 1), th.random_search_fail):
        return "fail"
    return "warn"


def input_gradient_stats(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 200, near_zero_ratio: float = 1e-30
) -> dict[str, float]:
    """Fractions of examples whose ∇ₓCE is exactly zero, not finite, or *near zero*, and the median
    gradient norm.

    Near zero: finite and non-zero, but ‖∇ₓCE‖₂ ≤ ``near_zero_ratio`` · ‖∇ₓ margin‖₂ (margin
    z_y − max_{i≠y} z_i), or below 1e-12 where the margin gradient itself vanishes. Saturated
    softmax (logits scaled up, margins ≳ 70 in float32) makes ∇CE ≈ e^{−margin}·∇margin: the
    logits still respond to the input but the CE gradient is lost in underflow, so normalized
    (ℓ2, momentum) steps stall and partly-flushed pixels give sign 0 (Athalye et al. 2018 §3.1,
    vanishing gradients; Croce & Hein 2020 §4 motivate DLR by the same effect).
    ``tiny_fraction`` (absolute ‖∇ₓCE‖₂ < 1e-12) is kept for comparison.
    """
    dev = model_device(model)

    def one(xb: Tensor, yb: Tensor) -> tuple[int, int, int, int, Tensor]:
        xb = xb.to(dev).clone().requires_grad_(True)
        yb = yb.to(dev)
        with torch.enable_grad():
            logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb, reduction="sum")
            (g,) = torch.autograd.grad(loss, xb, retain_graph=True)
            (gm,) = torch.autograd.grad(margin_of(logits, yb).sum(), xb)
        flat = g.flatten(1)
        finite = torch.isfinite(flat).all(dim=1)
        zero = finite & flat.eq(0).all(dim=1)
        nrm = flat.norm(dim=1)
        mnrm = gm.flatten(1).norm(dim=1)
        near = finite & ~zero & ((nrm <= near_zero_ratio * mnrm) | (nrm < 1e-12) & (mnrm < 1e-12))
        return (
            int(zero.sum()),
            int((~finite).sum()),
            int((finite & (nrm < 1e-12)).sum()),
            int(near.sum()),
            nrm[finite].cpu(),
        )

    with frozen(model, "eval"):
        parts = _per_batch(one, x, y, batch_size)
    n = max(x.shape[0], 1)
    norms = [p[4] for p in parts]
    allnorms = torch.cat(norms) if norms else torch.zeros(0)
    return {
        "zero_fraction": sum(p[0] for p in parts) / n,
        "nonfinite_fraction": sum(p[1] for p in parts) / n,
        "tiny_fraction": sum(p[2] for p in parts) / n,
        "near_zero_fraction": sum(p[3] for p in parts) / n,
        "median_norm": float(allnorms.median()) if allnorms.numel() else float("nan"),
    }


def determinism_stats(
    model: nn.Module, x: Tensor, repeats: int = 4, batch_size: int = 200
) -> dict[str, float]:
    """Feed the same inputs ``repeats`` times: the largest relative logit change and the fraction
    of examples whose prediction changes (a deterministic model gives 0 and 0).

    A randomized model (noise, random resizing / shifts, dropout at test time) has *stochastic
    gradients* (Athalye et al. 2018 §2.2, §4.3): one forward is one draw, a one-draw attack
    follows noise and a one-draw score can be lucky, so it must be attacked with EOT and scored
    over several draws.
    """
    dev = model_device(model)
    xb = x[:batch_size].to(dev)
    with frozen(model, "eval"), torch.no_grad():
        first = model(xb).float()
        change, flips = 0.0, torch.zeros(xb.shape[0], dtype=torch.bool, device=first.device)
        for _ in range(max(1, repeats - 1)):
            again = model(xb).float()
            scale = first.abs().amax(dim=1).clamp_min(1e-6)
            change = max(change, float(((again - first).abs().amax(dim=1) / scale).max()))
            flips |= again.argmax(1).ne(first.argmax(1))
    return {
        "repeats": repeats,
        "examples": int(xb.shape[0]),
        "max_relative_change": change,
        "prediction_change_fraction": _acc(flips.cpu()),
    }


# ---------------------------------------------------------------------------------------- audit


def audit(
    model: nn.Module,
    data: DataLike,
    threat: ThreatModel,
    surrogate: nn.Module | None = None,
    *,
    n: int = 200,
    batch_size: int = 200,
    pgd_steps: int = 20,
    random_search_samples: int = 10_000,
    random_search_n: int = 25,
    curve_n: int = 100,
    eps_grid: Sequence[float] | None = None,
    eps_factors: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0),
    curve_steps: int = 20,
    steps_grid: Sequence[int] = (8, 16, 32, 64, 128, 256),
    train_data: DataLike | None = None,
    surrogate_epochs: int = 3,
    thresholds: AuditThresholds | None = None,
    checks: Sequence[str] | None = None,
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
    eot_iter: int | None = None,
    draws: int | None = None,
    square_queries: int = 1000,
    square_n: int = 50,
    strong_iter: int = 50,
    reference_accuracy: float | None = None,
    known_broken: Tensor | Sequence[int] | None = None,
) -> AuditReport:
    """Run the gradient-obfuscation checks on ``model`` over ``n`` examples of ``data``.

    Args:
        model: the classifier under audit ([0, 1] input, normalization inside). To audit a BPDA
            attack on a non-differentiable preprocessing, pass ``with_bpda(model, name)``
            (:mod:`entrobust.attacks.bpda`).
        data: a :class:`~entrobust.data.TensorData` or ``(x, y)``; a seeded random subset of
            ``n`` examples is used (datasets sorted by class stay balanced).
        threat: the threat model the robustness claim is made for.
        surrogate: a normally trained model for the black-box transfer check; when ``None`` one
            is trained on the fly (:func:`~entrobust.diagnostics.surrogate.train_surrogate`) on
            ``train_data`` (default: ``data`` itself) for ``surrogate_epochs`` epochs.
        pgd_steps: steps of the reference white-box PGD (uniform start, step 2.5·ε/steps), run
            with the CE loss and with the margin loss, and of the transfer PGD.
        random_search_samples: samples per point of the random search (RU: 10,000), run on at
            most ``random_search_n`` points that the gradient attacks failed to break.
        curve_n: examples for the ε and steps curves and the unbounded attack.
        eps_grid: explicit ε values for the ε curve; default ``eps_factors``·ε capped at the box
            diameter. curve_steps: PGD steps at each ε.
        steps_grid: step counts of the steps curve (RU: 8 … 256).
        checks: run only these checks (names as in the module docstring); default all.
        seed: seeds the subset, the surrogate, every attack and torch's RNG during the audit (so
            even a randomized model gives the same report for the same seed).
        log: called with a progress line before each stage (e.g. ``print``).
        eot_iter: forwards averaged per gradient in every gradient attack (EOT, Athalye et al.
            2018 §4.3); default: 10 when the model is randomized, else 1.
        draws: forwards per robustness decision (strict majority); default 10 when randomized.
        square_queries / square_n: budget and points of the Square check.
        strong_iter: APGD iterations of the strong-attack check.
        reference_accuracy: robust accuracy at this ε from the strongest stored evaluation
            (e.g. AutoAttack), compared with the audit's gradient attack in ``strong-attack``.
        known_broken: indices into ``data`` of points a stored evaluation at this threat already
            broke (:func:`entrobust.evaluation.adaptive.broken_indices`). They are reused, not
            attacked again: random search and Square skip them (a broken point is no evidence
            about where gradients fail) and ``strong-attack`` counts them as broken by the
            stronger attack without running APGD on them — the evaluation's adversarial
            examples seed its reference. The other checks are unchanged.

    Returns:
        an :class:`AuditReport`; ``report.passed`` is False when any check fails.
    """
    dev = model_device(model)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        return _audit(
            model,
            data,
            threat,
            surrogate,
            n=n,
            batch_size=batch_size,
            pgd_steps=pgd_steps,
            random_search_samples=random_search_samples,
            random_search_n=random_search_n,
            curve_n=curve_n,
            eps_grid=eps_grid,
            eps_factors=eps_factors,
            curve_steps=curve_steps,
            steps_grid=steps_grid,
            train_data=train_data,
            surrogate_epochs=surrogate_epochs,
            thresholds=thresholds,
            checks=checks,
            seed=seed,
            log=log,
            eot_iter=eot_iter,
            draws=draws,
            square_queries=square_queries,
            square_n=square_n,
            strong_iter=strong_iter,
            reference_accuracy=reference_accuracy,
            known_broken=known_broken,
        )


def _audit(
    model: nn.Module,
    data: DataLike,
    threat: ThreatModel,
    surrogate: nn.Module | None,
    *,
    n: int,
    batch_size: int,
    pgd_steps: int,
    random_search_samples: int,
    random_search_n: int,
    curve_n: int,
    eps_grid: Sequence[float] | None,
    eps_factors: Sequence[float],
    curve_steps: int,
    steps_grid: Sequence[int],
    train_data: DataLike | None,
    surrogate_epochs: int,
    thresholds: AuditThresholds | None,
    checks: Sequence[str] | None,
    seed: int,
    log: Callable[[str], Any] | None,
    eot_iter: int | None,
    draws: int | None,
    square_queries: int,
    square_n: int,
    strong_iter: int,
    reference_accuracy: float | None,
    known_broken: Tensor | Sequence[int] | None = None,
) -> AuditReport:
    t0 = time.perf_counter()
    th = thresholds or AuditThresholds()
    say = log if log is not None and distributed.is_main() else (lambda _msg: None)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module  # ranks run different batches: DDP's per-forward collectives would hang
    valid = AUDIT_CHECKS
    wanted = list(valid) if checks is None else list(checks)
    unknown = sorted(set(wanted) - set(valid))
    if unknown:
        raise ConfigError(f"unknown audit check(s) {unknown}; valid: {', '.join(valid)}")
    if threat.is_zero() or isinstance(threat.eps, Tensor):
        raise ConfigError("the audit needs a threat model with one scalar ε > 0")
    for label, value in (("eot_iter", eot_iter), ("draws", draws)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")
    eps = float(threat.eps)

    x_all, y_all = as_xy(data)
    if x_all.shape[0] == 0:
        raise ConfigError("the audit needs at least one example")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x_all.shape[0], generator=g)[: max(1, n)]
    x, y = x_all[perm], y_all[perm]
    n_used = int(x.shape[0])
    # points a stored evaluation at this threat already broke: reused, never searched again
    known = torch.zeros(n_used, dtype=torch.bool)
    if known_broken is not None:
        kb = torch.as_tensor(known_broken, dtype=torch.long).flatten()
        known = torch.isin(perm, kb)
    xc, yc = x[: max(1, min(curve_n, n_used))], y[: max(1, min(curve_n, n_used))]
    tol = max(th.tolerance, 2.0 / n_used)
    tol_c = max(th.tolerance, 2.0 / xc.shape[0])
    results: list[Check] = []
    curves: dict[str, dict[str, list[float]]] = {}

    timings: dict[str, float] = {}
    stage_name, stage_start = "setup", time.perf_counter()

    def mark(name: str) -> None:  # close the running stage, open the next
        nonlocal stage_name, stage_start
        now = time.perf_counter()
        timings[stage_name] = timings.get(stage_name, 0.0) + now - stage_start
        stage_name, stage_start = name, now

    say(f"audit: {n_used} examples, {threat.norm} ε = {eps:.4g}")

    # --- determinism first: a randomized model is attacked with EOT and scored over draws
    det = determinism_stats(model, x, batch_size=batch_size)
    stochastic = det["max_relative_change"] > th.determinism_rtol
    eot = eot_iter if eot_iter is not None else (th.eot_iter if stochastic else 1)
    nd = draws if draws is not None else (th.draws if stochastic else 1)
    if "determinism" in wanted:
        flips = det["prediction_change_fraction"]
        # always fail when randomized: a one-draw evaluation of it is unreliable whatever this
        # audit's seed happens to show (the verdict must not depend on the draws)
        status: Status = "fail" if stochastic else "pass"
        results.append(
            Check(
                "determinism",
                status,
                {**det, "stochastic": stochastic, "eot_iter": eot, "draws": nd},
                f"the same input gave logits differing by up to {det['max_relative_change']:.3g} "
                f"(relative) and a different prediction for {flips:.1%} of examples: the model is "
                "randomized, so one-forward attacks follow noise and one-forward scores can be lucky "
                "(Athalye et al. 2018 §4.3). Evaluate it with EOT — the suite autoattack-rand "
                "(APGD-CE/-DLR, eot_iter=20, scored over 20 draws) or eot_iter=20 on pgd — "
                f"never with autoattack-standard; this audit used eot_iter={eot}, draws={nd}",
            )
        )

    def pgd_attack(t: ThreatModel, **kw: Any) -> Attack:
        return build_attack("pgd", t, seed=seed, eot_iter=eot, **kw)

    clean = _correct(model, x, y, batch_size, nd)
    clean_acc = _acc(clean)
    clean_c_mask = clean[: xc.shape[0]]  # the curves' points (xc is the head of x)
    need_pgd = {"single-vs-multi", "transfer-gap", "random-search", "loss-gap", "square", "strong-attack"}
    pgd_ok = margin_ok = None
    if need_pgd & set(wanted):
        pgd_ok = _attack_correct(model, pgd_attack(threat, steps=pgd_steps), x, y, batch_size, nd, clean)
    pgd_acc = _acc(pgd_ok) if pgd_ok is not None else float("nan")
    if {"loss-gap", "random-search", "square", "strong-attack"} & set(wanted):
        margin_ok = _attack_correct(
            model, pgd_attack(threat, steps=pgd_steps, loss="cw"), x, y, batch_size, nd, clean
        )
    # the audit's gradient attack: per example, the worst case of CE-PGD and margin-PGD
    grad_ok = pgd_ok & margin_ok if pgd_ok is not None and margin_ok is not None else pgd_ok
    grad_acc = _acc(grad_ok) if grad_ok is not None else float("nan")

    mark("gradients")
    if "gradients" in wanted:
        say("audit: input gradients")
        st = input_gradient_stats(model, x, y, batch_size, th.near_zero_ratio)
        lost = st["zero_fraction"] + st["near_zero_fraction"]
        if st["nonfinite_fraction"] > 0 or _over(lost, th.zero_grad_fail):
            status = "fail"
        elif _over(lost, th.zero_grad_warn):
            status = "warn"
        else:
            status = "pass"
        results.append(
            Check(
                "gradients",
                status,
                st,
                f"{st['zero_fraction']:.1%} of examples have an exactly zero input gradient, "
                f"{st['near_zero_fraction']:.1%} a near-zero one (‖∇CE‖ ≤ {th.near_zero_ratio:.0e}·"
                f"‖∇margin‖: saturated softmax) and {st['nonfinite_fraction']:.1%} a non-finite one; "
                "gradient attacks cannot move from such points "
                "(shattered or vanishing gradients, Athalye et al. 2018 §3.1)",
            )
        )

    mark("loss-gap")
    if "loss-gap" in wanted:
        assert pgd_ok is not None and margin_ok is not None
        say("audit: CE-PGD vs margin-PGD")
        margin_acc = _acc(margin_ok)
        gap = pgd_acc - margin_acc
        status = _gap_status(gap, th.loss_gap_fail, tol, th.gap_relative, pgd_acc)
        results.append(
            Check(
                "loss-gap",
                status,
                {
                    "ce_accuracy": pgd_acc,
                    "margin_accuracy": margin_acc,
                    "worst_case_accuracy": grad_acc,
                    "gap": gap,
                    "tolerance": tol,
                },
                f"CE-PGD accuracy {pgd_acc:.3f} vs margin-loss PGD {margin_acc:.3f} (worst case "
                f"{grad_acc:.3f}): the cross-entropy gradient alone is masked (saturated or "
                "smoothed CE); evaluate with margin / DLR losses (CW-PGD, APGD-DLR, AutoAttack)",
            )
        )

    mark("single-vs-multi")
    if "single-vs-multi" in wanted:
        say("audit: FGSM vs PGD")
        fgsm = build_attack("fgsm", threat, eot_iter=eot)
        fgsm_acc = _acc(_attack_correct(model, fgsm, x, y, batch_size, nd, clean))
        gap = pgd_acc - fgsm_acc
        status = (
            "fail" if _over(gap, max(th.single_step_fail, tol)) else "warn" if _over(gap, tol) else "pass"
        )
        results.append(
            Check(
                "single-vs-multi",
                status,
                {
                    "fgsm_accuracy": fgsm_acc,
                    "pgd_accuracy": pgd_acc,
                    "pgd_steps": pgd_steps,
                    "gap": gap,
                    "tolerance": tol,
                },
                f"FGSM accuracy {fgsm_acc:.3f} vs {pgd_steps}-step PGD accuracy {pgd_acc:.3f}: "
                "a single step should never beat many steps of the same attack; "
                "if it does, the iterative attack is being misled",
            )
        )

    mark("transfer-gap")
    if "transfer-gap" in wanted and pgd_acc == 0.0:
        # white-box PGD left no point robust: a transfer attack cannot do better, so the check
        # passes without training a surrogate (most of the audit's time on an undefended model)
        results.append(
            Check(
                "transfer-gap",
                "pass",
                {"white_box_accuracy": pgd_acc, "black_box_accuracy": None, "gap": None, "tolerance": tol},
                "white-box PGD broke every point, so no transfer attack can do better; no surrogate trained",
            )
        )
    elif "transfer-gap" in wanted:
        if surrogate is None:
            say(f"audit: training a surrogate ({surrogate_epochs} epochs)")
            from entrobust.diagnostics.surrogate import train_surrogate

            surrogate = train_surrogate(
                model,
                train_data if train_data is not None else (x_all, y_all),
                epochs=surrogate_epochs,
                seed=seed,
            )
            if distributed.world_size() > 1:
                # every rank trained the same seeded surrogate (rank 0 alone would not be faster),
                # but GPU kernels need not be bitwise reproducible: all ranks take rank 0's weights
                sur = surrogate
                weights = on_main(lambda: {k: v.detach().cpu() for k, v in sur.state_dict().items()})
                surrogate.load_state_dict(weights)
        say("audit: black-box transfer PGD")
        transfer = build_attack(
            "transfer", threat, surrogate=surrogate, attack="pgd", steps=pgd_steps, seed=seed
        )
        black_acc = _acc(_attack_correct(model, transfer, x, y, batch_size, nd, clean))
        sur_acc = _acc(_correct(surrogate, x, y, batch_size))
        gap = pgd_acc - black_acc
        status = _gap_status(gap, th.transfer_fail, tol)
        results.append(
            Check(
                "transfer-gap",
                status,
                {
                    "white_box_accuracy": pgd_acc,
                    "black_box_accuracy": black_acc,
                    "gap": gap,
                    "surrogate_clean_accuracy": sur_acc,
                    "tolerance": tol,
                },
                f"white-box PGD accuracy {pgd_acc:.3f} vs black-box transfer accuracy {black_acc:.3f}: "
                "an attack with gradients must do at least as well as one without (RU §5.2)",
            )
        )

    # points every gradient attack failed on: where the gradient-free searches look
    robust_idx = (
        (grad_ok & clean).nonzero().squeeze(1) if grad_ok is not None else torch.zeros(0, dtype=torch.long)
    )
    reused = int(known[robust_idx].sum())  # of those, broken by the stored evaluation already
    search_idx = robust_idx[~known[robust_idx]]

    mark("random-search")
    if "random-search" in wanted:
        sub = search_idx[:random_search_n]
        say(f"audit: random search ({random_search_samples} samples on {sub.numel()} PGD-robust points)")
        if sub.numel():
            # the same seeded samples whatever the forward batch; on a CPU small forwards stay in
            # cache and cost ~40 % less per sample than the default 4096 (benchmarks/bench_audit.py)
            fwd = 128 if model_device(model).type == "cpu" else 4096
            rs = build_attack("random-search", threat, n=random_search_samples, seed=seed, max_batch=fwd)
            broken = int((~_attack_correct(model, rs, x[sub], y[sub], batch_size, nd)).sum())
            rate = broken / sub.numel()
        else:
            broken, rate = 0, 0.0
        status = _hits_status(broken, int(sub.numel()), th)
        results.append(
            Check(
                "random-search",
                status,
                {
                    "pgd_robust_points": int(robust_idx.numel()),
                    "broken_by_evaluation": reused,
                    "searched": int(sub.numel()),
                    "samples": random_search_samples,
                    "random_successes": broken,
                    "rate": rate,
                    "min_fail_hits": th.min_fail_hits,
                },
                f"random search broke {broken} of {sub.numel()} points that PGD could not: adversarial "
                "examples exist where the gradient attack did not find them (RU App. C.1)",
            )
        )

    mark("square")
    if "square" in wanted:
        sub = search_idx[:square_n]
        say(f"audit: Square ({square_queries} queries on {sub.numel()} PGD-robust points)")
        if sub.numel():
            sq = build_attack("square", threat, n_queries=square_queries, p_init=0.8, seed=seed)
            broken = int((~_attack_correct(model, sq, x[sub], y[sub], batch_size, nd)).sum())
        else:
            broken = 0
        status = _hits_status(broken, int(sub.numel()), th)
        results.append(
            Check(
                "square",
                status,
                {
                    "pgd_robust_points": int(robust_idx.numel()),
                    "broken_by_evaluation": reused,
                    "searched": int(sub.numel()),
                    "queries": square_queries,
                    "square_successes": broken,
                    "rate": broken / max(int(sub.numel()), 1),
                    "min_fail_hits": th.min_fail_hits,
                },
                f"the gradient-free Square attack (Andriushchenko et al. 2020, {square_queries} queries) "
                f"broke {broken} of {sub.numel()} points the gradient attacks could not: the gradients "
                "mislead the attack (AutoAttack checks.py: check_square_sr)",
            )
        )

    mark("strong-attack")
    if "strong-attack" in wanted:
        assert grad_ok is not None and pgd_ok is not None
        sub = search_idx
        say(f"audit: APGD-CE / APGD-DLR ({strong_iter} iterations) on {sub.numel()} PGD-robust points")
        strong_ok = grad_ok.clone()
        strong_ok[known] = False  # the stored evaluation's adversarial examples count as found
        if sub.numel():
            with frozen(model, "eval"), torch.no_grad():
                n_classes = int(model(x[:1].to(model_device(model))).shape[1])
            losses = ["ce", "dlr"] if n_classes >= 3 else ["ce"]
            left = sub
            for loss in losses:
                if left.numel() == 0:
                    break
                apgd = build_attack(f"apgd-{loss}", threat, n_iter=strong_iter, seed=seed, eot_iter=eot)
                ok = _attack_correct(model, apgd, x[left], y[left], batch_size, nd)
                strong_ok[left[~ok]] = False
                left = left[ok]
        strong_acc = _acc(strong_ok & clean)
        if reference_accuracy is not None:
            reference_accuracy = float(reference_accuracy)
        best = strong_acc if reference_accuracy is None else min(strong_acc, reference_accuracy)
        ref_text = "" if reference_accuracy is None else f" and the stored reference {reference_accuracy:.3f}"
        gap = grad_acc - best
        status = _gap_status(gap, th.strong_gap_fail, tol, th.gap_relative, grad_acc)
        results.append(
            Check(
                "strong-attack",
                status,
                {
                    "pgd_accuracy": pgd_acc,
                    "gradient_worst_case_accuracy": grad_acc,
                    "apgd_accuracy": strong_acc,
                    "broken_by_evaluation": reused,
                    "reference_accuracy": reference_accuracy,  # None: no stored reference (JSON null)
                    "gap": gap,
                    "tolerance": tol,
                },
                f"the audit's {pgd_steps}-step PGD (worst of CE and margin) leaves {grad_acc:.3f} but APGD "
                f"({strong_iter} iterations) {strong_acc:.3f}"
                + (f" (with {reused} points the stored evaluation broke)" if reused else "")
                + ref_text
                + ": the weaker attack overstates robustness; report the stronger one (Croce & Hein 2020)",
            )
        )

    mark("eps-curve")
    if "eps-curve" in wanted:
        cap = _max_eps(threat, x)
        grid = sorted(
            {
                min(float(e), cap)
                for e in (eps_grid if eps_grid is not None else [f * eps for f in eps_factors])
            }
        )
        say(f"audit: accuracy vs ε ({len(grid)} values)")
        accs = _eps_curve(model, threat, xc, yc, clean_c_mask, grid, batch_size, nd, pgd_attack, curve_steps)
        curves["eps"] = {"eps": grid, "accuracy": accs}
        rises = [max(0.0, b - a) for a, b in itertools.pairwise(accs)]
        worst_rise = max(rises, default=0.0)
        final = accs[-1]
        if _over(final, th.eps_final_warn) or _over(worst_rise, 3 * tol_c):
            status = "fail"
        elif _over(final, th.eps_final_pass) or _over(worst_rise, tol_c):
            status = "warn"
        else:
            status = "pass"
        results.append(
            Check(
                "eps-curve",
                status,
                {
                    "largest_eps": grid[-1],
                    "final_accuracy": final,
                    "worst_rise": worst_rise,
                    "tolerance": tol_c,
                    "eps": grid,
                    "accuracy": accs,
                },
                f"accuracy at the largest ε = {grid[-1]:.4g} is {final:.3f} (should be ≈ 0) "
                f"and the curve rises by up to {worst_rise:.3f} (should fall monotonically) "
                "(RU §5.2, Fig. 1)",
            )
        )

    mark("steps-curve")
    if "steps-curve" in wanted:
        say(f"audit: accuracy vs steps {list(steps_grid)}")
        floor = 1.0 / 510.0
        sizes = [max(floor, 2.0 * eps / k) for k in steps_grid]
        accs = _steps_curve(model, threat, xc, yc, clean_c_mask, steps_grid, sizes, batch_size, nd, seed, eot)
        curves["steps"] = {"steps": [float(k) for k in steps_grid], "accuracy": accs, "step_size": sizes}
        clean_c = _acc(clean[: xc.shape[0]])
        drop = accs[-2] - accs[-1] if len(accs) > 1 else 0.0
        total_drop = accs[0] - accs[-1]
        worst_rise = max((max(0.0, b - a) for a, b in itertools.pairwise(accs)), default=0.0)
        # stuck: no number of steps lowers accuracy below clean, though random / gradient-free
        # points or a larger ε do (an honest model loses *some* accuracy at its threat ε)
        # (only measurable when clean accuracy itself exceeds the tolerance)
        stuck = _over(clean_c, tol_c) and not _over(clean_c - min(accs), tol_c)
        if _over(drop, max(th.steps_drop_warn, tol_c)) or _over(worst_rise, 3 * tol_c):
            status = "fail"
        elif _over(drop, tol_c) or _over(worst_rise, tol_c) or stuck:
            status = "warn"
        else:
            status = "pass"
        results.append(
            Check(
                "steps-curve",
                status,
                {
                    "last_drop": drop,
                    "total_drop": total_drop,
                    "worst_rise": worst_rise,
                    "stuck": stuck,
                    "clean_accuracy": clean_c,
                    "final_accuracy": accs[-1],
                    "tolerance": tol_c,
                    "steps": list(steps_grid),
                    "accuracy": accs,
                },
                f"accuracy drops by {drop:.3f} between the last two step counts (up to {steps_grid[-1]}), "
                f"rises by up to {worst_rise:.3f} between step counts"
                + (
                    f" and never falls below clean accuracy {clean_c:.3f} (the attack is stuck)"
                    if stuck
                    else ""
                )
                + ": a converged attack gives a flat or falling curve (RU §5.2, Fig. 2)",
            )
        )

    mark("unbounded")
    if "unbounded" in wanted:
        say("audit: unbounded attack")
        from entrobust.attacks.minimal import deepfool_minimal

        dev = model_device(model)

        def deepfool_fooled(xb: Tensor, yb: Tensor) -> Tensor:
            _, dist = deepfool_minimal(model, xb.to(dev), yb.to(dev), norm="l2")
            return torch.isfinite(dist).cpu()

        with frozen(model, "eval"):
            df = torch.cat(_per_batch(deepfool_fooled, xc, yc, batch_size))
        big = threat.with_eps(_max_eps(threat, x), allow_large_eps=True)  # unbounded on purpose
        left = (~df).nonzero().squeeze(1)
        pgd_big_ok = torch.zeros(0, dtype=torch.bool)
        if left.numel():
            atk = pgd_attack(big, steps=100, rel_step=0.05, init="none")
            pgd_big_ok = _attack_correct(model, atk, xc[left], yc[left], batch_size, nd)
        fooled = df.clone()
        if left.numel():
            fooled[left] = ~pgd_big_ok
        rate = _acc(fooled)
        status = "pass" if rate >= th.unbounded_pass else "warn" if rate >= th.unbounded_warn else "fail"
        results.append(
            Check(
                "unbounded",
                status,
                {
                    "success_rate": rate,
                    "deepfool_success_rate": _acc(df),
                    "large_eps": float(big.eps),
                    "examples": int(xc.shape[0]),
                },
                f"an unbounded attack (DeepFool ℓ2, then PGD at ε = {float(big.eps):.4g}) "
                f"fooled only {rate:.1%}: with unlimited distortion every input can be "
                "misclassified, so the attacks are failing",
            )
        )

    mark("done")
    report = AuditReport(
        checks=results,
        threat={"norm": threat.norm, "eps": eps},
        n=n_used,
        clean_accuracy=clean_acc,
        curves=curves,
        settings={
            "pgd_steps": pgd_steps,
            "random_search_samples": random_search_samples,
            "random_search_n": random_search_n,
            "curve_n": int(xc.shape[0]),
            "curve_steps": curve_steps,
            "steps_grid": list(steps_grid),
            "seed": seed,
            "surrogate_epochs": surrogate_epochs,
            "eot_iter": eot,
            "draws": nd,
            "stochastic": stochastic,
            "square_queries": square_queries,
            "square_n": square_n,
            "strong_iter": strong_iter,
            "known_broken": int(known.sum()),
            "thresholds": asdict(th),
            "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        },
    )
    report.seconds = time.perf_counter() - t0
    say(f"audit: {report.status} in {report.seconds:.1f} s")
    return report
