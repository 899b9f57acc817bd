"""Method = adversary × objective × regularizer × scheme: composition, schemes, ATENT modes, config."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entrobust.errors import ConfigError
from entrobust.models.ensemble import Ensemble
from entrobust.training.method import (
    AdversaryConfig,
    Method,
    MethodConfig,
    ObjectiveConfig,
    RegularizerConfig,
)
from entrobust.training.objectives import OBJECTIVES
from entrobust.training.regularizers import minmax

torch.set_num_threads(1)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 3))


def tiny_ensemble(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Ensemble(
        [nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(3)]
    )


def batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


ADVERSARIES = {
    "none": {"kind": "none"},
    "pgd": {"kind": "pgd", "eps": 0.1, "steps": 2},
    "pgd-entm": {"kind": "pgd", "eps": 0.1, "steps": 2, "loss": "entm", "loss_kwargs": {"lam": 2.0}},
    "trades": {"kind": "trades", "eps": 0.1, "steps": 2},
    "mart": {"kind": "mart", "eps": 0.1, "steps": 2},
    "atent-l2": {"kind": "atent-l2", "eps": 0.3, "steps": 3, "bn_mode": "train"},
    "atent-linf": {"kind": "atent-linf", "eps": 0.1, "steps": 3, "bn_mode": "train"},
}
OBJECTIVE_PARAMS = {
    "ce": {},
    "entm": {"lam": 2.0},
    "ls": {"gamma": 0.5},
    "trades": {"beta": 3.0},
    "mart": {"beta": 5.0},
    "adp": {"alpha": 2.0, "beta": 0.5},
    "atent": {},
}


def combos() -> list[tuple[str, str]]:
    out = []
    for a in ADVERSARIES:
        for o in OBJECTIVE_PARAMS:
            inputs = OBJECTIVES.get(o).inputs
            if a == "none" and inputs in ("pair", "samples"):
                continue
            if inputs == "samples" and not a.startswith("atent"):
                continue
            out.append((a, o))
    return out


@pytest.mark.parametrize(("adversary", "objective"), combos())
def test_every_adversary_objective_pair_trains(adversary, objective):
    """Method.loss runs for each adversary × objective and falls after a few SGD steps on one batch."""
    model = tiny_ensemble() if objective == "adp" else tiny_cnn()
    x, y = batch()
    mix = 0.5 if OBJECTIVES.get(objective).inputs in ("logits", "members") and adversary != "none" else 0.0
    method = Method(
        {
            "adversary": ADVERSARIES[adversary],
            "objective": {"kind": objective, "params": OBJECTIVE_PARAMS[objective], "mix_alpha": mix},
        }
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()

    def loss_at_seed() -> float:
        torch.manual_seed(123)
        return method.loss(model, x, y)[0].item()

    first = loss_at_seed()
    for step in range(6):
        opt.zero_grad()
        value, stats = method.backward(model, x, y, step)
        assert torch.isfinite(torch.tensor(value)) and stats["loss"] == value
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
    assert model.training
    assert loss_at_seed() < first


def test_stats_and_mix_equal_the_hand_computation():
    model, (x, y) = tiny_cnn(), batch()
    model.train()
    method = Method(
        MethodConfig(
            adversary=AdversaryConfig(kind="pgd", eps=0.1, steps=2),
            objective=ObjectiveConfig(kind="ce", mix_alpha=0.25),
        )
    )
    twin = copy.deepcopy(model)  # the loss's train-mode forwards move BN running statistics
    torch.manual_seed(3)
    loss, stats = method.loss(model, x, y)
    model = twin
    torch.manual_seed(3)
    x_adv = method.adversarial_examples(model, x, y)
    assert x_adv is not None
    clean_logits, adv_logits = model(x), model(x_adv)
    expect = 0.25 * F.cross_entropy(clean_logits, y) + 0.75 * F.cross_entropy(adv_logits, y)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert stats["clean_acc"] == pytest.approx(clean_logits.argmax(1).eq(y).float().mean().item())
    assert stats["adv_acc"] == pytest.approx(adv_logits.argmax(1).eq(y).float().mean().item())
    # Madry (α = 0): no clean forward, so no clean accuracy
    madry = Method({"adversary": {"kind": "pgd", "eps": 0.1, "steps": 1}})
    assert set(madry.loss(model, x, y)[1]) == {"loss", "adv_acc"}


def test_alternating_scheme_alternates_clean_and_adversarial_batches():
    model, (x, y) = tiny_mlp(), batch()
    model.train()
    method = Method(
        {
            "adversary": {"kind": "pgd", "eps": 0.2, "steps": 2},
            "objective": {"kind": "ce"},
            "scheme": "alternating",
        }
    )
    calls: list[int] = []
    inner = method.adversary
    assert inner is not None

    def spy(m: nn.Module, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return inner(m, xx, yy)

    method.adversary = spy  # type: ignore[assignment]
    for step in range(4):
        torch.manual_seed(step)
        loss, stats = method.loss(model, x, y, step)
        adversarial = step % 2 == 1
        assert method.is_adversarial_step(step) == adversarial
        assert len(calls) == (step + 1) // 2
        assert ("adv_acc" in stats) == adversarial and ("clean_acc" in stats) != adversarial
        if not adversarial:
            assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
        else:
            torch.manual_seed(step)
            x_adv = inner(model, x, y)
            assert loss.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-5)


def test_regularizer_is_added_to_the_objective():
    model, (x, y) = tiny_cnn(), batch()
    model.eval()  # fixed BN statistics: both losses see the same forward
    plain = Method({}).loss(model, x, y)[0]
    method = Method({"regularizer": {"kind": "minmax", "lam": 1e-3, "mu": 2e-3}})
    loss, stats = method.loss(model, x, y)
    reg = minmax(model, 1e-3, 2e-3)
    assert loss.item() == pytest.approx((plain + reg).item(), rel=1e-6)
    assert stats["reg"] == pytest.approx(reg.item(), rel=1e-6)


def test_gaussian_noise_augmentation_changes_inputs_not_data():
    model, (x, y) = tiny_cnn(), batch()
    model.eval()
    x0 = x.clone()
    method = Method({"objective": {"kind": "ce", "noise_sigma": 0.25}})
    torch.manual_seed(4)
    noisy = method.loss(model, x, y)[0]
    torch.manual_seed(4)
    expect = F.cross_entropy(model(x + 0.25 * torch.randn_like(x)), y)
    assert noisy.item() == pytest.approx(expect.item(), rel=1e-6)
    assert noisy.item() != pytest.approx(Method({}).loss(model, x, y)[0].item(), rel=1e-4)
    assert torch.equal(x, x0)


@pytest.mark.parametrize("kind", ["atent-linf", "atent-l2"])
def test_atent_memory_light_backward_equals_graph_backward(kind):
    cfg = {"adversary": dict(ADVERSARIES[kind], samples=2), "objective": {"kind": "atent"}}
    grads = []
    for light in (False, True):
        model, (x, y) = tiny_cnn(), batch()
        model.train()
        method = Method(dict(copy.deepcopy(cfg), memory_light=light))
        torch.manual_seed(11)
        value, stats = method.backward(model, x, y)
        grads.append(([p.grad.clone() for p in model.parameters()], value, stats))
    (g0, v0, s0), (g1, v1, s1) = grads
    assert v0 == pytest.approx(v1, rel=1e-5) and s0 == pytest.approx(s1, rel=1e-5)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_atent_loss_is_the_ema_of_the_sample_losses():
    model, (x, y) = tiny_cnn(), batch()
    model.train()
    method = Method({"adversary": ADVERSARIES["atent-linf"], "objective": {"kind": "atent"}})
    torch.manual_seed(5)
    loss, stats = method.loss(model, x, y)
    assert method.adversary is not None
    torch.manual_seed(5)
    samples = [s for s, _ in method.adversary.trajectory(model, x, y)]  # type: ignore[attr-defined]
    mu = torch.zeros(())
    for s in samples:
        mu = 0.1 * mu + 0.9 * F.cross_entropy(model(s), y)
    assert loss.item() == pytest.approx(mu.item(), rel=1e-4)
    assert set(stats) == {"loss", "adv_acc"}


def test_method_is_deterministic_given_rng_and_restores_the_model():
    model, (x, y) = tiny_cnn(), batch()
    model.train()
    method = Method(
        {"adversary": ADVERSARIES["trades"], "objective": {"kind": "trades", "params": {"beta": 6.0}}}
    )
    twin = copy.deepcopy(model)  # same weights and BatchNorm statistics
    torch.manual_seed(9)
    a = method.loss(model, x, y)
    torch.manual_seed(9)
    b = method.loss(twin, x, y)
    assert a[0].item() == b[0].item() and a[1] == b[1]
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert Method({}).adversarial_examples(model, x, y) is None


def test_adp_needs_an_ensemble():
    method = Method({"objective": {"kind": "adp"}})
    x, y = batch()
    with pytest.raises(ConfigError, match="Ensemble"):
        method.loss(tiny_cnn(), x, y)


# --------------------------------------------------------------------------- config
def test_config_round_trip_and_resolution():
    cfg = MethodConfig.from_dict(
        {
            "adversary": {"kind": "trades", "eps": 0.031, "steps": 10, "step_size": 0.007},
            "objective": {"kind": "trades", "params": {"beta": 3.0, "base": "entm", "lam": 2.0}},
            "regularizer": {"kind": "minmax", "lam": 1e-4, "mu": 1e-5},
        }
    )
    d = cfg.to_dict()
    assert d["adversary"]["loss"] == "kl" and d["adversary"]["init"] == "gaussian"
    assert MethodConfig.from_dict(d) == cfg
    assert MethodConfig() == MethodConfig.from_dict({})
    params = {"lam": 2.0}
    oc = ObjectiveConfig(kind="entm", params=params)
    params["lam"] = 9.0  # the config keeps its own copy
    assert oc.params == {"lam": 2.0}


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({"adversary": {"kind": "pgd", "epsilon": 0.1}}, "adversary.epsilon"),
        ({"adversary": {"kind": "pgd", "eps": "0.1"}}, "adversary.eps"),
        ({"adversary": {"kind": "pgd", "steps": 2.5}}, "adversary.steps"),
        ({"adversary": {"kind": "fgsm"}}, "adversary.kind"),
        ({"adversary": {"kind": "pgd", "bn_mode": "frozen"}}, "adversary.bn_mode"),
        ({"adversary": {"kind": "pgd", "eps": -1.0}}, "adversary.eps"),
        ({"adversary": {"kind": "pgd", "loss_kwargs": {"lam": "two"}}}, "adversary.loss_kwargs.lam"),
        ({"objective": {"kind": "entm", "params": {"lamb": 2.0}}}, "objective.params.lamb"),
        ({"objective": {"kind": "bce"}}, "objective.kind"),
        ({"objective": {"kind": "ce", "mix_alpha": 1.5}}, "objective.mix_alpha"),
        ({"objective": {"kind": "ce", "noise_sigma": True}}, "objective.noise_sigma"),
        ({"regularizer": {"kind": "minmax", "lam": "big"}}, "regularizer.lam"),
        ({"regularizer": {"kind": "l2"}}, "regularizer.kind"),
        ({"regularizer": {"kind": "l1", "mu": 0.1}}, "regularizer.mu"),
        ({"scheme": "interleaved"}, "scheme"),
        ({"memory_light": 1}, "memory_light"),
        ({"extra": 1}, "method.extra"),
        ({"adversary": 3}, "adversary"),
        ({"objective": {"kind": "trades"}}, "objective.kind"),
        ({"adversary": {"kind": "pgd"}, "objective": {"kind": "atent"}}, "objective.kind"),
        ({"objective": {"kind": "ce", "mix_alpha": 0.5}}, "objective.mix_alpha"),
        (
            {"adversary": {"kind": "pgd"}, "objective": {"kind": "mart", "mix_alpha": 0.5}},
            "objective.mix_alpha",
        ),
        (
            {"adversary": {"kind": "pgd"}, "objective": {"kind": "trades"}, "scheme": "alternating"},
            "alternating",
        ),
        ({"scheme": "alternating"}, "alternating"),
        ({"adversary": {"kind": "pgd"}, "memory_light": True}, "memory_light"),
        ({"adversary": {"kind": "atent-linf", "eps": 0.031, "gamma": 322.0}}, "gamma"),
    ],
)
def test_config_errors_name_the_key(d, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MethodConfig.from_dict(d)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["none", "pgd", "trades", "mart", "atent-l2", "atent-linf"]),
    eps=st.floats(1e-3, 1.0, exclude_max=True),  # an l-inf ball of radius 1 holds the whole box: refused
    steps=st.integers(1, 50),
    bn_mode=st.sampled_from(["eval", "train"]),
    mix=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_any_valid_config_round_trips(kind, eps, steps, bn_mode, mix, lam):
    d = {
        "adversary": {"kind": kind, "eps": eps, "steps": steps, "bn_mode": bn_mode},
        "objective": {"kind": "entm", "params": {"lam": lam}, "mix_alpha": mix if kind != "none" else 0.0},
        "regularizer": {"kind": "l1", "lam": lam},
    }
    cfg = MethodConfig.from_dict(d)
    again = MethodConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    assert cfg.adversary.step_size is None or cfg.adversary.step_size > 0
    assert RegularizerConfig(**cfg.to_dict()["regularizer"]) == cfg.regularizer
