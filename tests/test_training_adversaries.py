"""Training adversaries: PGD/TRADES/MART on the engine, and the ATENT SGLD samplers' laws."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entrobust.attacks import ThreatModel
from entrobust.errors import ConfigError
from entrobust.training.adversaries import ADVERSARIES, ATENTSampler, GradientAdversary, build_adversary
from entrobust.training.method import AdversaryConfig, MethodConfig, bind_method

torch.set_num_threads(1)


class ConstantModel(nn.Module):
    """Logits independent of the input: the input gradient is exactly zero."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).sum(1, keepdim=True) * 0.0) + self.bias


def tiny_bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    )


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.Tanh(), nn.Linear(16, 3))


def batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def trajectory(
    sampler: ATENTSampler, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[torch.Tensor]:
    return [s for s, _ in sampler.trajectory(model, x, y)]


# --------------------------------------------------------------------------- ATENT noise laws
def test_atent_linf_zero_gradient_samples_follow_gaussian_random_walk():
    """∇ = 0, no init, no projection: x′ᵏ − x ~ N(0, k·ε²·2η′) per pixel (Alg. 2, line 7)."""
    torch.manual_seed(0)
    x = torch.full((40, 1, 10, 10), 0.5)
    y = torch.zeros(40, dtype=torch.long)
    s = ATENTSampler("linf", 0.3, steps=4, step_size=0.02, noise=0.05, init="none", project="none")
    sigma = 0.05 * math.sqrt(2 * 0.02)
    assert s.noise_std == pytest.approx(sigma)
    for k, xk in enumerate(trajectory(s, ConstantModel(), x, y), start=1):
        d = xk - x
        assert abs(d.mean().item()) < 4 * sigma * math.sqrt(k / d.numel())
        assert d.var().item() == pytest.approx(k * sigma**2, rel=0.1)


def test_atent_linf_last_sample_lies_in_ball_of_radius_one_over_gamma():
    torch.manual_seed(1)
    x = torch.full((20, 1, 8, 8), 0.5)
    y = torch.zeros(20, dtype=torch.long)
    gamma = 1 / 0.05
    s = ATENTSampler("linf", 0.3, steps=3, step_size=0.02, noise=0.5, gamma=gamma, gamma_reading="literal")
    assert s.radius == pytest.approx(0.05)
    samples = trajectory(s, ConstantModel(), x, y)
    last = (samples[-1] - x).abs()
    assert last.max().item() <= 1 / gamma + 1e-6
    assert (last > 1 / gamma - 1e-6).float().mean() > 0.3  # the projection was active
    assert (samples[-2] - x).abs().max().item() > 1 / gamma  # only the last step is projected
    # default reading 1/γ = ε: the radius is eps
    s2 = ATENTSampler("linf", 0.04, steps=3, step_size=0.02, noise=0.5)
    assert (trajectory(s2, ConstantModel(), x, y)[-1] - x).abs().max().item() <= 0.04 + 1e-6
    # project="every" keeps every sample in the ball
    s3 = ATENTSampler("linf", 0.04, steps=3, step_size=0.02, noise=0.5, project="every")
    assert max((xk - x).abs().max().item() for xk in trajectory(s3, ConstantModel(), x, y)) <= 0.04 + 1e-6


def test_atent_l2_zero_gradient_is_ar1_with_pullback():
    """∇ = 0: d_k = (1 − γ)·d_{k−1} + σξ, so Var d_K = σ²·(1 − (1−γ)^{2K}) / (1 − (1−γ)²) (Alg. 1)."""
    torch.manual_seed(2)
    x = torch.full((40, 1, 10, 10), 0.5)
    y = torch.zeros(40, dtype=torch.long)
    gamma, steps = 0.3, 5
    s = ATENTSampler("l2", 0.5, steps=steps, step_size=0.01, noise=0.2, gamma=gamma, init="none")
    sigma = s.noise_std
    d = trajectory(s, ConstantModel(), x, y)[-1] - x
    var = sigma**2 * (1 - (1 - gamma) ** (2 * steps)) / (1 - (1 - gamma) ** 2)
    assert d.var().item() == pytest.approx(var, rel=0.1)
    assert abs(d.mean().item()) < 4 * math.sqrt(var / d.numel())


def test_atent_inits():
    torch.manual_seed(3)
    x = torch.full((6, 1, 5, 5), 0.5)
    sign = ATENTSampler("linf", 0.1, init="sign").start(x)
    torch.testing.assert_close((sign - x).abs(), torch.full_like(x, 0.1))
    sphere = ATENTSampler("l2", 0.2, init="sphere").start(x)
    torch.testing.assert_close((sphere - x).flatten(1).norm(dim=1), torch.full((6,), 0.2))
    gauss = ATENTSampler("l2", 0.2, init="gaussian").start(torch.full((200, 1, 5, 5), 0.5))
    assert (gauss - 0.5).flatten(1).pow(2).sum(1).mean().item() == pytest.approx(0.04, rel=0.15)
    assert torch.equal(ATENTSampler("linf", 0.1, init="none").start(x), x)


def test_atent_steps_follow_the_update_rules_without_noise():
    model, (x, y) = tiny_net(), batch()
    eta = 0.01

    def grad_at(z: torch.Tensor) -> torch.Tensor:
        z = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), z)
        return g

    s = ATENTSampler(
        "linf", 0.3, steps=2, step_size=eta, noise=0.0, init="none", project="none", bn_mode="eval"
    )
    x1, x2 = trajectory(s, model, x, y)
    torch.testing.assert_close(x1, (x + eta * grad_at(x).sign()).clamp(0, 1))
    torch.testing.assert_close(x2, (x1 + eta * grad_at(x1).sign()).clamp(0, 1))
    gamma = 0.2
    s = ATENTSampler("l2", 0.3, steps=2, step_size=eta, noise=0.0, gamma=gamma, init="none", bn_mode="eval")
    x1, x2 = trajectory(s, model, x, y)
    g1 = grad_at(x1)
    g1 = g1 / g1.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(x2, (x1 + eta * g1 + gamma * (x - x1)).clamp(0, 1))


