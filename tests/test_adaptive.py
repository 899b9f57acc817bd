"""Adaptive evaluation (issue 17): EOT, BPDA and the audit checks that catch what plain attacks miss.

Every case uses a small constructed model whose answer is known, and shows the new attack or
check succeeding where the previous one did not:

* ``Wobble`` — a linear model plus a high-frequency, randomly phased wobble: the logits barely
  change between forwards but every single-draw gradient is mostly noise. E_φ[∇] is the linear
  gradient, so the EOT optimum is the linear model's exact ℓ∞ optimum.
* ``Quantized`` — a linear model on inputs rounded to 4 levels (zero gradient), attacked through BPDA.
* ``SaturatedTop`` — the top logit raised by 80: CE's gradient is ≈ e⁻⁸⁰ (finite, not zero), the
  margin's is intact; an ℓ2 CE attack stalls.
* ``Valley`` — the margin rises with the pixel mean except for a narrow dip: small PGD steps are
  trapped before it, large ones jump over (a rising steps curve).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from entrobust.attacks import ThreatModel, build_attack
from entrobust.attacks.autoattack import AutoAttack, square_check
from entrobust.attacks.bpda import BPDA, with_bpda
from entrobust.attacks.engine import accuracy_over_draws, eot_value_and_grad, is_stochastic
from entrobust.diagnostics.obfuscation import AuditThresholds, _hits_status, audit, input_gradient_stats
from entrobust.errors import ConfigError

torch.set_num_threads(1)

D = 64  # 1 × 8 × 8 images
C = 4


def linear_weights(seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(C, D, generator=g)


class Linear(nn.Module):
    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w.t()


class Wobble(nn.Module):
    """z = Wx + (a/ω)·sin(ω·Vx + φ), φ ~ U[0, 2π) per forward and class: |Δz| ≤ a/ω, |Δ∇| ~ a·|V|."""

    def __init__(self, w: Tensor, a: float = 8.0, omega: float = 1e4) -> None:
        super().__init__()
        self.register_buffer("w", w)
        self.register_buffer("v", torch.randn(C, D, generator=torch.Generator().manual_seed(1)))
        self.a, self.omega = a, omega

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        phase = 2 * math.pi * torch.rand(flat.shape[0], C, device=x.device)
        return flat @ self.w.t() + self.a / self.omega * torch.sin(self.omega * (flat @ self.v.t()) + phase)


class Quantized(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.quantize = Round()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(self.quantize(x))


class Round(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 4) / 4


class Detached(nn.Module):
    """Predictions follow the input, gradients are exactly zero (a stuck attack)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.detach()) + 0.0 * x.flatten(1)[:, :1]


class SaturatedTop(nn.Module):
    """Linear logits with 80 added to the top one: same predictions, CE saturated (∇CE ≈ e⁻⁸⁰·∇margin)."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1) @ self.w.t()
        top = nn.functional.one_hot(z.argmax(1), C).to(z.dtype)
        return z + 80.0 * top


class Valley(nn.Module):
    """Two classes, margin ℓ(u) = 2(u − 0.75) − 0.5·exp(−((u − 0.52)/0.003)²) of the pixel mean u."""

    def forward(self, x: Tensor) -> Tensor:
        u = x.flatten(1).mean(1)
        ell = 2 * (u - 0.75) - 0.5 * torch.exp(-(((u - 0.52) / 0.003) ** 2))
        return torch.stack([torch.zeros_like(ell), ell], dim=1)


def interior_points(n: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.35 + 0.3 * torch.rand(n, 1, 8, 8, generator=g)


def linear_optimum_eps(w: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Smallest ℓ∞ ε that flips a linear model at x (no box binding): min_j m_j / ‖w_y − w_j‖₁."""
    flat = x.flatten(1)
    z = flat @ w.t()
    out = torch.full((x.shape[0],), math.inf)
    for j in range(C):
        diff = w[y] - w[j]  # (N, D)
        m = z.gather(1, y[:, None]).squeeze(1) - z[:, j]
        need = m / diff.abs().sum(1).clamp_min(1e-12)
        out = torch.where(y.eq(j), out, torch.minimum(out, need))
    return out


