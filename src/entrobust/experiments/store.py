"""The results store: one embedded SQLite file per workspace (SPEC §6, STYLE rule 10).

Every number a report shows is a row here, next to the exact configuration that produced it.
Tables: ``runs`` (resolved config, hash, versions, status), ``epochs`` (per-epoch metrics),
``evaluations`` (full attack spec, ε, accuracy; written and read as
:class:`~entrobust.record.EvalRecord`), ``examples`` (per-example outcomes),
``analyses`` (diagnostics as JSON) and ``artifacts`` (files such as checkpoints and plots).

Safe with several processes writing at once: WAL journal, one short transaction per write,
a busy timeout and a retry loop on ``database is locked`` around every step — opening the file,
creating the schema, each write and each read. The schema is versioned. A store on read-only media
opens with ``readonly=True`` (what ``entrobust runs``/``report``/``claims`` do). Failures of the
file itself (disk full, read-only, still locked after every retry) raise :class:`OSError` naming
the file; nothing is half-written, as every write is one transaction.
"""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from entrobust.errors import EntrobustError
from entrobust.io import config_hash
from entrobust.record import EvalRecord, RowKind

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    experiment TEXT,
    preset TEXT,
    dataset TEXT,
    model TEXT,
    seed INTEGER,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    versions TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    checkpoint TEXT,
    summary TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    suite TEXT NOT NULL,
    attack TEXT NOT NULL,
    spec TEXT NOT NULL,
    norm TEXT NOT NULL,
    eps REAL NOT NULL,
    n INTEGER NOT NULL,
    clean_acc REAL NOT NULL,
    robust_acc REAL NOT NULL,
    created REAL NOT NULL,
    UNIQUE (run_id, suite, attack, norm, eps)
);
CREATE TABLE IF NOT EXISTS examples (
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
    idx INTEGER NOT NULL,
    success INTEGER NOT NULL,
    first_success INTEGER,
    margin REAL,
    loss REAL,
    entropy REAL,
    distance REAL,
    PRIMARY KEY (evaluation_id, idx)
);
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (run_id, kind)
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT REFERENCES runs(id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT,
    created REAL NOT NULL,
    UNIQUE (run_id, kind, path)
);
CREATE TABLE IF NOT EXISTS members (
    experiment TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id),
    label TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (experiment, run_id)
);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL,
    PRIMARY KEY (run_id, stage)
);
"""
# Version history: 1 = runs, epochs, evaluations, examples, analyses, artifacts;
# 2 = + members (a run's label in each experiment that uses it) and stages (finished work units of
# the experiment runner). Opening a version-1 file adds the new tables and bumps the version.

RUN_STATUSES = ("pending", "running", "done", "failed")


def library_versions() -> dict[str, str]:
    """Versions recorded with every run."""
    import platform

    import numpy
    import torch

    from entrobust import __version__

    return {
        "entrobust": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Run:
    """One row of ``runs``."""

    id: str
    name: str
    experiment: str | None
    preset: str | None
    dataset: str | None
    model: str | None
    seed: int | None
    config: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    status: str
    checkpoint: str | None
    summary: dict[str, Any]
    created: float
    updated: float


class Store:
    """Handle on a results database file (created with its schema on first use).

    >>> store = Store(tmp / "results.sqlite")            # doctest: +SKIP
    >>> rid = store.add_run({"preset": "ru/pat"}, name="pat-s0", seed=0)  # doctest: +SKIP
    """

    def __init__(
        self, path: str | Path, *, timeout: float = 30.0, retries: int = 20, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.retries = retries
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise EntrobustError(f"no results store at {self.path}")
            version = self._retry(self._read_version)
            if version is None or version < SCHEMA_VERSION:
                self._upgrade_for_reading(version)
            elif version > SCHEMA_VERSION:
                raise self._too_new(version)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)  # an OSError here names the folder
        self._retry(self._open)

    # ----------------------------------------------------------- plumbing
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            con = self._connect_readonly()
        else:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            con.execute("PRAGMA foreign_keys=ON")
            con.row_factory = sqlite3.Row
            yield con
        finally:
            con.close()

    def _connect_readonly(self) -> sqlite3.Connection:
        """``mode=ro``; on media where SQLite cannot create the WAL index either (a read-only
        mount), ``immutable=1`` — nobody can be writing such a file."""
        uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
        try:
            con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.timeout, isolation_level=None)
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return con
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) and "readonly" not in str(exc):
                raise
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=self.timeout, isolation_level=None)

    def _retry(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, retried with exponential backoff while the file is locked; SQLite
        failures of the file itself become :class:`OSError` naming it."""
        delay = 0.01
        for attempt in range(self.retries):
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                msg = str(exc)
                if ("locked" in msg or "busy" in msg) and attempt < self.retries - 1:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise self._file_error(exc, attempt + 1) from None
            except sqlite3.DatabaseError as exc:
                if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
                    raise EntrobustError(f"{self.path}: not a readable results store ({exc})") from None
                raise
        raise AssertionError("unreachable")

    def _file_error(self, exc: sqlite3.OperationalError, attempts: int) -> Exception:
        msg = str(exc)
        if "no such" in msg or "syntax error" in msg:  # a bug, not the file: keep it as it is
            return exc
        code = errno.EIO
        if "full" in msg:
            code = errno.ENOSPC
        elif "readonly" in msg or "read-only" in msg:
            code = errno.EROFS
        elif "unable to open" in msg:
            code = errno.EACCES
        elif "locked" in msg or "busy" in msg:
            code = errno.EBUSY
            msg += f" (gave up after {attempts} attempts)"
        return OSError(code, msg, str(self.path))

    def _write(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(con, *args)`` in one IMMEDIATE transaction, retrying while the file is locked."""
        if self.readonly:
            raise EntrobustError(f"{self.path}: the results store was opened read-only")
        return self._retry(self._transaction, fn, *args)

    def _transaction(self, fn: Any, *args: Any) -> Any:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                out = fn(con, *args)
                con.execute("COMMIT")
                return out
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(self._retry(self._query, sql, params))

    def _query(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        with self._connect() as con:
            return list(con.execute(sql, params))

    @staticmethod
    def _version_of(con: sqlite3.Connection) -> int | None:
        try:
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return None if row is None else int(row[0])

    def _read_version(self) -> int | None:
        with self._connect() as con:
            return self._version_of(con)

    def _open(self) -> None:
        """WAL journal and schema; a file already at this schema version is only read."""
        with self._connect() as con:
            if str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            version = self._version_of(con)
            if version is not None and version > SCHEMA_VERSION:
                raise self._too_new(version)
            if version == SCHEMA_VERSION:
                return
        self._transaction(self._create_schema)

    def _create_schema(self, con: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):  # idempotent: CREATE ... IF NOT EXISTS
            if statement.strip():
                con.execute(statement)
        self._init_schema(con)

    def _upgrade_for_reading(self, version: int | None) -> None:
        """An older (or unfinished) file opened read-only: add the new tables if the file can be
        written, else say why it cannot be read."""
        try:
            Store(self.path, timeout=self.timeout, retries=self.retries)
        except OSError as exc:
            raise EntrobustError(
                f"{self.path}: results store has schema version {version}, this entrobust reads "
                f"{SCHEMA_VERSION}, and the file cannot be upgraded ({exc.strerror})"
            ) from None

    def _too_new(self, version: int) -> EntrobustError:
        return EntrobustError(
            f"{self.path}: results store has schema version {version}, this entrobust reads "
            f"up to {SCHEMA_VERSION}; upgrade entrobust"
        )

    def _init_schema(self, con: sqlite3.Connection) -> None:
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) < SCHEMA_VERSION:  # older file: the new tables were just created
            con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise self._too_new(int(row[0]))

    @property
    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    # ---------------------------------------------------------------- runs
    def add_run(
        self,
        config: Mapping[str, Any],
        *,
        name: str,
        experiment: str | None = None,
        preset: str | None = None,
        dataset: str | None = None,
        model: str | None = None,
        seed: int | None = None,
    ) -> str:
        """Insert the run for ``config`` if absent; return its id (the config hash + seed).

        Idempotent: the same configuration and seed always map to the same run, so a resumed
        experiment finds its finished runs instead of repeating them.
        """
        h = config_hash({"config": config, "seed": seed})
        now = time.time()

        def insert(con: sqlite3.Connection) -> str:
            con.execute(
                "INSERT OR IGNORE INTO runs (id, name, experiment, preset, dataset, model, seed, config,"
                " config_hash, versions, status, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    h, name, experiment, preset, dataset, model, seed,
                    json.dumps(config, sort_keys=True, default=str), h,
                    json.dumps(library_versions()), "pending", now, now,
                ),
            )  # fmt: skip
            return h

        return str(self._write(insert))

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        checkpoint: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Update a run's status (and optionally its checkpoint path and summary metrics)."""
        if status not in RUN_STATUSES:
            raise EntrobustError(f"unknown run status {status!r}; valid: {', '.join(RUN_STATUSES)}")

        def update(con: sqlite3.Connection) -> None:
            cur = con.execute(
                "UPDATE runs SET status=?, checkpoint=COALESCE(?, checkpoint),"
                " summary=COALESCE(?, summary), updated=? WHERE id=?",
                (
                    status,
                    checkpoint,
                    json.dumps(summary) if summary is not None else None,
                    time.time(),
                    run_id,
                ),
            )
            if cur.rowcount == 0:
                raise EntrobustError(f"no run with id {run_id!r} in {self.path}")

        self._write(update)

    def run(self, run_id: str) -> Run:
        rows = self._read("SELECT * FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise EntrobustError(f"no run with id {run_id!r} in {self.path}")
        return _run(rows[0])

    def runs(self, **filters: Any) -> list[Run]:
        """Runs matching equality filters on columns (``status``, ``preset``, ``dataset``, ``model``,
        ``experiment``, ``seed``, ``name``), oldest first."""
        allowed = {"status", "preset", "dataset", "model", "experiment", "seed", "name"}
        bad = set(filters) - allowed
        if bad:
            raise EntrobustError(f"unknown run filter {sorted(bad)}; valid: {', '.join(sorted(allowed))}")
        where = " AND ".join(f"{k}=?" for k in filters if filters[k] is not None)
        params = [v for v in filters.values() if v is not None]
        sql = "SELECT * FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY created, id"
        return [_run(r) for r in self._read(sql, params)]

    # -------------------------------------------------------------- epochs
    def add_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Record (or replace, on resume) the metrics of one epoch."""
        self._write(
            lambda con: con.execute(
                "INSERT OR REPLACE INTO epochs VALUES (?,?,?)", (run_id, epoch, json.dumps(dict(metrics)))
            )
        )

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT epoch, metrics FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,))
        return [{"epoch": r["epoch"], **json.loads(r["metrics"])} for r in rows]

    # --------------------------------------------------------- evaluations
    def add_evaluation(self, record: EvalRecord) -> int:
        """Record one evaluation row (replacing an earlier one with the same run, evaluation,
        attack label, norm and ε) with its per-example outcomes, if it carries them. Returns the
        evaluation id."""

        def insert(con: sqlite3.Connection) -> int:
            old = con.execute(
                "SELECT id FROM evaluations WHERE run_id=? AND suite=? AND attack=? AND norm=? AND eps=?",
                (record.run_id, record.evaluation, record.attack, record.norm, float(record.eps)),
            ).fetchone()
            if old is not None:
                con.execute("DELETE FROM examples WHERE evaluation_id=?", (old[0],))
                con.execute("DELETE FROM evaluations WHERE id=?", (old[0],))
            return _insert_evaluation(con, record, time.time())

        return int(self._write(insert))

    def evaluations(self, run_id: str | None = None, **filters: Any) -> list[EvalRecord]:
        """Evaluation rows, oldest first, optionally of one run and filtered by ``evaluation``
        (its name), ``attack`` (label), ``norm`` or ``eps``."""
        columns = {"evaluation": "suite", "attack": "attack", "norm": "norm", "eps": "eps"}
        bad = set(filters) - set(columns)
        if bad:
            raise EntrobustError(
                f"unknown evaluation filter {sorted(bad)}; valid: {', '.join(sorted(columns))}"
            )
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id=?")
            params.append(run_id)
        for k, v in filters.items():
            clauses.append(f"{columns[k]}=?")
            params.append(v)
        sql = "SELECT * FROM evaluations" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        return [_evaluation(r) for r in self._read(sql + " ORDER BY id", params)]

    def examples(self, evaluation_id: int) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM examples WHERE evaluation_id=? ORDER BY idx", (evaluation_id,))
        return [dict(r) for r in rows]

    # ------------------------------------------------- analyses, artifacts
    def add_analysis(self, run_id: str, kind: str, result: Mapping[str, Any]) -> None:
        """Record (or replace) the result of one analysis (``audit``, ``geometry``, ...) as JSON."""
        self._write(
            lambda con: con.execute(
                "INSERT OR REPLACE INTO analyses (run_id, kind, result, created) VALUES (?,?,?,?)",
                (run_id, kind, json.dumps(dict(result), default=str), time.time()),
            )
        )

    def analysis(self, run_id: str, kind: str) -> dict[str, Any] | None:
        rows = self._read("SELECT result FROM analyses WHERE run_id=? AND kind=?", (run_id, kind))
        return json.loads(rows[0]["result"]) if rows else None

    def add_artifact(self, run_id: str | None, kind: str, path: str | Path) -> None:
        """Record a file produced for a run (checkpoint, plot, report) with its SHA-256; recording the
        same (run, kind, path) again replaces the row (also for run-less files such as reports,
        whose NULL run id the UNIQUE constraint does not cover)."""
        p = Path(path)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

        def write(con: sqlite3.Connection) -> None:
            con.execute(
                "DELETE FROM artifacts WHERE run_id IS ? AND kind=? AND path=?", (run_id, kind, str(p))
            )
            con.execute(
                "INSERT INTO artifacts (run_id, kind, path, sha256, created) VALUES (?,?,?,?,?)",
                (run_id, kind, str(p), digest, time.time()),
            )

        self._write(write)

    def artifacts(self, run_id: str | None = None) -> list[dict[str, Any]]:
        if run_id is None:
            return [dict(r) for r in self._read("SELECT * FROM artifacts ORDER BY id")]
        return [dict(r) for r in self._read("SELECT * FROM artifacts WHERE run_id=? ORDER BY id", (run_id,))]

    # ------------------------------------------- experiments and stages (schema 2)
    def add_member(
        self, experiment: str, run_id: str, label: str, role: Mapping[str, Any] | None = None
    ) -> None:
        """Record that ``experiment`` uses run ``run_id`` under ``label`` (a run shared by several
        experiments keeps one row per experiment). ``role`` is free-form JSON (e.g. AT or not)."""
        self._write(
            lambda con: con.execute(
                "INSERT OR REPLACE INTO members VALUES (?,?,?,?)",
                (experiment, run_id, label, json.dumps(dict(role or {}), sort_keys=True)),
            )
        )

    def set_members(self, experiment: str, rows: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Make ``rows`` (run id, label, role) the exact member list of ``experiment``, atomically: a
        run an edited study no longer plans (e.g. its preset changed, so its config hash did) stops
        being part of the study, though its results stay in the store."""

        def write(con: sqlite3.Connection) -> None:
            con.execute("DELETE FROM members WHERE experiment=?", (experiment,))
            con.executemany(
                "INSERT OR REPLACE INTO members VALUES (?,?,?,?)",
                [
                    (experiment, rid, label, json.dumps(dict(role), sort_keys=True))
                    for rid, label, role in rows
                ],
            )

        self._write(write)

    def members(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """``{"experiment", "run_id", "label", "role"}`` rows, optionally of one experiment."""
        sql = "SELECT * FROM members" + (" WHERE experiment=?" if experiment is not None else "")
        rows = self._read(sql + " ORDER BY rowid", (experiment,) if experiment is not None else ())
        return [
            {
                "experiment": r["experiment"],
                "run_id": r["run_id"],
                "label": r["label"],
                "role": json.loads(r["role"]),
            }
            for r in rows
        ]

    def experiments(self) -> list[str]:
        """Names of the experiments recorded in this store, in the order they first ran."""
        rows = self._read("SELECT experiment FROM members GROUP BY experiment ORDER BY MIN(rowid)")
        return [r["experiment"] for r in rows]

    def stage(self, run_id: str, stage: str) -> dict[str, Any] | None:
        """The finished stage ``stage`` of a run (``{"spec_hash", "result", "updated"}``) or None."""
        rows = self._read("SELECT * FROM stages WHERE run_id=? AND stage=?", (run_id, stage))
        if not rows:
            return None
        return {
            "spec_hash": rows[0]["spec_hash"],
            "result": json.loads(rows[0]["result"]),
            "updated": rows[0]["updated"],
        }

    def stage_done(self, run_id: str, stage: str, spec_hash: str) -> bool:
        """True when ``stage`` of ``run_id`` finished with the same specification hash."""
        got = self.stage(run_id, stage)
        return got is not None and got["spec_hash"] == spec_hash

    def mark_stage(
        self, run_id: str, stage: str, spec_hash: str, result: Mapping[str, Any] | None = None
    ) -> None:
        """Record that ``stage`` of ``run_id`` finished (replacing an earlier mark)."""
        self._write(
            lambda con: con.execute(
                "INSERT OR REPLACE INTO stages VALUES (?,?,?,?,?)",
                (run_id, stage, spec_hash, json.dumps(dict(result or {}), default=str), time.time()),
            )
        )

    def replace_evaluations(
        self,
        run_id: str,
        evaluation: str,
        records: Sequence[EvalRecord],
        *,
        stage: tuple[str, str] | None = None,
    ) -> list[int]:
        """Atomically replace every row of evaluation ``evaluation`` of run ``run_id`` by
        ``records`` (with the per-example outcomes they carry) and, with ``stage=(name,
        spec_hash)``, mark that stage finished in the same transaction — so an interrupted writer
        leaves either all rows and the mark, or neither. Returns the new ids.

        Raises:
            EntrobustError: a record of another run or evaluation.
        """
        for rec in records:
            if (rec.run_id, rec.evaluation) != (run_id, evaluation):
                raise EntrobustError(
                    f"record of run {rec.run_id!r}, evaluation {rec.evaluation!r} given to replace "
                    f"the rows of run {run_id!r}, evaluation {evaluation!r}"
                )

        def write(con: sqlite3.Connection) -> list[int]:
            old = [
                r[0]
                for r in con.execute(
                    "SELECT id FROM evaluations WHERE run_id=? AND suite=?", (run_id, evaluation)
                )
            ]
            for eid in old:
                con.execute("DELETE FROM examples WHERE evaluation_id=?", (eid,))
                con.execute("DELETE FROM evaluations WHERE id=?", (eid,))
            now = time.time()
            ids = [_insert_evaluation(con, rec, now) for rec in records]
            if stage is not None:
                con.execute(
                    "INSERT OR REPLACE INTO stages VALUES (?,?,?,?,?)",
                    (run_id, stage[0], stage[1], json.dumps({"evaluations": ids}), now),
                )
            return ids

        return list(self._write(write))

    def evaluation(self, evaluation_id: int) -> EvalRecord:
        """One evaluation row by id (raises when absent)."""
        rows = self._read("SELECT * FROM evaluations WHERE id=?", (int(evaluation_id),))
        if not rows:
            raise EntrobustError(f"no evaluation with id {evaluation_id} in {self.path}")
        return _evaluation(rows[0])

    def analyses(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """``{"id", "run_id", "kind", "result"}`` rows, optionally of one run, oldest first; a kind
        stored under an old name comes under its current one."""
        sql = "SELECT * FROM analyses" + (" WHERE run_id=?" if run_id is not None else "") + " ORDER BY id"
        rows = self._read(sql, (run_id,) if run_id is not None else ())
        return [
            {
                "id": r["id"],
                "run_id": r["run_id"],
                "kind": _kind(r["kind"]),
                "result": json.loads(r["result"]),
            }
            for r in rows
        ]

    def analysis_id(self, run_id: str, kind: str) -> int | None:
        """The row id of an analysis (for tracing report numbers), or None."""
        rows = self._read("SELECT id FROM analyses WHERE run_id=? AND kind=?", (run_id, kind))
        return int(rows[0]["id"]) if rows else None


def _run(r: sqlite3.Row) -> Run:
    return Run(
        id=r["id"], name=r["name"], experiment=r["experiment"], preset=r["preset"], dataset=r["dataset"],
        model=r["model"], seed=r["seed"], config=json.loads(r["config"]), config_hash=r["config_hash"],
        versions=json.loads(r["versions"]), status=r["status"], checkpoint=r["checkpoint"],
        summary=json.loads(r["summary"]), created=r["created"], updated=r["updated"],
    )  # fmt: skip


# An evaluation row on disk: the typed fields of :class:`EvalRecord` that have no column of their
# own (row kind, registered attack, surrogate run, accuracy kind) are kept in the ``spec`` JSON
# under these keys, beside the rest of the description.
_ROW, _ATTACK_NAME, _SURROGATE, _ACCURACY = "row", "attack_name", "transfer_from", "accuracy"


def _spec_json(rec: EvalRecord) -> str:
    spec = {**rec.spec, _ROW: rec.row, _ATTACK_NAME: rec.attack_name}
    if rec.surrogate is not None:
        spec[_SURROGATE] = rec.surrogate
    if rec.row == "attack":
        spec[_ACCURACY] = rec.accuracy
    return json.dumps(spec, sort_keys=True, default=str)


def _insert_evaluation(con: sqlite3.Connection, rec: EvalRecord, now: float) -> int:
    cur = con.execute(
        "INSERT INTO evaluations (run_id, suite, attack, spec, norm, eps, n, clean_acc, robust_acc,"
        " created) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            rec.run_id, rec.evaluation, rec.attack, _spec_json(rec), rec.norm, float(rec.eps),
            int(rec.n), float(rec.clean_acc), float(rec.robust_acc), now,
        ),
    )  # fmt: skip
    eid = int(cur.lastrowid or 0)
    if rec.examples:
        con.executemany(
            "INSERT INTO examples VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    eid, int(e["idx"]), int(bool(e["success"])), e.get("first_success"),
                    e.get("margin"), e.get("loss"), e.get("entropy"), e.get("distance"),
                )
                for e in rec.examples
            ],
        )  # fmt: skip
    return eid


def _evaluation(r: sqlite3.Row) -> EvalRecord:
    """A stored row as a record. Rows written before the record existed lack ``row`` and
    ``attack_name`` in their spec: the row kind follows from the label, and a black-box row's
    attack is read once, here, from its entry's factory name ``...transfer[<run>]:<attack>``."""
    spec = dict(json.loads(r["spec"]))
    attack = str(r["attack"])
    surrogate = spec.pop(_SURROGATE, None) or None
    row = cast(RowKind, spec.pop(_ROW, None) or (attack if attack in ("clean", "worst-case") else "attack"))
    name = spec.pop(_ATTACK_NAME, None)
    if name is None:
        name = str((spec.get("entry") or {}).get("attack", attack))
        if surrogate is not None and "]:" in name:
            name = name.split("]:", 1)[1]
    return EvalRecord(
        run_id=r["run_id"], evaluation=r["suite"], attack=attack, norm=r["norm"], eps=float(r["eps"]),
        n=int(r["n"]), clean_acc=float(r["clean_acc"]), robust_acc=float(r["robust_acc"]), row=row,
        attack_name=str(name), surrogate=None if surrogate is None else str(surrogate),
        accuracy=str(spec.pop(_ACCURACY, None) or "standalone"), spec=spec, id=int(r["id"]),
        created=float(r["created"]),
    )  # fmt: skip


def _kind(stored: str) -> str:
    """An analysis kind as stored, under its current name (``landscape`` → ``input-surface``)."""
    from entrobust.diagnostics.analysis import stored_kind

    return stored_kind(stored)
