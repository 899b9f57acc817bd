"""Accelerator fast paths on CPU (SPEC §7, issue 7): bf16 autocast, channels-last, compile, pinning.

On a GPU the same code paths run faster; here they run through CPU autocast and CPU memory
formats, which is enough to check that none of them changes what is computed: every registered
attack keeps x_adv float32 inside the threat model under bf16 autocast, the attack losses are
float32 for bf16 logits, channels-last / compiled models give the original logits, and the
loader's channels-last / pin-memory options leave batch values untouched.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from entrobust import accel
from entrobust.attacks import ATTACKS, LOSSES, PATTERNS, Attack, ThreatModel, build_attack
from entrobust.attacks.base import LowPrecisionForward, entropy_of, fp32_attack_math, margin_of
from entrobust.attacks.losses import dlr_targeted_loss, fp32, kl_loss
from entrobust.data import BatchLoader, TensorData, pad_crop_flip
from entrobust.errors import ConfigError
from entrobust.models import MODELS, create_model

torch.set_num_threads(1)

NUM_CLASSES = 10
SHAPE = (1, 8, 8)
ATTACK_NAMES = sorted(ATTACKS.names()) + [p.example for p in PATTERNS]

# tiny budgets (as in test_attacks_properties.py); a key is used only if the factory accepts it
SPEED: dict[str, Any] = {
    "steps": 3,
    "n_iter": 3,
    "n_queries": 20,
    "n": 20,
    "max_iter": 3,
    "search_steps": 2,
    "chunk": 16,
    "gammas": (0.0, 0.5),
}


class RecordingConv(nn.Module):
    """conv → BatchNorm → ReLU → linear that records the dtype its conv produced (bf16 or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, NUM_CLASSES)
        self.seen: set[torch.dtype] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        self.seen.add(h.dtype)
        return self.fc(torch.relu(self.bn(h)).flatten(1))


def recording_model(seed: int) -> RecordingConv:
    torch.manual_seed(seed)
    model = RecordingConv()
    assert model.bn.running_mean is not None and model.bn.running_var is not None
    model.bn.running_mean.uniform_(-0.2, 0.2)
    model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _extra(name: str) -> dict[str, Any]:
    return {"surrogate": recording_model(1)} if name == "transfer" else {}


@functools.cache
def _speed_keys(name: str, norm: str) -> tuple[str, ...]:
    keys = []
    for key, value in SPEED.items():
        try:
            build_attack(name, ThreatModel(norm, 0.1), **_extra(name), **{key: value})
        except (ConfigError, TypeError):
            continue
        keys.append(key)
    return tuple(keys)


def _supports(name: str, norm: str) -> bool:
    try:
        build_attack(name, ThreatModel(norm, 0.1), **_extra(name))
    except ConfigError:
        return False
    return True


def _attack(name: str, threat: ThreatModel) -> Attack:
    kw = {k: SPEED[k] for k in _speed_keys(name, threat.norm)}
    return build_attack(name, threat, **kw, **_extra(name))


# ------------------------------------------------------------------ attacks under bf16 autocast
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_under_bf16_autocast_stays_fp32_and_in_threat(name: str) -> None:
    norms = [n for n in ("linf", "l2") if _supports(name, n)]
    assert norms, name
    gen = torch.Generator().manual_seed(11)
    x = torch.rand((4, *SHAPE), generator=gen)
    y = torch.randint(0, NUM_CLASSES, (4,), generator=gen)
    for norm in norms:
        threat = ThreatModel(norm, 0.1 if norm == "linf" else 0.5)
        attack = _attack(name, threat)
        model = recording_model(0)
        target = (y + 1) % NUM_CLASSES if attack.targeted else None
        with accel.autocast("cpu", "bf16"):
            res = attack(model, x, y, target=target, return_info=True)
            assert torch.is_autocast_enabled("cpu")  # the attack restored the caller's autocast
        x_adv = res.x_adv
        assert torch.bfloat16 in model.seen, (name, norm, model.seen)  # forwards did run in bf16
        assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
        assert not x_adv.requires_grad
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
        dist = threat.distance(x_adv, x)
        assert bool((dist <= threat.eps_for(x).flatten() + 1e-6).all()), (name, norm, dist)
        for field in (res.margin, res.loss, res.entropy, res.distance):
            assert field.dtype == torch.float32, (name, norm, field.dtype)


