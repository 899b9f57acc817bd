"""The projected-gradient engine: argument checks, the update rule against hand-written loops,
early stop, restarts, targeted mode, losses, momentum, first-success tracking and cost."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from entrobust.attacks import ThreatModel, build_attack
from entrobust.attacks.engine import ProjectedGradient, make_objective, parse_loss
from entrobust.errors import ConfigError

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def data(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 8, 8), generator=g), torch.randint(0, 10, (n,), generator=g)


def labelled(model: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Data labelled by the model itself, so every point starts correctly classified."""
    x, _ = data(n, seed)
    with torch.no_grad():
        return x, model(x).argmax(1)


class Counting(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


LINF = ThreatModel("linf", 0.1)
L2 = ThreatModel("l2", 1.0)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"steps": 2.5},
        {"step_size": 0.0},
        {"step_size": -1.0},
        {"rel_step": 0.0},
        {"step_size": 0.1, "rel_step": 0.1},
        {"restarts": 0},
        {"init": "laplace"},
        {"loss": "hinge"},
        {"loss": "ls-ce(abc)"},
        {"loss": "ce(0.3)"},
        {"loss": "ls-ce", "loss_kwargs": {"gamma": 2.0}},
        {"loss": "ce", "loss_kwargs": {"gamma": 0.1}},
        {"select": "median"},
        {"momentum": -1.0},
        {"sigma": -0.1},
        {"loss": "kl", "targeted": True},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ProjectedGradient(LINF, **kwargs)


def test_factories_reject_unknown_and_fixed_options() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        build_attack("pgd", LINF, stepz=3)
    with pytest.raises(ConfigError, match="fixes"):
        build_attack("fgsm", LINF, steps=3)
    with pytest.raises(ConfigError):
        build_attack("pgd", LINF, steps=0)
    with pytest.raises(ConfigError):
        ThreatModel("linf", -0.1)


def test_unknown_loss_message_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="dlr"):
        make_objective("nope")


def test_parse_loss() -> None:
    assert parse_loss("ls-ce(0.3)") == ("ls-ce", {"gamma": 0.3})
    assert parse_loss("entm(1.5)") == ("entm", {"lam": 1.5})
    assert parse_loss("cw(50)") == ("cw", {"confidence": 50.0})
    assert parse_loss("ce") == ("ce", {})


# ------------------------------------------------------------------- defaults of named attacks
def test_named_defaults() -> None:
    pgd = build_attack("pgd", LINF)
    assert isinstance(pgd, ProjectedGradient)
    assert (pgd.steps, pgd.init, pgd.rel_step) == (40, "uniform", pytest.approx(2.5 / 40))
    assert build_attack("pgd", LINF, steps=10).rel_step == pytest.approx(0.25)
    assert build_attack("pgd", LINF, step_size=0.01).step_size == 0.01
    bim = build_attack("bim", LINF)
    assert (bim.steps, bim.init, bim.rel_step) == (10, "none", pytest.approx(0.1))
    fgsm = build_attack("fgsm", LINF)
    assert (fgsm.steps, fgsm.init, fgsm.rel_step) == (1, "none", 1.0)
    mim = build_attack("mim", LINF)
    assert mim.momentum == 1.0 and mim.init == "none"
    cw = build_attack("cw-pgd", LINF)
    assert cw.loss == "cw" and cw.loss_kwargs == {"confidence": 50.0}


def test_ru_name_families() -> None:
    pgd = build_attack("PGD20-8")
    assert isinstance(pgd, ProjectedGradient)
    assert pgd.threat.norm == "linf" and pgd.threat.eps == pytest.approx(8 / 255)
    assert (pgd.steps, pgd.rel_step, pgd.init, pgd.sigma, pgd.restarts) == (20, 0.1, "gaussian", 0.005, 5)
    assert pgd.name == "PGD20-8"
    cw = build_attack("CW40-16")
    assert cw.steps == 40 and cw.threat.eps == pytest.approx(16 / 255) and cw.loss == "cw"
    assert cw.loss_kwargs == {"confidence": 50.0}
    fgsm = build_attack("FGSM_4")
    assert fgsm.threat.eps == pytest.approx(4 / 255) and fgsm.steps == 1
    x, _ = data(2)
    step = pgd.step_sizes(pgd.threat, x)
    assert torch.allclose(step, torch.full_like(step, 8 / 2550))


