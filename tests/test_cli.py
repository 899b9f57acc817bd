"""The CLI skeleton: version, list, info, one-line errors, ``python -m entrobust``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from entrobust import __version__
from entrobust.cli import main

MODELS = [
    "smallcnn",
    "cnn4",
    "lenet",
    "lenet5",
    "resnet18",
    "preact_resnet18",
    "wrn34_10",
    "resnet20",
    "mlp3",
]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_list_models_shows_nine_models_and_the_ensemble(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "models"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {*MODELS, "ensemble"} <= set(names)


def test_list_datasets_shows_embedded_and_file_based(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "datasets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"mnist5k", "digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"} <= set(names)


@pytest.mark.parametrize("what", ["attacks", "presets", "suites", "objectives", "optimizers", "losses"])
def test_every_registry_lists_something(what: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", what]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 3


def test_info_reports_versions_and_threads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "threads" in out and __version__ in out


def test_unknown_choice_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "spaceships"])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_user_error_prints_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "entrobust", "train", "--preset", "no-such-preset", "--out", "/nonexistent/x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "no-such-preset" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_python_dash_m_matches_console_script() -> None:
    proc = subprocess.run([sys.executable, "-m", "entrobust", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"entrobust {__version__}"


# ------------------------------------------------------------------------------- issue 16
def _workspace(tmp_path: Path) -> Path:
    from entrobust.experiments.runner import store_path
    from entrobust.experiments.store import Store

    ws = tmp_path / "ws"
    ws.mkdir()
    store = Store(store_path(ws))
    rid = store.add_run(
        {"dataset": "mnist5k", "model": "cnn4", "seed": 0}, name="PAT", experiment="e",
        preset="ru/pat", dataset="mnist5k", model="cnn4", seed=0,
    )  # fmt: skip
    store.set_status(rid, "done")
    store.add_member("e", rid, "PAT")
    from entrobust.record import EvalRecord

    base = {"run_id": rid, "norm": "linf", "n": 50, "clean_acc": 0.9}
    rows = [
        EvalRecord(evaluation="white-box", attack="clean", row="clean", eps=0.0, robust_acc=0.9, **base),
        EvalRecord(evaluation="white-box", attack="PGD10-32", eps=32 / 255, robust_acc=0.4, **base),
    ]
    black = [
        EvalRecord(
            evaluation="black-box", attack="PGD10-32", eps=32 / 255, robust_acc=0.6, surrogate="x", **base
        )
    ]
    store.replace_evaluations(rid, "white-box", rows, stage=("eval:white-box", "h"))
    store.replace_evaluations(rid, "black-box", black, stage=("eval:black-box", "h"))
    return ws


def test_runs_csv_writes_every_evaluation_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    ws = _workspace(tmp_path)
    out = tmp_path / "rows.csv"
    assert main(["runs", "-w", str(ws), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["attack"] for r in rows] == ["clean", "PGD10-32", "PGD10-32"]
    assert [r["setting"] for r in rows] == ["white-box", "white-box", "black-box"]
    assert rows[1]["label"] == "PAT" and rows[1]["n"] == "50"
    assert float(rows[1]["eps"]) == pytest.approx(32 / 255)
    assert float(rows[2]["robust_acc"]) == pytest.approx(0.6)
    capsys.readouterr()
    assert main(["runs", "-w", str(ws), "--csv", "-"]) == 0
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")
    assert main(["runs", "-w", str(ws), "--status", "failed", "--csv", "-"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # header only


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``entrobust ... | head``: no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrobust", "list", "attacks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first write
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 1


def test_broken_pipe_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class Closed:
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["list", "models"]) == 1
    assert capsys.readouterr().err == ""  # no error line, no traceback


def test_help_texts_show_no_rst_backticks() -> None:
    import argparse

    from entrobust.cli import build_parser

    parser = build_parser()
    helps = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps += [p.format_help() for p in action.choices.values()]
    assert len(helps) > 10
    for text in helps:
        assert "`" not in text, text[:300]


def test_report_without_a_workspace_points_to_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _workspace(tmp_path).rename(tmp_path / "entrobust-demo")
    assert main(["report", "--out", "report"]) == 2
    assert "pass -w entrobust-demo" in capsys.readouterr().err
