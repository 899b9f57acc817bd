"""Uncertainty / geometry metrics of RU §6 and Table 4 (Ju et al. 2020, arXiv 2011.13538).

For a classifier with logits f(x) (C outputs) at a labelled point (x, y):

* decision margin ``M = f_y(x) − max_{i≠y} f_i(x)`` (RU §6);
* ``‖∇ₓf(x)‖₂``: the spectral norm (largest singular value) of the C×D input Jacobian of the
  logits, found by power iteration on JᵀJ with ``torch.func.jvp`` / ``torch.func.vjp`` — the
  dense Jacobian is never formed (RU eq. 12);
* normalized margin ``M / ‖∇ₓf(x)‖₂`` (RU Theorem 1 with the local Lipschitz estimate);
* non-linearity at an ℓ2 adversary x′ (RU eq. 13)::

      Q_f(x′, x) = ‖f(x′) − f(x) − ∇ₓf(x)ᵀ(x′ − x)‖₂ / ‖∇ₓf(x)ᵀ(x′ − x)‖₂

  (0 for a linear model; large when the first-order expansion is poor);
* minimal ℓ2 distortion ``‖x_adv − x‖₂`` of an unbounded ℓ2 attack and its Pearson correlation
  with the normalized margin;
* histograms of prediction entropy and confidence, clean and adversarial.

:class:`GeometryAccumulator` collects all of them batch by batch; :func:`table4_rows` lays
several models out as the rows of RU Table 4. Table 4 averages per-example values (its mean
normalized margin is not the ratio of the mean margin and the mean norm), and so do we.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jvp, vjp

from entrobust.attacks.base import AttackResult, entropy_of, frozen, margin_of
from entrobust.diagnostics.accumulators import (
    Accumulator,
    Histogram,
    HistogramAccumulator,
    MeanAccumulator,
    PearsonAccumulator,
)
from entrobust.errors import ConfigError

#: ``adversary(model, x, y) -> x_adv`` (an :class:`~entrobust.attacks.Attack` qualifies)
Adversary = Callable[[nn.Module, Tensor, Tensor], Any]
#: ``distortion(model, x, y) -> x_adv`` or per-example distances ``(N,)`` (NaN/inf = failed)
DistortionFn = Callable[[nn.Module, Tensor, Tensor], Any]

_TINY = 1e-12


def decision_margin(logits: Tensor, y: Tensor) -> Tensor:
    """M = f_y − max_{i≠y} f_i per example (RU §6); negative ⇔ misclassified."""
    return margin_of(logits, y)


def _unit(v: Tensor) -> Tensor:
    n = v.flatten(1).norm(dim=1).clamp_min(_TINY)
    return v / n.view(-1, *([1] * (v.dim() - 1)))


def _start_vector(x: Tensor, seed: int) -> Tensor:
    """The same seeded random unit direction for every example (batch-composition independent)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    v = torch.randn(x.shape[1:], generator=g, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    return _unit(v.unsqueeze(0).expand_as(x).contiguous())


def jacobian_spectral_norm(
    model: nn.Module,
    x: Tensor,
    *,
    iters: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
) -> Tensor:
    """Largest singular value of the per-example input Jacobian ∂f(xᵢ)/∂xᵢ of the logits, ``(N,)``.

    Power iteration on JᵀJ: u = Jv by ``torch.func.jvp``, w = Jᵀu by the ``torch.func.vjp`` of the
    same linearization (computed once), v ← w/‖w‖; σ = ‖Jv‖. Stops when every example's estimate
    changes by less than ``tol`` (relative) or after ``iters`` iterations. The start vector is one
    seeded random direction shared by all examples, so an example's value does not depend on the
    batch it is in. ``model`` must treat examples independently (eval-mode BatchNorm); it is run
    in eval mode with its parameters frozen.
    """
    if iters < 1:
        raise ConfigError(f"power iterations must be >= 1, got {iters}")
    x = x.detach()
    with frozen(model, "eval"):
        pullback = vjp(model, x)[1]
        v = _start_vector(x, seed)
        sigma = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(iters):
            u = jvp(model, (x,), (v,))[1]
            new_sigma = u.flatten(1).norm(dim=1)
            w = pullback(u)[0].detach()
            done = bool(((new_sigma - sigma).abs() <= tol * new_sigma.clamp_min(_TINY)).all())
            sigma = new_sigma.detach()
            if done:
                break
            zero = w.flatten(1).norm(dim=1) <= _TINY
            v = torch.where(zero.view(-1, *([1] * (x.dim() - 1))), v, _unit(w))
    return sigma


def nonlinearity(model: nn.Module, x: Tensor, x_adv: Tensor) -> Tensor:
    """Q_f(x′, x) = ‖f(x′) − f(x) − J(x′ − x)‖₂ / ‖J(x′ − x)‖₂ per example (RU eq. 13).

    J(x′ − x) is one exact Jacobian-vector product (``torch.func.jvp``). Examples with
    J(x′ − x) = 0 (including x′ = x) give NaN. Runs the model in eval mode, parameters frozen.
    """
    if x_adv.shape != x.shape:
        raise ConfigError(f"x_adv has shape {tuple(x_adv.shape)}, x has {tuple(x.shape)}")
    x = x.detach()
    delta = (x_adv.detach() - x).to(x.dtype)
    with frozen(model, "eval"):
        f_x, lin = jvp(model, (x,), (delta,))[:2]
        with torch.no_grad():
            f_adv = model(x_adv.detach().to(x.dtype))
    num = (f_adv - f_x - lin).flatten(1).norm(dim=1)
    den = lin.flatten(1).norm(dim=1)
    return torch.where(den > _TINY, num / den.clamp_min(_TINY), torch.full_like(den, float("nan"))).detach()


def default_l2_adversary(
    eps: float = 0.5, steps: int = 20, *, restarts: int = 5, seed: int | None = 0
) -> Adversary:
    """ℓ2 version of RU's ``PGD20-0.5`` (Table 4): RU's PGDp-k recipe — p = 20 steps of ε/10,
    start x + N(0, σ = 0.005), 5 restarts, worst restart per example — in the ℓ2 ball of radius
    ε = 0.5; seeded, so the accumulator gives the same result however the data are batched.
    """
    from entrobust.attacks import ThreatModel
    from entrobust.attacks.gradient import ru_pgd

    return ru_pgd(ThreatModel("l2", eps), steps=steps, restarts=restarts, seed=seed)


def default_minimal_l2(method: str = "deepfool") -> DistortionFn:
    """An unbounded minimal-ℓ2 attack (RU §6, "an infinite L2 attack ... until misclassification").

    ``deepfool`` (default, fast): :func:`entrobust.attacks.minimal.deepfool_minimal` with ℓ2;
    ``cw``: the Carlini–Wagner ℓ2 attack :func:`entrobust.attacks.minimal.minimal_l2` (slower,
    usually smaller distortions). Both return ``(x_adv, distance)``.
    """
    from entrobust.attacks import minimal

    if method == "deepfool":

        def deepfool(model: nn.Module, x: Tensor, y: Tensor) -> Any:
            return minimal.deepfool_minimal(model, x, y, norm="l2")

        return deepfool
    if method == "cw":
        return minimal.minimal_l2
    raise ConfigError(f"unknown minimal-distortion attack {method!r}; valid: deepfool, cw")


def _x_adv_of(out: Any) -> Tensor:
    return out.x_adv if isinstance(out, AttackResult) else out  # type: ignore[no-any-return]


def minimal_distortion(model: nn.Module, x: Tensor, y: Tensor, fn: DistortionFn) -> Tensor:
    """Per-example ℓ2 distortion that ``fn`` needs to misclassify; NaN where it failed.

    ``fn`` may return adversarial examples (a tensor shaped like ``x``, an
    :class:`~entrobust.attacks.AttackResult` or an ``(x_adv, ...)`` tuple) — then success is checked
    here — or distances ``(N,)``. It runs with the model in eval mode and its parameters frozen.
    """
    with frozen(model, "eval"), torch.enable_grad():
        out = fn(model, x, y)
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, AttackResult) or (isinstance(out, Tensor) and out.shape == x.shape):
        x_adv = _x_adv_of(out).detach()
        with frozen(model, "eval"), torch.no_grad():
            fooled = model(x_adv).argmax(1).ne(y)
        d = (x_adv - x).flatten(1).norm(dim=1)
        return torch.where(fooled, d, torch.full_like(d, float("nan")))
    if isinstance(out, Tensor) and out.shape == (x.shape[0],):
        d = out.detach().to(torch.float64)
        return torch.where(torch.isfinite(d), d, torch.full_like(d, float("nan")))
    raise ConfigError("distortion function must return x_adv, an AttackResult or distances of shape (N,)")


