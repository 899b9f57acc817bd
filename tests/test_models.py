"""Every registered model: shapes, gradients, normalization inside; plus per-architecture facts."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from entrobust.data.info import DATASET_INFO
from entrobust.errors import ConfigError, UnknownNameError
from entrobust.models import (
    MODELS,
    Ensemble,
    Normalize,
    NormalizedModel,
    create_model,
    ensemble_member_logits,
)

MODEL_NAMES = list(MODELS)
SMALL_MODELS = ["smallcnn", "cnn4", "lenet", "lenet5", "mlp3"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_has_every_spec_model() -> None:
    expected = {
        "smallcnn",
        "cnn4",
        "lenet",
        "lenet5",
        "resnet18",
        "preact_resnet18",
        "wrn34_10",
        "resnet20",
        "mlp3",
        "ensemble",
    }
    assert expected <= set(MODEL_NAMES)
    for name in expected:
        entry = MODELS.get(name)
        assert entry.source and MODELS.help(name)
        assert len(entry.input_shape) == 3


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_every_model(name: str) -> None:
    """Shape, finiteness, a non-zero gradient on every parameter and on the [0,1] input."""
    torch.manual_seed(0)
    entry = MODELS.get(name)
    c = entry.input_shape[0]
    model = create_model(name, num_classes=7, mean=[0.4] * c, std=[0.3] * c)
    model.train()
    x = torch.rand(2, *entry.input_shape, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([1, 5])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"
    assert x.grad is not None and x.grad.abs().sum() > 0  # flows back through Normalize


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalization_is_inside_exactly_once(name: str) -> None:
    torch.manual_seed(1)
    entry = MODELS.get(name)
    c = entry.input_shape[0]
    mean, std = [0.2 + 0.1 * i for i in range(c)], [0.5 + 0.1 * i for i in range(c)]
    model = create_model(name, mean=mean, std=std).eval()
    assert isinstance(model, NormalizedModel)
    assert sum(isinstance(m, Normalize) for m in model.modules()) == 1
    x = torch.rand(2, *entry.input_shape)
    with torch.no_grad():
        out = model(x)
        manual = model.net((x - torch.tensor(mean).view(1, c, 1, 1)) / torch.tensor(std).view(1, c, 1, 1))
        assert torch.allclose(out, manual, atol=1e-5)
        model.normalize.mean.fill_(0.9)  # the buffer is really used
        assert not torch.allclose(model(x), out, atol=1e-4)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        create_model("resnet-18")
    msg = str(err.value)
    assert "resnet-18" in msg
    for name in ("smallcnn", "wrn34_10", "ensemble"):
        assert name in msg


def test_unknown_kwarg_is_named() -> None:
    with pytest.raises(ConfigError, match="widen"):
        create_model("smallcnn", widen=3)
    with pytest.raises(ConfigError, match="depth"):
        create_model("resnet18", depth=34)


@pytest.mark.parametrize(
    ("name", "dataset"), [("smallcnn", "mnist5k"), ("resnet20", "cifar100"), ("lenet", "fashion-mnist")]
)
def test_dataset_sets_channels_classes_and_stats(name: str, dataset: str) -> None:
    info = DATASET_INFO[dataset]
    model = create_model(name, dataset=dataset).eval()
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(info.mean))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(info.std))
    assert model.spec["dataset"] == dataset
    with torch.no_grad():
        out = model(torch.rand(2, *info.shape))
    assert out.shape == (2, info.num_classes)


# ---- per-architecture facts from SPEC §2 and the cited sources ----------------------------


def _layers(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_smallcnn_layout() -> None:
    net = create_model("smallcnn").net
    convs = _layers(net, nn.Conv2d)
    assert [(c.out_channels, c.kernel_size) for c in convs] == [
        (32, (3, 3)),
        (32, (3, 3)),
        (64, (3, 3)),
        (64, (3, 3)),
    ]
    fcs = _layers(net, nn.Linear)
    assert [(f.in_features, f.out_features) for f in fcs] == [(1024, 200), (200, 200), (200, 10)]
    assert [d.p for d in _layers(net, nn.Dropout)] == [0.5]
    assert len(_layers(net, nn.MaxPool2d)) == 2


def test_smallcnn_zero_init_last_matches_trades() -> None:
    net = create_model("smallcnn", zero_init_last=True).net
    last = _layers(net, nn.Linear)[-1]
    assert last.weight.abs().sum() == 0 and last.bias.abs().sum() == 0


def test_cnn4_lenet_lenet5_fc_sizes() -> None:
    cnn4 = _layers(create_model("cnn4").net, nn.Linear)
    assert [(f.in_features, f.out_features) for f in cnn4] == [(320, 50), (50, 10)]
    convs = _layers(create_model("cnn4").net, nn.Conv2d)
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (10, (5, 5), (1, 1)),
        (20, (5, 5), (1, 1)),
    ]
    lenet = create_model("lenet").net
    assert _layers(lenet, nn.Conv2d)[0].padding == (2, 2)
    assert [(f.in_features, f.out_features) for f in _layers(lenet, nn.Linear)] == [
        (400, 120),
        (120, 84),
        (84, 10),
    ]
    lenet5 = create_model("lenet5").net
    assert [(c.out_channels, c.padding) for c in _layers(lenet5, nn.Conv2d)] == [(32, (2, 2)), (64, (2, 2))]
    assert [(f.in_features, f.out_features) for f in _layers(lenet5, nn.Linear)] == [(3136, 1024), (1024, 10)]


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_models_accept_other_input_sizes(name: str) -> None:
    model = create_model(name, in_channels=3, input_size=32).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="input_size"):
        create_model(name, input_size=(28, 28, 28))


def test_lenet_on_cifar_is_classic_lenet5() -> None:
    fcs = _layers(create_model("lenet", in_channels=3, input_size=32).net, nn.Linear)
    assert fcs[0].in_features == 400  # 32×32 without padding gives the classic 16·5·5


def test_mlp3_hidden_kwarg() -> None:
    fcs = _layers(create_model("mlp3", num_classes=2, hidden=17).net, nn.Linear)
    assert [(f.in_features, f.out_features) for f in fcs] == [(784, 17), (17, 17), (17, 2)]


def test_resnet18_is_cifar_variant() -> None:
    net = create_model("resnet18").net
    assert not _layers(net, nn.MaxPool2d)
    stem = _layers(net, nn.Conv2d)[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.out_channels == 64
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 11.17e6) < 0.01e6  # the usual CIFAR ResNet-18 count


def test_preact_resnet18_has_preactivation_blocks() -> None:
    net = create_model("preact_resnet18").net
    block = net.layer2[0]
    assert isinstance(block.bn1, nn.BatchNorm2d) and block.bn1.num_features == 64  # BN on the input
    assert isinstance(net.bn, nn.BatchNorm2d) and net.bn.num_features == 512
    assert not hasattr(net, "bn1")  # no BN right after the stem


def test_resnet20_layout_and_size() -> None:
    net = create_model("resnet20").net
    stages = [net.layer1, net.layer2, net.layer3]
    assert [len(s) for s in stages] == [3, 3, 3]
    assert [s[0].conv1.out_channels for s in stages] == [16, 32, 64]
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 0.27e6) < 0.005e6  # He et al. 2016, Table 6: 0.27M


def test_wrn_size_and_kwargs() -> None:
    small = create_model("wrn34_10", depth=16, widen_factor=2).net
    assert [len(b.layer) for b in (small.block1, small.block2, small.block3)] == [2, 2, 2]
    assert small.fc.in_features == 128
    with pytest.raises(ConfigError, match="6n\\+4"):
        create_model("wrn34_10", depth=33)


def test_wrn34_10_parameter_count() -> None:
    net = create_model("wrn34_10").net
    assert [len(b.layer) for b in (net.block1, net.block2, net.block3)] == [5, 5, 5]
    n_params = sum(p.numel() for p in net.parameters())
    assert abs(n_params - 46.16e6) < 0.01e6  # WRN-34-10 as in TRADES/MART: 46.2M


# ---- ensemble --------------------------------------------------------------------------------


def test_ensemble_output_is_log_mean_probability() -> None:
    torch.manual_seed(2)
    model = create_model("ensemble", member="cnn4", k=3, mean=[0.3], std=[0.4]).eval()
    ens = model.net
    assert isinstance(ens, Ensemble) and len(ens) == 3
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
        z = (x - 0.3) / 0.4
        probs = torch.stack([torch.softmax(m(z), dim=-1) for m in ens.members]).mean(0)
        assert torch.allclose(out, probs.log(), atol=1e-5)
        assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)
        member = ensemble_member_logits(model, x)
        assert member.shape == (3, 4, 10)
        assert torch.allclose(member[1], ens.members[1](z), atol=1e-6)
        y = torch.tensor([0, 3, 5, 9])
        ce = F.cross_entropy(out, y)
        assert torch.allclose(ce, -probs[torch.arange(4), y].log().mean(), atol=1e-5)


def test_ensemble_of_normalized_members_normalizes_once_each() -> None:
    torch.manual_seed(3)
    members = [create_model("cnn4", mean=[0.1 * (i + 1)], std=[0.5]).eval() for i in range(2)]
    ens = Ensemble(members).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(x), -1) for m in members]).mean(0).log()
        assert torch.allclose(ens(x), expected, atol=1e-5)
        assert torch.allclose(ensemble_member_logits(ens, x)[0], members[0](x))


def test_ensemble_members_differ_and_kwargs_pass_through() -> None:
    ens = create_model("ensemble", member="mlp3", k=2, num_classes=2, member_kwargs={"hidden": 8}).net
    assert isinstance(ens, Ensemble)
    w0, w1 = (_layers(m, nn.Linear)[0].weight for m in ens.members)
    assert w0.shape == (8, 784) and not torch.equal(w0, w1)  # independently initialized


def test_ensemble_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        create_model("ensemble", k=0)
    with pytest.raises(ConfigError):
        create_model("ensemble", member="ensemble")
    with pytest.raises(UnknownNameError, match="nope"):
        create_model("ensemble", member="nope")
    with pytest.raises(ConfigError):
        Ensemble([])
    with pytest.raises(ConfigError, match="Ensemble"):
        ensemble_member_logits(create_model("cnn4"), torch.rand(1, 1, 28, 28))


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 4),
    n=st.integers(1, 3),
    c=st.integers(2, 5),
    scale=st.floats(0.1, 1e4),
    seed=st.integers(0, 2**16),
)
def test_ensemble_combine_matches_definition(k: int, n: int, c: int, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, n, c, generator=g, dtype=torch.float64) * scale
    out = Ensemble.combine(logits)
    assert torch.isfinite(out).all()
    mean_prob = torch.softmax(logits, -1).mean(0)
    assert torch.allclose(out.exp(), mean_prob, atol=1e-9)
    if k == 1:
        assert torch.allclose(out, torch.log_softmax(logits[0], -1))
    assert math.isclose(float(out.exp().sum(-1).mean()), 1.0, rel_tol=1e-9)
