"""The runner with worker processes (``run_experiment(workers=N)``): a tiny study run in-process and
with two workers stores identical results (same seeds, same data order, same thread count per
unit); a transfer evaluation waits for its surrogate's training; a two-worker run killed with
SIGKILL (its workers die with it) resumes to the same stored results; a failed unit stops the
units that wait for it and is reported."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _subprocess import child_env
from entrobust.experiments.runner import Progress, _Runner, run_experiment
from entrobust.experiments.spec import load_experiment
from entrobust.experiments.store import Store
from test_experiments_runner import snapshot

STUDY = """
name = "parallel-test"
scale = "tiny"
seeds = [0]
threads = 1
device = "cpu"

[overrides]
epochs = 2
max_train_examples = 64
batch_size = 32
"validation.robust_examples" = 8

[[defense]]
preset = "ru/normal"

[[defense]]
preset = "ru/pat"
surrogate = "Normal"

[[evaluation]]
name = "white-box"
suite = "FGSM_32:restarts=1:label=FGSM_32,PGD10-32:restarts=1:label=PGD10-32"
mode = "independent"
max_examples = 24
batch_size = 12

[[evaluation]]
name = "black-box"
suite = "PGD10-32:restarts=1:label=PGD10-32"
mode = "independent"
transfer = true
max_examples = 24
batch_size = 12

[analysis.fuzziness]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parallel") / "study.toml"
    path.write_text(STUDY, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def in_process(study: Path) -> Path:
    ws = study.parent / "ws1"
    run_experiment(load_experiment(study), ws, log=Progress(stream=None), report=False, workers=1)
    return ws


def test_units_wait_for_what_they_need(study: Path, tmp_path: Path) -> None:
    r = _Runner(load_experiment(study), tmp_path, Progress(stream=None), False)
    r.ids = {k: f"run{k}" for k in range(len(r.plan))}
    units = {u.key: u for u in r.units(("train", "evaluate", "analyse"))}
    normal, pat = (k for k, pr in enumerate(r.plan) if pr.label in ("Normal", "PAT"))
    assert units[f"eval:white-box:{pat}"].deps == (f"train:{pat}",)
    assert units[f"eval:black-box:{pat}"].deps == (f"train:{pat}", f"train:{normal}")
    assert units[f"analysis:fuzziness:{pat}"].deps == (f"train:{pat}",)
    assert units["train:0"].deps == ()
    # each unit's progress lines carry its name: the run, and what is done to it
    assert r.unit_tag(units[f"train:{pat}"]) == "PAT s0"
    assert r.unit_tag(units[f"eval:black-box:{pat}"]) == "PAT s0 black-box"
    assert r.unit_tag(units[f"analysis:fuzziness:{pat}"]) == "PAT s0 fuzziness"


def test_the_pool_starts_trainings_then_the_longest_units(study: Path, tmp_path: Path) -> None:
    text = study.read_text(encoding="utf-8") + (
        '\n[[evaluation]]\nname = "aa"\nsuite = "autoattack-standard"\neps = [0.3]\nmax_examples = 8\n'
    )
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    r = _Runner(load_experiment(path), tmp_path / "ws", Progress(stream=None), False)
    units = r.units(("train", "evaluate", "analyse"))
    order = [u.key for u in sorted(units, key=r.dispatch_order)]
    normal, pat = (k for k, pr in enumerate(r.plan) if pr.label in ("Normal", "PAT"))
    assert order[:2] == [f"train:{pat}", f"train:{normal}"]  # adversarially trained first
    # AutoAttack on the adversarially trained model first, then on the normal one, then the rest
    assert order[2:4] == [f"eval:aa:{pat}", f"eval:aa:{normal}"]
    assert order.index(f"eval:white-box:{pat}") < order.index(f"eval:white-box:{normal}")
    assert sorted(order) == sorted(u.key for u in units)


@pytest.mark.multiprocess
def test_two_workers_store_the_same_results_as_one(study: Path, in_process: Path, tmp_path: Path) -> None:
    lines: list[str] = []

    class Capture(Progress):
        def __call__(self, msg: str) -> None:
            lines.append(msg)

    ws = tmp_path / "ws2"
    res = run_experiment(load_experiment(study), ws, log=Capture(stream=None), report=False, workers=2)
    assert snapshot(ws) == snapshot(in_process)
    assert res.counts["train"] == {"ran": 2, "skipped": 0}
    # the transfer evaluation of PAT ran once its surrogate Normal was trained (it loads Normal's
    # final checkpoint; the unit graph is checked in test_units_wait_for_what_they_need)
    store = Store(ws / "results.sqlite")
    runs = {m["label"]: m["run_id"] for m in store.members("parallel-test")}
    stage = store.stage(runs["PAT"], "eval:black-box")
    assert stage is not None and stage["updated"] > store.run(runs["Normal"]).updated
    # a second run skips everything without starting a worker
    lines.clear()
    again = run_experiment(load_experiment(study), ws, log=Capture(stream=None), report=False, workers=2)
    assert again.counts["train"] == {"ran": 0, "skipped": 2}
    assert all(m.endswith("skipped") for m in lines if re.match(r"(train|eval|analysis) ", m)), lines


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc; [] where it cannot be read)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent (init) has yet to reap it