@pytest.fixture(scope="module")
def wobble_case() -> tuple[nn.Module, Tensor, Tensor, float, float]:
    w = linear_weights()
    x = interior_points(120)
    y = (x.flatten(1) @ w.t()).argmax(1)
    need = linear_optimum_eps(w, x, y)
    eps = float(need.median())  # the EOT optimum leaves exactly half the points robust
    assert eps < 0.3  # the ε-ball stays inside the box
    optimum = float((need > eps).float().mean())
    return Wobble(w), x, y, eps, optimum


# ------------------------------------------------------------------------------------------ EOT


def test_eot_gradient_is_the_mean_gradient() -> None:
    w = linear_weights()
    model = Wobble(w)
    x = interior_points(4)
    torch.manual_seed(0)
    _, _, g1 = eot_value_and_grad(model, x, lambda z: z[:, 0], 1)
    _, _, g400 = eot_value_and_grad(model, x, lambda z: z[:, 0], 400)
    exact = w[0].expand(4, D).reshape_as(x)
    err1 = float((g1 - exact).norm() / exact.norm())
    err400 = float((g400 - exact).norm() / exact.norm())
    assert err1 > 2.0 and err400 < err1 / 5  # the noise shrinks like 1/√draws
    with pytest.raises(ConfigError, match="eot_iter"):
        eot_value_and_grad(model, x, lambda z: z[:, 0], 0)


def test_stochastic_model_is_detected() -> None:
    w = linear_weights()
    x = interior_points(8)
    assert is_stochastic(Wobble(w), x)
    assert not is_stochastic(Linear(w), x)
    # a deterministic model's draws agree with one forward
    y = (x.flatten(1) @ w.t()).argmax(1)
    assert torch.equal(accuracy_over_draws(Linear(w), x, y, 5), torch.ones(8))


def test_pgd_with_eot_reaches_the_known_optimum(wobble_case) -> None:
    model, x, y, eps, optimum = wobble_case
    threat = ThreatModel("linf", eps)
    torch.manual_seed(0)
    plain = build_attack("pgd", threat, steps=20, seed=0)
    eot = build_attack("pgd", threat, steps=20, seed=0, eot_iter=20)
    acc_plain = float(accuracy_over_draws(model, plain(model, x, y), y, 10).mean())
    acc_eot = float(accuracy_over_draws(model, eot(model, x, y), y, 10).mean())
    assert acc_eot <= optimum + 0.1  # EOT PGD nearly reaches the analytic optimum (0.5) ...
    assert acc_plain >= acc_eot + 0.15  # ... one-draw PGD follows the wobble and overstates


def test_autoattack_rand_beats_one_draw_apgd(wobble_case) -> None:
    model, x, y, eps, optimum = wobble_case
    threat = ThreatModel("linf", eps)
    torch.manual_seed(0)
    one_draw = AutoAttack(threat, version="custom", attacks=["apgd-ce", "apgd-dlr"], n_iter=20)
    _, rep_plain = one_draw.run(model, x, y)
    rand = AutoAttack(threat, version="rand", n_iter=20)
    _, rep_rand = rand.run(model, x, y)
    assert rep_rand.expected_accuracy is not None
    assert rep_rand.robust_accuracy["apgd-dlr"] <= optimum + 0.1
    assert rep_plain.robust_accuracy["apgd-dlr"] >= rep_rand.robust_accuracy["apgd-dlr"] + 0.08
    assert any("expectation over transformation" in w for w in rep_plain.warnings)
    assert build_attack("autoattack-rand", threat).draws == 20  # registered, official settings


# ----------------------------------------------------------------------------------------- BPDA


def test_bpda_forward_is_exact_backward_is_identity() -> None:
    x = interior_points(3).requires_grad_(True)
    layer = BPDA(Round())
    out = layer(x)
    assert torch.equal(out.detach(), Round()(x.detach()))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.ones_like(x))
    approx = BPDA(Round(), approx=lambda t: 2 * t)
    (g2,) = torch.autograd.grad(approx(x).sum(), x)
    assert torch.equal(g2, torch.full_like(x, 2.0))
    with pytest.raises(ConfigError, match="callable"):
        BPDA(3)  # type: ignore[arg-type]


