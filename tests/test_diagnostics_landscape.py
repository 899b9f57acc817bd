"""Landscapes (RU App. C.2, Kanai App. F.1), the smoothness toy (Kanai §5.1, App. C) and the
decision-boundary picture (ATENT Fig. 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entrobust.attacks.base import margin_of
from entrobust.diagnostics.boundary import decision_boundary, plot_boundary
from entrobust.diagnostics.landscape import (
    dataset_loss,
    filter_normalized_direction,
    input_surface,
    parameter_landscape,
    plot_input_surfaces,
    plot_parameter_landscape,
)
from entrobust.diagnostics.toy import (
    entropy_sgd_loss,
    linear_adversarial_loss,
    linear_loss,
    pgd_adversarial_loss,
    plot_toy_surfaces,
    toy_dataset,
    toy_surfaces,
    worst_delta_linear,
)
from entrobust.errors import ConfigError

torch.set_num_threads(1)

POINT = (np.array([[-1.0, 1.0]]), np.array([1.0]))


def thetas(k: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, (k, 2))


# ------------------------------------------------------------------------------ smoothness toy
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("data", ["point", "gaussian"])
def test_closed_form_adversarial_loss_matches_pgd_on_the_linear_model(norm: str, data: str) -> None:
    x, y = POINT if data == "point" else toy_dataset(30, seed=1)
    th = thetas(25)
    closed = linear_adversarial_loss(th, x, y, 0.6, norm)  # type: ignore[arg-type]
    pgd = pgd_adversarial_loss(th, x, y, 0.6, norm, model="linear", steps=40, restarts=2)  # type: ignore[arg-type]
    np.testing.assert_allclose(pgd, closed, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_closed_form_delta_attains_the_closed_form_loss(norm: str) -> None:
    x, y = POINT
    for th in thetas(10, seed=2):
        d = worst_delta_linear(th, 1.0, 0.6, norm)  # type: ignore[arg-type]
        dual = np.linalg.norm(d) if norm == "l2" else np.abs(d).max()
        assert dual == pytest.approx(0.6)
        loss = np.logaddexp(0.0, -(th @ (x[0] + d)))
        assert loss == pytest.approx(float(linear_adversarial_loss(th, x, y, 0.6, norm)))  # type: ignore[arg-type]


def test_adversarial_loss_dominates_clean_and_reduces_to_it_at_eps_zero() -> None:
    x, y = toy_dataset(20)
    th = thetas(30)
    clean = linear_loss(th, x, y)
    for norm in ("l2", "linf"):
        assert np.all(linear_adversarial_loss(th, x, y, 0.6, norm) >= clean - 1e-12)  # type: ignore[arg-type]
        np.testing.assert_allclose(linear_adversarial_loss(th, x, y, 0.0, norm), clean)  # type: ignore[arg-type]
    # the ℓ∞ loss has a kink where θ₁ changes sign: one-sided slopes differ
    h = 1e-4
    f = lambda t1: float(linear_adversarial_loss(np.array([t1, 0.7]), *POINT, 0.6, "linf"))  # noqa: E731
    left, right = (f(0) - f(-h)) / h, (f(h) - f(0)) / h
    assert right - left > 0.5


def test_swish_pgd_is_at_least_the_clean_loss() -> None:
    th = thetas(20)
    from entrobust.diagnostics.toy import model_loss

    clean = model_loss(th, *POINT, "swish")
    adv = pgd_adversarial_loss(th, *POINT, 0.6, "linf", model="swish", steps=30, restarts=2)
    assert np.all(adv >= clean - 1e-12)
    with pytest.raises(ConfigError):
        pgd_adversarial_loss(th, *POINT, 0.6, "l3", model="swish")  # type: ignore[arg-type]


def test_entropy_sgd_loss_matches_the_closed_form_for_a_quadratic() -> None:
    a, gamma = 2.0, 1.5
    th = thetas(6)

    def quad(t: np.ndarray) -> np.ndarray:
        return 0.5 * a * (t**2).sum(-1)

    want = a * gamma / (2 * (a + gamma)) * (th**2).sum(-1) - math.log(2 * math.pi / (a + gamma))
    np.testing.assert_allclose(entropy_sgd_loss(quad, th, gamma=gamma, nodes=24), want, rtol=1e-6)
    got = entropy_sgd_loss(quad, th[:1], gamma=gamma, method="dblquad")
    assert got[0] == pytest.approx(want[0], rel=1e-6)


def test_toy_surfaces_keys_shapes_and_plot(tmp_path) -> None:
    res = toy_surfaces(resolution=7, pgd_steps=10, pgd_restarts=1, nodes=8)
    assert set(res.surfaces) == {
        "linear-clean",
        "linear-l2",
        "linear-linf",
        "swish-clean",
        "swish-l2",
        "swish-linf",
        "ensgd-l2",
        "ensgd-linf",
    }
    assert all(s.shape == (7, 7) for s in res.surfaces.values())
    # the grid is [i2, i1]: row 0 is θ₂ = −2
    assert res.surfaces["linear-clean"][0, 6] == pytest.approx(
        float(linear_loss(np.array([2.0, -2.0]), *POINT))
    )
    assert plot_toy_surfaces(res, tmp_path / "toy.png").stat().st_size > 1000


# ------------------------------------------------------------------------------- input space
def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def test_input_surface_centre_is_the_clean_point(tmp_path) -> None:
    model = small_model()
    x = torch.rand(1, 4, 4)
    s = input_surface(model, x, 1, resolution=5)
    with torch.no_grad():
        logits = model(x[None])
    c = 2
    assert s.eps1[c] == 0 and s.eps2[c] == 0
    assert s.loss[c, c] == pytest.approx(float(F.cross_entropy(logits, torch.tensor([1]))), rel=1e-5)
    assert s.margin[c, c] == pytest.approx(float(margin_of(logits, torch.tensor([1]))), rel=1e-5)
    # moving along +sign(∇CE) increases the loss at first order
    assert s.loss[c, c + 1] > s.loss[c, c] > s.loss[c, c - 1]
    plot_input_surfaces({"a": s}, tmp_path / "l.png")
    assert plot_input_surfaces({"a": s}, tmp_path / "m.png", what="margin").stat().st_size > 1000


# --------------------------------------------------------------------------- parameter space
def conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 3)).eval()


def test_filter_normalized_direction() -> None:
    model = conv_model()
    d = filter_normalized_direction(model, seed=3)
    for name, p in model.named_parameters():
        if p.dim() < 2:
            assert torch.count_nonzero(d[name]) == 0
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))


def test_parameter_landscape_restores_weights_and_starts_at_the_model_loss(tmp_path) -> None:
    model = conv_model()
    x, y = torch.rand(10, 1, 4, 4), torch.randint(0, 3, (10,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = parameter_landscape(model, x, y)
    assert len(one.alphas) == 21 and one.alphas[10] == 0
    assert one.loss[10] == pytest.approx(dataset_loss(model, x, y), rel=1e-6)
    two = parameter_landscape(model, x, y, alphas=[-0.5, 0.0, 0.5], two_d=True)
    assert two.loss.shape == (3, 3) and two.loss[1, 1] == pytest.approx(one.loss[10], rel=1e-6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert plot_parameter_landscape({"m": one, "2d": two}, tmp_path / "p.png").stat().st_size > 1000


# --------------------------------------------------------------------------- decision boundary
def test_decision_boundary_pca_regions_are_the_models_decisions(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(80, 1, 3, 3, generator=g)
    y = torch.where(x.flatten(1).mean(1) > 0.5, 8, 5)
    # a "10-class" model that separates by mean brightness, restricted to classes 5 and 8
    lin = nn.Linear(9, 10)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[8].fill_(10.0)
        lin.bias[8] = -45.0  # logit 8 > 0 = logit 5 ⇔ mean > 0.5
        lin.bias[3] = -100.0
    model = nn.Sequential(nn.Flatten(), lin).eval()
    pic = decision_boundary(model, x, y, classes=[5, 8], resolution=30)
    assert pic.accuracy == 1.0 and set(np.unique(pic.grid_pred)) == {5, 8}
    assert pic.grid_pred.shape == (30, 30) and pic.points.shape == (80, 2)
    assert pic.explained_variance is not None and pic.explained_variance[0] > 0
    assert plot_boundary({"m": pic}, tmp_path / "b.png").stat().st_size > 1000
    with pytest.raises(ConfigError):
        decision_boundary(model, x, y, classes=[5])