def _takes_loss_callable(name: str) -> bool:
    try:
        build_attack(name, ThreatModel("linf", 0.1), loss=lambda z, y: z.sum(1), **_extra(name))
    except (ConfigError, TypeError):
        return False
    return True


LOSS_CALLABLE_ATTACKS = [n for n in sorted(ATTACKS.names()) if _takes_loss_callable(n)]


@pytest.mark.parametrize("name", LOSS_CALLABLE_ATTACKS)
def test_attack_loss_sees_fp32_logits_with_autocast_off(name: str) -> None:
    """The objective an attack maximizes runs in float32 with autocast off, under bf16 autocast."""
    seen: list[tuple[torch.dtype, bool]] = []

    def spy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append((z.dtype, torch.is_autocast_enabled("cpu")))
        return torch.nn.functional.cross_entropy(z, y, reduction="none")

    kw = {k: SPEED[k] for k in _speed_keys(name, "linf")}
    attack = build_attack(name, ThreatModel("linf", 0.1), loss=spy, **kw, **_extra(name))
    assert LOSS_CALLABLE_ATTACKS.count("pgd") == 1  # the probe finds the common case
    x = torch.rand((3, *SHAPE), generator=torch.Generator().manual_seed(6))
    model = recording_model(0)
    with accel.autocast("cpu", "bf16"):
        attack(model, x, torch.tensor([0, 1, 2]))
    assert seen, name
    assert set(seen) == {(torch.float32, False)}, (name, set(seen))
    assert torch.bfloat16 in model.seen or name == "transfer"


def test_fp32_attack_math_context() -> None:
    model = recording_model(0)
    x = torch.rand((2, *SHAPE))
    with fp32_attack_math(model, x) as net:  # no autocast: nothing changes
        assert net is model
    with accel.autocast("cpu", "bf16"), fp32_attack_math(model, x) as net:
        assert isinstance(net, LowPrecisionForward) and net.model is model
        assert not torch.is_autocast_enabled("cpu")
        out = net(x)
        assert out.dtype == torch.float32 and torch.bfloat16 in model.seen
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # own math in fp32
        with fp32_attack_math(net, x) as inner:  # a nested attack passes the wrapper through
            assert inner is net
    assert torch.allclose(out, model(x), rtol=2e-2, atol=0.1)


def test_transfer_surrogate_also_runs_in_bf16() -> None:
    surrogate = recording_model(1)
    attack = build_attack("transfer", ThreatModel("linf", 0.1), surrogate=surrogate, steps=2)
    x = torch.rand((3, *SHAPE), generator=torch.Generator().manual_seed(2))
    with accel.autocast("cpu", "bf16"):
        x_adv = attack(recording_model(0), x, torch.tensor([0, 1, 2]))
    assert torch.bfloat16 in surrogate.seen
    assert x_adv.dtype == torch.float32
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_amp_off_changes_nothing() -> None:
    """``autocast(dev, "off")`` is a no-op: a seeded attack returns bit-identical results."""
    threat = ThreatModel("linf", 0.1)
    x = torch.rand((4, *SHAPE), generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 3])
    plain = build_attack("pgd", threat, steps=3, seed=0)(recording_model(0), x, y)
    model = recording_model(0)
    with accel.autocast("cpu", "off"):
        off = build_attack("pgd", threat, steps=3, seed=0)(model, x, y)
    assert model.seen == {torch.float32}
    assert torch.equal(plain, off)