def test_bpda_breaks_a_quantized_model_that_pgd_cannot() -> None:
    w = linear_weights()
    model = Quantized(Linear(w))
    x = interior_points(100)
    y = model(x).argmax(1)
    threat = ThreatModel("linf", 0.2)
    pgd = build_attack("pgd", threat, steps=20, seed=0)
    plain = float(model(pgd(model, x, y)).argmax(1).eq(y).float().mean())
    wrapped = with_bpda(model, "quantize")
    assert isinstance(wrapped.quantize, BPDA) and isinstance(model.quantize, Round)  # original untouched
    bpda = float(model(pgd(wrapped, x, y)).argmax(1).eq(y).float().mean())
    assert bpda == 0.0  # BPDA-PGD breaks every point ...
    assert plain >= 0.3  # ... PGD only where its random start happens to cross a level
    with pytest.raises(ConfigError, match="submodules: quantize, inner"):
        with_bpda(model, "nope")
    st = input_gradient_stats(wrapped, x[:20], y[:20])
    assert st["zero_fraction"] == 0.0 and input_gradient_stats(model, x[:20], y[:20])["zero_fraction"] == 1.0


# ---------------------------------------------------------------------------------------- audit

FAST = {
    "n": 60,
    "random_search_samples": 300,
    "random_search_n": 15,
    "square_queries": 200,
    "square_n": 30,
    "strong_iter": 10,
    "curve_n": 40,
    "steps_grid": (8, 16, 32),
    "eps_factors": (0.0, 1.0, 4.0),
    "pgd_steps": 10,
}


def test_audit_flags_a_randomized_model_the_same_way_for_every_seed(wobble_case) -> None:
    model, x, y, eps, _ = wobble_case
    statuses = set()
    for seed in range(4):
        report = audit(
            model,
            (x, y),
            ThreatModel("linf", eps),
            checks=["determinism", "steps-curve"],
            seed=seed,
            **{**FAST, "curve_n": 30},
        )
        det = report.check("determinism")
        assert det.evidence["stochastic"] and det.status != "pass"
        assert report.settings["eot_iter"] == AuditThresholds().eot_iter
        assert "autoattack-rand" in det.explanation
        statuses.add(report.status)
    assert len(statuses) == 1


def test_audit_catches_ce_only_masking() -> None:
    w = linear_weights()
    model = SaturatedTop(w)
    x = interior_points(60)
    y = model(x).argmax(1)
    st = input_gradient_stats(model, x, y)
    assert st["zero_fraction"] == 0.0  # the old check (exact zeros only) passed this model
    assert st["near_zero_fraction"] == 1.0
    l2 = ThreatModel("l2", 1.0)
    report = audit(model, (x, y), l2, checks=["gradients", "loss-gap"], **FAST)
    assert report.check("gradients").status == "fail"
    ev = report.check("loss-gap").evidence
    assert report.check("loss-gap").status == "fail", report.table()
    assert ev["ce_accuracy"] >= ev["margin_accuracy"] + 0.3


def test_steps_curve_catches_a_rising_and_a_stuck_curve() -> None:
    x = torch.full((20, 1, 16, 16), 0.5)
    y = torch.zeros(20, dtype=torch.long)
    report = audit(
        Valley(), (x, y), ThreatModel("linf", 0.3), checks=["steps-curve"], n=20, steps_grid=(8, 64, 256)
    )
    check = report.check("steps-curve")
    assert check.evidence["accuracy"][0] == 0.0 and check.evidence["accuracy"][-1] == 1.0
    assert check.evidence["last_drop"] <= 0  # the old rule (last drop only) passed it
    assert check.status == "fail"
    blind = Detached(Linear(linear_weights()))
    xq = interior_points(40)
    yq = blind(xq).argmax(1)
    stuck = audit(
        blind, (xq, yq), ThreatModel("linf", 0.012), checks=["steps-curve"], n=40, steps_grid=(8, 16)
    )
    assert stuck.check("steps-curve").evidence["stuck"] and stuck.check("steps-curve").status == "warn"


def test_square_check_finds_what_the_gradient_attacks_miss() -> None:
    quantized = Quantized(Linear(linear_weights()))
    x = interior_points(60)
    y = quantized(x).argmax(1)
    report = audit(quantized, (x, y), ThreatModel("linf", 0.2), checks=["square"], **FAST)
    check = report.check("square")
    assert check.status == "fail" and check.evidence["square_successes"] >= 3


