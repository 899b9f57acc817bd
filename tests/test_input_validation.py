"""Bad input is refused with a message that says what was expected — never silently wrong numbers.

Covers: NaN / inf pixels (every registered attack, and ``evaluate``), float or out-of-range
labels, channels-last images, models that return tuples; robust accuracy at an ε where no attack
ran ("no attack ran", never a number); ε in 0–255 units (refused unless ``allow_large_eps``) and
fraction strings in the API; ``create_model(dataset=...)`` filling the input size.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from entrobust.attacks import Attack, ThreatModel, build_attack
from entrobust.errors import ConfigError, DataError, NotEvaluatedError
from entrobust.evaluation import evaluate, parse_eps
from test_attacks_properties import NAMES, call, make_attack, supports

torch.set_num_threads(1)

C = 10


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, C))


def labelled(model: nn.Module, n: int = 6, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(N, 1, 8, 8) images in [0, 1], labelled by the model (every point starts correct)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, 8, 8), generator=g)
    with torch.no_grad():
        return x, model(x).argmax(1)


class TupleModel(nn.Module):
    """Returns (logits, features), as many research models do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x), x.flatten(1)


def pgd(eps: float = 0.1, norm: str = "linf") -> Attack:
    return build_attack("pgd", ThreatModel(norm, eps), steps=2)


# ------------------------------------------------------------------------- A: NaN / inf pixels
ATTACK_NORMS = [(name, "linf" if supports(name, "linf") else "l2") for name in NAMES]


@pytest.mark.parametrize(("name", "norm"), ATTACK_NORMS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    example=st.integers(0, 4),
    pixel=st.tuples(st.integers(0, 7), st.integers(0, 7)),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_every_attack_refuses_non_finite_pixels(
    name: str, norm: str, example: int, pixel: tuple[int, int], value: float
) -> None:
    model = mlp()
    x, y = labelled(model, 5)
    x[example, 0, pixel[0], pixel[1]] = value
    attack = make_attack(name, ThreatModel(norm, 0.1))
    with pytest.raises(
        ConfigError, match=rf"1 non-finite value.* example {example}, position \(0, {pixel[0]}, {pixel[1]}\)"
    ):
        call(attack, model, x, y)  # before: returned x_adv with the NaN in it


def test_attack_error_counts_every_non_finite_value() -> None:
    model = mlp()
    x, y = labelled(model, 6)
    x[4, 0, 1, 2] = math.nan
    x[4, 0, 5, 5] = math.inf
    x[5, 0, 0, 0] = math.nan
    with pytest.raises(
        ConfigError, match=r"3 non-finite value\(s\).* in 2 example\(s\); the first is example 4"
    ):
        pgd()(model, x, y)


def test_evaluate_refuses_non_finite_pixels_naming_the_dataset_index() -> None:
    model = mlp()
    x, y = labelled(model, 12)
    x[7, 0, 2, 5] = math.nan
    with pytest.raises(DataError, match=r"1 non-finite value.*example 7, position \(0, 2, 5\)"):
        evaluate(model, (x, y), "fgsm", eps=[0.1], progress=False)  # before: ran, robust accuracy 0.5


# ------------------------------------------------------------------ A: labels, layout, outputs
def test_float_labels_are_refused() -> None:
    model = mlp()
    x, y = labelled(model)
    with pytest.raises(ConfigError, match=r"y must hold integer class indices.*float32.*\.long\(\)"):
        pgd()(model, x, y.float())
    with pytest.raises(DataError, match=r"labels must hold integer class indices"):
        evaluate(
            model, (x, y.float() + 0.7), "fgsm", eps=[0.1], progress=False
        )  # before: truncated to ints, clean accuracy 1.0


def test_integer_labels_of_any_width_work() -> None:
    model = mlp()
    x, y = labelled(model)
    out = pgd()(model, x, y.int())
    assert out.shape == x.shape


def test_labels_the_model_has_no_logit_for_are_refused() -> None:
    model = mlp()
    x, y = labelled(model)
    y[3] = C
    with pytest.raises(ConfigError, match=rf"example 3 has label {C} but the model returns {C} logits"):
        pgd()(model, x, y)
    with pytest.raises(DataError, match=rf"example 3 has label {C} but the model returns {C} logits"):
        evaluate(model, (x, y), "fgsm", eps=[0.1], progress=False)
    y[3] = -1
    with pytest.raises(ConfigError, match="example 3 has -1"):
        pgd()(model, x, y)


def test_targets_are_checked_like_labels() -> None:
    model = mlp()
    x, y = labelled(model)
    attack = build_attack("pgd", ThreatModel("linf", 0.1), steps=2, loss="dlr-t")
    with pytest.raises(ConfigError, match=rf"target: example 0 has label {C + 2}"):
        attack(model, x, y, target=torch.full_like(y, C + 2))


def test_channels_last_images_are_refused() -> None:
    from entrobust.models import create_model

    model = mlp()
    x = torch.rand(4, 28, 28, 1)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"channels-last \(NHWC\).*permute\(0, 3, 1, 2\)"):
        pgd()(model, x, y)
    with pytest.raises(DataError, match="channels-last"):
        evaluate(model, (x, y), "fgsm", eps=[0.1], progress=False)
    rgb = create_model("resnet20", dataset="cifar10")  # knows it takes 3 channels
    with pytest.raises(ConfigError, match=r"takes NCHW images with 3 channel\(s\) — it looks channels-last"):
        pgd()(rgb, torch.rand(2, 32, 32, 3), torch.zeros(2, dtype=torch.long))


