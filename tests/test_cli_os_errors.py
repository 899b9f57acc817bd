"""Failures of the file system reach the user as one line naming the path (exit 1), never a
traceback; a disk that fills up mid-run leaves nothing half-written and the rerun ends where an
uninterrupted run does; a store on read-only media is still listed and reported; a config file
that is not UTF-8 is a one-line error naming it."""

from __future__ import annotations

import errno
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from entrobust.cli import main
from entrobust.errors import ConfigError
from entrobust.experiments.store import Store

STUDY = """
name = "disk-full"
scale = "tiny"
seeds = [0]
threads = 1
device = "cpu"

[overrides]
epochs = 2
max_train_examples = 64
batch_size = 32

[[defense]]
preset = "ru/normal"
"""


def _study(tmp_path: Path) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(STUDY, encoding="utf-8")
    return path


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".part")) or ".tmp." in p.name]


def test_disk_full_mid_run_is_one_line_and_the_rerun_finishes_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _study(tmp_path)
    assert main(["run", str(study), "-w", str(tmp_path / "straight"), "--no-report"]) == 0

    ws = tmp_path / "ws"
    full = {"now": False}
    real_fsync, real_add_epoch, real_write = os.fsync, Store.add_epoch, Store._write

    def add_epoch(self: Store, *args: Any, **kwargs: Any) -> None:
        real_add_epoch(self, *args, **kwargs)
        full["now"] = True  # the disk fills up after the first epoch is stored

    def fsync(fd: int) -> None:  # what a full disk does to a buffered write: no file name
        if full["now"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def write(self: Store, fn: Any, *args: Any) -> Any:  # ... and SQLite cannot write either
        if full["now"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(self, fn, *args)

    monkeypatch.setattr(Store, "add_epoch", add_epoch)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Store, "_write", write)
    capsys.readouterr()
    assert main(["run", str(study), "-w", str(ws), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert err == f"entrobust: error: No space left on device (while writing under {ws})\n"
    assert _temp_files(ws) == []  # nothing half-written
    monkeypatch.undo()  # space freed

    assert main(["run", str(study), "-w", str(ws), "--no-report"]) == 0
    got, want = Store(ws / "results.sqlite"), Store(tmp_path / "straight" / "results.sqlite")
    (run,) = got.runs()
    assert run.status == "done" and run.id == want.runs()[0].id
    epochs, reference = got.epochs(run.id), want.epochs(run.id)
    assert [e["epoch"] for e in epochs] == [e["epoch"] for e in reference]
    for e, r in zip(epochs, reference, strict=True):
        assert math.isclose(e["train_loss"], r["train_loss"], rel_tol=1e-5, abs_tol=1e-6)


def test_store_failure_is_one_line_naming_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        con = real(database, *args, **kwargs)
        con.execute("PRAGMA max_page_count=1")  # a full disk: no page can be added
        return con

    ws = tmp_path / "ws"
    monkeypatch.setattr(sqlite3, "connect", connect)
    assert main(["run", str(_study(tmp_path)), "-w", str(ws), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert err == f"entrobust: error: {ws / 'results.sqlite'}: database or disk is full\n"


def _readonly_media(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """``root`` behaves like a read-only mount (the tests run as root, for whom ``chmod`` stops
    nothing): SQLite opens files there read-only and creating a file there fails with EROFS."""
    real_connect, real_open = sqlite3.connect, os.open

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if not kwargs.get("uri") and Path(database).resolve().is_relative_to(root):
            database, kwargs["uri"] = f"file:{Path(database).resolve()}?mode=ro", True
        return real_connect(database, *args, **kwargs)

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(path).resolve().is_relative_to(root):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(os, "open", open_)


def test_readonly_workspace_is_listed_and_reported_but_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    store = Store(ws / "results.sqlite")
    rid = store.add_run({"x": 1}, name="stored-run", seed=0)
    store.set_status(rid, "done")
    _readonly_media(monkeypatch, ws.resolve())
    capsys.readouterr()
    assert main(["runs", "-w", str(ws)]) == 0
    assert "stored-run" in capsys.readouterr().out
    assert main(["report", "-w", str(ws), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()
    capsys.readouterr()
    assert main(["run", str(_study(tmp_path)), "-w", str(ws), "--no-report"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"entrobust: error: {ws}") and "Read-only file system" in err
    assert err.count("\n") == 1
    assert store.run(rid).status == "done"


def test_config_file_not_in_utf8_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "study.toml"
    bad.write_bytes(STUDY.replace("disk-full", "caf\xe9").encode("latin-1"))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"entrobust: error: {bad}: not UTF-8 text") and err.count("\n") == 1
    from entrobust.training.config import load_config

    with pytest.raises(ConfigError, match=r"not UTF-8 text"):
        load_config(bad)
