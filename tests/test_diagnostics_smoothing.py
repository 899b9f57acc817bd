"""Randomized smoothing (Cohen et al. 2019): Clopper–Pearson bound, CERTIFY radius, PREDICT abstain."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom, norm
from torch import nn

from entrobust.diagnostics.smoothing import (
    ABSTAIN,
    certified_accuracy,
    certify,
    certify_dataset,
    lower_confidence_bound,
    predict,
    sample_counts,
)
from entrobust.errors import ConfigError


class Constant(nn.Module):
    """Always predicts ``cls`` whatever the noise."""

    def __init__(self, cls: int, classes: int = 3) -> None:
        super().__init__()
        self.cls, self.classes = cls, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.classes)
        out[:, self.cls] = 1.0
        return out


class Threshold(nn.Module):
    """Class 1 when the first pixel exceeds ``t``, else class 0: with x₀ + N(0, σ²) the probability
    of class 1 is exactly 1 − Φ((t − x₀)/σ)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0] - self.t
        return torch.stack([-z, z], dim=1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("k", "n", "alpha"), [(1, 10, 0.05), (37, 50, 0.001), (990, 1000, 0.01), (5, 5, 0.1)]
)
def test_lower_bound_is_the_one_sided_clopper_pearson_bound(k: int, n: int, alpha: float) -> None:
    # independent definition: the p at which observing >= k successes has probability alpha
    want = brentq(lambda p: binom.sf(k - 1, n, p) - alpha, 1e-12, 1 - 1e-12)
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(want, rel=1e-7)
    assert lower_confidence_bound(0, n, alpha) == 0.0
    with pytest.raises(ConfigError):
        lower_confidence_bound(n + 1, n, alpha)


def test_certify_radius_for_a_noise_free_model_is_analytic() -> None:
    sigma, n, alpha = 0.25, 1000, 0.001
    cls, radius = certify(Constant(2), torch.rand(1, 4, 4), sigma, n0=10, n=n, alpha=alpha, batch=300)
    # all n samples agree: p_lower = α^(1/n) exactly
    assert cls == 2
    assert radius == pytest.approx(sigma * norm.ppf(alpha ** (1.0 / n)), rel=1e-9)


def test_certify_radius_matches_known_class_probability() -> None:
    sigma, p = 0.12, 0.9
    t = 0.5 + sigma * norm.ppf(1 - p)  # P(class 1) = 1 − Φ((t − 0.5)/σ) = p
    x = torch.full((1, 2, 2), 0.5)
    n, alpha = 20_000, 0.001
    cls, radius = certify(Threshold(t), x, sigma, n0=100, n=n, alpha=alpha, batch=5000, generator=gen(0))
    assert cls == 1
    exact = sigma * norm.ppf(p)
    slack = 4 * math.sqrt(p * (1 - p) / n)  # p_lower lies within a few standard errors below p
    assert sigma * norm.ppf(p - slack) <= radius <= exact


def test_certify_abstains_below_one_half() -> None:
    x = torch.full((1, 2, 2), 0.5)
    cls, radius = certify(Threshold(0.5), x, 0.1, n0=50, n=2000, alpha=0.001, batch=1000, generator=gen(1))
    assert (cls, radius) == (ABSTAIN, 0.0)


def test_predict_abstains_on_a_fifty_fifty_model_and_answers_a_clear_one() -> None:
    x = torch.full((1, 2, 2), 0.5)
    abstained = sum(
        predict(Threshold(0.5), x, 0.1, n=1000, alpha=0.001, batch=500, generator=gen(s)) == ABSTAIN
        for s in range(5)
    )
    assert abstained == 5
    assert predict(Threshold(0.3), x, 0.1, n=1000, alpha=0.001, batch=500, generator=gen(0)) == 1
    assert predict(Constant(1), x, 0.1, n=100, alpha=0.001) == 1


def test_noise_is_added_in_pixel_space_without_clamping() -> None:
    # x = 0 and threshold −0.05: negative noisy pixels exist only if noise is not clamped to [0, 1]
    counts = sample_counts(Threshold(-0.05), torch.zeros(1, 1, 1), 0.1, 4000, batch=1000, generator=gen(0))
    frac0 = counts[0] / counts.sum()
    assert frac0 == pytest.approx(norm.cdf(-0.5), abs=0.03)


def test_certify_dataset_and_certified_accuracy() -> None:
    x = torch.full((3, 1, 2, 2), 0.5)
    y = torch.tensor([2, 2, 0])
    res = certify_dataset(
        Constant(2), x, y, sigma=0.5, n0=10, n=200, alpha=0.01, batch=100, radii=(0.0, 0.5, 5.0)
    )
    r = 0.5 * norm.ppf(0.01 ** (1 / 200))
    assert res.predictions == [2, 2, 2] and res.radii == pytest.approx([r, r, r])
    assert res.certified_accuracy == {0.0: pytest.approx(2 / 3), 0.5: pytest.approx(2 / 3), 5.0: 0.0}
    assert "certified accuracy" in res.table()
    assert certified_accuracy([1, 1, 0], [1, ABSTAIN, 0], [0.3, 0.0, 0.1], 0.2) == pytest.approx(1 / 3)


def test_bad_arguments_are_refused() -> None:
    x = torch.zeros(1, 2, 2)
    with pytest.raises(ConfigError, match="sigma"):
        certify(Constant(0), x, 0.0, 10, 10, 0.01)
    with pytest.raises(ConfigError, match="alpha"):
        predict(Constant(0), x, 0.1, 10, 1.5)
    with pytest.raises(ConfigError, match="n0"):
        certify(Constant(0), x, 0.1, 0, 10, 0.01)