@dataclass(frozen=True)
class GeometryResult:
    """Means over the examples seen (RU Table 4) plus the histograms; NaN when not computed."""

    n: int
    clean_accuracy: float
    margin: float
    jacobian_norm: float
    normalized_margin: float
    adv_accuracy: float = float("nan")
    nonlinearity: float = float("nan")
    distortion: float = float("nan")
    correlation: float = float("nan")
    counts: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    examples: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "n": self.n,
            "clean_accuracy": num(self.clean_accuracy),
            "margin": num(self.margin),
            "jacobian_norm": num(self.jacobian_norm),
            "normalized_margin": num(self.normalized_margin),
            "adv_accuracy": num(self.adv_accuracy),
            "nonlinearity": num(self.nonlinearity),
            "distortion": num(self.distortion),
            "correlation": num(self.correlation),
            "counts": dict(self.counts),
            "histograms": {k: h.to_dict() for k, h in self.histograms.items()},
            "examples": {k: [None if math.isnan(v) else v for v in vs] for k, vs in self.examples.items()},
        }


class GeometryAccumulator(Accumulator):
    """Collects the RU Table 4 quantities batch by batch: ``update(model, x, y)``, then ``compute()``.

    Args:
        jacobian: compute ‖∇ₓf‖₂ and the normalized margin (power iteration; the costly part).
        adversary: ``adversary(model, x, y) -> x_adv`` for adversarial accuracy, Q_f and the
            adversarial histograms — RU uses ℓ2 PGD20-0.5 (:func:`default_l2_adversary`). ``None``
            skips them unless ``x_adv`` is passed to :meth:`update`.
        distortion: an unbounded minimal-ℓ2 attack (see :func:`minimal_distortion`) for the mean
            distortion and its Pearson correlation with the normalized margin; ``None`` skips.
        num_classes: fixes the entropy histogram range [0, log C] (inferred from the first batch).
        bins: histogram bins. power_iters, tol, seed: see :func:`jacobian_spectral_norm`.
        keep_examples: also keep the per-example normalized margin, distortion and Q_f (for the
            scatter of RU Fig. 4); they are not part of the additive state and follow update order.

    Only sums are kept, so any split of the data into batches, in any order, gives the same result
    (up to float64 rounding), provided the adversary itself is deterministic per example.
    """

    _MEANS = ("correct", "margin", "jac", "nmargin", "adv_correct", "q", "dist")

    def __init__(
        self,
        *,
        jacobian: bool = True,
        adversary: Adversary | None = None,
        distortion: DistortionFn | None = None,
        num_classes: int | None = None,
        bins: int = 20,
        power_iters: int = 100,
        tol: float = 1e-6,
        seed: int = 0,
        keep_examples: bool = False,
    ) -> None:
        self.keep_examples = keep_examples
        self.examples: dict[str, list[float]] = {}
        self.jacobian = jacobian
        self.adversary = adversary
        self.distortion = distortion
        self.num_classes = num_classes
        self.bins = bins
        self.power_iters, self.tol, self.seed = power_iters, tol, seed
        self.means: dict[str, MeanAccumulator] = {}
        self.pearson = PearsonAccumulator()
        self.hists: dict[str, HistogramAccumulator] = {}
        super().__init__()

    # The state is held by child accumulators; expose it as one flat dict for merge.
    def _children(self) -> dict[str, Accumulator]:
        out: dict[str, Accumulator] = {f"mean.{k}": v for k, v in self.means.items()}
        out["pearson"] = self.pearson
        out.update({f"hist.{k}": v for k, v in self.hists.items()})
        return out

    def reset(self) -> None:
        self.means = {k: MeanAccumulator() for k in self._MEANS}
        self.pearson = PearsonAccumulator()
        self.hists = {}
        if self.num_classes is not None:
            self._make_hists(self.num_classes)
        self.state = {}
        self.examples = {"normalized_margin": [], "distortion": [], "nonlinearity": []}

    def _make_hists(self, c: int) -> None:
        if c < 2:
            raise ConfigError(f"num_classes must be >= 2, got {c}")
        self.num_classes = c
        for k in ("entropy_clean", "entropy_adv"):
            self.hists[k] = HistogramAccumulator(0.0, math.log(c), self.bins)
        for k in ("confidence_clean", "confidence_adv"):
            self.hists[k] = HistogramAccumulator(0.0, 1.0, self.bins)

    def merge(self, other: Accumulator) -> None:
        if not isinstance(other, GeometryAccumulator):
            raise ConfigError(f"cannot merge {type(other).__name__} into GeometryAccumulator")
        if not self.hists and other.hists and other.num_classes is not None:
            self._make_hists(other.num_classes)
        if other.hists and self.num_classes != other.num_classes:
            raise ConfigError("cannot merge geometry accumulators for different numbers of classes")
        mine, theirs = self._children(), other._children()
        for k, acc in theirs.items():
            mine[k].merge(acc)
        for k, vs in other.examples.items():
            self.examples.setdefault(k, []).extend(vs)

    # ------------------------------------------------------------------ update
    def update(self, model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor | None = None) -> None:
        """Add one batch; ``x_adv`` (optional) replaces running the adversary."""
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"{x.shape[0]} images but {y.shape[0]} labels")
        if x.shape[0] == 0:
            return
        x, y = x.detach(), y.detach()
        nan = torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
        kept = {"normalized_margin": nan, "distortion": nan, "nonlinearity": nan}
        with frozen(model, "eval"), torch.no_grad():
            logits = model(x)
        if not self.hists:
            self._make_hists(int(logits.shape[1]))
        margin = decision_margin(logits, y)
        self.means["correct"].add(logits.argmax(1).eq(y).double())
        self.means["margin"].add(margin)
        probs = F.softmax(logits.double(), dim=1)
        self.hists["entropy_clean"].add(entropy_of(logits.double()))
        self.hists["confidence_clean"].add(probs.amax(1))

        nmargin: Tensor | None = None
        if self.jacobian:
            jn = jacobian_spectral_norm(model, x, iters=self.power_iters, tol=self.tol, seed=self.seed)
            self.means["jac"].add(jn)
            nmargin = margin.double() / jn.double()
            nmargin = torch.where(jn > 0, nmargin, torch.full_like(nmargin, float("nan")))
            self.means["nmargin"].add(nmargin)
            kept["normalized_margin"] = nmargin

        if x_adv is None and self.adversary is not None:
            x_adv = _x_adv_of(self.adversary(model, x, y))
        if x_adv is not None:
            x_adv = x_adv.detach()
            with frozen(model, "eval"), torch.no_grad():
                adv_logits = model(x_adv)
            self.means["adv_correct"].add(adv_logits.argmax(1).eq(y).double())
            q = nonlinearity(model, x, x_adv)
            self.means["q"].add(q)
            kept["nonlinearity"] = q
            self.hists["entropy_adv"].add(entropy_of(adv_logits.double()))
            self.hists["confidence_adv"].add(F.softmax(adv_logits.double(), dim=1).amax(1))

        if self.distortion is not None:
            d = minimal_distortion(model, x, y, self.distortion)
            self.means["dist"].add(d)
            kept["distortion"] = d
            if nmargin is not None:
                self.pearson.add(nmargin, d)
        if self.keep_examples:
            for k, v in kept.items():
                self.examples[k].extend(float(t) for t in v.detach().cpu().double().tolist())

    # ----------------------------------------------------------------- compute
    def compute(self) -> GeometryResult:
        """Means, correlation and histograms over everything added so far."""
        m = self.means
        return GeometryResult(
            n=m["correct"].count,
            clean_accuracy=m["correct"].mean(),
            margin=m["margin"].mean(),
            jacobian_norm=m["jac"].mean(),
            normalized_margin=m["nmargin"].mean(),
            adv_accuracy=m["adv_correct"].mean(),
            nonlinearity=m["q"].mean(),
            distortion=m["dist"].mean(),
            correlation=self.pearson.correlation(),
            counts={
                "examples": m["correct"].count,
                "jacobian": m["jac"].count,
                "normalized_margin": m["nmargin"].count,
                "adversarial": m["adv_correct"].count,
                "nonlinearity": m["q"].count,
                "distortion": m["dist"].count,
                "correlation_pairs": self.pearson.count,
            },
            histograms={k: h.result() for k, h in self.hists.items()},
            examples={k: list(v) for k, v in self.examples.items()} if self.keep_examples else {},
        )