def test_models_returning_tuples_are_refused() -> None:
    model = TupleModel()
    x, y = labelled(model.net)
    with pytest.raises(ConfigError, match=r"returned a tuple.*\(N, classes\) logits.*model\(x\)\[0\]"):
        pgd()(model, x, y)
    with pytest.raises(ConfigError, match="returned a tuple"):
        evaluate(model, (x, y), "fgsm", eps=[0.1], progress=False)


def test_checks_do_not_add_forward_calls() -> None:
    """The output check is a forward hook: query budgets and call counts are unchanged."""
    calls = []
    model = mlp()
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    x, y = labelled(model)
    calls.clear()
    build_attack("fgsm", ThreatModel("linf", 0.1))(model, x, y)
    assert len(calls) == 1
    assert not model._forward_hooks  # the checking hook is removed again


# ---------------------------------------------------------- B: ε columns with no attack behind
def test_no_robust_accuracy_at_an_eps_where_no_attack_ran() -> None:
    model = mlp()
    x, y = labelled(model, 40)
    result = evaluate(model, (x, y), "FGSM_4", eps=[0.3], progress=False)
    assert result.eps[-1] == pytest.approx(0.3)
    with pytest.raises(NotEvaluatedError, match=r"no attack ran at eps 0\.3, .*FGSM_4 at 4/255"):
        result.robust_accuracy(0.3)  # before: 0.875, the FGSM_4 number at 4/255
    assert result.attacked_eps == [pytest.approx(4 / 255)]
    assert list(result.accuracy_by_eps()) == result.attacked_eps
    assert result.robust_accuracy() == result.robust_accuracy(4 / 255)  # default: largest attacked
    worst = result.table().splitlines()[-1]
    assert worst.split()[-3:] == ["no", "attack", "ran"]  # before: "worst case 87.50 87.50"
    d = result.to_dict(per_example=True)
    assert list(d["robust_accuracy"]) == ["4/255"]
    assert d["eps_without_attack"] == [pytest.approx(0.3)]


def test_an_l2_row_does_not_fill_a_linf_column() -> None:
    model = mlp()
    x, y = labelled(model, 20)
    result = evaluate(model, (x, y), "pgd:norm=l2:eps=0.5:steps=2", eps=[0.3], norm="linf", progress=False)
    with pytest.raises(NotEvaluatedError, match=r"no attack ran at eps 0\.3"):
        result.robust_accuracy(0.3)  # before: 1.0, the clean accuracy
    assert "no attack ran" in result.table()


def test_no_robust_accuracy_between_columns() -> None:
    model = mlp()
    x, y = labelled(model, 20)
    result = evaluate(model, (x, y), "fgsm", eps=[0.05, 0.2], progress=False)
    assert result.robust_accuracy(0.2) <= result.robust_accuracy(0.05)
    with pytest.raises(NotEvaluatedError):
        result.robust_accuracy(0.1)


# --------------------------------------------------------------------- C: ε in 0–255 units
@given(eps=st.floats(1.0, 1e6))
def test_linf_eps_at_least_one_is_refused_unless_allowed(eps: float) -> None:
    with pytest.raises(ConfigError, match=r"/255 = .*allow_large_eps=True"):
        ThreatModel("linf", eps)
    assert ThreatModel("linf", eps, allow_large_eps=True).eps == eps
    assert ThreatModel("linf", eps, allow_large_eps=True).with_eps(2 * eps).allow_large_eps


@given(eps=st.floats(0.0, 1.0, exclude_max=True))
def test_linf_eps_below_one_is_accepted(eps: float) -> None:
    ThreatModel("linf", eps)


def test_per_example_eps_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="8/255"):
        ThreatModel("linf", torch.tensor([0.1, 8.0]))


