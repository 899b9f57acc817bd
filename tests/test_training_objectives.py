"""Objectives and regularizers equal their equations (RU eqs. 4–8, TRADES, MART, ADP, ATENT, Min-Max)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entrobust.errors import ConfigError, UnknownNameError
from entrobust.training import objectives as O
from entrobust.training.regularizers import REGULARIZERS, l1_norm, minmax, penalized_weights, sq_l2_norm

torch.set_num_threads(1)


def _logits(seed: int, n: int = 6, c: int = 5, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, c, generator=g)).double()


def _labels(seed: int, n: int = 6, c: int = 5) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed + 100))


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- CE / EntM / LS
def test_ce_entm_ls_equal_hand_formulas():
    z, y = _logits(0), _labels(0)
    p = _np_softmax(z.numpy())
    ce = -np.log(p[np.arange(6), y.numpy()])
    h = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(O.ce(z, y, reduction="none").numpy(), ce, rtol=1e-10)
    np.testing.assert_allclose(O.entm(z, y, lam=2.0, reduction="none").numpy(), ce - 2.0 * h, rtol=1e-10)
    gamma, c = 0.74, 5
    target = (1 - gamma) * np.eye(c)[y.numpy()] + gamma / c
    np.testing.assert_allclose(
        O.ls(z, y, gamma=gamma, reduction="none").numpy(), -(target * np.log(p)).sum(1)
    )
    assert O.entm(z, y, lam=2.0).item() == pytest.approx(float((ce - 2 * h).mean()))
    assert O.ls(z, y, gamma=0.0).item() == pytest.approx(O.ce(z, y).item())
    assert O.entm(z, y, lam=0.0).item() == pytest.approx(O.ce(z, y).item())


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    c=st.integers(2, 12),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 5.0),
)
def test_ru_eqs_7_and_8_relate_ls_and_entm_to_kl_with_uniform(seed, c, gamma, lam):
    """RU eq. 7: L_smooth = (1−γ)CE + γ·KL(u_C‖p) + γ log C; eq. 8: L_entm = CE + λ·KL(p‖u_C) − λ log C."""
    z, y = _logits(seed, n=4, c=c), _labels(seed, n=4, c=c)
    p = F.softmax(z, dim=1)
    u = torch.full_like(p, 1.0 / c)
    kl_u_p = (u * (u.log() - p.log())).sum(1)
    kl_p_u = (p * (p.log() - u.log())).sum(1)
    ce = O.ce(z, y, reduction="none")
    torch.testing.assert_close(
        O.ls(z, y, gamma=gamma, reduction="none"), (1 - gamma) * ce + gamma * kl_u_p + gamma * math.log(c)
    )
    torch.testing.assert_close(O.entm(z, y, lam=lam, reduction="none"), ce + lam * kl_p_u - lam * math.log(c))


def test_reductions_and_errors():
    z, y = _logits(1), _labels(1)
    per = O.entm(z, y, reduction="none")
    assert per.shape == (6,)
    assert O.entm(z, y, reduction="sum").item() == pytest.approx(per.sum().item())
    assert O.entm(z, y, reduction="mean").item() == pytest.approx(per.mean().item())
    with pytest.raises(ConfigError, match="reduction"):
        O.ce(z, y, reduction="batchmean")
    with pytest.raises(ConfigError, match="gamma"):
        O.ls(z, y, gamma=1.5)
    with pytest.raises(ConfigError, match="base"):
        O.trades(z, z, y, base="kl")


# --------------------------------------------------------------------------- TRADES
def test_trades_kl_is_batchmean_not_mean():
    clean, adv, y = _logits(2), _logits(3), _labels(2)
    beta = 6.0
    got = O.trades(clean, adv, y, beta=beta)
    kl_batchmean = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    kl_mean = kl_batchmean / clean.shape[1]  # KLDivLoss 'mean': also divides by the number of classes
    torch.testing.assert_close(got, F.cross_entropy(clean, y) + beta * kl_batchmean)
    assert not torch.allclose(got, F.cross_entropy(clean, y) + beta * kl_mean)
    # TRADES-EntM: the base is L_entm on the clean logits
    torch.testing.assert_close(
        O.trades(clean, adv, y, beta=3.0, base="entm", lam=2.0),
        O.entm(clean, y, lam=2.0) + 3.0 * kl_batchmean,
    )
    # same adversarial and clean prediction: no robust term
    torch.testing.assert_close(O.trades(clean, clean, y, beta=beta), O.ce(clean, y))


def test_trades_does_not_detach_the_clean_prediction():
    clean, adv, y = _logits(4).requires_grad_(True), _logits(5), _labels(4)
    (g_trades,) = torch.autograd.grad(O.trades(clean, adv, y, beta=1.0), clean)
    (g_ce,) = torch.autograd.grad(O.ce(clean, y), clean)
    (g_kl,) = torch.autograd.grad(O.kl_divergence(clean, adv).mean(), clean)
    assert g_kl.abs().max() > 1e-3
    torch.testing.assert_close(g_trades, g_ce + g_kl)


# --------------------------------------------------------------------------- MART
def test_mart_equals_reference_formula():
    clean, adv, y = _logits(6), _logits(7), _labels(6)
    pc, pa, yy = _np_softmax(clean.numpy()), _np_softmax(adv.numpy()), y.numpy()
    n = len(yy)
    expect = []
    for i in range(n):
        others = [pa[i, k] for k in range(5) if k != yy[i]]
        bce = -np.log(pa[i, yy[i]]) - np.log(1.0001 - max(others) + 1e-12)
        kl = (pc[i] * (np.log(pc[i]) - np.log(pa[i] + 1e-12))).sum()
        expect.append(bce + 5.0 * kl * (1.0000001 - pc[i, yy[i]]))
    np.testing.assert_allclose(O.mart(clean, adv, y, beta=5.0, reduction="none").numpy(), expect, rtol=1e-9)
    assert O.mart(clean, adv, y, beta=5.0).item() == pytest.approx(float(np.mean(expect)))


def test_mix():
    a, b = torch.tensor(2.0), torch.tensor(4.0)
    assert O.mix(a, b, 0.5).item() == 3.0
    assert O.mix(a, b, 0.0).item() == 4.0
    with pytest.raises(ConfigError):
        O.mix(a, b, 1.5)


# --------------------------------------------------------------------------- ADP
def test_adp_equals_pang_formula():
    k, n, c = 3, 4, 6
    members = torch.randn(k, n, c, generator=torch.Generator().manual_seed(8)).double() * 2
    y = torch.tensor([0, 3, 5, 1])
    p = _np_softmax(members.numpy())  # [K, N, C]
    expect = []
    for i in range(n):
        ce = sum(-np.log(p[j, i, y[i]]) for j in range(k))
        pm = p[:, i].mean(0)
        ent = -(pm * np.log(pm + 1e-20)).sum()
        m = np.delete(p[:, i], int(y[i]), axis=1)
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        _, logdet = np.linalg.slogdet(m @ m.T + 1e-6 * np.eye(k))
        expect.append(ce - 2.0 * ent - 0.5 * logdet)
    np.testing.assert_allclose(O.adp(members, y, reduction="none").numpy(), expect, rtol=1e-8)
    with pytest.raises(ConfigError, match="K, N, C"):
        O.adp(members[0], y)


def test_adp_log_det_jitter_bounds_identical_members():
    """Two identical members: det(11ᵀ + 1e-6·I) = 2e-6 + 1e-12 — finite only thanks to the jitter."""
    z = torch.randn(1, 3, 5, generator=torch.Generator().manual_seed(9)).double()
    members = torch.cat([z, z])
    y = torch.tensor([1, 2, 0])
    logdet = O.adp_log_det(members, y)
    torch.testing.assert_close(logdet, torch.full((3,), math.log(2e-6 + 1e-12), dtype=torch.float64))


# --------------------------------------------------------------------------- ATENT
@settings(max_examples=20, deadline=None)
@given(samples=st.integers(1, 8), alpha=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_atent_equals_stochat_ema_recursion(samples, alpha, seed):
    logits = torch.randn(samples, 5, 4, generator=torch.Generator().manual_seed(seed)).double()
    y = _labels(seed, n=5, c=4)
    mu = torch.zeros((), dtype=torch.float64)
    for z in logits:  # GauriJagatap/StochAT: loss = (1 - alpha) * loss + alpha * loss_fn(y_pred, y)
        mu = (1 - alpha) * mu + alpha * F.cross_entropy(z, y)
    torch.testing.assert_close(O.atent(logits, y, alpha=alpha), mu)
    classic = torch.zeros((), dtype=torch.float64)
    for z in logits:
        classic = alpha * classic + (1 - alpha) * F.cross_entropy(z, y)
    torch.testing.assert_close(O.atent(list(logits), y, alpha=alpha, ema="classic"), classic)


def test_atent_weights_and_errors():
    w = O.atent_weights(3, 0.9)
    assert w == pytest.approx([0.9 * 0.01, 0.9 * 0.1, 0.9])
    assert sum(w) == pytest.approx(1 - 0.1**3)
    with pytest.raises(ConfigError):
        O.atent_weights(0)
    with pytest.raises(ConfigError, match="ema"):
        O.atent_weights(2, 0.9, "other")


# --------------------------------------------------------------------------- registry
def test_objective_registry_and_param_validation():
    assert set(O.OBJECTIVES.names()) == {"ce", "entm", "ls", "trades", "mart", "adp", "atent"}
    spec = O.OBJECTIVES.get("trades")
    spec.check_params({"beta": 3, "base": "entm", "lam": 2.0})
    with pytest.raises(ConfigError, match=r"params\.gamma"):
        spec.check_params({"beta": 3, "base": "entm", "gamma": 0.5})  # gamma belongs to ls
    with pytest.raises(ConfigError, match=r"params\.beta"):
        spec.check_params({"beta": "six"})
    with pytest.raises(ConfigError, match=r"params\.lam"):
        O.OBJECTIVES.get("entm").check_params({"lam": True})
    with pytest.raises(UnknownNameError, match="valid"):
        O.OBJECTIVES.get("nope")


# --------------------------------------------------------------------------- regularizers
class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 2)
        self.conv2 = nn.Conv1d(2, 1, 1, bias=False)
        self.fc = nn.Linear(3, 2)


def test_minmax_value_and_gradient_equal_the_formula():
    net = _ConvNet()
    w1 = torch.tensor([[[[0.5, -1.0], [0.0, 2.0]]], [[[-0.25, 0.1], [3.0, -0.2]]]])
    w2 = torch.tensor([[[1.5], [-0.5]]])
    with torch.no_grad():
        net.conv1.weight.copy_(w1)
        net.conv2.weight.copy_(w2)
    lam, mu = 0.3, 0.05
    l1 = w1.abs().sum() + w2.abs().sum()
    l2 = w1.pow(2).sum() + w2.pow(2).sum()
    value = minmax(net, lam, mu)
    assert value.item() == pytest.approx((lam * l1 - mu * l2).item(), rel=1e-6)
    value.backward()
    torch.testing.assert_close(net.conv1.weight.grad, lam * w1.sign() - 2 * mu * w1)
    torch.testing.assert_close(net.conv2.weight.grad, lam * w2.sign() - 2 * mu * w2)
    assert net.conv1.bias.grad is None and net.fc.weight.grad is None  # conv weights only
    # the registered versions and the ablations
    assert REGULARIZERS.get("minmax")(net, lam, mu).item() == pytest.approx(value.item())
    assert REGULARIZERS.get("l1")(net, lam, 0.0).item() == pytest.approx(lam * l1.item(), rel=1e-6)
    assert REGULARIZERS.get("negl2")(net, 0.0, mu).item() == pytest.approx(-mu * l2.item(), rel=1e-6)
    assert REGULARIZERS.get("none")(net, 0.0, 0.0).item() == 0.0


def test_regularizer_scope_and_errors():
    net = _ConvNet()
    assert len(penalized_weights(net, "conv")) == 2
    assert len(penalized_weights(net, "all")) == 3  # + linear weight, no biases
    expect = sum(p.detach().abs().sum() for p in (net.conv1.weight, net.conv2.weight, net.fc.weight))
    assert l1_norm(net, "all").detach().item() == pytest.approx(float(expect), rel=1e-6)
    assert sq_l2_norm(nn.Linear(2, 2)).item() == 0.0  # no conv: zero
    with pytest.raises(ConfigError, match="scope"):
        penalized_weights(net, "bn")
    with pytest.raises(ConfigError, match="lam"):
        REGULARIZERS.get("minmax")(net, -1.0, 0.0)
    with pytest.raises(ConfigError, match="mu"):
        REGULARIZERS.get("l1")(net, 1.0, 1.0)