def test_strong_attack_check_compares_with_a_stored_reference() -> None:
    model = Linear(linear_weights())
    x = interior_points(60)
    y = model(x).argmax(1)
    threat = ThreatModel("linf", 0.012)
    ok = audit(model, (x, y), threat, checks=["strong-attack"], **FAST)
    assert ok.check("strong-attack").status == "pass", ok.table()
    grad = ok.check("strong-attack").evidence["gradient_worst_case_accuracy"]
    contradicted = audit(
        model, (x, y), threat, checks=["strong-attack"], reference_accuracy=max(0.0, grad - 0.3), **FAST
    )
    assert contradicted.check("strong-attack").status == "fail"


def test_random_search_verdict_needs_enough_hits() -> None:
    th = AuditThresholds()
    assert _hits_status(0, 25, th) == "pass"
    assert _hits_status(1, 25, th) == "warn"  # one lucky hit (4 %) failed the old rule
    assert _hits_status(2, 25, th) == "warn"
    assert _hits_status(3, 25, th) == "fail"
    assert _hits_status(3, 1000, th) == "warn"  # 0.3 %: below the fail rate


def test_square_check_compares_only_earlier_attacks() -> None:
    acc = {"clean": 0.9, "APGD-CE": 0.5, "APGD-T": 0.5, "FAB-T": 0.5, "Square": 0.1}
    assert square_check(acc)
    assert not square_check({"clean": 0.9, "apgd-ce": 0.5, "square": 0.5, "apgd-t": 0.4})


# ----------------------------------------------------------------------------------- evaluation


def test_evaluate_raises_autoattacks_alarms_for_every_suite() -> None:
    from entrobust.evaluation import evaluate

    quantized = Quantized(Linear(linear_weights()))
    x = interior_points(40)
    y = quantized(x).argmax(1)
    with pytest.warns(RuntimeWarning, match="Square lowered robust accuracy"):
        res = evaluate(quantized, (x, y), "apgd-ce:n_iter=5,square:n_queries=200", [0.2], progress=False)
    assert any("Square" in n for n in res.meta["warnings"])
    assert "WARNING: eps=0.2: Square lowered" in res.table()


def test_evaluate_warns_on_a_randomized_model_and_rand_suite_scores_draws(wobble_case) -> None:
    from entrobust.evaluation import evaluate

    model, x, y, eps, _ = wobble_case
    with pytest.warns(RuntimeWarning, match="expectation over transformation"):
        res = evaluate(model, (x[:40], y[:40]), "pgd:steps=10", [eps], progress=False)
    assert "autoattack-rand" in res.table()
    rand = evaluate(model, (x[:40], y[:40]), "autoattack-rand:n_iter=10", [eps], progress=False)
    assert "warnings" not in rand.meta
    assert rand.robust_accuracy(eps) <= res.robust_accuracy(eps)


def test_eval_cli_prints_a_failed_stored_audit(tmp_path) -> None:
    import json

    from entrobust.cli.eval import stored_audit_note

    (tmp_path / "audit").mkdir()
    checkpoint = str(tmp_path / "best")
    assert stored_audit_note(checkpoint) is None  # no stored audit: nothing to say
    checks = [{"name": "determinism", "status": "fail"}, {"name": "gradients", "status": "pass"}]
    report = {"status": "fail", "threat": {"eps": 0.3}, "checks": checks}
    (tmp_path / "audit" / "audit.json").write_text(json.dumps(report))
    note = stored_audit_note(checkpoint)
    assert note is not None and "FAIL (determinism)" in note and "eps=0.3" in note


def test_bpda_option_is_the_same_on_eval_and_audit() -> None:
    from entrobust.attacks.bpda import BPDA
    from entrobust.cli import build_parser
    from entrobust.cli.eval import apply_bpda

    parser = build_parser()
    for command in ("eval", "audit"):
        assert parser.parse_args([command, "ckpt", "--bpda", "0"]).bpda == "0"
        assert parser.parse_args([command, "ckpt"]).bpda is None
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(4, 2))
    assert apply_bpda(model, None) is model
    wrapped = apply_bpda(model, "0")
    assert isinstance(wrapped[0], BPDA) and not isinstance(model[0], BPDA)  # a copy, the original kept
