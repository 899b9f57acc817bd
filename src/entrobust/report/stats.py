"""Paired comparisons of two models' robust accuracy on the same test points (claims check).

Two models A and B evaluated on the same test examples give, per example i, outcomes
aᵢ, bᵢ ∈ {0, 1} (1: correct under the attack). Their accuracy difference and its uncertainty use
the pairing — most of the noise of "which examples were drawn" cancels — instead of treating the
two accuracies as independent binomials:

* **effect** d = (1/S) Σₛ (āₛ − b̄ₛ): the difference in accuracy, averaged over the S seeds (runs of
  the same recipe) both models have;
* **McNemar's exact test** (McNemar 1947): with n₁₀ = #{aᵢ = 1, bᵢ = 0} and n₀₁ = #{aᵢ = 0, bᵢ = 1}
  (pooled over seeds), under H₀ "A and B are equally accurate" each discordant example is A's with
  probability ½, so p = P(|Binomial(n₁₀ + n₀₁, ½) − m/2| ≥ |n₁₀ − m/2|) (two-sided, as
  ``scipy.stats.binomtest``); p = 1 when no example is discordant;
* **paired bootstrap** 95 % interval (Efron & Tibshirani 1993, percentile interval): B resamples;
  each draws S seeds with replacement and, within each drawn seed s, nₛ examples with replacement,
  and computes d*. Resampling the nₛ paired differences dᵢ = aᵢ − bᵢ ∈ {−1, 0, 1} is the same as
  drawing their counts (k₊, k₀, k₋) ~ Multinomial(nₛ, (p₊, p₀, p₋)), so d*ₛ = (k₊ − k₋)/nₛ costs
  O(1) per resample whatever nₛ is. The interval is the 2.5 % and 97.5 % quantiles of d*; a fixed
  ``seed`` makes it deterministic.

Without per-example outcomes (older stores, ``per_example = false``) :func:`unpaired` falls back to
the normal approximation for two independent accuracies: d ± 1.96·√(se_A² + se_B²), p from the
two-sided z test.

Verdict rules (:func:`beats`, :func:`at_least`, :func:`at_most`) read only the interval:
"A beats B" holds when the interval lies above 0 and fails when it lies at or below 0; "A ≥ B − m"
(non-inferiority with margin m) holds when the interval's lower end is above −m and fails when its
upper end is below −m; anything else is undecided (``None``: inconclusive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "Comparison",
    "at_least",
    "at_most",
    "beats",
    "mcnemar_exact",
    "paired",
    "paired_bootstrap",
    "unpaired",
]

#: bootstrap resamples and seed of :func:`paired` (fixed: the same outcomes give the same interval)
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Comparison:
    """A − B in accuracy (fractions): effect ``diff``, 95 % interval [``low``, ``high``], two-sided
    ``p``, ``n`` paired examples (summed over ``seeds``), and how it was computed (``method``:
    ``paired`` — McNemar + paired bootstrap — or ``unpaired`` — normal approximation)."""

    diff: float
    low: float
    high: float
    p: float
    n: int
    seeds: int
    method: str
    discordant: tuple[int, int] = (0, 0)  # (A right & B wrong, A wrong & B right), paired only

    def text(self) -> str:
        """``+3.1 pp [+0.4, +5.9]``."""
        return f"{100 * self.diff:+.1f} pp [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def to_dict(self) -> dict[str, object]:
        return {
            "diff": self.diff,
            "low": self.low,
            "high": self.high,
            "p": self.p,
            "n": self.n,
            "seeds": self.seeds,
            "method": self.method,
            "discordant": list(self.discordant),
        }


def mcnemar_exact(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> tuple[float, int, int]:
    """McNemar's exact two-sided p-value of paired outcomes ``a``, ``b`` (1 = correct), with the
    discordant counts (n₁₀, n₀₁); see the module docstring. Raises ValueError on unequal lengths."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes need equal lengths, got {x.shape} and {y.shape}")
    n10 = int(np.sum(x & ~y))
    n01 = int(np.sum(~x & y))
    return _mcnemar_p(n10, n01), n10, n01


