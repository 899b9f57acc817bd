"""The experiment runner: a tiny study run straight (in-process), and the same study run as a
``entrobust run`` subprocess killed with SIGKILL at several random points (mid-training,
mid-evaluation, mid-analysis) and resumed, end with the same stored results; a finished study is skipped;
the report renders from it and every table cell traces to stored rows."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _subprocess import child_env
from entrobust.experiments.store import Store

STUDY = """
name = "kill-test"
scale = "tiny"
seeds = [0]
threads = 1
device = "cpu"

[overrides]
epochs = 2
max_train_examples = 128
batch_size = 32

[[defense]]
preset = "ru/normal"

[[defense]]
preset = "ru/pat"
surrogate = "Normal"

[[evaluation]]
name = "white-box"
suite = "FGSM_32:restarts=1:label=FGSM_32,PGD10-32:restarts=1:label=PGD10-32"
mode = "independent"
max_examples = 48
batch_size = 16

[[evaluation]]
name = "black-box"
suite = "PGD10-32:restarts=1:label=PGD10-32"
mode = "independent"
transfer = true
max_examples = 48
batch_size = 16

[[evaluation]]
name = "pgd"
suite = "pgd:steps=8"
eps = [0.1, 0.3]
max_examples = 48
batch_size = 16

[analysis.fuzziness]

[analysis.audit]
eps = 0.3
n = 16
curve_n = 16
pgd_steps = 5
curve_steps = 5
steps_grid = [4, 8]
eps_factors = [0.0, 1.0, 3.0]
random_search_samples = 50
random_search_n = 2
checks = ["gradients", "single-vs-multi", "transfer-gap", "eps-curve", "steps-curve"]
"""

#: lines after which the child is killed (after a random extra delay): mid-training, mid-evaluation,
#: mid-analysis
KILL_AFTER = (r"epoch 1/2", r"eval white-box 2/2", r"analysis audit 1/2")
_TIME_KEY = re.compile(r"(seconds|_time_s|^time|^created|^updated)$")


def _cmd(study: Path, ws: Path) -> list[str]:
    return [sys.executable, "-m", "entrobust", "run", str(study), "-w", str(ws), "--no-report"]


def _run_to_end(study: Path, ws: Path) -> str:
    out = subprocess.run(_cmd(study, ws), env=child_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _run_and_kill(study: Path, ws: Path, pattern: str, rng: random.Random) -> bool:
    """Start the study, SIGKILL it a random moment after ``pattern`` shows; True if it was killed."""
    proc = subprocess.Popen(
        _cmd(study, ws),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if re.search(pattern, line):
                time.sleep(rng.uniform(0.0, 0.4))
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                return proc.returncode == -signal.SIGKILL
        proc.wait(timeout=60)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _strip(obj: Any) -> Any:
    """Drop timing fields (they differ between any two runs) recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not _TIME_KEY.search(str(k))}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def snapshot(ws: Path) -> dict[str, Any]:
    """Everything the store holds for a study, keyed by labels, without timings or row ids."""
    store = Store(ws / "results.sqlite")
    labels = {m["run_id"]: m["label"] for m in store.members()}
    snap: dict[str, Any] = {"runs": {}, "epochs": {}, "evaluations": [], "analyses": {}}
    for r in store.runs():
        lab = labels[r.id]
        snap["runs"][lab] = (r.status, r.config_hash, r.id)
        snap["epochs"][lab] = _strip(store.epochs(r.id))
        for a in store.analyses(r.id):
            snap["analyses"][(lab, a["kind"])] = _strip(a["result"])
        for e in store.evaluations(r.id):
            examples = [
                (
                    x["idx"],
                    x["success"],
                    x["first_success"],
                    x["margin"],
                    x["loss"],
                    x["entropy"],
                    x["distance"],
                )
                for x in store.examples(e.id)
            ]
            snap["evaluations"].append(
                (
                    lab,
                    e.evaluation,
                    e.attack,
                    e.norm,
                    e.eps,
                    e.n,
                    e.clean_acc,
                    e.robust_acc,
                    examples,
                    json.dumps(_strip(e.spec), sort_keys=True),
                )
            )
    snap["evaluations"].sort(key=lambda t: t[:5])
    return snap


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("straight")
    study = base / "study.toml"
    study.write_text(STUDY, encoding="utf-8")
    from entrobust.experiments.runner import Progress, run_experiment
    from entrobust.experiments.spec import load_experiment

    run_experiment(load_experiment(study), base / "ws", log=Progress(stream=None), report=False)
    return study, base / "ws"


