"""One progress rule everywhere: a bar with ETA on a terminal, one plain line per stage otherwise.

Checked on the helper itself and on every user: ``evaluate()``, ``entrobust eval``, certify and
the trainer. Outside a terminal the output must hold no carriage return (no bar redraws in a
log) and at least one line per stage; on a (fake) terminal a tqdm bar with an ETA is drawn.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
import torch

from entrobust.cli import main
from entrobust.data import load_dataset
from entrobust.evaluation import evaluate
from entrobust.models import create_model
from entrobust.progress import Progress, is_terminal

torch.set_num_threads(1)

SUITE = "fgsm:label=FGSM,pgd:steps=2:label=PGD-2"
EPS = [0.05, 0.1]
#: FGSM and PGD-2, each at two ε: four stages
STAGES = [f"{row} eps={eps}" for eps in ("0.05", "0.1") for row in ("FGSM", "PGD-2")]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mlp3", dataset="digits", input_size=8, hidden=8)


def _assert_plain_lines(text: str, tag: str, stages: list[str]) -> list[str]:
    assert "\r" not in text and "\x1b" not in text  # no bar redraws, no terminal escapes
    lines = [ln for ln in text.splitlines() if ln.startswith(f"{tag}: ")]
    for stage in stages:
        assert any(ln.startswith(f"{tag}: {stage}: ") for ln in lines), (stage, text)
    return lines


# ------------------------------------------------------------------------------ the helper


def test_helper_writes_one_line_per_stage_outside_a_terminal() -> None:
    out = io.StringIO()
    assert not is_terminal(out)
    with Progress("eval", "PGD-10 eps=0.3", 200, unit="examples", stream=out) as p:
        p.update(150)
        p.set_postfix("robust 85.0%")
        p.update(50)
    p.close()  # idempotent: still one line
    (line,) = out.getvalue().splitlines()
    assert re.fullmatch(r"eval: PGD-10 eps=0\.3: 200/200 examples, \d+\.\ds, robust 85\.0%", line)
    quiet = io.StringIO()
    with Progress("eval", "x", 3, stream=quiet, enabled=False) as p:
        p.update(3)
    assert quiet.getvalue() == ""


def test_helper_heartbeat_keeps_long_stages_talking() -> None:
    out = io.StringIO()
    with Progress("certify", "sigma=0.25", 3, unit="images", stream=out, heartbeat_s=0.0) as p:
        for _ in range(3):
            p.update(1)
    lines = out.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == [
        "certify: sigma=0.25: 1/3 images",
        "certify: sigma=0.25: 2/3 images",
        "certify: sigma=0.25: 3/3 images",
        "certify: sigma=0.25: 3/3 images",  # the stage's final line
    ]


def test_helper_draws_a_bar_with_eta_on_a_terminal() -> None:
    out = FakeTerminal()
    assert is_terminal(out)
    with Progress("eval", "PGD-10 eps=0.3", 4, unit="examples", stream=out) as p:
        for _ in range(4):
            p.update(1)
    text = out.getvalue()
    assert "\r" in text and "eval: PGD-10 eps=0.3" in text
    assert re.search(r"\[\d\d:\d\d<", text)  # [elapsed<remaining: the ETA slot


# ------------------------------------------------------------------------------ its users


def test_evaluate_outside_a_terminal_prints_a_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate(_model(), "digits", SUITE, EPS, max_examples=40)
    lines = _assert_plain_lines(capsys.readouterr().err, "eval", STAGES)
    assert len(lines) == len(STAGES)


def test_evaluate_on_a_terminal_draws_bars(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    evaluate(_model(), "digits", SUITE, EPS, max_examples=40)
    err = capsys.readouterr().err
    assert "\r" in err and "eval: FGSM eps=0.05" in err
    assert re.search(r"\[\d\d:\d\d<", err)
    assert not re.search(r"^eval: .*examples, \d+\.\ds", err, re.M)  # no plain lines on a terminal


def test_eval_cli_outside_a_terminal_is_not_silent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrobust.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "best", _model(), metadata={"recipe": {"name": "test"}})
    rc = main(["eval", str(tmp_path), "--suite", SUITE, "--eps", "0.05,0.1", "--n", "40"])
    assert rc == 0
    captured = capsys.readouterr()
    _assert_plain_lines(captured.err, "eval", STAGES)
    assert "worst case" in captured.out  # the table still goes to stdout
    main(["eval", str(tmp_path), "--suite", SUITE, "--eps", "0.05,0.1", "--n", "40", "--no-progress"])
    assert "eval: " not in capsys.readouterr().err


def test_certify_outside_a_terminal_prints_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    from entrobust.diagnostics.smoothing import certify_dataset

    data = load_dataset("digits", "test").to_float()
    certify_dataset(_model(), data.x[:2], data.y[:2], sigma=0.25, n0=10, n=20, batch=20, progress=True)
    _assert_plain_lines(capsys.readouterr().err, "certify", ["sigma=0.25 n=20"])


def test_trainer_outside_a_terminal_prints_a_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    from entrobust.training import TrainConfig, Trainer

    cfg = TrainConfig.from_dict(
        {
            "dataset": "digits",
            "model": "mlp3",
            "model_kwargs": {"input_size": 8, "hidden": 8},
            "epochs": 2,
            "batch_size": 16,
            "max_train_examples": 32,
            "optimizer": {"name": "sgd", "lr": 0.05},
            "validation": {"size": 8, "steps": 2},
            "threads": 1,
        }
    )
    Trainer(cfg, None, progress=True).fit()
    lines = _assert_plain_lines(capsys.readouterr().err, "train", ["epoch 1/2", "epoch 2/2"])
    assert re.search(r"train: epoch 2/2: 2/2 steps, \d+\.\ds, loss \d", "\n".join(lines))
    Trainer(cfg, None).fit()  # default: bars only on a terminal, so nothing here
    assert "train: " not in capsys.readouterr().err