@pytest.mark.multiprocess
def test_killed_two_worker_run_resumes_to_the_same_results(
    study: Path, in_process: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "entrobust", "run", str(study), "-w", str(ws), "--no-report"]
    proc = subprocess.Popen(
        [*cmd, "--workers", "2"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    workers: list[int] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if re.search(r"epoch 1/2", line):  # mid-training, in a worker
                workers = _children(proc.pid)
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    # the workers died with the runner: no orphan writes into the workspace the rerun takes over
    if sys.platform.startswith("linux") and Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        assert len(workers) >= 2, workers
    deadline = time.monotonic() + 30
    while workers and time.monotonic() < deadline:
        workers = [w for w in workers if _alive(w)]
        time.sleep(0.1)
    assert not workers, f"workers {workers} outlived their runner"
    lines: list[str] = []

    class Capture(Progress):
        def __call__(self, msg: str) -> None:
            lines.append(msg)

    run_experiment(load_experiment(study), ws, log=Capture(stream=None), report=False, workers=2)
    assert any("resuming" in m or "restarting" in m for m in lines), lines
    assert snapshot(ws) == snapshot(in_process)


@pytest.mark.multiprocess
def test_a_failed_training_stops_its_dependents(study: Path, tmp_path: Path) -> None:
    lines: list[str] = []

    class Capture(Progress):
        def __call__(self, msg: str) -> None:
            lines.append(msg)

    exp = load_experiment(study)
    ws = tmp_path / "ws"
    r = _Runner(exp, ws, Capture(stream=None), False)
    r.register()
    pat = next(k for k, pr in enumerate(r.plan) if pr.label == "PAT")
    # a trainer state that cannot be read: PAT's training (resuming from it) fails in its worker
    r.run_dir(r.ids[pat]).mkdir(parents=True)
    (r.run_dir(r.ids[pat]) / "config.json").write_text("{}", encoding="utf-8")
    (r.run_dir(r.ids[pat]) / "trainer_state.pt").write_bytes(b"not a trainer state")
    with pytest.raises(Exception):  # noqa: B017 - whatever the training raised, re-raised here
        run_experiment(exp, ws, log=Capture(stream=None), report=False, workers=2)
    store = Store(ws / "results.sqlite")
    assert store.run(r.ids[pat]).status == "failed"
    assert store.run(r.ids[1 - pat]).status == "done"
    assert any(re.search(rf"eval:black-box:{pat}: not run, train:{pat} failed", m) for m in lines), lines
    assert any(re.search(rf"train:{pat} failed: ", m) for m in lines), lines


def test_a_workers_warnings_become_lines_of_its_units_log(tmp_path: Path) -> None:
    """A warning raised inside a worker's unit reaches the runner's log once, named by the unit,
    instead of as raw text on the stderr that every worker shares; the unit's indented lines
    carry its name, so two workers' lines can be told apart."""
    import warnings
    from types import SimpleNamespace

    from entrobust.experiments import runner as rmod

    def run_unit(unit: object) -> None:
        for _ in range(3):
            warnings.warn("square: 2 point(s) never queried", RuntimeWarning, stacklevel=1)
        log("eval aa PAT")
        log("  clean 99.0%")

    log = rmod._WorkerLog(time.perf_counter(), live=False)
    fake = SimpleNamespace(
        ws=tmp_path, exp=SimpleNamespace(name="x"), log=log, run_unit=run_unit, unit_tag=lambda u: "PAT s0 aa"
    )
    saved = dict(rmod._WORKER)
    rmod._WORKER.update(runner=fake)
    try:
        unit = SimpleNamespace(key="evaluate:aa:PAT")
        _, lines = rmod._worker_run(fake.exp, tmp_path, {}, unit, False)  # type: ignore[arg-type]
    finally:
        rmod._WORKER.clear()
        rmod._WORKER.update(saved)
    assert lines == [
        "eval aa PAT",
        "  PAT s0 aa · clean 99.0%",
        "  PAT s0 aa · RuntimeWarning: square: 2 point(s) never queried",
    ]


def test_a_run_trained_channels_last_is_evaluated_channels_last(tmp_path: Path) -> None:
    """``accel.channels_last`` (the demo sets it) holds for the run's evaluations too: the runner
    loads its checkpoint with 4-D weights in channels-last format; a run without it keeps NCHW."""
    import torch

    from entrobust.experiments.spec import experiment_from_dict

    exp = experiment_from_dict(
        {
            "name": "cl",
            "datasets": ["digits"],
            "models": ["lenet5"],
            "overrides": {"epochs": 1, "max_train_examples": 64},
            "defense": [
                {"preset": "ru/normal", "label": "NHWC", "overrides": {"accel.channels_last": True}},
                {"preset": "ru/normal", "label": "NCHW"},
            ],
        }
    )
    run_experiment(exp, tmp_path, log=Progress(None), stages=("train",), report=False)
    r = _Runner(exp, tmp_path, Progress(None), progress=False)
    r.register()
    formats = {}
    for k, pr in enumerate(r.plan):
        weights = [p for p in r.model(k).parameters() if p.dim() == 4 and p.shape[1] > 1]
        assert weights
        formats[pr.label] = {p.is_contiguous(memory_format=torch.channels_last) for p in weights}
    assert formats == {"NHWC": {True}, "NCHW": {False}}
