"""AutoAttack and its components: APGD, FAB, Square (SPEC §3, §8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize
from torch import Tensor, nn

from entrobust.attacks import ATTACKS, ThreatModel, build_attack, flat_norm
from entrobust.attacks.apgd import APGD, apgd_checkpoints
from entrobust.attacks.autoattack import AutoAttack, AutoAttackReport
from entrobust.attacks.fab import FAB, project_hyperplane_box
from entrobust.attacks.square import Square, square_eta, square_p
from entrobust.errors import ConfigError

torch.set_num_threads(1)

COMPONENTS = ["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]
QUICK: dict[str, dict[str, object]] = {
    "apgd-ce": {"n_iter": 10},
    "apgd-dlr": {"n_iter": 10},
    "apgd-t": {"n_iter": 10, "n_target_classes": 2},
    "fab": {"n_iter": 10},
    "fab-t": {"n_iter": 10, "n_target_classes": 2},
    "square": {"n_queries": 60},
}
EPS = {"linf": 0.15, "l2": 0.9}


def _data(n: int, n_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(n_classes, 1, 6, 6, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, n_classes, (n,), generator=g)
    x = (0.6 * protos[y] + 0.4 * torch.rand(n, 1, 6, 6, generator=g)).clamp(0, 1)
    return x, y


def _train(n_classes: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, n_classes)
    )
    x, y = _data(256, n_classes, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, Tensor, Tensor]:
    """A trained 5-class CNN and 24 test points it classifies correctly."""
    model = _train(5)
    x, y = _data(64, 5, seed=2)
    with torch.no_grad():
        keep = model(x).argmax(1).eq(y)
    assert int(keep.sum()) >= 24
    return model, x[keep][:24], y[keep][:24]


def _robust(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(model(x).argmax(1).eq(y).float().mean())


# ------------------------------------------------------------------ APGD pieces
def test_apgd_checkpoints_official_values() -> None:
    # iteration counts after which the step-size check fires (0-based loop index w − 1)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_apgd_checkpoints_match_the_paper_formula_at_100() -> None:
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert apgd_checkpoints(100) == [math.ceil(round(v * 100, 9)) for v in p[1:]]
    with pytest.raises(ConfigError):
        apgd_checkpoints(0)


@given(st.integers(min_value=1, max_value=5000))
def test_apgd_checkpoint_windows_shrink_to_a_floor(n_iter: int) -> None:
    w = apgd_checkpoints(n_iter)
    gaps = np.diff([0, *w])
    assert w[0] == max(int(0.22 * n_iter), 1) and w[-1] <= n_iter
    assert bool((np.diff(gaps) <= 0).all())
    assert int(gaps.min()) >= max(int(0.06 * n_iter), 1)


def test_square_p_schedule_absolute_and_rescaled() -> None:
    assert square_p(0) == square_p(10) == 0.8
    assert square_p(11) == 0.4 and square_p(50) == 0.4 and square_p(51) == 0.2
    assert square_p(4999) == 0.8 / 2**7
    assert square_p(8001) == 0.8 / 2**9
    assert square_p(250, n_queries=500, rescale=True) == square_p(5000)


def test_square_eta_unit_norm_and_antisymmetric_halves() -> None:
    for s in (3, 5, 8):
        eta = square_eta(s)
        assert eta.shape == (s, s)
        assert float(eta.norm()) == pytest.approx(1.0)
        assert bool((eta[: s // 2] >= 0).all()) and bool((eta[s // 2 :] <= 0).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_projection_is_the_minimal_norm_point_on_hyperplane_and_box(norm: str) -> None:
    g = torch.Generator().manual_seed(3)
    n, d = 12, 6
    t = torch.rand(n, d, generator=g)
    w = torch.randn(n, d, generator=g)
    w[0, 1] = 0.0
    b = (w * t).sum(1) + 0.4 * torch.randn(n, generator=g)
    step = project_hyperplane_box(t, w, b, norm)
    checked = 0
    for i in range(n):
        ti, wi = t[i].double().numpy(), w[i].double().numpy()
        c = float(b[i]) - float(wi @ ti)
        bounds = list(zip(-ti, 1 - ti, strict=True))
        if norm == "linf":
            a_ub = np.r_[np.c_[np.eye(d), -np.ones(d)], np.c_[-np.eye(d), -np.ones(d)]]
            res = linprog(
                np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * d),
                A_eq=np.r_[wi, 0.0][None], b_eq=[c], bounds=[*bounds, (0, None)],
            )  # fmt: skip
            if res.status != 0:
                continue
            best = res.x[-1]
            got = float(step[i].abs().max())
        else:
            res = minimize(
                lambda v: v @ v, np.zeros(d), jac=lambda v: 2 * v, bounds=bounds, method="SLSQP",
                constraints=[{"type": "eq", "fun": lambda v, wi=wi, c=c: v @ wi - c}],
                options={"ftol": 1e-14, "maxiter": 500},
            )  # fmt: skip
            if not res.success:
                continue
            best = float(np.linalg.norm(res.x))
            got = float(step[i].norm())
        checked += 1
        assert got == pytest.approx(best, abs=1e-5)
        assert float(step[i].double() @ w[i].double()) == pytest.approx(c, abs=1e-5)
        assert bool(((t[i] + step[i]) >= -1e-6).all() and ((t[i] + step[i]) <= 1 + 1e-6).all())
    assert checked >= n // 2


# ----------------------------------------------------- invariants, every component
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", COMPONENTS)
def test_component_stays_in_threat_model_and_box(
    tiny: tuple[nn.Module, Tensor, Tensor], name: str, norm: str
) -> None:
    model, x, y = tiny
    threat = ThreatModel(norm, EPS[norm])
    attack = build_attack(name, threat, **QUICK[name])
    params = [p.detach().clone() for p in model.parameters()]
    res = attack(model, x, y, return_info=True)
    assert bool((flat_norm(res.x_adv - x, norm) <= EPS[norm] * (1 + 1e-5)).all())
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters(), strict=True))
    assert not model.training
    # broken points really are misclassified, the rest returned inside the ball
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1).ne(y))
    assert bool(res.success.any()), f"{name} broke nothing at a large ε"
    assert torch.equal(attack(model, x, y, return_info=False), res.x_adv)  # seeded → reproducible


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_with_zero_eps_returns_input(tiny: tuple[nn.Module, Tensor, Tensor], name: str) -> None:
    model, x, y = tiny
    out = build_attack(name, ThreatModel("linf", 0.0), **QUICK[name])(model, x, y)
    assert torch.equal(out, x)


def test_apgd_reports_first_success_iteration(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    res = APGD(ThreatModel("linf", 0.15), n_iter=10)(model, x, y, return_info=True)
    assert bool((res.first_success[res.success] >= 0).all())
    assert bool((res.first_success[res.success] <= 10).all())
    assert bool((res.first_success[~res.success] == -1).all())


# --------------------------------- linear model with a known minimal perturbation
def _linear_problem(norm: str) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Binary linear classifier; points at the box centre so the box never binds.

    The minimal adversarial perturbation of x is |z_y − z_o| / ‖w_y − w_o‖_dual (dual of ℓ∞ is ℓ1).
    """
    g = torch.Generator().manual_seed(5)
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 16, generator=g))
        lin.bias.copy_(-0.5 * lin.weight.sum(1))  # decision boundary through the box centre
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.5 + 0.02 * torch.randn(16, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
        z = model(x)
    w = lin.weight.detach()
    diff = (w[0] - w[1]).abs().sum() if norm == "linf" else (w[0] - w[1]).norm()
    radius = (z[:, 0] - z[:, 1]).abs() / diff
    return model, x, y, radius


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", ["apgd-ce", "fab", "fab-t"])
def test_succeeds_just_above_and_fails_just_below_the_minimal_radius(name: str, norm: str) -> None:
    model, x, y, radius = _linear_problem(norm)
    assert float((radius * 1.01).max()) < 0.3 and float(x.min()) > 0.35  # the box is never active
    above = build_attack(name, ThreatModel(norm, radius * 1.01), n_iter=20)(model, x, y, return_info=True)
    below = build_attack(name, ThreatModel(norm, radius * 0.99), n_iter=20)(model, x, y, return_info=True)
    assert bool(above.success.all())
    assert not bool(below.success.any())


def test_fab_finds_the_exact_minimal_perturbation_of_a_linear_model() -> None:
    model, x, y, radius = _linear_problem("l2")
    res = FAB(ThreatModel("l2", 10 * radius), n_iter=20)(model, x, y, return_info=True)
    assert bool(res.success.all())
    assert torch.allclose(res.distance, radius, rtol=0.06)  # overshoot η = 1.05 at most


# ------------------------------------------------------------------- targeted
@pytest.mark.parametrize("name", ["apgd-t", "fab-t"])
def test_targeted_runs_reach_their_targets(tiny: tuple[nn.Module, Tensor, Tensor], name: str) -> None:
    model, x, y = tiny
    target = (y + 1) % 5
    res = build_attack(name, ThreatModel("l2", 2.5), n_iter=30)(model, x, y, target=target, return_info=True)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred.eq(target))
    assert float(res.success.float().mean()) >= 0.75


