"""Attacks beyond the plain engine: ATENT, adaptive LS, random search, noise, transfer, CW-L2,
DeepFool — each against its defining equation or a property that follows from it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from entrobust.attacks import ThreatModel, build_attack
from entrobust.attacks.engine import ProjectedGradient
from entrobust.attacks.gradient import ATENT, AdaptiveLS
from entrobust.attacks.minimal import deepfool_minimal, minimal_l2
from entrobust.attacks.sampling import RandomSearch
from entrobust.errors import ConfigError

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def labelled(model: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = next(model.parameters()).dtype
    x = torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        return x, model(x).argmax(1)


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# -------------------------------------------------------------------------------- ATENT
def test_atent_linf_without_noise_is_sign_ascent_from_a_vertex() -> None:
    """With ε_n = 0 and projection every step, ATENT ℓ∞ = sign ascent from x + ε·sign(N(0, I))."""
    model = mlp(1).double()
    x, y = labelled(model, 6, 1)
    x = x.double()
    threat = ThreatModel("linf", 0.1)
    atent = ATENT(threat, steps=5, noise=0.0, project="every", keep="last", seed=3)
    out = atent(model, x, y)
    g = torch.Generator().manual_seed(3)
    start = threat.project(x + 0.1 * torch.randn((1, 1, 8, 8), generator=g, dtype=torch.float64).sign(), x)
    engine = ProjectedGradient(threat, steps=5, rel_step=0.1)
    ref, *_ = engine.run(model, x, y, None, threat, engine.objective(False), None, x_start=start)
    assert torch.allclose(out, threat.project(ref, x), atol=1e-9)


def test_atent_l2_step_has_pull_back() -> None:
    """One ℓ2 step: x′ + α·g/‖g‖ + γ(x − x′) (StochAT functional.py), then the final projection."""
    model = mlp(2).double()
    x, y = labelled(model, 4, 2)
    x = x.double()
    eps, gamma = 0.8, 0.3
    threat = ThreatModel("l2", eps)
    out = ATENT(threat, steps=1, noise=0.0, gamma=gamma, keep="last", seed=5)(model, x, y)
    g0 = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x0 = (x + eps * g0 / g0.norm()).clamp(0, 1)
    x0.requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x0), y, reduction="sum"), x0)
    x0 = x0.detach()
    step = 0.1 * eps * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    ref = threat.project((x0 + step + gamma * (x - x0)).clamp(0, 1), x)
    assert torch.allclose(out, ref, atol=1e-9)


def test_atent_best_is_at_least_as_strong_as_last() -> None:
    model = mlp(3)
    x, y = labelled(model, 32, 3)
    threat = ThreatModel("linf", 0.05)
    last = ATENT(threat, steps=8, keep="last", seed=0)(model, x, y, return_info=True)
    best = ATENT(threat, steps=8, keep="best", seed=0)(model, x, y, return_info=True)
    assert bool((best.success | ~last.success).all())


def test_atent_rejects_bad_options() -> None:
    for kw in ({"steps": 0}, {"noise": -1.0}, {"gamma": 2.0}, {"project": "sometimes"}, {"keep": "all"}):
        with pytest.raises(ConfigError):
            ATENT(ThreatModel("linf", 0.1), **kw)
    with pytest.raises(ConfigError, match="unknown option"):
        build_attack("atent", ThreatModel("linf", 0.1), temperature=1.0)


# -------------------------------------------------------------------------- adaptive LS
def test_adaptive_ls_is_the_worst_case_over_gammas() -> None:
    model = mlp(4)
    x, y = labelled(model, 40, 4)
    threat = ThreatModel("linf", 0.04)
    gammas = (0.0, 0.5, 1.0)
    res = AdaptiveLS(threat, gammas=gammas, steps=5, seed=0)(model, x, y, return_info=True)
    union = torch.zeros_like(res.success)
    for g in gammas:
        single = ProjectedGradient(
            threat, steps=5, rel_step=2 / 5, min_step=1 / 510, loss="ls-ce", loss_kwargs={"gamma": g}, seed=0
        )
        union |= single(model, x, y, return_info=True).success
    assert torch.equal(res.success, union)
    assert 0 < int(union.sum()) < 40


def test_adaptive_ls_default_gammas() -> None:
    attack = build_attack("adaptive-ls", ThreatModel("linf", 8 / 255))
    assert isinstance(attack, AdaptiveLS)
    assert attack.gammas == pytest.approx([0.1 * i for i in range(11)])
    with pytest.raises(ConfigError):
        AdaptiveLS(ThreatModel("linf", 0.1), gammas=(0.5, 1.5))


# ------------------------------------------------------------------------ random search
class SumModel(nn.Module):
    """Class 1 iff the pixel sum exceeds ``threshold``: fooled by about half of the ℓ∞ vertices."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1).sum(1) - self.threshold) * self.scale
        return torch.stack([-s, s], dim=1)


