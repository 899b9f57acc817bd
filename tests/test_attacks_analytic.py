"""Attacks against closed forms (adv_lib ``tests/test_attacks.py`` style) and losses on hand-made
logits.

For a linear classifier z = Wx + b the smallest perturbation that makes class j beat y is the
distance to the hyperplane {z_j = z_y}: (z_y − z_j)/‖w_y − w_j‖_q with q the dual norm (2 for ℓ2,
1 for ℓ∞), so the minimal adversarial distortion is the minimum over j. With x in the middle of
[0, 1] and small distances the box never binds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entrobust.attacks import ATTACKS, ThreatModel, build_attack, margin_of
from entrobust.attacks.engine import ProjectedGradient
from entrobust.attacks.losses import cw_loss, dlr_loss, dlr_targeted_loss, entm_loss, kl_loss, ls_ce_loss
from entrobust.attacks.minimal import deepfool_minimal, minimal_l2
from entrobust.errors import ConfigError

torch.set_num_threads(1)

D = 64
DUAL = {"l2": 2.0, "linf": 1.0}


def prepare(
    num_classes: int, norm: str, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear model z = Wx + b, 4 points near 0.5 labelled 0, and their exact minimal distortion.

    At the centre x̄ = 0.5 the nearest boundary (distance 0.05) belongs to the class whose weight
    difference is smallest in the dual norm, so it is also the runner-up by logit; every other
    boundary is 3× farther. The points are x̄ + U(0, 0.01) and ``d_star`` ``(4,)`` is computed
    exactly for each of them.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((num_classes, D), generator=g, dtype=torch.float64) / 8
    diff = (w[0] - w[1:]).norm(p=DUAL[norm], dim=1)  # ‖w_y − w_j‖_q, j = 1..C-1
    dist = torch.full_like(diff, 0.15)
    dist[int(diff.argmin())] = 0.05
    centre = torch.full((D,), 0.5, dtype=torch.float64)
    b = torch.zeros(num_classes, dtype=torch.float64)
    b[1:] = (w[0] - w[1:]) @ centre - dist * diff  # margin z_0 − z_j = dist_j·diff_j at the centre
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, num_classes)).double().eval()
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.copy_(b)
    x = centre + 0.01 * torch.rand((4, D), generator=g, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    margins = (x @ w.T + b)[:, :1] - (x @ w.T + b)[:, 1:]  # (4, C-1)
    d_star = (margins / diff).min(dim=1).values
    return model, x.view(4, 1, 8, 8), y, d_star


def test_linear_problem_has_the_stated_optimum() -> None:
    for norm in ("l2", "linf"):
        model, x, y, d_star = prepare(10, norm)
        assert bool(model(x).argmax(1).eq(y).all())
        assert bool((d_star > 0.03).all() and (d_star < 0.07).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("num_classes", "loss"), [(2, "ce"), (10, "cw")])
def test_pgd_succeeds_just_above_and_fails_just_below_optimum(norm: str, num_classes: int, loss: str) -> None:
    model, x, y, d_star = prepare(num_classes, norm)
    above = ProjectedGradient(ThreatModel(norm, 1.01 * d_star), steps=20, init="none", loss=loss)
    below = ProjectedGradient(ThreatModel(norm, 0.99 * d_star), steps=20, init="none", loss=loss)
    assert bool(above(model, x, y, return_info=True).success.all())
    assert not bool(below(model, x, y, return_info=True).success.any())


FAST = {"steps": 5, "n_iter": 5, "n_queries": 50, "n": 200, "search_steps": 3, "max_iter": 10}


@pytest.mark.parametrize("name", sorted(n for n in ATTACKS.names() if n != "transfer"))
def test_no_attack_beats_the_optimum(name: str) -> None:
    """Below the minimal distortion no point of the ball is adversarial: any success is a bug."""
    for norm in ("linf", "l2"):
        model, x, y, d_star = prepare(10, norm)
        threat = ThreatModel(norm, 0.99 * d_star)
        try:
            build_attack(name, threat)
        except ConfigError:
            continue  # the attack does not support this norm
        kw = {}
        for key, value in FAST.items():
            try:
                build_attack(name, threat, **{key: value})
            except (ConfigError, TypeError):
                continue
            kw[key] = value
        attack = build_attack(name, threat, **kw)
        target = (y + 1) % 10 if attack.targeted else None
        x_adv = attack(model, x, y, target=target)
        assert bool(model(x_adv).argmax(1).eq(y).all()), name


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_finds_the_optimum(norm: str) -> None:
    model, x, y, d_star = prepare(10, norm)
    x_adv, dist = deepfool_minimal(model, x, y, norm=norm)
    assert bool(model(x_adv).argmax(1).ne(y).all())
    assert bool((dist >= d_star * (1 - 1e-6)).all() and (dist <= 1.05 * d_star).all()), (dist, d_star)


def test_cw_l2_finds_the_optimum() -> None:
    model, x, y, d_star = prepare(10, "l2")
    x_adv, dist = minimal_l2(model, x, y)  # defaults: 100 steps, 9 search steps
    assert bool(model(x_adv).argmax(1).ne(y).all())
    assert bool((dist >= d_star * (1 - 1e-6)).all() and (dist <= 1.05 * d_star).all()), (dist, d_star)


def test_bounded_cw_l2_and_deepfool_succeed_above_the_optimum() -> None:
    model, x, y, d_star = prepare(10, "l2")
    for name in ("cw-l2", "deepfool"):
        attack = build_attack(name, ThreatModel("l2", 1.1 * d_star))
        assert bool(attack(model, x, y, return_info=True).success.all()), name


# ---------------------------------------------------------------------------------- losses
def test_cw_loss_with_all_negative_logits() -> None:
    z = torch.tensor([[-5.0, -1.0, -3.0], [-0.5, -4.0, -0.1]])
    y = torch.tensor([0, 2])
    # max_{i≠y} z_i − z_y: a max over logits masked with 0 would give 5.0 for the first row
    assert torch.allclose(cw_loss(z, y, confidence=float("inf")), torch.tensor([4.0, -0.4]))
    assert torch.allclose(cw_loss(z, y), torch.tensor([0.0, -0.4]))  # κ = 0 (CW 2017 default)
    assert torch.allclose(cw_loss(z, y, confidence=2.0), torch.tensor([2.0, -0.4]))
    assert torch.allclose(margin_of(z, y), torch.tensor([-4.0, 0.4]))


def test_dlr_losses_match_their_formulas() -> None:
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.5, 4.0, -1.0, 2.0]])
    y = torch.tensor([1, 1])
    # row 0: sorted 3,2,1,0 → −(1 − 3)/(3 − 1) = 1; row 1: −(4 − 2)/(4 − 0.5) = −4/7
    assert torch.allclose(dlr_loss(z, y), torch.tensor([1.0, -2.0 / 3.5]))
    t = torch.tensor([2, 3])
    # row 0: −(1 − 2)/(3 − (1 + 0)/2) = 0.4; row 1: −(4 − 2)/(4 − (0.5 − 1)/2) = −2/4.25
    assert torch.allclose(dlr_targeted_loss(z, y, t), torch.tensor([0.4, -2.0 / 4.25]))


def test_ls_ce_entm_and_kl_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn((5, 7), generator=g, dtype=torch.float64)
    z_clean = torch.randn((5, 7), generator=g, dtype=torch.float64)
    y = torch.tensor([0, 3, 6, 2, 2])
    logp = torch.log_softmax(z, dim=1)
    for gamma in (0.0, 0.3, 1.0):
        soft = torch.full((5, 7), gamma / 7, dtype=torch.float64)
        soft[torch.arange(5), y] += 1 - gamma
        assert torch.allclose(ls_ce_loss(z, y, gamma), -(soft * logp).sum(1))
    assert torch.allclose(ls_ce_loss(z, y, 0.0), F.cross_entropy(z, y, reduction="none"))
    entropy = -(logp.exp() * logp).sum(1)
    assert torch.allclose(entm_loss(z, y, 1.5), F.cross_entropy(z, y, reduction="none") - 1.5 * entropy)
    p = torch.softmax(z_clean, 1)
    assert torch.allclose(kl_loss(z, z_clean), (p * (p.log() - logp)).sum(1))
    assert torch.allclose(kl_loss(z_clean, z_clean), torch.zeros(5, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n in ATTACKS.names() if n != "transfer"))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_few_classes_give_config_errors_not_crashes(name: str, num_classes: int) -> None:
    """DLR needs ≥ 3 classes and targeted DLR ≥ 4: such attacks must say so, not IndexError."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 0])
    threat = ThreatModel("linf", 0.1) if name != "cw-l2" else ThreatModel("l2", 1.0)
    kw = {}
    for key, value in FAST.items():
        try:
            build_attack(name, threat, **{key: value})
        except (ConfigError, TypeError):
            continue
        kw[key] = value
    try:
        attack = build_attack(name, threat, **kw)
        target = (y + 1) % num_classes if attack.targeted else None
        out = attack(model, x, y, target=target)
    except ConfigError as exc:
        assert "class" in str(exc)
        return
    assert out.shape == x.shape


def test_engine_dlr_needs_enough_classes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="4 classes"):
        ProjectedGradient(ThreatModel("linf", 0.1), loss="dlr-t", steps=1)(model, x, y, target=(y + 1) % 3)