# ------------------------------------------------------------------------------- attack losses
def _logits(n: int = 16, c: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.randn((n, c), generator=gen) * 3, torch.randint(0, c, (n,), generator=gen)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    # bf16 keeps 8 significant bits: relative rounding 2^-8 of logits of size ~10
    return torch.allclose(a, b, rtol=2e-2, atol=0.15)


@pytest.mark.parametrize("loss", sorted(LOSSES.names()))
def test_registered_losses_are_fp32_for_bf16_logits(loss: str) -> None:
    z, y = _logits()
    fn = LOSSES.get(loss)()
    low = fn(z.bfloat16(), y)
    assert low.dtype == torch.float32
    assert torch.equal(low, fn(z.bfloat16().float(), y))  # upcast first, then all in fp32
    assert _close(low, fn(z, y)), (low - fn(z, y)).abs().max()


def test_other_losses_margin_entropy_are_fp32_for_bf16_logits() -> None:
    z, y = _logits()
    z2 = z.flip(0)
    t = (y + 1) % NUM_CLASSES
    cases = [
        (lambda a, b: kl_loss(a, b), (z, z2)),
        (lambda a, b: dlr_targeted_loss(a, y, b), (z, t)),
        (lambda a, b: margin_of(a, b), (z, y)),
        (lambda a, b: entropy_of(a), (z, y)),
    ]
    for fn, (a, b) in cases:
        low = fn(a.bfloat16() if a.is_floating_point() else a, b.bfloat16() if b.is_floating_point() else b)
        assert low.dtype == torch.float32
        assert _close(low, fn(a, b)), (low - fn(a, b)).abs().max()
    assert fp32(z) is z  # float32 passes through without a copy
    assert fp32(z.double()).dtype == torch.float64
    assert fp32(z.half()).dtype == torch.float32


def test_losses_under_autocast_match_fp32_within_bf16_tolerance() -> None:
    """A bf16 forward then an attack loss: float32 result within bf16 rounding of the fp32 one."""
    model = recording_model(3)
    x = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(5))
    y = torch.arange(8)
    ref = LOSSES.get("ce")()(model(x), y)
    with accel.autocast("cpu", "bf16"):
        z = model(x)
        assert z.dtype == torch.bfloat16
        got = LOSSES.get("ce")()(z, y)
    assert got.dtype == torch.float32
    assert _close(got, ref)


# ---------------------------------------------------------------------------- configuration
def test_fp16_is_refused_with_a_pointer_to_bf16() -> None:
    with pytest.raises(ConfigError, match="bf16"):
        accel.autocast("cpu", "fp16")
    with pytest.raises(ConfigError, match="bf16"):
        accel.AccelConfig(amp="fp16")
    with pytest.raises(ConfigError, match="bf16"):
        accel.autocast_factory("cpu", "fp16")
    with pytest.raises(ConfigError):
        accel.AccelConfig(compile_backend="")
    assert accel.AccelConfig() == accel.AccelConfig(amp="off", channels_last=False, compile=False)


def test_autocast_factory_gives_fresh_contexts() -> None:
    make = accel.autocast_factory("cpu", "bf16")
    lin = nn.Linear(3, 2)
    for _ in range(2):
        with make():
            assert lin(torch.rand(1, 3)).dtype == torch.bfloat16
    assert lin(torch.rand(1, 3)).dtype == torch.float32


# ------------------------------------------------------------------------------------- models
MODEL_KWARGS: dict[str, dict[str, Any]] = {"wrn34_10": {"depth": 10, "widen_factor": 1}}


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_channels_last_keeps_logits_and_makes_weights_nhwc(name: str) -> None:
    torch.manual_seed(0)
    shape = MODELS.get(name).input_shape
    model = create_model(name, **MODEL_KWARGS.get(name, {})).eval()
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
        prepared = accel.prepare_model(model, accel.AccelConfig(channels_last=True))
        after = prepared(accel.to_device(x, torch.device("cpu"), channels_last=True))
    assert prepared is model  # channels-last alone works in place
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-5), (before - after).abs().max()
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert weights or name == "mlp3", name
    for p in weights:
        assert p.is_contiguous(memory_format=torch.channels_last), name


def test_compile_eager_backend_matches_original() -> None:
    torch.manual_seed(0)
    model = create_model("lenet", dataset="mnist5k").eval()
    x = torch.rand((3, 1, 28, 28), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        compiled = accel.prepare_model(model, accel.AccelConfig(compile=True, compile_backend="eager"))
        out = compiled(x)
    assert compiled is not model
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)
    shared = {id(p) for p in compiled.parameters()}
    assert all(id(p) in shared for p in model.parameters())  # parameters shared, not copied


def test_compile_with_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no-such-backend"):
        config = accel.AccelConfig(compile=True, compile_backend="no-such-backend")
        accel.prepare_model(nn.Linear(2, 2), config)


