"""Optimizers (Entropy-SGD, 2nd-order Entropy-SGD, registry) and the AWP component."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entrobust.errors import ConfigError, UnknownNameError
from entrobust.training.optim import AWP, OPTIMIZERS, EntropySGD, EntropySGD2, build_optimizer, closure_calls

torch.set_num_threads(1)

EXTRA = {"entropy-sgd": {"L": 3, "noise": 1e-3}, "entropy-sgd2": {"L": 3, "noise": 1e-3}}


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _data(seed: int = 1, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _closure(model: nn.Module, opt: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]]):
    """A closure that draws the next batch from ``batches`` on every call (as the trainer's)."""
    it = iter(batches * 1000)

    def closure() -> torch.Tensor:
        x, y = next(it)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def _batches(k: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _data()
    return [(x[i::k], y[i::k]) for i in range(k)]


# ------------------------------------------------------------------------------------ registry


def test_registry_names_and_unknown_name_lists_valid_ones() -> None:
    assert {"sgd", "adam", "entropy-sgd", "entropy-sgd2"} <= set(OPTIMIZERS.names())
    with pytest.raises(UnknownNameError, match="entropy-sgd"):
        build_optimizer("entropy_sgd", _mlp().parameters(), lr=0.1)


@pytest.mark.parametrize("name", ["sgd", "adam", "entropy-sgd", "entropy-sgd2"])
def test_state_dict_round_trips(name: str) -> None:
    """Save after two steps, load into a fresh optimizer: the next step is bit-identical."""
    batches = _batches()
    model = _mlp()
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-4, **EXTRA.get(name, {}))
    if name in EXTRA:
        kw["outer_momentum"] = 0.5  # exercise the persistent outer buffer too
    opt = build_optimizer(name, model.parameters(), **kw)
    closure = _closure(model, opt, batches)
    for _ in range(2):
        opt.step(closure)
    saved = copy.deepcopy(opt.state_dict())
    assert saved["state"], f"{name} kept no state"
    twin = copy.deepcopy(model)
    opt2 = build_optimizer(name, twin.parameters(), **kw)
    opt2.load_state_dict(saved)
    # the state survives a save/load with weights_only (what the trainer does)
    import io

    buf = io.BytesIO()
    torch.save(opt2.state_dict(), buf)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    rng = torch.get_rng_state()
    opt.step(_closure(model, opt, batches))
    torch.set_rng_state(rng)
    opt2.step(_closure(twin, opt2, batches))
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_closure_calls() -> None:
    params = _mlp().parameters()
    assert closure_calls(build_optimizer("sgd", params, lr=0.1)) == 1
    assert closure_calls(EntropySGD(_mlp().parameters(), 0.1, L=7)) == 7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"L": 0}, "L"),
        ({"L": 2.5}, "L"),
        ({"noise": -1.0}, "noise"),
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"alpha": 1.0}, "alpha"),
        ({"gamma": -0.1}, "gamma"),
        ({"outer": "newton"}, "outer"),
        ({"nesterov": True}, "nesterov"),
        ({"outer_nesterov": True}, "outer_nesterov"),
    ],
)
def test_entropy_sgd_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EntropySGD(_mlp().parameters(), 0.1, **kwargs)


def test_bad_torch_optimizer_args_become_config_errors() -> None:
    with pytest.raises(ConfigError, match="sgd"):
        build_optimizer("sgd", _mlp().parameters(), lr=-1.0)
    with pytest.raises(ConfigError, match="max_scale"):
        EntropySGD2(_mlp().parameters(), 0.1, max_scale=0.5)
    with pytest.raises(ConfigError, match="closure"):
        EntropySGD(_mlp().parameters(), 0.1).step()


# ------------------------------------------------------------------------------------ Entropy-SGD maths


