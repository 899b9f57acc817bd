"""Geometry metrics (RU §6, Table 4): Jacobian spectral norm, margins, Q_f, accumulators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import jacrev

from entrobust.diagnostics.accumulators import HistogramAccumulator, MeanAccumulator, PearsonAccumulator
from entrobust.diagnostics.geometry import (
    GeometryAccumulator,
    GeometryResult,
    decision_margin,
    default_minimal_l2,
    format_table4,
    jacobian_spectral_norm,
    minimal_distortion,
    nonlinearity,
    table4_rows,
)
from entrobust.errors import ConfigError

torch.set_num_threads(1)


def tiny_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).eval()


def tiny_mlp(seed: int) -> nn.Module:
    """A ReLU MLP whose (scaled-up) weights make its predictions vary over [0, 1]^16."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    with torch.no_grad():
        model[1].weight.mul_(6.0)
        model[1].bias.sub_(model[1].weight.sum(1) / 2)  # centre the units on x = 0.5
    return model


def dense_top_singular(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = []
    for i in range(x.shape[0]):
        jac = jacrev(model)(x[i : i + 1]).reshape(-1, x[i].numel())
        out.append(torch.linalg.svdvals(jac.detach())[0])
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jacobian_norm_equals_top_singular_value_cnn(seed: int) -> None:
    model = tiny_cnn(seed)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    got = jacobian_spectral_norm(model, x, iters=300, tol=1e-9)
    want = dense_top_singular(model, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_jacobian_norm_equals_top_singular_value_mlp() -> None:
    model = tiny_mlp(3)
    x = torch.rand(6, 1, 4, 4)
    torch.testing.assert_close(
        jacobian_spectral_norm(model, x, iters=300, tol=1e-9),
        dense_top_singular(model, x),
        rtol=1e-4,
        atol=1e-6,
    )


def test_jacobian_norm_is_batch_independent_and_leaves_model_alone() -> None:
    model = tiny_cnn(0).train()
    x = torch.rand(6, 1, 8, 8)
    whole = jacobian_spectral_norm(model, x)
    parts = torch.cat([jacobian_spectral_norm(model, x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-7)
    assert model.training  # mode restored
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_margin_on_hand_made_logits() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0], [-5.0, -1.0, -3.0], [0.5, 0.5, -1.0]])
    y = torch.tensor([0, 2, 1])
    torch.testing.assert_close(decision_margin(logits, y), torch.tensor([1.0, -2.0, 0.0]))


def linear_model(weight: list[list[float]]) -> nn.Module:
    lin = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_normalized_margin_of_a_linear_model() -> None:
    # f(x) = W x with W = diag(3, 1): the Jacobian is W everywhere, ‖W‖₂ = 3.
    model = linear_model([[3.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[1.0, 1.0], [0.2, 0.9]]).view(2, 1, 1, 2)
    y = torch.tensor([0, 1])
    acc = GeometryAccumulator(jacobian=True)
    acc.update(model, x, y)
    res = acc.compute()
    margins = [3 * 1.0 - 1.0, 0.9 - 3 * 0.2]  # [2.0, 0.3]
    assert res.margin == pytest.approx(np.mean(margins))
    assert res.jacobian_norm == pytest.approx(3.0, rel=1e-5)
    assert res.normalized_margin == pytest.approx(np.mean(margins) / 3.0, rel=1e-5)
    assert res.clean_accuracy == 1.0


def test_nonlinearity_is_zero_for_a_linear_model_and_positive_otherwise() -> None:
    x = torch.rand(8, 1, 4, 4)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    q_lin = nonlinearity(lin, x, x_adv)
    assert torch.all(q_lin < 1e-4)
    torch.manual_seed(0)
    smooth = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 4)).eval()
    assert torch.all(nonlinearity(smooth, x, x_adv) > 1e-4)
    assert torch.isnan(nonlinearity(lin, x, x)).all()  # no step: undefined


def test_nonlinearity_matches_definition() -> None:
    model = tiny_mlp(1)
    x = torch.rand(3, 1, 4, 4)
    x_adv = x + 0.05
    jac = [jacrev(model)(x[i : i + 1]).reshape(4, 16) for i in range(3)]
    with torch.no_grad():
        f_x, f_a = model(x), model(x_adv)
    want = []
    for i in range(3):
        lin = jac[i].detach() @ (x_adv[i] - x[i]).reshape(-1)
        want.append((f_a[i] - f_x[i] - lin).norm() / lin.norm())
    torch.testing.assert_close(nonlinearity(model, x, x_adv), torch.stack(want), rtol=1e-4, atol=1e-6)


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs with labels = the tiny MLP's predictions, every fourth one changed (a mix of
    correctly and wrongly classified points)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = tiny_mlp(0)(x).argmax(1)
    y[::4] = (y[::4] + 1) % 4
    return x, y


def _deterministic_adversary(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
    step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + 0.5 * step).clamp(0, 1)