def test_random_search_keeps_the_first_fooling_sample() -> None:
    x = torch.full((3, 1, 8, 8), 0.5)
    model = SumModel(threshold=32.0 + 0.05)  # 0.5·64 = 32: correctly class 0, fooled by Σδ > 0.05
    y = torch.zeros(3, dtype=torch.long)
    threat = ThreatModel("linf", torch.tensor([0.01, 0.02, 0.04]))
    attack = RandomSearch(threat, n=64, chunk=16, seed=7)
    res = attack(model, x, y, return_info=True)
    # replay the seeded samples to find, per example, the first one that fools the model
    replay = attack.perturbations(16, x, threat.eps_for(x), torch.Generator().manual_seed(7))
    fooled = ((x[:, None] + replay).clamp(0, 1).flatten(2).sum(2) > 32.05).int()
    for i in range(3):
        if fooled[i].any():
            j = int(fooled[i].argmax())
            assert int(res.first_success[i]) == j + 1
            assert torch.allclose(res.x_adv[i], (x[i] + replay[i, j]).clamp(0, 1))
        else:
            assert int(res.first_success[i]) == -1 or int(res.first_success[i]) > 16


def test_random_search_samples_inside_and_on_the_vertices() -> None:
    x = torch.full((1, 1, 8, 8), 0.5)
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        threat = ThreatModel(norm, eps)
        gen = torch.Generator().manual_seed(0)
        delta = RandomSearch(threat, seed=0).perturbations(400, x, threat.eps_for(x), gen)[0]
        size = threat.distance((x + delta).clamp(0, 1), x.expand(400, -1, -1, -1))
        assert bool((size <= eps * (1 + 1e-6)).all())
        if norm == "linf":  # vertices: every pixel at ±ε
            surface = delta.abs().flatten(1).sub(eps).abs().lt(1e-6).all(1)
        else:  # sphere: ‖δ‖₂ = ε; inside, ‖δ‖₂ = ε·u^(1/64) is below ε almost surely
            surface = (size - eps).abs() < 1e-6
        assert 0.35 < float(surface.float().mean()) < 0.65  # half on the surface, half inside
        assert float(size[~surface].min()) < 0.99 * eps


def test_noise_baseline_stays_in_the_ball_and_validates() -> None:
    model = mlp(5)
    x, y = labelled(model, 6, 5)
    for kind in ("gaussian", "uniform"):
        for norm, eps in (("linf", 0.05), ("l2", 0.5)):
            out = build_attack("noise", ThreatModel(norm, eps), kind=kind, n=4, seed=0)(model, x, y)
            assert bool((ThreatModel(norm, eps).distance(out, x) <= eps * (1 + 1e-6)).all())
            assert not torch.equal(out, x)
    with pytest.raises(ConfigError):
        build_attack("noise", ThreatModel("linf", 0.1), kind="laplace")
    with pytest.raises(ConfigError):
        build_attack("random-search", ThreatModel("linf", 0.1), n=0)


# ------------------------------------------------------------------------------ transfer
def test_transfer_crafts_on_the_surrogate_only() -> None:
    target_model, surrogate = mlp(6), mlp(7)
    x, y = labelled(target_model, 8, 6)
    for p in surrogate.parameters():
        p.grad = torch.ones_like(p)
    surrogate.train()
    before = snapshot(surrogate)
    threat = ThreatModel("linf", 0.1)
    out = build_attack("transfer", threat, surrogate=surrogate, attack="pgd", steps=5, seed=0)(
        target_model, x, y
    )
    direct = build_attack("pgd", threat, steps=5, seed=0)(surrogate, x, y)
    assert torch.equal(out, direct)
    assert surrogate.training
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(surrogate), strict=True))
    assert all(p.grad is not None and bool((p.grad == 1).all()) for p in surrogate.parameters())
    with pytest.raises(ConfigError, match="surrogate"):
        build_attack("transfer", threat)


# ------------------------------------------------------------------------ CW-L2 / DeepFool
def test_cw_l2_and_deepfool_validate() -> None:
    with pytest.raises(ConfigError, match="l2"):
        build_attack("cw-l2", ThreatModel("linf", 0.1))
    with pytest.raises(ConfigError):
        build_attack("cw-l2", ThreatModel("l2", 1.0), lr=0.0)
    with pytest.raises(ConfigError):
        build_attack("deepfool", ThreatModel("l2", 1.0), candidates=1)
    model = mlp(8)
    x, y = labelled(model, 2, 8)
    with pytest.raises(ConfigError, match="untargeted"):
        build_attack("deepfool", ThreatModel("l2", 1.0))(model, x, y, target=(y + 1) % 10)


def test_minimal_distortion_functions_report_fooling_points() -> None:
    model = mlp(9)
    x, y = labelled(model, 10, 9)
    for x_adv, dist, norm in (
        (*minimal_l2(model, x, y, steps=60, search_steps=4), "l2"),
        (*deepfool_minimal(model, x, y, norm="l2"), "l2"),
        (*deepfool_minimal(model, x, y, norm="linf"), "linf"),
    ):
        fooled = model(x_adv).argmax(1).ne(y)
        assert torch.equal(fooled, torch.isfinite(dist))
        assert bool(fooled.any())
        measured = ThreatModel(norm, 1.0, allow_large_eps=True).distance(x_adv, x)
        assert torch.allclose(measured[fooled], dist[fooled], atol=1e-5)


def test_cw_l2_failures_return_the_input() -> None:
    model = mlp(10)
    x, y = labelled(model, 6, 10)
    x_adv, dist = minimal_l2(model, x, y, steps=2, search_steps=1, c_init=1e-6, lr=1e-4)
    assert bool(torch.isinf(dist).all())
    assert torch.equal(x_adv, x)
