"""The gradient-obfuscation audit: fails models built to mask gradients, passes honest ones."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from entrobust.attacks import ThreatModel
from entrobust.data import load_dataset
from entrobust.diagnostics.obfuscation import (
    AUDIT_CHECKS,
    AuditReport,
    AuditThresholds,
    Check,
    audit,
    input_gradient_stats,
)
from entrobust.diagnostics.surrogate import SmallSurrogate, surrogate_like, train_surrogate
from entrobust.errors import ConfigError

torch.set_num_threads(1)

FAST = {
    "n": 100,
    "random_search_samples": 500,
    "random_search_n": 15,
    "curve_n": 50,
    "steps_grid": (8, 16, 32, 64),
    "surrogate_epochs": 4,
}


class Quantized(nn.Module):
    """(a) Forward quantizes the input to 4 levels: the input gradient is exactly zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


class Saturated(nn.Module):
    """(b) Logits scaled by 10⁴: softmax saturates and the CE gradient underflows to zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 1e4


@pytest.fixture(scope="module")
def digits() -> tuple[object, object]:
    return load_dataset("digits", "train").to_float(), load_dataset("digits", "test").to_float()


@pytest.fixture(scope="module")
def honest(digits: tuple[object, object]) -> nn.Module:
    """A normally trained MLP on digits (no defense: robust accuracy is honest, gradients useful)."""
    torch.manual_seed(0)
    arch = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model = train_surrogate(arch, digits[0], epochs=10, architecture=arch, seed=1)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


THREAT = ThreatModel("linf", 0.1)


def test_honest_model_passes(honest: nn.Module, digits: tuple[object, object]) -> None:
    report = audit(honest, digits[1], THREAT, train_data=digits[0], **FAST)
    assert report.passed, report.table()
    assert [c.name for c in report.checks] == list(AUDIT_CHECKS)
    assert report.check("eps-curve").evidence["final_accuracy"] <= 0.02
    assert report.check("unbounded").evidence["success_rate"] == 1.0
    tg = report.check("transfer-gap").evidence
    assert tg["white_box_accuracy"] <= tg["black_box_accuracy"]


def test_no_surrogate_is_trained_when_white_box_pgd_breaks_every_point(
    honest: nn.Module, digits: tuple[object, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import entrobust.diagnostics.surrogate as surrogate_module

    def refuse(*args: object, **kwargs: object) -> nn.Module:
        raise AssertionError("a surrogate was trained although PGD left nothing to transfer to")

    monkeypatch.setattr(surrogate_module, "train_surrogate", refuse)
    wide = ThreatModel("linf", 0.5)  # far beyond what the digits MLP survives
    report = audit(
        honest, digits[1], wide, train_data=digits[0], checks=["single-vs-multi", "transfer-gap"], n=60
    )
    check = report.check("transfer-gap")
    assert check.status == "pass" and check.evidence["white_box_accuracy"] == 0.0
    assert check.evidence["black_box_accuracy"] is None and "no surrogate" in check.explanation
    # where PGD leaves points robust, the surrogate is trained (and here refused)
    with pytest.raises(AssertionError, match="surrogate was trained"):
        audit(
            honest, digits[1], ThreatModel("linf", 0.01), train_data=digits[0], checks=["transfer-gap"], n=60
        )


@pytest.mark.parametrize("mask", [Quantized, Saturated])
def test_gradient_masking_models_fail(
    mask: type[nn.Module], honest: nn.Module, digits: tuple[object, object]
) -> None:
    report = audit(mask(honest), digits[1], THREAT, train_data=digits[0], **FAST)
    assert not report.passed
    failed = {c.name for c in report.checks if c.status == "fail"}
    # the direct symptom and the black-box evidence are both caught
    assert {"gradients", "transfer-gap", "eps-curve"} <= failed, report.table()
    assert report.check("gradients").evidence["zero_fraction"] > 0.5
    if mask is Quantized:  # no gradient at all: only gradient-free search finds the misses
        assert report.check("random-search").status != "pass"
    else:  # saturated softmax masks CE only: the margin loss still has a gradient
        assert report.check("loss-gap").status == "fail", report.table()


def test_report_table_json_and_pngs(honest: nn.Module, digits: tuple[object, object], tmp_path) -> None:
    report = audit(
        honest,
        digits[1],
        THREAT,
        honest,
        n=40,
        checks=["gradients", "eps-curve", "steps-curve"],
        eps_grid=[0.0, 0.1, 0.5],
        steps_grid=(8, 16),
    )
    assert [c.name for c in report.checks] == ["gradients", "eps-curve", "steps-curve"]
    assert report.curves["eps"]["eps"] == [0.0, 0.1, 0.5]
    assert report.curves["eps"]["accuracy"][0] == pytest.approx(report.clean_accuracy)
    assert report.curves["steps"]["step_size"] == pytest.approx(
        [max(1 / 510, 0.2 / 8), max(1 / 510, 0.2 / 16)]
    )
    text = report.table()
    assert "eps-curve" in text and "overall" in text
    paths = report.save(tmp_path / "audit")
    data = json.loads(paths["json"].read_text())
    assert data["status"] == report.status and len(data["checks"]) == 3
    assert paths["eps"].stat().st_size > 1000 and paths["steps"].stat().st_size > 1000


def test_status_is_the_worst_check() -> None:
    r = AuditReport(
        [Check("a", "pass", {}, ""), Check("b", "warn", {}, "")], {"norm": "linf", "eps": 0.1}, 1, 1.0
    )
    assert r.status == "warn" and r.passed
    r.checks.append(Check("c", "fail", {}, ""))
    assert r.status == "fail" and not r.passed
    with pytest.raises(KeyError):
        r.check("zzz")


def test_thresholds_drive_the_verdict(honest: nn.Module, digits: tuple[object, object]) -> None:
    strict = AuditThresholds(eps_final_pass=-1.0, eps_final_warn=-1.0)  # nothing can reach below 0
    report = audit(
        honest, digits[1], THREAT, n=30, checks=["eps-curve"], eps_grid=[0.0, 0.5], thresholds=strict
    )
    assert report.check("eps-curve").status == "fail"


def test_bad_arguments(honest: nn.Module, digits: tuple[object, object]) -> None:
    with pytest.raises(ConfigError, match="unknown audit check"):
        audit(honest, digits[1], THREAT, checks=["nope"])
    with pytest.raises(ConfigError, match="ε > 0"):
        audit(honest, digits[1], ThreatModel("linf", 0.0))


def test_input_gradient_stats_counts_zero_gradients(honest: nn.Module, digits: tuple[object, object]) -> None:
    x, y = digits[1].x[:20], digits[1].y[:20]
    assert input_gradient_stats(honest, x, y)["zero_fraction"] == 0.0
    assert input_gradient_stats(Quantized(honest), x, y)["zero_fraction"] == 1.0


def test_surrogate_architecture_is_never_the_masked_wrapper() -> None:
    from entrobust.models import create_model

    reg = create_model("mlp3", dataset="digits", input_size=8)
    again = surrogate_like(reg, 1, 10)
    assert type(again) is type(reg) and again is not reg
    assert isinstance(surrogate_like(Quantized(reg), 1, 10), SmallSurrogate)


@pytest.mark.slow
def test_pgd_trained_smallcnn_on_mnist5k_passes(tmp_path) -> None:
    from entrobust.training import preset_config, train

    cfg = preset_config("atent/pgd-at", dataset="mnist5k", scale="cpu").replace(model="smallcnn", threads=2)
    model = train(cfg, tmp_path / "run", progress=False).model.eval()
    data = load_dataset("mnist5k", "test")
    report = audit(
        model,
        data,
        ThreatModel("linf", 0.3),
        n=200,
        random_search_samples=2000,
        random_search_n=25,
        train_data=load_dataset("mnist5k", "train"),
    )
    print(report.table())
    assert report.passed, report.table()
    assert report.clean_accuracy > 0.8