def test_atent_shared_forward_trajectory_equals_frozen_one():
    """Reusing the training forward for the next input gradient changes nothing (no BN, no dropout)."""
    model, (x, y) = tiny_net(), batch()
    s = ATENTSampler("linf", 0.1, steps=4, step_size=0.02, noise=0.01, bn_mode="train")
    model.train()
    torch.manual_seed(5)
    shared = [(xk, z) for xk, z in s.trajectory(model, x, y, train_forward=True)]
    torch.manual_seed(5)
    plain = trajectory(s, model, x, y)
    assert all(z is not None and z.requires_grad for _, z in shared)
    for (a, z), b in zip(shared, plain, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(z.detach(), model(b))
    assert all(p.grad is None for p in model.parameters())


def test_atent_gamma_readings_and_errors():
    assert ATENTSampler("linf", 0.3, gamma=3.33).radius == pytest.approx(0.3)  # 3.33 ≈ 1/0.3
    assert ATENTSampler("linf", 0.031, gamma=1 / 0.0031, gamma_reading="literal").radius == pytest.approx(
        0.0031
    )
    with pytest.raises(ConfigError, match="inverse-eps"):
        ATENTSampler("linf", 0.031, gamma=1 / 0.0031)  # the paper's printed CIFAR γ contradicts ε
    with pytest.raises(ConfigError, match="literal"):
        ATENTSampler("linf", 0.03, gamma_reading="literal")
    assert ATENTSampler("l2", 0.5).pull == 0.05
    with pytest.raises(ConfigError):
        ATENTSampler("l1", 0.5)
    with pytest.raises(ConfigError):
        ATENTSampler("linf", 0.5, init="cube")


# --------------------------------------------------------------------------- PGD family
@pytest.mark.parametrize("kind", ["pgd", "trades", "mart"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_gradient_adversaries_stay_in_threat_model_and_leave_model_alone(kind, norm):
    model, (x, y) = tiny_bn_net(), batch()
    model.train()
    eps = 0.1 if norm == "linf" else 0.5
    cfg = AdversaryConfig(kind=kind, norm=norm, eps=eps, steps=3)
    adv = build_adversary(cfg)
    assert isinstance(adv, GradientAdversary)
    before = [p.detach().clone() for p in model.parameters()]
    x_adv = adv(model, x, y)
    assert not x_adv.requires_grad
    assert (ThreatModel(norm, eps).distance(x_adv, x) <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_pgd_increases_its_loss_and_trades_increases_kl():
    model, (x, y) = tiny_net(), batch()
    model.eval()
    torch.manual_seed(0)
    x_adv = build_adversary(AdversaryConfig(kind="pgd", eps=0.1, steps=5))(model, x, y)
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    x_kl = build_adversary(AdversaryConfig(kind="trades", eps=0.1, steps=5))(model, x, y)
    kl = F.kl_div(F.log_softmax(model(x_kl), 1), F.softmax(model(x), 1), reduction="batchmean")
    assert kl > 1e-4


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_bn_mode_decides_whether_running_stats_move(bn_mode):
    model, (x, y) = tiny_bn_net(), batch()
    model.train()
    bn = model[1]
    stats = bn.running_mean.clone()
    build_adversary(AdversaryConfig(kind="pgd", eps=0.1, steps=2, bn_mode=bn_mode))(model, x, y)
    assert torch.equal(bn.running_mean, stats) == (bn_mode == "eval")
    assert model.training
    stats = bn.running_mean.clone()
    build_adversary(AdversaryConfig(kind="atent-linf", eps=0.1, steps=2, bn_mode=bn_mode))(model, x, y)
    assert torch.equal(bn.running_mean, stats) == (bn_mode == "eval")


def test_adversaries_are_deterministic_given_the_global_rng():
    model, (x, y) = tiny_net(), batch()
    for kind in ADVERSARIES.names():
        adv = build_adversary(AdversaryConfig(kind=kind, eps=0.1, steps=2))
        if adv is None:
            continue
        torch.manual_seed(7)
        a = adv(model, x, y)
        torch.manual_seed(7)
        assert torch.equal(a, adv(model, x, y)), kind


def test_resolved_defaults_follow_the_references():
    trades = AdversaryConfig(kind="trades", eps=0.031, steps=10)
    assert (trades.loss, trades.init, trades.init_sigma) == ("kl", "gaussian", 0.001)
    mart = AdversaryConfig(kind="mart")
    assert (mart.loss, mart.init) == ("ce", "gaussian")
    assert AdversaryConfig(kind="pgd", eps=0.3, steps=40).step_size == pytest.approx(2.5 * 0.3 / 40)
    linf = AdversaryConfig(kind="atent-linf", eps=0.031)
    assert (linf.norm, linf.init, linf.project) == ("linf", "sign", "last")
    l2 = AdversaryConfig(kind="atent-l2", eps=0.435, steps=20)
    assert (l2.norm, l2.init, l2.project, l2.gamma) == ("l2", "sphere", "none", 0.05)
    assert l2.step_size == pytest.approx(0.5 * 0.435 / 20)  # StochAT cifar_exps_l2
    with pytest.raises(ConfigError, match=r"adversary\.norm"):
        AdversaryConfig(kind="atent-l2", norm="linf")
    with pytest.raises(ConfigError, match=r"adversary\.loss"):
        AdversaryConfig(kind="trades", loss="ce")
    with pytest.raises(ConfigError, match=r"adversary\.project"):
        AdversaryConfig(kind="pgd", project="last")
    # an unknown engine loss is a name: configs are data, the binding step checks names
    bad = AdversaryConfig(kind="pgd", loss="nope")
    with pytest.raises(ConfigError, match="adversary"):
        bind_method(MethodConfig(adversary=bad))
    with pytest.raises(ConfigError, match="adversary"):
        MethodConfig.from_dict({"adversary": {"kind": "pgd", "loss": "nope"}})