def _run(batches: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> GeometryResult:
    model = tiny_mlp(0)
    acc = GeometryAccumulator(
        adversary=_deterministic_adversary, distortion=default_minimal_l2("deepfool"), num_classes=4
    )
    for idx in batches:
        acc.update(model, x[idx], y[idx])
    return acc.compute()


def _assert_same(a: GeometryResult, b: GeometryResult) -> None:
    for key in (
        "n",
        "clean_accuracy",
        "margin",
        "jacobian_norm",
        "normalized_margin",
        "adv_accuracy",
        "nonlinearity",
        "distortion",
        "correlation",
    ):
        va, vb = getattr(a, key), getattr(b, key)
        assert va == pytest.approx(vb, rel=1e-4, abs=1e-6, nan_ok=True), key
    assert a.counts == b.counts
    for k in a.histograms:
        assert a.histograms[k].counts == b.histograms[k].counts, k


def test_accumulator_same_over_one_batch_or_many_in_any_order() -> None:
    x, y = _data()
    whole = _run([torch.arange(24)], x, y)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    shuffled = _run([perm[:5], perm[5:6], perm[6:17], perm[17:]], x, y)
    _assert_same(whole, shuffled)
    assert whole.n == 24 and whole.counts["adversarial"] == 24
    assert not math.isnan(whole.correlation)


def test_accumulator_merge_equals_single_pass() -> None:
    x, y = _data()
    model = tiny_mlp(0)
    full = GeometryAccumulator(adversary=_deterministic_adversary)
    full.update(model, x, y)
    a, b = (
        GeometryAccumulator(adversary=_deterministic_adversary),
        GeometryAccumulator(adversary=_deterministic_adversary),
    )
    a.update(model, x[:10], y[:10])
    b.update(model, x[10:], y[10:])
    a.merge(b)
    _assert_same(full.compute(), a.compute())
    with pytest.raises(ConfigError):
        a.merge(MeanAccumulator())  # type: ignore[arg-type]


def test_minimal_distortion_marks_failures_as_nan() -> None:
    model = tiny_mlp(0)
    x, y = _data(6)

    def never(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return xb.clone()

    with torch.no_grad():
        wrong = model(x).argmax(1).ne(y)
    d = minimal_distortion(model, x, y, never)
    assert torch.equal(torch.isnan(d), ~wrong)  # x itself fools only the misclassified ones
    with pytest.raises(ConfigError):
        minimal_distortion(model, x, y, lambda m, a, b: torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-100, 100), min_size=3, max_size=40),
    st.integers(0, 1000),
    st.integers(1, 5),
)
def test_pearson_accumulator_matches_numpy(values: list[float], seed: int, parts: int) -> None:
    a = np.asarray(values)
    b = np.random.default_rng(seed).normal(size=a.size) + 0.5 * a
    acc = PearsonAccumulator()
    cuts = np.array_split(np.arange(a.size), parts)
    for c in reversed(cuts):
        acc.add(torch.as_tensor(a[c]), torch.as_tensor(b[c]))
    assume(np.std(a) > 1e-3)  # a (near-)constant series has no meaningful correlation
    assert acc.correlation() == pytest.approx(float(np.corrcoef(a, b)[0, 1]), abs=1e-8)
    assert acc.count == a.size


def test_pearson_of_a_constant_series_is_nan() -> None:
    acc = PearsonAccumulator()
    acc.add(torch.ones(5), torch.arange(5.0))
    assert math.isnan(acc.correlation())


def test_mean_and_histogram_accumulators() -> None:
    m = MeanAccumulator()
    m.add(torch.tensor([1.0, float("nan"), 3.0, float("inf")]))
    assert m.count == 2 and m.mean() == 2.0 and m.std() == pytest.approx(math.sqrt(2.0))
    h = HistogramAccumulator(0.0, 1.0, 4)
    h.add(torch.tensor([0.0, 0.1, 0.3, 0.99, 1.0, 5.0, -1.0]))
    assert h.result().counts == [3, 1, 0, 3]
    with pytest.raises(ConfigError):
        HistogramAccumulator(1.0, 1.0)


def test_table4_rows_layout() -> None:
    a = GeometryResult(10, 0.9, 10.55, 72.26, 0.1919, 0.0029, 4.4, 0.3, 0.8327)
    b = GeometryResult(10, 0.9, 1.12, 0.84, 2.9913, 0.6142, 5.36, 0.9, 0.8131)
    rows = table4_rows({"Normal": a, "PAT-EntM": b})
    labels = [r[0] for r in rows]
    assert labels[0] == "M_{f,x}" and labels[3] == "Accuracy (PGD20-0.5)" and len(rows) == 6
    assert rows[1][1] == [72.26, 0.84] and rows[5][1] == [0.8327, 0.8131]
    text = format_table4({"Normal": a, "PAT-EntM": b})
    assert "Normal" in text and "PAT-EntM" in text and "2.991" in text


def test_default_l2_adversary_keeps_the_accumulator_batch_invariant() -> None:
    from entrobust.diagnostics.geometry import default_l2_adversary

    x, y = _data()
    model = tiny_mlp(0)
    results = []
    for splits in (
        [torch.arange(24)],
        list(torch.randperm(24, generator=torch.Generator().manual_seed(2)).split(7)),
    ):
        acc = GeometryAccumulator(jacobian=False, adversary=default_l2_adversary(0.5), num_classes=4)
        for idx in splits:
            acc.update(model, x[idx], y[idx])
        results.append(acc.compute())
    _assert_same(results[0], results[1])
    assert results[0].adv_accuracy < results[0].clean_accuracy