def _mcnemar_p(n10: int, n01: int) -> float:
    """Two-sided exact binomial p-value at ½: Binomial(m, ½) is symmetric, so the outcomes at
    least as unlikely as n₁₀ are the two tails beyond min(n₁₀, n₀₁): p = min(1, 2·P(X ≤ min)),
    in exact integer arithmetic (what ``scipy.stats.binomtest`` gives, without importing SciPy's
    statistics package, which alone takes seconds to load)."""
    m = n10 + n01
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(n10, n01) + 1))
    return min(1.0, float(Fraction(2 * tail, 2**m)))


def paired_bootstrap(
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of d = mean over seeds of (āₛ − b̄ₛ) by the two-stage paired bootstrap
    (seeds, then examples within a seed; module docstring). ``groups``: one (a, b) pair of equal-
    length outcome arrays per seed."""
    if not groups:
        raise ValueError("paired_bootstrap needs at least one group")
    rng = np.random.default_rng(seed)
    probs, sizes = [], []
    for a, b in groups:
        d = np.asarray(a, dtype=np.int8) - np.asarray(b, dtype=np.int8)
        n = int(d.size)
        if n == 0:
            raise ValueError("paired_bootstrap: a group has no examples")
        sizes.append(n)
        probs.append([np.sum(d == 1) / n, np.sum(d == 0) / n, np.sum(d == -1) / n])
    s = len(groups)
    pick = rng.integers(0, s, size=(resamples, s)) if s > 1 else np.zeros((resamples, 1), dtype=np.int64)
    means = np.empty((resamples, s))
    for g in range(s):
        slots = pick == g
        k = int(slots.sum())
        if k:
            draws = rng.multinomial(sizes[g], probs[g], size=k)
            means[slots] = (draws[:, 0] - draws[:, 2]) / sizes[g]
    stat = means.mean(axis=1)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(stat, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired(
    groups: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """A − B from per-example outcomes, one (a, b) pair of arrays per seed (module docstring)."""
    diffs = [float(np.mean(a) - np.mean(b)) for a, b in groups]
    n10 = n01 = 0
    for a, b in groups:
        _, x, y = mcnemar_exact(a, b)
        n10, n01 = n10 + x, n01 + y
    low, high = paired_bootstrap(groups, resamples=resamples, seed=seed)
    return Comparison(
        diff=float(np.mean(diffs)),
        low=low,
        high=high,
        p=_mcnemar_p(n10, n01),
        n=sum(len(a) for a, _ in groups),
        seeds=len(groups),
        method="paired",
        discordant=(n10, n01),
    )


def unpaired(mean_a: float, se_a: float, mean_b: float, se_b: float, n: int, seeds: int) -> Comparison:
    """A − B from two accuracies and their standard errors (normal approximation; module docstring)."""
    d = mean_a - mean_b
    se = math.sqrt(se_a**2 + se_b**2) if se_a == se_a and se_b == se_b else 0.0
    if se > 0:
        z = abs(d) / se
        p = math.erfc(z / math.sqrt(2))  # = 2 (1 − Φ(z))
    else:
        p = 1.0 if d == 0 else 0.0
    return Comparison(d, d - 1.96 * se, d + 1.96 * se, p, n, seeds, "unpaired")


def beats(c: Comparison) -> bool | None:
    """ "A beats B": True when the interval is above 0, False when it is at or below 0, else None."""
    if c.low > 0:
        return True
    if c.high <= 0:
        return False
    return None


def at_least(c: Comparison, margin: float) -> bool | None:
    """ "A ≥ B − margin" (non-inferiority): True when low > −margin, False when high < −margin."""
    if c.low > -margin:
        return True
    if c.high < -margin:
        return False
    return None


def at_most(c: Comparison, margin: float) -> bool | None:
    """ "A ≤ B + margin": True when high < margin, False when low > margin, else None."""
    if c.high < margin:
        return True
    if c.low > margin:
        return False
    return None
