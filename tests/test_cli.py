"""The CLI skeleton: version, list, info, one-line errors, ``python -m entrobust``."""

from __future__ import annotations

import subprocess
import sys

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
