"""One runner per workspace: a second ``entrobust run`` stops naming the first (or waits for it with
``--wait``), touches nothing, and read-only commands never need the lock; a lock whose holder was
killed is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _subprocess import child_env
from entrobust.cli import main
from entrobust.experiments.lock import lock_holder, workspace_lock
from entrobust.experiments.store import Store

STUDY = """
name = "lock-test"
scale = "tiny"
seeds = [0]
threads = 1
device = "cpu"

[overrides]
epochs = 1
max_train_examples = 64
batch_size = 32

[[defense]]
preset = "ru/normal"
"""

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from entrobust.experiments.lock import workspace_lock
    with workspace_lock(sys.argv[1]):
        print("locked", flush=True)
        if sys.argv[2] == "stdin":
            sys.stdin.readline()
        else:
            time.sleep(float(sys.argv[2]))
    """
)


def _holder(ws: Path, hold: str = "stdin") -> subprocess.Popen[str]:
    """A process holding the lock of ``ws`` (until its stdin gets a line, or for ``hold`` seconds)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(ws), hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait(30)


def test_second_run_stops_naming_the_holder_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    store = Store(ws / "results.sqlite")
    rid = store.add_run({"x": 1}, name="finished", seed=0)
    store.set_status(rid, "done")
    study = tmp_path / "study.toml"
    study.write_text(STUDY, encoding="utf-8")
    holder = _holder(ws)
    try:
        capsys.readouterr()
        assert main(["run", str(study), "-w", str(ws)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use by pid {holder.pid} on " in err and "--wait" in err
        assert [(r.name, r.status) for r in store.runs()] == [("finished", "done")]  # nothing trained
        assert not (ws / "runs").exists()
        assert main(["runs", "-w", str(ws)]) == 0  # reading needs no lock
        assert "finished" in capsys.readouterr().out
    finally:
        _release(holder)
    assert lock_holder(ws) is None  # released cleanly: nothing left to report


def test_wait_starts_once_the_holder_has_finished(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    holder = _holder(ws)
    said: list[str] = []

    def log(msg: str) -> None:  # the holder is told to finish only once we wait for it: no timing
        said.append(msg)
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()

    with workspace_lock(ws, wait=True, log=log):
        assert holder.wait(30) == 0  # the lock came free only because the holder finished
        assert lock_holder(ws)["pid"] == os.getpid()  # type: ignore[index]
    assert len(said) == 1 and f"pid {holder.pid}" in said[0] and "waiting" in said[0]


def test_lock_of_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    holder = _holder(ws)
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    assert lock_holder(ws)["pid"] == holder.pid  # type: ignore[index]  # its record is still there
    said: list[str] = []
    with workspace_lock(ws, log=said.append):
        assert lock_holder(ws)["pid"] == os.getpid()  # type: ignore[index]
    assert len(said) == 1 and f"taking over the lock of pid {holder.pid}" in said[0]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_concurrent_runs_train_once_and_leave_right_statuses(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    study = tmp_path / "study.toml"
    study.write_text(STUDY, encoding="utf-8")
    cmd = [sys.executable, "-m", "entrobust", "run", str(study), "-w", str(ws), "--no-report"]
    procs = [
        subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ]
    procs.append(
        subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    trained = sum("trained in" in out for out, _ in outs)
    if codes == [0, 0]:  # the second started after the first had finished: it skipped everything
        assert trained == 1
    else:
        assert codes == [0, 2] and trained == 1
        assert any("is in use by pid" in err for _, err in outs)
    assert [r.status for r in Store(ws / "results.sqlite").runs()] == ["done"]
