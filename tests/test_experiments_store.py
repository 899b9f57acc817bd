"""Results store: idempotent runs, round trips, schema version, two writers losing nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from entrobust.errors import EntrobustError
from entrobust.experiments.store import SCHEMA_VERSION, Store, config_hash
from entrobust.record import EvalRecord


def test_run_is_idempotent_and_keyed_by_config_and_seed(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    a = store.add_run({"preset": "ru/pat", "lr": 0.1}, name="pat", seed=0)
    assert store.add_run({"lr": 0.1, "preset": "ru/pat"}, name="pat", seed=0) == a  # key order irrelevant
    assert store.add_run({"preset": "ru/pat", "lr": 0.1}, name="pat", seed=1) != a
    assert len(store.runs()) == 2
    assert store.run(a).status == "pending"
    assert store.run(a).versions["entrobust"]


def test_status_epochs_evaluations_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    rid = store.add_run({"x": 1}, name="x", preset="p", seed=3)
    store.set_status(rid, "done", checkpoint="ck", summary={"clean": 0.5})
    store.add_epoch(rid, 0, {"loss": 2.0})
    store.add_epoch(rid, 1, {"loss": 1.0})
    store.add_epoch(rid, 1, {"loss": 0.5})  # a resumed epoch replaces, never duplicates
    assert [e["loss"] for e in store.epochs(rid)] == [2.0, 0.5]
    ex = [{"idx": i, "success": i % 2 == 0, "margin": float(i)} for i in range(4)]
    eid = store.add_evaluation(
        EvalRecord(rid, "quick", "pgd", "linf", 0.3, 4, 1.0, 0.5, spec={"steps": 10}, examples=tuple(ex))
    )
    (ev,) = store.evaluations(rid, attack="pgd")
    assert (ev.id, ev.robust_acc, ev.spec, ev.row, ev.attack_name) == (
        eid,
        0.5,
        {"steps": 10},
        "attack",
        "pgd",
    )
    assert [e["success"] for e in store.examples(eid)] == [1, 0, 1, 0]
    run = store.runs(status="done", preset="p")[0]
    assert (run.checkpoint, run.summary, run.seed) == ("ck", {"clean": 0.5}, 3)
    store.add_analysis(rid, "audit", {"checks": 3})
    assert store.analysis(rid, "audit") == {"checks": 3}
    assert store.analysis(rid, "nothing") is None


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    with pytest.raises(EntrobustError, match="unknown run status"):
        store.set_status("nope", "finished")
    with pytest.raises(EntrobustError, match="no run with id"):
        store.set_status("nope", "done")
    with pytest.raises(EntrobustError, match="unknown run filter"):
        store.runs(colour="red")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    assert Store(path).schema_version == SCHEMA_VERSION
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(EntrobustError, match="schema version"):
        Store(path)


def _writer(path: str, worker: int, n: int) -> None:
    store = Store(path, timeout=5.0, retries=100)
    rid = store.add_run({"worker": worker}, name=f"w{worker}", seed=worker)
    for i in range(n):
        store.add_epoch(rid, i, {"worker": worker, "i": i})
        store.add_evaluation(
            EvalRecord(rid, "s", f"a{i}", "linf", 0.1, 1, 1.0, 0.0, examples=({"idx": 0, "success": True},))
        )


@pytest.mark.multiprocess  # two busy writers: run alone
def test_two_processes_writing_lose_no_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite")
    Store(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(path)
    runs = store.runs()
    assert len(runs) == 2
    for run in runs:
        assert len(store.epochs(run.id)) == 40
        assert len(store.evaluations(run.id)) == 40


def test_config_hash_is_order_independent() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def _racing_writer(path: str, worker: int, n: int, start: Any) -> None:
    import entrobust.experiments.store as store_mod

    store_mod.library_versions = lambda: {"entrobust": "test"}  # keep torch out of the children
    start.wait()  # every process opens the (not yet existing) file at the same moment
    store = Store(path, timeout=0.05, retries=400)  # a short busy timeout: the retry loop must cope
    rid = store.add_run({"worker": worker}, name=f"w{worker}", seed=worker)
    for i in range(n):
        store.add_epoch(rid, i, {"worker": worker, "i": i})
        store.add_artifact(rid, "plot", f"/nowhere/{worker}-{i}.png")


@pytest.mark.multiprocess  # six busy writers: run alone
def test_six_processes_creating_and_writing_lose_no_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite")  # not created beforehand: opening races too
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(6)
    procs = [ctx.Process(target=_racing_writer, args=(path, w, 15, start)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    store = Store(path)
    runs = store.runs()
    assert len(runs) == 6
    for run in runs:
        assert len(store.epochs(run.id)) == 15
        assert len(store.artifacts(run.id)) == 15


def test_recording_an_artifact_again_replaces_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    report = tmp_path / "report.html"
    for text in ("a", "b", "c"):  # a report re-rendered three times
        report.write_text(text, encoding="utf-8")
        store.add_artifact(None, "report", report)
    (row,) = store.artifacts()
    assert row["sha256"] == hashlib.sha256(b"c").hexdigest()
    rid = store.add_run({"x": 1}, name="x")
    store.add_artifact(rid, "checkpoint", report)
    store.add_artifact(rid, "checkpoint", report)
    assert len(store.artifacts(rid)) == 1 and len(store.artifacts()) == 2


def _readonly_media(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQLite connection opens the file read-only, as on a read-only mount (the tests run as
    root, for whom ``chmod`` stops nothing)."""
    real = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if not kwargs.get("uri"):
            database, kwargs["uri"] = f"file:{Path(database).resolve()}?mode=ro", True
        return real(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_store_on_readonly_media_opens_readonly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.sqlite"
    rid = Store(path).add_run({"x": 1}, name="x", seed=0)
    _readonly_media(monkeypatch)
    store = Store(path, readonly=True)
    assert [r.id for r in store.runs()] == [rid] and store.schema_version == SCHEMA_VERSION
    with pytest.raises(EntrobustError, match="read-only"):
        store.set_status(rid, "done")
    with pytest.raises(OSError, match="readonly") as ei:  # a writer gets an OSError naming the file
        Store(path).add_run({"x": 2}, name="y")
    assert ei.value.filename == str(path)


def test_an_evaluation_record_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    rid = store.add_run({"x": 1}, name="x", seed=0)
    rec = EvalRecord(
        rid, "black-box", "PGD10-32", "linf", 32 / 255, 8, 0.9, 0.4, attack_name="pgd", surrogate="sur",
        accuracy="cumulative", spec={"entry": {"attack": "f.transfer[sur]:pgd", "kwargs": {"steps": 10}}},
        examples=({"idx": 3, "success": True},),
    )  # fmt: skip
    (eid,) = store.replace_evaluations(rid, "black-box", [rec])
    back = store.evaluation(eid)
    assert back == dataclasses.replace(rec, id=eid, created=back.created)
    assert (back.transfer, back.setting, back.cumulative, back.kwargs) == (
        True,
        "black-box",
        True,
        {"steps": 10},
    )
    assert [e["idx"] for e in store.examples(eid)] == [3]
    with pytest.raises(EntrobustError, match="evaluation 'black-box'"):
        store.replace_evaluations(rid, "white-box", [rec])


def test_rows_written_before_the_record_read_back_typed(tmp_path: Path) -> None:
    """An older workspace kept the row kind, accuracy kind and surrogate only as spec keys and the
    transferred attack only inside its factory name: the store parses them once, on reading."""
    path = tmp_path / "r.sqlite"
    store = Store(path)
    rid = store.add_run({"x": 1}, name="x", seed=0)
    old = {
        "clean": {"row": "clean"},
        "PGD10-32": {"row": "attack", "accuracy": "cumulative", "transfer_from": "sur",
                     "entry": {"attack": "entrobust.experiments.runner.transfer[sur]:pgd"}},
        "worst-case": {},
    }  # fmt: skip
    con = sqlite3.connect(path)
    for attack, spec in old.items():
        con.execute(
            "INSERT INTO evaluations (run_id, suite, attack, spec, norm, eps, n, clean_acc, robust_acc,"
            " created) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (rid, "black-box", attack, json.dumps(spec), "linf", 0.1, 4, 1.0, 0.5, 0.0),
        )
    con.commit()
    con.close()
    clean, pgd, worst = store.evaluations(rid)
    assert (clean.row, clean.attack_name, clean.surrogate) == ("clean", "clean", None)
    assert (pgd.row, pgd.attack_name, pgd.surrogate, pgd.accuracy) == ("attack", "pgd", "sur", "cumulative")
    assert (worst.row, worst.accuracy) == ("worst-case", "standalone")
    assert "transfer_from" not in pgd.spec and "row" not in pgd.spec


def test_an_analysis_stored_under_its_old_name_reads_under_the_new_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.sqlite")
    rid = store.add_run({"x": 1}, name="x", seed=0)
    store.add_analysis(rid, "landscape", {"radius": 0.04})
    store.add_analysis(rid, "audit", {"status": "pass"})
    assert [(a["kind"], a["result"]) for a in store.analyses(rid)] == [
        ("input-surface", {"radius": 0.04}),
        ("audit", {"status": "pass"}),
    ]