def _one_param_step(opt_cls: type, w0: torch.Tensor, grad_fn, **kw) -> torch.Tensor:
    w = nn.Parameter(w0.clone())
    opt = opt_cls([w], **kw)

    def closure() -> torch.Tensor:
        loss = grad_fn(w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


@settings(max_examples=25, deadline=None)
@given(
    gamma=st.floats(0.0, 100.0),
    alpha=st.floats(0.0, 0.95),
    lr=st.floats(0.01, 2.0),
    inner_lr=st.floats(0.01, 0.5),
)
def test_L1_entropy_sgd_is_sgd_with_lr_eta_one_minus_alpha_eta_prime(gamma, alpha, lr, inner_lr) -> None:
    """With L = 1 (no noise, momentum or decay) the single inner step starts at w′ = w, so the
    scope γ never acts: w′ = w − η′∇f(w), μ = αw + (1 − α)w′ and the plain outer step
    w − η(w − μ) = w − η(1 − α)η′∇f(w) is exactly SGD with learning rate η(1 − α)η′, for any γ."""
    target = torch.tensor([1.0, -2.0, 0.5])
    w0 = torch.tensor([0.3, 0.7, -1.1])

    def f(w: torch.Tensor) -> torch.Tensor:
        return ((w - target) ** 4).sum() + (w**2).sum()

    got = _one_param_step(
        EntropySGD, w0, f, lr=lr, L=1, gamma=gamma, noise=0.0, inner_lr=inner_lr, alpha=alpha, scoping=0.0
    )
    w = w0.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(w), w)
    expected = w0 - lr * (1 - alpha) * inner_lr * g
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("L", [1, 3, 6])
def test_pinning_scope_gives_sgd_on_linear_loss(L: int) -> None:
    """γ·η′ = 1 pins each inner step to the anchor: w′_{k+1} = w − η′∇f(w′_k). For a linear loss
    (constant gradient c) every iterate is w − η′c, so μ = α^L·w + (1 − α^L)(w − η′c) and the
    outer step is SGD with learning rate η(1 − α^L)η′ — the γ → ∞ / pinned limit, exact here."""
    c = torch.tensor([0.5, -1.5, 2.0])
    w0 = torch.tensor([1.0, 2.0, 3.0])
    inner_lr, alpha, lr = 0.1, 0.75, 0.8
    got = _one_param_step(
        EntropySGD,
        w0,
        lambda w: (c * w).sum(),
        lr=lr,
        L=L,
        gamma=1.0 / inner_lr,
        noise=0.0,
        inner_lr=inner_lr,
        alpha=alpha,
        scoping=0.0,
    )
    expected = w0 - lr * (1 - alpha**L) * inner_lr * c
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_scaled_outer_step_multiplies_by_gamma() -> None:
    c = torch.tensor([1.0, -1.0])
    w0 = torch.zeros(2)
    common = dict(lr=0.5, L=1, gamma=4.0, noise=0.0, inner_lr=0.1, alpha=0.0, scoping=0.0)
    plain = _one_param_step(EntropySGD, w0, lambda w: (c * w).sum(), **common)
    scaled = _one_param_step(EntropySGD, w0, lambda w: (c * w).sum(), outer="scaled", **common)
    torch.testing.assert_close(scaled - w0, 4.0 * (plain - w0))


def test_second_order_step_matches_appendix_d_formula() -> None:
    """L = 1: μ = αw + (1 − α)w′, ξ = αw² + (1 − α)w′², σ² = ξ − μ², w ← w − η(w − μ)/(1 − γσ²)."""
    w0 = torch.tensor([0.5, -1.0, 2.0])
    c = torch.tensor([3.0, -2.0, 1.0])
    lr, gamma, inner_lr, alpha = 0.7, 0.5, 0.2, 0.6
    got = _one_param_step(
        EntropySGD2,
        w0,
        lambda w: (c * w).sum(),
        lr=lr,
        L=1,
        gamma=gamma,
        noise=0.0,
        inner_lr=inner_lr,
        alpha=alpha,
        scoping=0.0,
    )
    wp = w0 - inner_lr * c
    mu = alpha * w0 + (1 - alpha) * wp
    var = alpha * w0**2 + (1 - alpha) * wp**2 - mu**2
    expected = w0 - lr * (w0 - mu) / (1 - gamma * var)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # and it is the first-order step when the variance term vanishes (γ → 0 in the denominator)
    first = _one_param_step(
        EntropySGD,
        w0,
        lambda w: (c * w).sum(),
        lr=lr,
        L=1,
        gamma=gamma,
        noise=0.0,
        inner_lr=inner_lr,
        alpha=alpha,
        scoping=0.0,
    )
    assert not torch.allclose(got, first)
    torch.testing.assert_close(first, w0 - lr * (w0 - mu))


def test_scoping_really_advances() -> None:
    model = _mlp()
    opt = EntropySGD(model.parameters(), 0.1, L=2, gamma=0.03, scoping=0.5)
    closure = _closure(model, opt, _batches())
    assert opt.current_gamma() == pytest.approx(0.03)
    for t in range(1, 4):
        opt.step(closure)
        assert opt.outer_steps() == t
        assert opt.current_gamma() == pytest.approx(0.03 * 1.5**t)