def analyze_geometry(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 100,
    **kwargs: Any,
) -> GeometryResult:
    """Run a :class:`GeometryAccumulator` (``kwargs`` go to it) over ``(x, y)`` in batches."""
    from entrobust.diagnostics._util import batches, model_device

    acc = GeometryAccumulator(**kwargs)
    dev = model_device(model)
    for xb, yb in batches(x, y, batch_size):
        acc.update(model, xb.to(dev), yb.to(dev))
    return acc.compute()


#: row labels of RU Table 4, in its order
TABLE4_ROWS: tuple[tuple[str, str], ...] = (
    ("margin", "M_{f,x}"),
    ("jacobian_norm", "‖∇ₓf(x)‖₂"),
    ("normalized_margin", "M_{f,x} / ‖∇ₓf(x)‖₂"),
    ("adv_accuracy", "Accuracy ({adversary})"),
    ("nonlinearity", "Q_f(x_adv, x)"),
    ("correlation", "Correlation(M/‖∇ₓf‖₂, ‖x_adv − x‖₂)"),
)


def table4_rows(
    results: Mapping[str, GeometryResult], adversary: str = "PGD20-0.5"
) -> list[tuple[str, list[float]]]:
    """RU Table 4 as rows ``(label, [value per model])``, models in the mapping's order."""
    return [
        (label.replace("{adversary}", adversary), [float(getattr(r, key)) for r in results.values()])
        for key, label in TABLE4_ROWS
    ]


def format_table4(results: Mapping[str, GeometryResult], adversary: str = "PGD20-0.5") -> str:
    """RU Table 4 as a plain-text table (rows = metrics, columns = models)."""
    names: Sequence[str] = list(results)
    rows = table4_rows(results, adversary)
    w0 = max(len(label) for label, _ in rows)
    widths = [max(10, len(n)) for n in names]
    head = " " * w0 + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=False))
    lines = [head, "-" * len(head)]
    for label, values in rows:
        cells = [
            "—".rjust(w) if math.isnan(v) else f"{v:.4g}".rjust(w)
            for v, w in zip(values, widths, strict=True)
        ]
        lines.append(label.ljust(w0) + "  " + "  ".join(cells))
    return "\n".join(lines)