@settings(max_examples=10, deadline=None)
@given(side=st.integers(1, 6), over=st.floats(1.0, 50.0))
def test_l2_eps_beyond_the_box_diameter_is_refused_at_the_call(side: int, over: float) -> None:
    d = side * side
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, C))
    x = torch.rand(3, 1, side, side)
    y = torch.zeros(3, dtype=torch.long)
    eps = math.sqrt(d) * over
    with pytest.raises(ConfigError, match=rf"diameter .* for inputs of {d} values"):
        build_attack("fgsm", ThreatModel("l2", eps))(model, x, y)
    out = build_attack("fgsm", ThreatModel("l2", eps, allow_large_eps=True))(model, x, y)
    assert out.shape == x.shape
    build_attack("fgsm", ThreatModel("l2", math.sqrt(d) * 0.99))(model, x, y)


def test_evaluate_refuses_eps_in_255_units_unless_allowed() -> None:
    model = mlp()
    x, y = labelled(model, 10)
    with pytest.raises(ConfigError, match=r"eps 8 .*8/255 = 0\.03137.*allow_large_eps=True"):
        evaluate(model, (x, y), "fgsm", eps=[8], progress=False)  # before: ran, robust 0 %
    with pytest.raises(ConfigError, match=r"suite row 'pgd.*diameter 8 "):
        evaluate(model, (x, y), "pgd:norm=l2:steps=1", eps=[9], progress=False)
    result = evaluate(model, (x, y), "fgsm", eps=[8], progress=False, allow_large_eps=True)
    assert result.robust_accuracy(8) == 0.0


def test_evaluate_accepts_fraction_strings() -> None:
    model = mlp()
    x, y = labelled(model, 10)
    a = evaluate(model, (x, y), "fgsm", eps=["8/255", "0.1"], progress=False)  # before: ValueError
    b = evaluate(model, (x, y), "fgsm", eps=[8 / 255, 0.1], progress=False)
    assert a.eps == pytest.approx(b.eps)
    assert torch.equal(a.broken_step, b.broken_step)
    assert parse_eps("0.1, 8/255") == pytest.approx([0.1, 8 / 255])
    assert parse_eps(0.3) == [0.3]
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        parse_eps(["abc"])
    with pytest.raises(ConfigError, match=">= 0"):
        parse_eps("-1/255")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from entrobust.checkpoint import save_checkpoint
    from entrobust.models import create_model

    torch.manual_seed(0)
    model = create_model("mlp3", dataset="digits", hidden=8)
    path = tmp_path_factory.mktemp("ckpt") / "digits-mlp"
    save_checkpoint(path, model, metadata={"recipe": {"name": "test"}})
    return path


def test_cli_eval_prints_no_attack_ran_and_refuses_large_eps(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrobust.cli import main

    common = ["eval", str(checkpoint), "--n", "30", "--no-progress"]
    assert main([*common, "--suite", "FGSM_4", "--eps", "0.3"]) == 0
    worst = capsys.readouterr().out.strip().splitlines()[-1]
    assert worst.startswith("worst case") and worst.endswith("no attack ran")  # before: a number
    assert main([*common, "--suite", "fgsm", "--eps", "8"]) == 2
    assert "8/255" in capsys.readouterr().err
    assert main([*common, "--suite", "fgsm", "--eps", "8", "--allow-large-eps"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].split()[-1] == "0.00"


# ------------------------------------------------------------------- D: the model's input size
def test_create_model_fills_the_input_size_from_the_dataset() -> None:
    from entrobust.models import create_model

    model = create_model("mlp3", dataset="digits")  # before: fc expects 28·28, crash on 8×8
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert model.spec["kwargs"] == {"input_size": 8}  # recorded: a checkpoint rebuilds it
    rebuilt = create_model("mlp3", num_classes=10, in_channels=1, input_size=8)  # as a checkpoint does
    rebuilt.load_state_dict(model.state_dict())
    assert create_model("lenet5", dataset="digits")(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert create_model("mlp3", dataset="digits", input_size=8).spec["kwargs"] == {"input_size": 8}
    assert create_model("mlp3", dataset="mnist5k").spec["kwargs"] == {}  # registered size: unchanged
    ens = create_model("ensemble", dataset="digits", member="mlp3", k=2)
    assert ens(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_create_model_says_when_an_architecture_cannot_take_the_images() -> None:
    from entrobust.models import create_model

    with pytest.raises(ConfigError, match=r"model 'smallcnn' for digits images 8×8: .*too small"):
        create_model("smallcnn", dataset="digits")


def test_cli_train_digits_mlp3(tmp_path: Path) -> None:
    """The docs' own setup; before: a shape traceback in the first step."""
    from entrobust.cli import main

    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp3",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (out / "last.safetensors").exists()