def test_noise_has_the_sgld_scale() -> None:
    """Zero gradient, γ = 0: one inner step adds ε_E·√(2η′)·N(0, I) to w′; μ = (1 − α)w′ + αw."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.zeros(20000))
    opt = EntropySGD([w], lr=1.0, L=1, gamma=0.0, noise=0.3, inner_lr=0.02, alpha=0.0, scoping=0.0)
    opt.step(lambda: (w * 0).sum().backward())
    assert w.detach().std().item() == pytest.approx(0.3 * math.sqrt(2 * 0.02), rel=0.03)


@pytest.mark.parametrize("cls", [EntropySGD, EntropySGD2])
def test_minimizes_noisy_quadratic(cls: type) -> None:
    torch.manual_seed(0)
    A = torch.diag(torch.tensor([1.0, 10.0, 0.1, 3.0]))
    w = nn.Parameter(torch.full((4,), 3.0))
    opt = cls([w], lr=1.0, L=5, noise=1e-3, inner_lr=0.05, scoping=1e-3)

    def closure() -> torch.Tensor:
        loss = 0.5 * w @ A @ w + 0.1 * torch.randn(4) @ w  # a fresh stochastic gradient each call
        loss.backward()
        return loss

    start = float(0.5 * w.detach() @ A @ w.detach())
    for _ in range(150):
        opt.step(closure)
    end = float(0.5 * w.detach() @ A @ w.detach())
    assert end < 1e-2 * start


@pytest.mark.parametrize("name", ["entropy-sgd", "entropy-sgd2"])
def test_trains_small_mlp(name: str) -> None:
    model = _mlp()
    x, y = _data(n=256)
    batches = [(x[i::8], y[i::8]) for i in range(8)]
    opt = build_optimizer(name, model.parameters(), lr=1.0, momentum=0.9, nesterov=True, L=4, inner_lr=0.05)
    closure = _closure(model, opt, batches)
    with torch.no_grad():
        before = float(nn.functional.cross_entropy(model(x), y))
    for _ in range(100):
        opt.step(closure)
    with torch.no_grad():
        after = float(nn.functional.cross_entropy(model(x), y))
        acc = float((model(x).argmax(1) == y).float().mean())
    assert after < 0.5 * before
    assert acc > 0.8


# ------------------------------------------------------------------------------------ AWP


def _cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


def _img_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)


def test_awp_perturb_restore_is_bit_identical() -> None:
    model = _cnn()
    x, y = _img_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    awp = AWP(0.01)
    awp.perturb(model, lambda m: nn.functional.cross_entropy(m(x), y))
    assert awp.perturbed
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"0.weight", "4.weight"}  # only conv / linear weights (≥ 2 dims)
    awp.restore(model)
    assert not awp.perturbed
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_awp_direction_is_layer_scaled_ascent() -> None:
    model = _cnn()
    x, y = _img_batch()
    loss_fn = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    model.eval()
    with torch.no_grad():
        base = float(loss_fn(model))
    awp = AWP(0.01)
    d = awp.compute(model, loss_fn)
    params = dict(model.named_parameters())
    for name, v in d.items():
        torch.testing.assert_close(v.norm(), params[name].norm(), rtol=1e-5, atol=1e-7)
    awp.perturb(model, loss_fn)
    model.eval()
    with torch.no_grad():
        up = float(loss_fn(model))
    awp.restore(model)
    assert up > base  # the perturbation ascends the loss


def test_awp_restore_after_an_optimizer_step_subtracts_the_perturbation() -> None:
    model = _cnn()
    x, y = _img_batch()
    w0 = model[0].weight.detach().clone()
    awp = AWP(0.02)
    awp.perturb(model, lambda m: nn.functional.cross_entropy(m(x), y))
    delta = model[0].weight.detach() - w0
    with torch.no_grad():
        model[0].weight.add_(1.0)  # an "optimizer step"
    awp.restore(model)
    torch.testing.assert_close(model[0].weight.detach(), w0 + 1.0 + delta - delta)
    assert not torch.equal(delta, torch.zeros_like(delta))


def test_awp_state_warmup_and_errors() -> None:
    awp = AWP(0.005, warmup=10)
    assert not awp.active(9) and awp.active(10)
    twin = AWP()
    twin.load_state_dict(awp.state_dict())
    assert (twin.gamma, twin.warmup, twin.proxy_lr) == (0.005, 10, 0.01)
    assert not AWP(0.0).active(100)
    with pytest.raises(ConfigError, match="gamma"):
        AWP(-0.1)
    with pytest.raises(ConfigError, match="warmup"):
        AWP(0.01, warmup=-1)
    with pytest.raises(ConfigError, match="unknown AWP state"):
        twin.load_state_dict({"gama": 0.1})
    model = _cnn()
    x, y = _img_batch()
    awp.perturb(model, lambda m: nn.functional.cross_entropy(m(x), y))
    with pytest.raises(RuntimeError, match="twice"):
        awp.perturb(model, lambda m: nn.functional.cross_entropy(m(x), y))
    with pytest.raises(RuntimeError, match="restore first"):
        awp.state_dict()
    awp.restore(model)
