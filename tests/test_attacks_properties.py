"""Invariants every registered attack must keep (STYLE rules 4 and 12).

Loops over the whole attack registry (and one example of each RU name family), so attacks added
later are covered automatically: the threat model (‖δ‖ ≤ ε, box), shape and dtype, ε = 0 → x,
model mode and parameters / ``.grad`` untouched, batch consistency and scalar-vs-tensor ε.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from entrobust.attacks import ATTACKS, PATTERNS, Attack, ThreatModel, build_attack
from entrobust.errors import ConfigError

torch.set_num_threads(1)

NUM_CLASSES = 10
SHAPE = (1, 8, 8)
NAMES = sorted(ATTACKS.names()) + [p.example for p in PATTERNS]

# small budgets so every attack runs in milliseconds; a key is used only if the factory accepts it
SPEED: dict[str, Any] = {
    "steps": 3,
    "n_iter": 3,
    "n_queries": 20,
    "n": 30,
    "max_iter": 4,
    "search_steps": 2,
    "chunk": 16,
    "gammas": (0.0, 0.5),
}


class TinyConv(nn.Module):
    """conv → BatchNorm → ReLU → dropout → linear: the mode matters (BN, dropout)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 6 * 6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(h.flatten(1))


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, NUM_CLASSES))


def make_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyConv() if kind == "conv" else tiny_mlp()
    if kind == "conv":  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model


def extra_kwargs(name: str, seed: bool = False) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if name == "transfer":
        kw["surrogate"] = make_model("mlp", seed=1)
    if seed:
        kw["seed"] = 0
    return kw


@functools.cache
def speed_keys(name: str, norm: str) -> tuple[str, ...]:
    """The SPEED options that attack ``name`` accepts (probed by building it)."""
    threat = ThreatModel(norm, 0.1)
    keys = []
    for key, value in SPEED.items():
        try:
            build_attack(name, threat, **extra_kwargs(name), **{key: value})
        except (ConfigError, TypeError):
            continue
        keys.append(key)
    return tuple(keys)


def supports(name: str, norm: str) -> bool:
    try:
        build_attack(name, ThreatModel(norm, 0.1), **extra_kwargs(name))
    except ConfigError:
        return False
    return True


def make_attack(name: str, threat: ThreatModel, *, seed: bool = False) -> Attack:
    kw = {k: SPEED[k] for k in speed_keys(name, threat.norm)}
    if seed:
        try:
            return build_attack(name, threat, **kw, **extra_kwargs(name, seed=True))
        except (ConfigError, TypeError):
            pass
    return build_attack(name, threat, **kw, **extra_kwargs(name))


def call(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    target = (y + 1) % NUM_CLASSES if attack.targeted else None
    return attack(model, x, y, target=target)


def snapshot(
    model: nn.Module,
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[bool], list[bool]]:
    params = [p.detach().clone() for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    return params, grads, flags, modes


def test_every_attack_supports_some_norm() -> None:
    for name in NAMES:
        assert supports(name, "linf") or supports(name, "l2"), name


CASES = [(name, norm) for name in NAMES for norm in ("linf", "l2")]


@pytest.mark.parametrize(("name", "norm"), CASES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 5),
    eps_kind=st.sampled_from(["zero", "small", "large", "tensor"]),
    model_kind=st.sampled_from(["mlp", "conv"]),
    train_mode=st.booleans(),
    data_seed=st.integers(0, 2**16),
)
def test_attack_invariants(
    name: str, norm: str, n: int, eps_kind: str, model_kind: str, train_mode: bool, data_seed: int
) -> None:
    if not supports(name, norm):
        pytest.skip(f"{name} does not support {norm}")
    gen = torch.Generator().manual_seed(data_seed)
    x = torch.rand((n, *SHAPE), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    scale = 0.3 if norm == "linf" else 2.0
    if eps_kind == "zero":
        eps: float | torch.Tensor = 0.0
    elif eps_kind == "small":
        eps = 0.01 * scale
    elif eps_kind == "large":
        eps = scale
    else:
        eps = torch.rand(n, generator=gen) * scale
        eps[0] = 0.0  # one example with ε = 0 inside a batch
    threat = ThreatModel(norm, eps)
    model = make_model(model_kind)
    model.train(train_mode)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = snapshot(model)

    x_adv = call(make_attack(name, threat), model, x, y)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    bound = threat.eps_for(x).flatten() * (1 + 1e-6) + 1e-7
    dist = threat.distance(x_adv, x)
    assert bool((dist <= bound).all()), (dist, bound)
    if eps_kind == "zero":
        assert torch.equal(x_adv, x)
    after = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))
    assert all(
        a is not None and b is not None and torch.equal(a, b)
        for a, b in zip(before[1], after[1], strict=True)
    )
    assert before[2] == after[2]
    assert before[3] == after[3]


def _row_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batch_consistency(name: str, norm: str) -> None:
    """Seeded: example i alone equals row i of the batch (AdverTorch test_attacks_running.py)."""
    if not supports(name, norm):
        pytest.skip(f"{name} does not support {norm}")
    model = make_model("conv").double().eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((4, *SHAPE), generator=gen, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (4,), generator=gen)
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 1.0)
    if name == "transfer":
        surrogate = make_model("mlp", seed=1).double()
        kw = {k: SPEED[k] for k in speed_keys(name, norm)}
        attack = build_attack(name, threat, surrogate=surrogate, seed=0, **kw)
    else:
        attack = make_attack(name, threat, seed=True)
    batch = call(attack, model, x, y)
    for i in range(4):
        alone = call(attack, model, x[i : i + 1], y[i : i + 1])
        assert _row_equal(alone[0], batch[i]), (name, i, (alone[0] - batch[i]).abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_tensor_eps_equals_scalar_eps(name: str) -> None:
    norm = "linf" if supports(name, "linf") else "l2"
    model = make_model("mlp").double()
    gen = torch.Generator().manual_seed(5)
    x = torch.rand((3, *SHAPE), generator=gen, dtype=torch.float64)
    y = torch.randint(0, NUM_CLASSES, (3,), generator=gen)
    e = 0.1 if norm == "linf" else 1.0
    outs = []
    for eps in (e, torch.full((3,), e, dtype=torch.float64)):
        threat = ThreatModel(norm, eps)
        if name == "transfer":
            kw = {k: SPEED[k] for k in speed_keys(name, norm)}
            attack = build_attack(name, threat, surrogate=make_model("mlp", seed=1).double(), seed=0, **kw)
        else:
            attack = make_attack(name, threat, seed=True)
        outs.append(call(attack, model, x, y))
    assert _row_equal(outs[0], outs[1]), (outs[0] - outs[1]).abs().max()


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("transfer",)])
def test_seeded_attack_is_deterministic(name: str) -> None:
    norm = "linf" if supports(name, "linf") else "l2"
    model = make_model("mlp")
    x = torch.rand((3, *SHAPE), generator=torch.Generator().manual_seed(9))
    y = torch.tensor([0, 1, 2])
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 1.0)
    a = call(make_attack(name, threat, seed=True), model, x, y)
    b = call(make_attack(name, threat, seed=True), model, x, y)
    assert torch.equal(a, b)