def test_untargeted_components_reject_targets(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    for name in ("apgd-ce", "apgd-dlr", "fab", "square"):
        with pytest.raises(ConfigError, match=name):
            build_attack(name, ThreatModel("linf", 0.1), **QUICK[name])(model, x, y, target=y)


# --------------------------------------------------------------- class counts
def test_dlr_losses_need_enough_classes() -> None:
    model3 = _train(3)
    model2 = _train(2)
    x, y = _data(8, 3, seed=4)
    threat = ThreatModel("linf", 0.1)
    with pytest.raises(ConfigError, match="at least 4 classes"):
        APGD(threat, loss="dlr-targeted", n_iter=5)(model3, x, y)
    with pytest.raises(ConfigError, match="at least 3 classes"):
        APGD(threat, loss="dlr", n_iter=5)(model2, x, y % 2)
    APGD(threat, loss="dlr", n_iter=5)(model3, x, y)  # 3 classes are enough for DLR
    with pytest.raises(ConfigError, match="at least 4 classes"):
        AutoAttack(threat, n_iter=5, n_queries=10)(model3, x, y)
    aa = AutoAttack(threat, version="custom", attacks=["apgd-ce", "fab-t", "square"], n_iter=5, n_queries=10)
    aa(model3, x, y)
    assert aa.last_report is not None and list(aa.last_report.robust_accuracy) == [
        "clean", "apgd-ce", "fab-t", "square"
    ]  # fmt: skip


# ------------------------------------------------------------------- AutoAttack
def test_autoattack_versions_and_registry() -> None:
    threat = ThreatModel("linf", 8 / 255)
    assert {"apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"} <= set(ATTACKS.names())
    assert {"autoattack", "autoattack-standard", "autoattack-plus"} <= set(ATTACKS.names())
    std = build_attack("autoattack-standard", threat)
    plus = build_attack("autoattack", threat, version="plus")
    assert isinstance(std, AutoAttack) and std.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert isinstance(plus, AutoAttack)
    assert plus.attacks == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    c = {name: plus.component(name, threat) for name in plus.attacks}
    assert c["apgd-ce"].restarts == 5 and c["apgd-dlr"].restarts == 5 and c["fab"].restarts == 5  # type: ignore[attr-defined]
    assert c["apgd-t"].restarts == 1 and c["fab-t"].restarts == 1  # type: ignore[attr-defined]
    s = std.component("apgd-t", threat)
    assert isinstance(s, APGD) and s.n_iter == 100 and s.n_target_classes == 9 and s.restarts == 1
    sq = std.component("square", threat)
    assert isinstance(sq, Square) and sq.n_queries == 5000 and sq.p_init == 0.8 and not sq.rescale_schedule
    with pytest.raises(ConfigError):
        build_attack("autoattack-standard", threat, version="plus")
    with pytest.raises(ConfigError):
        AutoAttack(threat, attacks=["apgd-ce"])  # attacks= only with custom, as upstream
    with pytest.raises(ConfigError, match="unknown AutoAttack component"):
        AutoAttack(threat, version="custom", attacks=["pgd"])
    with pytest.raises(ConfigError, match="version"):
        AutoAttack(threat, version="fast")


def test_autoattack_at_least_as_strong_as_apgd_ce_alone(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    threat = ThreatModel("linf", 0.1)
    alone = _robust(model, APGD(threat, n_iter=20)(model, x, y), y)
    lines: list[str] = []
    aa = AutoAttack(threat, n_iter=20, n_queries=100, n_target_classes=3, log=lines.append)
    x_adv, report = aa.run(model, x, y)
    robust = _robust(model, x_adv, y)
    assert robust <= alone
    assert 0.0 < alone < 1.0  # the comparison is not vacuous
    accs = list(report.robust_accuracy.values())
    assert accs == sorted(accs, reverse=True)
    assert report.robust_accuracy["square"] == pytest.approx(robust)
    assert report.robust_accuracy["apgd-ce"] == pytest.approx(alone)  # same seed, same first stage
    with torch.no_grad():
        fooled = model(x_adv).argmax(1).ne(y)
    assert torch.equal(fooled, report.broken_by.ge(0))
    assert any("apgd-t" in line for line in lines) and len(lines) >= 5


class _Recorder(nn.Module):
    """Attributes every input row to its nearest clean point and logs (phase, point)."""

    def __init__(self, model: nn.Module, clean: Tensor) -> None:
        super().__init__()
        self.model = model
        self.clean = clean.flatten(1)
        self.phase = 0
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: Tensor) -> Tensor:
        dist = (x.detach().flatten(1)[:, None, :] - self.clean[None]).abs().amax(-1)
        self.seen += [(self.phase, int(i)) for i in dist.argmin(1)]
        return self.model(x)


def test_cascade_only_attacks_points_still_robust(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    eps = 0.1
    gaps = (x.flatten(1)[:, None] - x.flatten(1)[None]).abs().amax(-1) + 9 * torch.eye(x.shape[0])
    assert float(gaps.min()) > 2 * eps  # balls are disjoint: attribution is exact
    rec = _Recorder(model, x)

    def next_phase(line: str) -> None:
        rec.phase += 1

    aa = AutoAttack(ThreatModel("linf", eps), n_iter=15, n_queries=60, n_target_classes=2, log=next_phase)
    _, report = aa.run(rec, x, y)
    broken = report.broken_by
    assert int((broken >= 1).sum()) > 0
    by_phase: dict[int, set[int]] = {}
    for phase, i in rec.seen:
        by_phase.setdefault(phase, set()).add(i)
    for k in range(1, len(aa.attacks) + 1):  # phase k = attack k (phase 0: clean accuracy)
        allowed = {i for i in range(x.shape[0]) if broken[i] == -1 or broken[i] >= k}
        assert by_phase.get(k, set()) <= allowed, f"{aa.attacks[k - 1]} attacked a broken point"
    assert by_phase.get(1) == set(range(x.shape[0]))  # the first attack sees every correct point


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # type: ignore[override]
        raise AssertionError("Square must not use gradients")


class _GradientFree(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_NoBackward.apply(x))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_uses_no_gradients(tiny: tuple[nn.Module, Tensor, Tensor], norm: str) -> None:
    model, x, y = tiny
    guarded = _GradientFree(model)
    with pytest.raises(AssertionError, match="gradients"):  # the guard works
        APGD(ThreatModel(norm, EPS[norm]), n_iter=2)(guarded, x, y)
    res = Square(ThreatModel(norm, EPS[norm]), n_queries=150)(guarded, x, y, return_info=True)
    assert bool(res.success.any())
    aa = AutoAttack(ThreatModel(norm, EPS[norm]), version="custom", attacks=["square"], n_queries=30)
    aa(guarded, x, y)


def test_square_is_seeded(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    a = Square(ThreatModel("l2", 0.9), n_queries=40, seed=1)(model, x, y)
    b = Square(ThreatModel("l2", 0.9), n_queries=40, seed=1)(model, x, y)
    c = Square(ThreatModel("l2", 0.9), n_queries=40, seed=2)(model, x, y)
    assert not torch.equal(a, x)  # something was broken, so the seed matters
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_autoattack_per_example_eps_and_batches(tiny: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = tiny
    eps = torch.linspace(0.0, 0.2, x.shape[0])
    aa = AutoAttack(ThreatModel("linf", eps), n_iter=10, n_queries=30, n_target_classes=2, batch_size=7)
    x_adv, report = aa.run(model, x, y)
    assert bool((flat_norm(x_adv - x, "linf") <= eps * (1 + 1e-6) + 1e-7).all())
    assert bool(report.broken_by[0] == -1)  # ε = 0 cannot be broken
    assert isinstance(report, AutoAttackReport)
    names = report.broken_by_names()
    assert len(names) == x.shape[0] and set(names) <= {None, "clean", *aa.attacks}


def test_component_argument_validation() -> None:
    threat = ThreatModel("linf", 0.1)
    for bad in ({"loss": "cw"}, {"n_iter": 0}, {"restarts": 0}, {"rho": 1.5}):
        with pytest.raises(ConfigError):
            APGD(threat, **bad)  # type: ignore[arg-type]
    for bad_fab in ({"n_iter": 0}, {"eta": 0.5}, {"alpha_max": 2.0}):
        with pytest.raises(ConfigError):
            FAB(threat, **bad_fab)  # type: ignore[arg-type]
    for bad_sq in ({"n_queries": 0}, {"p_init": 0.0}, {"loss": "dlr"}):
        with pytest.raises(ConfigError):
            Square(threat, **bad_sq)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="images"):
        Square(threat, n_queries=5)(nn.Linear(4, 3), torch.rand(2, 4), torch.zeros(2, dtype=torch.long))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["standard", "plus"])
def test_autoattack_full_defaults_run_end_to_end(
    tiny: tuple[nn.Module, Tensor, Tensor], version: str
) -> None:
    model, x, y = tiny
    x, y = x[:8], y[:8]
    threat = ThreatModel("linf", 0.08)
    alone = _robust(model, APGD(threat)(model, x, y), y)
    x_adv, report = AutoAttack(threat, version=version).run(model, x, y)
    assert _robust(model, x_adv, y) <= alone
    assert bool((flat_norm(x_adv - x, "linf") <= 0.08 + 1e-6).all())
    assert list(report.robust_accuracy)[1:] == report.attacks
