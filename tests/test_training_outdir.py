"""The training output folder is checked before anything is built or written: another run's or a
user's files are never replaced without ``--overwrite``, a bad config leaves no files, and a run
killed before its first epoch ended starts afresh on ``--resume`` (and under ``entrobust run``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from entrobust.cli import main
from entrobust.errors import CheckpointError, ConfigError
from entrobust.training import Callback, TrainConfig, train
from entrobust.training.outdir import check_out_dir
from entrobust.training.trainer import STATE_FILE

torch.set_num_threads(1)

#: a one-epoch cnn4 run on 32 mnist5k examples (about a second)
TINY = [
    "--dataset", "mnist5k", "--model", "cnn4", "--epochs", "1", "--batch-size", "16", "--threads", "1",
    "--device", "cpu", "--set", "max_train_examples=32", "--set", "validation.size=0",
    "--no-test", "--no-progress",
]  # fmt: skip


def tiny_config() -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "dataset": "mnist5k",
            "model": "cnn4",
            "epochs": 1,
            "batch_size": 16,
            "max_train_examples": 32,
            "validation": {"size": 0},
            "threads": 1,
            "device": "cpu",
        }
    )


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of someone's own files that happen to share a run's file names."""
    path.mkdir(parents=True)
    files = {
        "config.json": b'{"my": "settings"}',
        "history.json": b"[1, 2, 3]",
        "best.json": b'{"score": 99}',
        "notes.txt": b"do not lose",
    }
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


class StopAtStart(Callback):
    """Stands in for a kill before the first epoch ends: the config is on disk, no trainer state."""

    def on_train_start(self, trainer: object) -> None:
        raise KeyboardInterrupt


# ------------------------------------------------------------------ item 6: refuse, --overwrite


def test_train_refuses_a_folder_of_someone_elses_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    before = user_folder(out)
    assert main(["train", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and "notes.txt" in err
    assert contents(out) == before  # nothing written, nothing replaced


def test_train_refuses_a_run_of_another_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(), out)
    before = contents(out)
    other = TrainConfig.from_dict({**tiny_config().to_dict(), "seed": 7})
    with pytest.raises(ConfigError, match=r"another config .*seed"):
        train(other, out)
    with pytest.raises(ConfigError, match="--resume"):  # the same config: resume it, not retrain
        train(tiny_config(), out)
    assert contents(out) == before


def test_overwrite_replaces_run_files_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    user_folder(out)
    assert main(["train", *TINY, "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == "cnn4"
    assert (out / STATE_FILE).exists() and (out / "last.safetensors").exists()
    assert (out / "notes.txt").read_bytes() == b"do not lose"
    assert not (out / "best.json").exists() or "score" not in (out / "best.json").read_text()


def test_a_config_error_at_model_build_leaves_no_files(tmp_path: Path) -> None:
    out, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for folder in (out, empty):
        code = main(["train", *TINY, "--set", "model_kwargs.no_such_arg=1", "--out", str(folder)])
        assert code == 2
    assert not out.exists()
    assert list(empty.iterdir()) == []


def test_resume_and_overwrite_together_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        check_out_dir(tmp_path, tiny_config(), resume=True, overwrite=True)


# ------------------------------------------------------------------ item 9: killed before epoch 1


def test_resume_after_a_kill_before_epoch_one_starts_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0  # the reference run
    ref = torch.load(out / STATE_FILE, weights_only=True)["model"]
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), killed, callbacks=[StopAtStart()])
    assert (killed / "config.json").exists() and not (killed / STATE_FILE).exists()
    capsys.readouterr()
    assert main(["train", "--out", str(killed), "--resume", "--no-test", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "nothing to resume" in said and "starting afresh" in said
    state = torch.load(killed / STATE_FILE, weights_only=True)
    assert state["epoch"] == 1
    for k, v in ref.items():  # the same seed and data order: the run it would have been
        torch.testing.assert_close(state["model"][k], v)


def test_restarting_without_resume_after_a_kill_before_epoch_one_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), tmp_path, callbacks=[StopAtStart()])
    resume, note = check_out_dir(tmp_path, tiny_config())
    assert resume is False and note is not None and "starting afresh" in note
    result = train(tiny_config(), tmp_path)
    assert [h["epoch"] for h in result.history] == [1] and (tmp_path / STATE_FILE).exists()


def test_resume_of_a_folder_without_a_run_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        "nothing to resume" in err
        and f"entrobust train --preset NAME (or --config FILE) --out {tmp_path}" in err
    )
    with pytest.raises(CheckpointError, match="drop --resume"):
        train(tiny_config(), tmp_path / "nothing", resume=True)


STUDY = """
name = "restart"
scale = "tiny"
threads = 1
device = "cpu"

[overrides]
max_train_examples = 32
batch_size = 16

[[defense]]
preset = "ru/normal"
"""


def test_run_restarts_a_training_killed_before_epoch_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from entrobust.experiments.runner import run_experiment
    from entrobust.experiments.spec import load_experiment
    from entrobust.training.trainer import Trainer

    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    exp = load_experiment(path)
    real = Trainer.run_epoch

    def killed(self: Trainer, epoch: int) -> dict[str, object]:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, tmp_path / "ws", stages=["train"], report=False)
    monkeypatch.setattr(Trainer, "run_epoch", real)
    capsys.readouterr()
    res = run_experiment(exp, tmp_path / "ws", stages=["train"], report=False)
    assert "restarting (the last attempt stopped before its first epoch ended)" in capsys.readouterr().out
    assert res is not None
    states = list((tmp_path / "ws").rglob(STATE_FILE))
    assert len(states) == 1 and torch.load(states[0], weights_only=True)["epoch"] == 1