# ------------------------------------------------------------------------- the update rule
def reference_pgd(model, x, y, eps, alpha, steps, norm):  # type: ignore[no-untyped-def]
    """Madry et al. PGD from no random start, written out directly."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            if norm == "linf":
                x_adv = x_adv + alpha * g.sign()
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
            else:
                gn = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x_adv = x_adv + alpha * g / (gn + 1e-12)
                d = x_adv - x
                dn = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                x_adv = (x + d * torch.clamp(eps / (dn + 1e-12), max=1.0)).clamp(0, 1)
    return x_adv.detach()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_engine_matches_reference_loop(norm: str) -> None:
    model = mlp().double()
    x, y = data(6)
    x = x.double()
    eps = 0.1 if norm == "linf" else 1.0
    attack = ProjectedGradient(ThreatModel(norm, eps), steps=7, step_size=eps / 4, init="none")
    ours = attack(model, x, y)
    ref = reference_pgd(model, x, y, eps, eps / 4, 7, norm)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_fgsm_is_one_signed_step_of_eps() -> None:
    model = mlp()
    x, y = data(5)
    x = x * 0.5 + 0.25  # away from the box
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    x = x.detach()
    out = build_attack("fgsm", ThreatModel("linf", 0.05))(model, x, y)
    assert torch.allclose(out, x + 0.05 * g.sign(), atol=1e-6)
    out2 = build_attack("fgsm", ThreatModel("l2", 0.5))(model, x, y)
    gn = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert torch.allclose(out2, (x + 0.5 * g / gn).clamp(0, 1), atol=1e-5)


def test_momentum_matches_mi_fgsm() -> None:
    model = mlp()
    x, y = data(4)
    eps, steps, mu = 0.1, 5, 1.0
    ours = build_attack("mim", ThreatModel("linf", eps), steps=steps)(model, x, y)
    x_adv, v = x.clone(), torch.zeros_like(x)
    for _ in range(steps):  # Dong et al. 2018, Alg. 1
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
        with torch.no_grad():
            v = mu * v + g / g.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
            x_adv = (x_adv + eps / steps * v.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    assert torch.allclose(ours, x_adv, atol=1e-6)


def test_one_forward_and_backward_per_step() -> None:
    """PGD-k costs k forwards (no extra evaluation) — the cost budget of the engine."""
    model = Counting(mlp())
    x, y = data(5)
    ProjectedGradient(LINF, steps=10)(model, x, y)
    assert model.calls == 10
    model.calls = 0
    ProjectedGradient(LINF, steps=10, early_stop=True, momentum=0.5)(model, x, y)
    assert model.calls == 10
    model.calls = 0
    ProjectedGradient(LINF, steps=10, select="best")(model, x, y)
    assert model.calls == 11


# ---------------------------------------------------------------- early stop / first success
def test_early_stop_freezes_at_first_success() -> None:
    model = mlp(1)
    x, y = labelled(model, 16, 1)
    threat = ThreatModel("linf", 0.08)
    attack = ProjectedGradient(threat, steps=10, rel_step=0.25, init="none", early_stop=True)
    res = attack(model, x, y, return_info=True)
    assert bool(res.success.any()) and bool((~res.success).any())
    for i in range(16):
        k = int(res.first_success[i])
        if not bool(res.success[i]):
            assert k == -1
            continue
        assert 0 <= k <= 10
        if k == 0:
            assert torch.equal(res.x_adv[i], x[i])
            continue
        replay = ProjectedGradient(threat, steps=k, rel_step=0.25, init="none")(
            model, x[i : i + 1], y[i : i + 1]
        )
        assert torch.allclose(replay[0], res.x_adv[i], atol=1e-7)
        if k > 1:  # not fooled one step earlier
            earlier = ProjectedGradient(threat, steps=k - 1, rel_step=0.25, init="none")
            assert model(earlier(model, x[i : i + 1], y[i : i + 1])).argmax(1).item() == y[i].item()


def test_early_stop_keeps_every_success() -> None:
    model = mlp(2)
    x, y = labelled(model, 32, 2)
    threat = ThreatModel("linf", 0.06)
    plain = ProjectedGradient(threat, steps=10, init="none")(model, x, y, return_info=True)
    stop = ProjectedGradient(threat, steps=10, init="none", early_stop=True)(model, x, y, return_info=True)
    assert bool((stop.success | ~plain.success).all())


def test_first_success_only_for_successes() -> None:
    model = mlp(3)
    x, y = labelled(model, 32, 3)
    res = ProjectedGradient(ThreatModel("linf", 0.05), steps=6)(model, x, y, return_info=True)
    assert bool((res.first_success[~res.success] == -1).all())
    assert bool((res.first_success[res.success] >= 0).all() and (res.first_success <= 6).all())


# ---------------------------------------------------------------------- restarts and select
def test_restarts_are_per_example_worst_case() -> None:
    model = mlp(4)
    x, y = labelled(model, 48, 4)
    threat = ThreatModel("linf", 0.05)
    one = ProjectedGradient(threat, steps=5, seed=1)(model, x, y, return_info=True)
    many = ProjectedGradient(threat, steps=5, restarts=4, seed=1)(model, x, y, return_info=True)
    assert bool((many.success | ~one.success).all())  # restart 0 is the single run
    assert int(many.success.sum()) >= int(one.success.sum())
    assert bool((many.first_success[many.success] <= 4 * 5).all())


def test_select_best_is_at_least_as_strong_as_last() -> None:
    model = mlp(5)
    x, y = labelled(model, 32, 5)
    threat = ThreatModel("l2", 0.6)
    last = ProjectedGradient(threat, steps=8, rel_step=0.8, seed=0)
    best = ProjectedGradient(threat, steps=8, rel_step=0.8, seed=0, select="best")
    a, b = last(model, x, y, return_info=True), best(model, x, y, return_info=True)
    assert bool((b.success | ~a.success).all())
    both_fail = ~a.success & ~b.success
    assert bool((b.loss[both_fail] >= a.loss[both_fail] - 1e-6).all())


# ---------------------------------------------------------------------- targeted and losses
@pytest.mark.parametrize("loss", ["ce", "cw", "dlr", "dlr-t"])
def test_targeted_reaches_target(loss: str) -> None:
    model = mlp(6)
    x, y = labelled(model, 16, 6)
    with torch.no_grad():
        target = model(x).topk(2, dim=1).indices[:, 1]  # the runner-up class
    attack = ProjectedGradient(ThreatModel("linf", 0.5), steps=30, rel_step=0.1, loss=loss, targeted=True)
    res = attack(model, x, y, target=target, return_info=True)
    pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred.eq(target))  # targeted success = prediction is the target
    if loss.startswith("dlr"):
        # targeted DLR (Croce & Hein 2020, eq. 7) uses the target as a direction: APGD-T counts
        # success as misclassification, and the scale-invariant ratio need not end on the target
        assert float(pred.ne(y).float().mean()) >= 0.9
    else:
        assert float(res.success.float().mean()) >= 0.9


def test_targeted_attack_requires_target() -> None:
    attack = ProjectedGradient(LINF, targeted=True)
    x, y = data(2)
    with pytest.raises(ConfigError, match="target"):
        attack(mlp(), x, y)


def test_custom_callable_loss() -> None:
    model = mlp(7)
    x, y = data(8, seed=7)

    def push_class_zero(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits[:, 0]

    out = ProjectedGradient(LINF, steps=5, loss=push_class_zero, init="none")(model, x, y)
    with torch.no_grad():
        assert bool((model(out)[:, 0] > model(x)[:, 0]).all())


def test_kl_attack_increases_the_divergence() -> None:
    """TRADES inner attack: start x + 0.001·N(0, I), maximize KL(p(x)‖p(x'))."""
    model = mlp(8)
    x, y = data(6, seed=8)
    moved = build_attack("trades-kl", LINF, seed=0)(model, x, y)
    assert float((moved - x).abs().max()) > 0.05
    with torch.no_grad():
        p = F.log_softmax(model(x), 1)
        kl = F.kl_div(F.log_softmax(model(moved), 1), p, log_target=True, reduction="none").sum(1)
        start = ThreatModel("linf", 0.1).random_start(x, "gaussian", 0.001, torch.Generator().manual_seed(0))
        kl0 = F.kl_div(F.log_softmax(model(start), 1), p, log_target=True, reduction="none").sum(1)
    assert bool((kl > 100 * kl0).all())


def test_dlr_with_too_few_classes_is_a_config_error() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 1, 0])
    with pytest.raises(ConfigError, match="at least 3 classes"):
        ProjectedGradient(LINF, loss="dlr", steps=2)(model, x, y)
    model3 = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ConfigError, match="at least 4 classes"):
        ProjectedGradient(LINF, loss="dlr", steps=2)(model3, x, y, target=(y + 1) % 3)


def test_train_mode_adversary_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(108, 10))
    x, y = data(8)
    model.eval()
    a = ProjectedGradient(LINF, steps=3, init="none", model_mode="train")(model, x, y)
    b = ProjectedGradient(LINF, steps=3, init="none")(model, x, y)
    assert not torch.equal(a, b)
    assert not model.training and not model[1].training
