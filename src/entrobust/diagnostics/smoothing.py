"""Randomized smoothing: PREDICT and CERTIFY of Cohen, Rosenfeld & Kolter (ICML 2019).

The smoothed classifier is g(x) = argmax_c P(f(x + η) = c), η ~ N(0, σ²I), with the noise added
to the image in [0, 1] pixel space (the base model normalizes internally). Algorithms and
constants follow the paper and ``locuslab/smoothing`` ``code/core.py`` (reimplemented):

* PREDICT(n, α): count the base predictions on n noisy copies; return the top class only if a
  two-sided binomial test of its count against the runner-up's (p = 0.5) has p-value ≤ α,
  otherwise abstain. With probability ≥ 1 − α the answer, when not abstaining, is g(x).
* CERTIFY(n0, n, α): pick the top class ĉ on n0 samples, count ĉ on n *fresh* samples, take
  the one-sided (1 − α) Clopper–Pearson lower bound p̲ = Beta⁻¹(α; n_ĉ, n − n_ĉ + 1) and return
  ĉ with radius R = σ·Φ⁻¹(p̲) when p̲ ≥ 0.5, otherwise abstain (R = 0). With probability ≥ 1 − α
  g predicts ĉ everywhere in the ℓ2 ball of radius R.

``scipy.stats.binomtest`` replaces the removed ``binom_test``. ATENT Table 5 reports certified
accuracy at σ = 0.12, r = 0.435 on CIFAR-10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import Tensor, nn

from entrobust.attacks.base import frozen
from entrobust.errors import ConfigError
from entrobust.progress import Progress

#: class returned when the smoothed classifier abstains
ABSTAIN = -1


def _check(sigma: float, n: int, alpha: float, batch: int) -> None:
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0, got {sigma}")
    if n < 1:
        raise ConfigError(f"number of noise samples must be >= 1, got {n}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")


def sample_counts(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    num: int,
    *,
    batch: int = 1000,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Counts of the base classifier's predictions on ``num`` copies of ``x`` + N(0, σ²I).

    ``x`` is one image (C, H, W) in [0, 1]; the noisy copies are not clamped (as in the
    reference). The noise comes from ``generator`` (CPU) when given, else torch's global RNG.
    """
    if x.dim() < 1:
        raise ConfigError("x must be one image of shape (C, H, W)")
    counts: np.ndarray | None = None if num_classes is None else np.zeros(num_classes, dtype=np.int64)
    left = num
    with frozen(model, "eval"), torch.no_grad():
        while left > 0:
            b = min(batch, left)
            left -= b
            xb = x.unsqueeze(0).expand(b, *x.shape)
            if generator is None:
                noise = torch.randn(xb.shape, dtype=x.dtype, device=x.device)
            else:  # a CPU generator keeps seeded results identical across devices
                noise = torch.randn(xb.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
            logits = model(xb + sigma * noise)
            if counts is None:
                counts = np.zeros(int(logits.shape[1]), dtype=np.int64)
            counts += np.bincount(logits.argmax(1).cpu().numpy(), minlength=counts.shape[0])
    assert counts is not None
    return counts


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion.

    Equals ``proportion_confint(k, n, alpha=2α, method="beta")[0]`` used by the reference:
    the α-quantile of Beta(k, n − k + 1), and 0 when k = 0.
    """
    if not 0 <= successes <= trials or trials < 1:
        raise ConfigError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def predict(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n: int,
    alpha: float,
    batch: int = 1000,
    *,
    generator: torch.Generator | None = None,
) -> int:
    """PREDICT (Cohen et al. 2019): the smoothed class of one image, or :data:`ABSTAIN`."""
    _check(sigma, n, alpha, batch)
    counts = sample_counts(model, x, sigma, n, batch=batch, generator=generator)
    order = np.argsort(-counts, kind="stable")
    c1, c2 = int(counts[order[0]]), int(counts[order[1]]) if counts.shape[0] > 1 else 0
    if c1 + c2 == 0 or binomtest(c1, c1 + c2, p=0.5).pvalue > alpha:
        return ABSTAIN
    return int(order[0])


def certify(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n0: int,
    n: int,
    alpha: float,
    batch: int = 1000,
    *,
    generator: torch.Generator | None = None,
) -> tuple[int, float]:
    """CERTIFY (Cohen et al. 2019): ``(class, ℓ2 radius)`` of one image, or ``(ABSTAIN, 0.0)``."""
    _check(sigma, n, alpha, batch)
    if n0 < 1:
        raise ConfigError(f"n0 must be >= 1, got {n0}")
    selection = sample_counts(model, x, sigma, n0, batch=batch, generator=generator)
    c_hat = int(np.argmax(selection))
    estimation = sample_counts(
        model, x, sigma, n, batch=batch, num_classes=selection.shape[0], generator=generator
    )
    p_lower = lower_confidence_bound(int(estimation[c_hat]), n, alpha)
    if p_lower < 0.5:
        return ABSTAIN, 0.0
    return c_hat, float(sigma * norm.ppf(p_lower))


@dataclass
class CertifyResult:
    """Per-example CERTIFY outcomes over a dataset and certified accuracy at radii."""

    sigma: float
    n0: int
    n: int
    alpha: float
    labels: list[int]
    predictions: list[int]
    radii: list[float]
    certified_accuracy: dict[float, float] = field(default_factory=dict)

    @property
    def abstain_rate(self) -> float:
        return sum(p == ABSTAIN for p in self.predictions) / max(len(self.predictions), 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "labels": self.labels,
            "predictions": self.predictions,
            "radii": self.radii,
            "abstain_rate": self.abstain_rate,
            "certified_accuracy": {str(r): a for r, a in self.certified_accuracy.items()},
        }

    def table(self) -> str:
        lines = [f"randomized smoothing: σ = {self.sigma}, n0 = {self.n0}, n = {self.n}, α = {self.alpha}"]
        lines.append(f"examples {len(self.labels)}, abstained {self.abstain_rate:.1%}")
        lines.append("radius   certified accuracy")
        for r, a in self.certified_accuracy.items():
            lines.append(f"{r:<8.4g} {a:.4f}")
        return "\n".join(lines)


def certified_accuracy(
    labels: Sequence[int], predictions: Sequence[int], radii: Sequence[float], r: float
) -> float:
    """Fraction certified correct (not abstaining) with radius ≥ r (Cohen et al. 2019, §4)."""
    if not labels:
        return float("nan")
    triples = zip(labels, predictions, radii, strict=True)
    ok = sum(1 for y, p, rad in triples if p == y and p != ABSTAIN and rad >= r)
    return ok / len(labels)


def certify_dataset(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch: int = 1000,
    radii: Sequence[float] = (0.0, 0.25, 0.435, 0.5, 0.75, 1.0),
    seed: int | None = 0,
    progress: bool = False,
) -> CertifyResult:
    """CERTIFY every image of ``x`` (N, C, H, W) and report certified accuracy at ``radii``.

    Defaults (n0 = 100, n = 100,000, α = 0.001) are the reference ``code/certify.py``'s.
    ``progress`` reports on stderr: a bar with ETA on a terminal, one line otherwise
    (:mod:`entrobust.progress`).
    """
    gen = None
    if seed is not None:
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)
    preds: list[int] = []
    rads: list[float] = []
    with Progress("certify", f"sigma={sigma:g} n={n}", x.shape[0], unit="images", enabled=progress) as bar:
        for i in range(x.shape[0]):
            c, r = certify(model, x[i], sigma, n0, n, alpha, batch, generator=gen)
            preds.append(c)
            rads.append(r)
            bar.update(1)
    labels = [int(v) for v in y.tolist()]
    acc = {float(r): certified_accuracy(labels, preds, rads, float(r)) for r in radii}
    return CertifyResult(sigma, n0, n, alpha, labels, preds, rads, acc)


def plot_certified_accuracy(result: CertifyResult, path: str, *, points: int = 200) -> str:
    """Certified accuracy as a function of radius (step curve) with the requested radii marked."""
    from entrobust.diagnostics._util import pyplot

    plt = pyplot()
    finite = [r for r, p in zip(result.radii, result.predictions, strict=False) if p != ABSTAIN]
    top = max([*finite, *result.certified_accuracy.keys(), 1e-3]) * 1.05
    grid = np.linspace(0.0, top, points)
    curve = [certified_accuracy(result.labels, result.predictions, result.radii, float(r)) for r in grid]
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
    ax.plot(grid, curve, drawstyle="steps-post", label=f"σ = {result.sigma}")
    for r, a in result.certified_accuracy.items():
        ax.plot([r], [a], "o", color="C3")
        ax.annotate(f"{a:.2f}", (r, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("ℓ2 radius r")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Randomized smoothing (Cohen et al. 2019)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def expected_radius(p: float, sigma: float) -> float:
    """σ·Φ⁻¹(p): the radius certified when the top-class probability is known exactly."""
    if not 0 < p < 1:
        return math.inf if p >= 1 else 0.0
    return float(sigma * norm.ppf(p))
