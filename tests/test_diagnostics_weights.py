"""Weight uncertainty (Min-Max eqs. 14–15): fuzziness, per-layer values, histograms, Table 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entrobust.diagnostics.weights import (
    conv_fuzziness,
    first_conv_fuzziness,
    fuzziness,
    plot_weight_histograms,
    table3,
    weight_histograms,
)
from entrobust.errors import ConfigError


def reference(w: np.ndarray) -> float:
    """Eq. 14 written out term by term with ρ = 1/(1 + |w|) (eq. 15)."""
    total = 0.0
    for v in w.reshape(-1):
        rho = 1.0 / (1.0 + abs(float(v)))
        for p in (rho, 1.0 - rho):
            if p > 0:
                total -= p * math.log(p)
    return total / w.size


def test_fuzziness_equals_the_formula() -> None:
    w = np.array([0.0, 0.1, -0.5, 1.0, -3.0, 20.0])
    assert fuzziness(torch.tensor(w)) == pytest.approx(reference(w), rel=1e-12)
    assert fuzziness(torch.tensor(w), base=2) == pytest.approx(reference(w) / math.log(2), rel=1e-12)


def test_fuzziness_is_maximal_at_rho_one_half() -> None:
    assert fuzziness(torch.ones(10)) == pytest.approx(math.log(2))  # |w| = 1 ⇔ ρ = 0.5
    assert fuzziness(-torch.ones(3)) == pytest.approx(math.log(2))
    assert fuzziness(torch.zeros(5)) == 0.0  # ρ = 1: no uncertainty
    assert fuzziness(torch.full((4,), 1e9)) < 1e-6  # ρ → 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=30))
def test_fuzziness_bounded_by_log2_with_equality_only_at_unit_weights(values: list[float]) -> None:
    w = torch.tensor(values, dtype=torch.float64)
    f = fuzziness(w)
    assert 0.0 <= f <= math.log(2) + 1e-12
    assert f == pytest.approx(reference(np.asarray(values)), rel=1e-9, abs=1e-12)
    if not torch.allclose(w.abs(), torch.ones_like(w), atol=1e-3):
        assert f < math.log(2)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))


def test_conv_fuzziness_per_layer_excludes_bias_and_linear() -> None:
    model = net()
    fz = conv_fuzziness(model)
    assert list(fz) == ["0", "2"]
    assert fz["0"] == pytest.approx(reference(model[0].weight.detach().numpy()))
    assert first_conv_fuzziness(model) == fz["0"]
    with pytest.raises(ConfigError, match="no convolution"):
        conv_fuzziness(nn.Linear(3, 2))


def test_weight_histograms_count_every_weight(tmp_path) -> None:
    model = net()
    hists = weight_histograms(model, bins=10, zero_width=0.05)
    assert [h.layer for h in hists] == ["0", "2"]
    for h, m in zip(hists, (model[0], model[2]), strict=True):
        assert sum(h.counts) == h.total == m.weight.numel()
        assert h.near_zero == int((m.weight.abs() < 0.05).sum())
        assert len(h.edges) == 11
    path = plot_weight_histograms({"a": model, "b": net()}, tmp_path / "w.png")
    assert path.stat().st_size > 1000


def test_table3_layout() -> None:
    text = table3(
        {"Standard model": {"MNIST": 0.4417, "CIFAR10": 0.2842}, "Min-Max model": {"MNIST": 0.0053}},
        datasets=["MNIST", "CIFAR10"],
    )
    lines = text.splitlines()
    assert "MNIST" in lines[0] and lines[0].index("MNIST") < lines[0].index("CIFAR10")
    assert "0.4417" in lines[2] and "0.2842" in lines[2]
    assert lines[3].startswith("Min-Max model") and "—" in lines[3]