@pytest.mark.slow  # the default run crashes `run` after chosen writes instead (test_checkpoint_crash.py)
def test_killed_at_random_points_then_resumed_equals_straight_run(
    straight: tuple[Path, Path], tmp_path: Path
) -> None:
    study, ws_straight = straight
    ws = tmp_path / "ws"
    rng = random.Random(int(os.environ.get("ENTROBUST_KILL_SEED", "7")))
    kills = sum(_run_and_kill(study, ws, pattern, rng) for pattern in KILL_AFTER)
    assert kills >= 2, "the child finished before it could be killed at most points"
    log = _run_to_end(study, ws)
    assert "done before, skipped" in log  # the resumed run reused finished work
    a, b = snapshot(ws_straight), snapshot(ws)
    assert a["runs"] == b["runs"]
    assert a["epochs"] == b["epochs"]
    assert len(a["evaluations"]) == len(b["evaluations"]) > 0
    for x, y in zip(a["evaluations"], b["evaluations"], strict=True):
        assert x == y, (x[:8], y[:8])
    assert a["analyses"] == b["analyses"]
    # no stage ran twice into the store: one row per (run, evaluation, attack, eps)
    keys = [e[:5] for e in b["evaluations"]]
    assert len(keys) == len(set(keys))


def test_finished_study_is_skipped_and_reports(straight: tuple[Path, Path], tmp_path: Path) -> None:
    from entrobust.experiments.runner import Progress, run_experiment
    from entrobust.experiments.spec import load_experiment
    from entrobust.report import ResultSet, build_tables

    study, ws = straight
    before = snapshot(ws)
    log = Progress(stream=None)
    res = run_experiment(load_experiment(study), ws, log=log, report_dir=tmp_path / "report")
    assert res.counts["train"] == {"ran": 0, "skipped": 2}
    assert res.counts["eval:white-box"] == {"ran": 0, "skipped": 2}
    assert res.counts["eval:black-box"]["ran"] == 0
    assert res.counts["analysis:audit"] == {"ran": 0, "skipped": 2}
    assert snapshot(ws)["evaluations"] == before["evaluations"]
    html = res.report["html"].read_text(encoding="utf-8")
    assert "RU Table 1 layout" in html and "not run" in html

    # every filled table cell is the mean of the stored rows it names
    store = Store(ws / "results.sqlite")
    rs = ResultSet.from_store(store, experiment="kill-test")
    tables = build_tables(rs)
    assert tables
    checked = 0
    for t in tables:
        for cell in t.cells.values():
            if cell.empty:
                continue
            values = []
            for src in cell.sources:
                kind, ident = src.split(":")
                if kind == "evaluation":
                    values.append(store.evaluation(int(ident)).robust_acc)
                else:
                    assert kind == "analysis"
                    values.append(next(a for a in store.analyses() if a["id"] == int(ident)))
            if all(isinstance(v, float) for v in values):
                assert math.isclose(sum(values) / len(values), cell.mean, rel_tol=1e-12)
            checked += 1
    assert checked >= 5


def test_transfer_rows_name_their_surrogate(straight: tuple[Path, Path]) -> None:
    _, ws = straight
    store = Store(ws / "results.sqlite")
    runs = {m["label"]: m["run_id"] for m in store.members("kill-test")}
    rows = store.evaluations(runs["PAT"], evaluation="black-box")
    assert rows and all(r.surrogate == runs["Normal"] and r.setting == "black-box" for r in rows)
    attacks = {r.attack_name for r in rows if r.row == "attack"}
    assert attacks and not any("transfer[" in a for a in attacks), attacks
    assert not store.evaluations(runs["Normal"], evaluation="black-box")  # no independent surrogate: skipped