def test_to_device_on_cpu_keeps_values_and_format() -> None:
    x = torch.rand((2, 3, 4, 5), generator=torch.Generator().manual_seed(3))
    cpu = torch.device("cpu")
    same = accel.to_device(x, cpu)
    assert torch.equal(same, x) and same.is_contiguous()
    nhwc = accel.to_device(x, cpu, channels_last=True)
    assert torch.equal(nhwc, x)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    flat = torch.rand(4, 6)
    assert torch.equal(accel.to_device(flat, cpu, channels_last=True), flat)  # only 4-D is NHWC


# ------------------------------------------------------------------------------------- loader
def _data(n: int = 37) -> TensorData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 6, 6), generator=g, dtype=torch.uint8)
    return TensorData(x, torch.arange(n) % 10, "toy", num_classes=10)


def _batches(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(memory_format=torch.preserve_format), y.clone()) for x, y in loader]


@pytest.mark.parametrize("augment", [False, True])
def test_loader_channels_last_same_values_nhwc(augment: bool) -> None:
    data = _data()
    kw: dict[str, Any] = {"shuffle": True, "seed": 3, "augment": pad_crop_flip(2) if augment else None}
    plain = _batches(BatchLoader(data, 8, **kw))
    loader = BatchLoader(data, 8, channels_last=True, **kw)
    nhwc = _batches(loader)
    assert len(plain) == len(nhwc) == 5
    for (xa, ya), (xb, yb) in zip(plain, nhwc, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xb.dtype == torch.float32
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert not xb.is_contiguous()  # really NHWC, not an ambiguous 1×1 layout
    assert "channels_last=True" in repr(loader)


def test_pin_memory_is_a_noop_without_cuda() -> None:
    data = _data()
    plain = _batches(BatchLoader(data, 8, shuffle=True, seed=1))
    for pin in (True, None):
        loader = BatchLoader(data, 8, shuffle=True, seed=1, pin_memory=pin, device="cpu")
        if not torch.cuda.is_available():
            assert loader.pin_memory is False
        got = _batches(loader)
        assert all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, got, strict=True)
        )
    pinned = data.pin_memory()
    if not torch.cuda.is_available():
        assert pinned is data
    assert torch.equal(pinned.x, data.x) and torch.equal(pinned.y, data.y)
    assert pinned.pin_memory() is pinned  # made once


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_batches_on_cuda_equal_cpu_batches() -> None:
    data = _data()
    plain = _batches(BatchLoader(data, 8, shuffle=True, seed=1))
    loader = BatchLoader(data, 8, shuffle=True, seed=1, device="cuda", channels_last=True)
    assert loader.pin_memory is True
    for (xa, ya), (xb, yb) in zip(plain, _batches(loader), strict=True):
        assert xb.is_cuda and torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())
    pinned = data.pin_memory()
    assert pinned.x.is_pinned() and pinned.y.is_pinned()


def test_bf16_on_a_cpu_without_bf16_instructions_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from entrobust import accel

    monkeypatch.setattr(accel, "_WARNED_SLOW_BF16", False)
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without native bf16 instructions"):
        with accel.autocast("cpu", "bf16"):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second context is silent
        with accel.autocast("cpu", "bf16"):
            pass


def test_bf16_on_a_cpu_with_bf16_instructions_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    from entrobust import accel

    monkeypatch.setattr(accel, "_WARNED_SLOW_BF16", False)
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with accel.autocast("cpu", "bf16"):
            pass


def test_channels_last_weights_changes_only_the_layout_and_puts_the_tensors_back() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten())
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        ref = model(x)
    before = [(p, p.data, p.stride(), p.detach().clone()) for p in model.parameters()]
    with accel.channels_last_weights(model), torch.no_grad():
        assert model[0].weight.stride() == (9, 1, 3, 1)  # restrided although it has 1 input channel
        assert model[2].weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x)
    assert torch.allclose(out, ref, atol=1e-6)
    for p, data, stride, value in before:
        assert p.data.data_ptr() == data.data_ptr() and p.stride() == stride and torch.equal(p, value)
    with pytest.raises(RuntimeError), accel.channels_last_weights(model):
        raise RuntimeError("boom")
    assert all(p.stride() == stride for p, _, stride, _ in before)
