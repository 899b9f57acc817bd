"""Stored results as plain Python data, the one input of tables, plots and claims (STYLE rule 10).

:class:`ResultSet` holds the runs of one experiment (or of chosen run ids) with their labels,
every evaluation row, analysis and epoch of those runs. It is built from a
:class:`~entrobust.experiments.store.Store` (:meth:`ResultSet.from_store`) or by hand (tests).
Every number it hands out comes as a :class:`Cell` that lists the ids of the rows behind it
(``evaluation:17``, ``analysis:3``), so a report cell can always be traced to the store.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from entrobust.record import EvalRecord

__all__ = ["ALIASES", "RECORD_FIELDS", "Cell", "ResultSet", "RunInfo", "normalize_label", "write_csv"]

#: columns of :meth:`ResultSet.to_records` (and of ``entrobust runs --csv``), in order
RECORD_FIELDS: tuple[str, ...] = (
    "run_id",
    "label",
    "preset",
    "dataset",
    "model",
    "seed",
    "evaluation",
    "suite",
    "setting",
    "row",
    "attack",
    "attack_name",
    "norm",
    "eps",
    "n",
    "clean_acc",
    "robust_acc",
    "accuracy",
    "source",
)

_EPS_TOL = 1e-6

#: a defense as tables and claims name it (a table column) → the run labels or preset names that
#: fill it, best first (:meth:`ResultSet.runs_of`); one table, so a table and a claim about the same
#: defense always read the same runs
ALIASES: dict[str, tuple[str, ...]] = {
    "Normal": ("Normal", "ru/normal", "Std", "Standard", "SGD", "atent/sgd", "minmax/std"),
    "EntM": ("EntM", "ru/entm"),
    "LS": ("LS", "ru/ls"),
    "ADP": ("ADP", "ru/adp"),
    "PAT": ("PAT", "ru/pat"),
    "TRADES": ("TRADES", "ru/trades", "atent/trades", "kanai/trades"),
    "PAT-EntM": ("PAT-EntM", "ru/pat-entm"),
    "PAT-LS": ("PAT-LS", "ru/pat-ls"),
    "SGD": ("SGD", "atent/sgd", "Normal", "ru/normal", "Std", "minmax/std"),
    "Entropy SGD": ("Entropy-SGD", "EntropySGD", "atent/entropy-sgd"),
    "ℓ∞ PGD-AT": ("PGD-AT", "ℓ∞ PGD-AT", "atent/pgd-at", "PGD-AT(E)", "atent/pgd-at-e", "AT", "kanai/at"),
    "MMA": ("MMA",),
    "MART": ("MART", "atent/mart"),
    "ℓ∞ ATENT": ("ℓ∞-ATENT", "linf-ATENT", "atent/linf-atent"),
    "ℓ2 ATENT": ("ℓ2-ATENT", "l2-ATENT", "atent/l2-atent"),
    "Std.": ("Std", "minmax/std", "Normal", "ru/normal", "SGD", "atent/sgd"),
    "Std.+L1": ("Std+L1", "minmax/std-l1"),
    "Std.+L2": ("Std+L2", "minmax/std-l2"),
    "Min-Max": ("Min-Max", "minmax/min-max"),
    "Adv.": ("Adv", "minmax/adv"),
    "AT": ("AT", "kanai/at"),
    "AT+EnSGD": ("AT+EnSGD", "kanai/at-ensgd"),
    "AWP": ("AWP", "kanai/awp"),
    "AWP+EnSGD": ("AWP+EnSGD", "kanai/awp-ensgd"),
}


def normalize_label(s: str) -> str:
    """Compare labels loosely: ``"ℓ∞-ATENT"`` ~ ``"linf atent"``, ``"Std."`` ~ ``"std"``."""
    t = s.lower().replace("ℓ", "l").replace("∞", "inf").replace("²", "2")
    return "".join(ch for ch in t if ch.isalnum() or ch == "+")


@dataclass(frozen=True)
class RunInfo:
    """One trained run as the report sees it."""

    id: str
    label: str
    preset: str | None
    dataset: str | None
    model: str | None
    seed: int | None
    adversarial: bool
    group: str  # hash of the config without the seed: runs of one group are seeds of one recipe
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "done"
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cell:
    """A table value: one number per run (seed), their mean ± std, and the rows behind them."""

    values: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    note: str = ""
    percent: bool = True
    eps: list[float] = field(default_factory=list)  # the ε of each value's row (accuracy cells)
    #: why an empty cell has no number when it is not simply "not run" (e.g. no proxy to transfer from)
    absent: str = ""

    @property
    def empty(self) -> bool:
        return not self.values

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def se(self) -> float:
        """Standard error of the mean: binomial for accuracies (pooled over seeds), else over seeds."""
        if not self.values:
            return math.nan
        if self.percent and self.n:
            p = min(max(self.mean, 0.0), 1.0)
            total = sum(self.n)
            return math.sqrt(p * (1 - p) / max(total, 1))
        return self.std / math.sqrt(len(self.values)) if len(self.values) > 1 else 0.0

    def text(self, digits: int = 1) -> str:
        if self.empty:
            return self.absent or "not run"
        scale = 100.0 if self.percent else 1.0
        d = digits if self.percent else max(digits, 4)
        s = f"{scale * self.mean:.{d}f}"
        if len(self.values) > 1:
            s += f" ± {scale * self.std:.{d}f}"
        return s + self.note

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": None if self.empty else self.mean,
            "std": None if self.empty else self.std,
            "values": self.values,
            "sources": self.sources,
            "runs": self.runs,
            "n": self.n,
            "eps": self.eps,
            "unit": "fraction" if self.percent else "value",
            "note": self.note,
            **({"absent": self.absent} if self.empty and self.absent else {}),
        }


@dataclass
class ResultSet:
    """Runs, evaluation rows, analyses and epochs of a study (see the module docstring)."""

    runs: list[RunInfo] = field(default_factory=list)
    evaluations: list[EvalRecord] = field(default_factory=list)  # the store's rows of these runs
    analyses: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    epochs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    study: list[str] = field(default_factory=list)  # run ids holding study-level analyses
    experiment: str | None = None
    #: per-example outcomes of an evaluation row (``Store.examples``), read when first asked for
    example_source: Callable[[int], list[dict[str, Any]]] | None = field(default=None, repr=False)
    _example_cache: dict[int, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def examples(self, evaluation_id: int | None) -> list[dict[str, Any]]:
        """Per-example outcomes (``idx``, ``success``, ...) of a stored evaluation row (its
        :attr:`EvalRecord.id`); [] if none are stored or the row was never written."""
        if self.example_source is None or evaluation_id is None:
            return []
        if evaluation_id not in self._example_cache:
            self._example_cache[evaluation_id] = list(self.example_source(evaluation_id))
        return self._example_cache[evaluation_id]

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_store(
        cls, store: Any, *, experiment: str | None = None, run_ids: Sequence[str] | None = None
    ) -> ResultSet:
        """Load the runs of ``experiment`` (default: every experiment in the store), or exactly
        ``run_ids`` (prefixes are accepted), with their rows."""
        from entrobust.errors import EntrobustError
        from entrobust.io import config_hash

        members = store.members(experiment)
        if experiment is not None and not members:
            known = ", ".join(store.experiments()) or "(none)"
            raise EntrobustError(f"no experiment {experiment!r} in {store.path}; experiments: {known}")
        labels: dict[str, str] = {}
        roles: dict[str, dict[str, Any]] = {}
        for m in members:
            labels.setdefault(m["run_id"], m["label"])
            roles.setdefault(m["run_id"], m["role"])
        all_runs = {r.id: r for r in store.runs()}
        if run_ids:
            chosen: list[str] = []
            for rid in run_ids:
                hits = [k for k in all_runs if k.startswith(rid)]
                if len(hits) != 1:
                    raise EntrobustError(
                        f"run id {rid!r} matches {len(hits)} runs in {store.path}"
                        + ("" if hits else "; see `entrobust runs`")
                    )
                chosen.append(hits[0])
        else:
            chosen = list(labels) if members else list(all_runs)
        out = cls(experiment=experiment, example_source=store.examples)
        for rid in chosen:
            r = all_runs[rid]
            role = roles.get(rid, {})
            if role.get("study") or r.config.get("kind") == "study-analyses":
                out.study.append(rid)
                continue
            cfg = dict(r.config)
            adv = str(((cfg.get("method") or {}).get("adversary") or {}).get("kind", "none")) != "none"
            out.runs.append(
                RunInfo(
                    id=rid,
                    label=labels.get(rid, r.name),
                    preset=r.preset,
                    dataset=r.dataset,
                    model=r.model,
                    seed=r.seed,
                    adversarial=bool(role.get("adversarial", adv)),
                    group=config_hash({k: v for k, v in cfg.items() if k != "seed"}),
                    config=cfg,
                    status=r.status,
                    summary=r.summary,
                )
            )
        keep = {r.id for r in out.runs} | set(out.study)
        out.evaluations.extend(e for e in store.evaluations() if e.run_id in keep)
        for a in store.analyses():
            if a["run_id"] in keep:
                out.analyses[(a["run_id"], a["kind"])] = (a["id"], a["result"])
        for r in out.runs:
            out.epochs[r.id] = store.epochs(r.id)
        return out

    # ----------------------------------------------------------------- export
    def to_records(self) -> list[dict[str, Any]]:
        """Every evaluation row of the set's runs as a flat dict with the columns of
        :data:`RECORD_FIELDS`: the run (id, label, preset, dataset, model, seed), the row
        (evaluation name, suite, ``setting`` white-box / black-box, row kind clean / attack /
        worst-case, attack label and registered name, norm, ε, n), the clean and robust accuracy as
        fractions in [0, 1], whether the robust accuracy is the attack's own (``standalone``) or the
        worst case so far (``cumulative``), and the store id of the row (``evaluation:17``).
        The one source of ``entrobust runs --csv`` and :meth:`to_pandas`."""
        runs = {r.id: r for r in self.runs}
        out = []
        for e in self.evaluations:
            r = runs.get(e.run_id)
            if r is None:  # rows of study-level runs
                continue
            out.append(
                {
                    "run_id": r.id,
                    "label": r.label,
                    "preset": r.preset,
                    "dataset": r.dataset,
                    "model": r.model,
                    "seed": r.seed,
                    "evaluation": e.evaluation,
                    "suite": e.suite_name,
                    "setting": e.setting,
                    "row": e.row,
                    "attack": e.attack,
                    "attack_name": e.attack_name,
                    "norm": e.norm,
                    "eps": float(e.eps),
                    "n": int(e.n),
                    "clean_acc": float(e.clean_acc),
                    "robust_acc": float(e.robust_acc),
                    "accuracy": "cumulative" if e.cumulative else "standalone",
                    "source": f"evaluation:{e.id}",
                }
            )
        return out

    def to_pandas(self) -> Any:
        """:meth:`to_records` as a ``pandas.DataFrame`` (pandas is optional: ``pip install pandas``).

        Raises:
            ImportError: pandas is not installed (the message says how to install it).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "ResultSet.to_pandas() needs pandas, which is not installed: pip install pandas "
                "(or use ResultSet.to_records() / entrobust runs --csv FILE without it)"
            ) from None
        return pd.DataFrame.from_records(self.to_records(), columns=list(RECORD_FIELDS))

    # ----------------------------------------------------------------- selection
    def datasets(self) -> list[str]:
        seen: list[str] = []
        for r in self.runs:
            if r.dataset and r.dataset not in seen:
                seen.append(r.dataset)
        return seen

    def labels(self, dataset: str | None = None) -> list[str]:
        seen: list[str] = []
        for r in self.runs:
            if (dataset is None or r.dataset == dataset) and r.label not in seen:
                seen.append(r.label)
        return seen

    def runs_for(self, names: str | Iterable[str], dataset: str | None = None) -> list[RunInfo]:
        """Runs whose label (or preset name) matches one of ``names`` (loosely, see
        :func:`normalize_label`), on ``dataset``; the first name that matches wins. When one label
        holds several recipes (config groups), the one with the most runs is kept."""
        wanted = [names] if isinstance(names, str) else list(names)
        for name in wanted:
            key = normalize_label(name)
            hits = [
                r
                for r in self.runs
                if (dataset is None or r.dataset == dataset)
                and (
                    normalize_label(r.label) == key
                    or (r.preset is not None and normalize_label(r.preset) == key)
                )
            ]
            if hits:
                groups: dict[str, list[RunInfo]] = {}
                for r in hits:
                    groups.setdefault(r.group, []).append(r)
                order = {r.id: i for i, r in enumerate(self.runs)}  # runs come oldest first
                return max(groups.values(), key=lambda g: (len(g), max(order[r.id] for r in g)))
        return []

    def runs_of(self, column: str, dataset: str | None = None) -> list[RunInfo]:
        """The runs that fill defense ``column`` (a key of :data:`ALIASES`, else a label) on
        ``dataset``: :meth:`runs_for` of its labels."""
        return self.runs_for(ALIASES.get(column, (column,)), dataset)

    def rows(
        self, run_id: str, *, transfer: bool | None = False, norm: str | None = None
    ) -> list[EvalRecord]:
        return [
            e
            for e in self.evaluations
            if e.run_id == run_id
            and (transfer is None or e.transfer == transfer)
            and (norm is None or e.norm == norm)
        ]

    def analysis(self, run_id: str, kind: str) -> tuple[int, dict[str, Any]] | None:
        return self.analyses.get((run_id, kind))

    def study_analysis(self, kind: str) -> tuple[int, dict[str, Any]] | None:
        for rid in self.study:
            got = self.analyses.get((rid, kind))
            if got is not None:
                return got
        return None

    # ----------------------------------------------------------------- cells
    def cell(
        self, runs: Sequence[RunInfo], pick: Callable[..., EvalRecord | None], *, note: str = ""
    ) -> Cell:
        """One number per run chosen by ``pick`` (an evaluation row or None) → a :class:`Cell`."""
        c = Cell(note=note)
        for r in runs:
            row = pick(r)
            if row is None:
                continue
            c.values.append(float(row.robust_acc))
            c.sources.append(f"evaluation:{row.id}")
            c.runs.append(r.id)
            c.n.append(int(row.n))
            c.eps.append(float(row.eps))
        return c

    def analysis_cell(self, runs: Sequence[RunInfo], kind: str, get: Callable[..., Any]) -> Cell:
        """One number per run from analysis ``kind`` (``get(result)``; None/NaN = missing)."""
        c = Cell(percent=False)
        for r in runs:
            got = self.analysis(r.id, kind)
            if got is None:
                continue
            try:
                v = get(got[1])
            except (KeyError, TypeError, IndexError, StopIteration):
                v = None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            c.values.append(float(v))
            c.sources.append(f"analysis:{got[0]}")
            c.runs.append(r.id)
        return c

    # ----------------------------------------------------------------- common picks
    def clean_row(self, run: RunInfo) -> EvalRecord | None:
        """The clean accuracy row with the most examples (white-box evaluations)."""
        rows = [e for e in self.rows(run.id) if e.row == "clean"]
        return max(rows, key=lambda e: (e.n, e.id)) if rows else None

    def labelled_row(
        self, run: RunInfo, label: str, *, transfer: bool = False, eps: float | None = None
    ) -> EvalRecord | None:
        """The attack row labelled exactly ``label`` (e.g. ``PGD10-32``), standalone accuracy
        preferred, the most examples next."""
        rows = [
            e
            for e in self.rows(run.id, transfer=transfer)
            if e.row == "attack"
            and (e.attack == label or e.attack_name == label)
            and (eps is None or abs(e.eps - eps) < _EPS_TOL)
        ]
        return _best(rows)

    def attack_row(
        self,
        run: RunInfo,
        attacks: Sequence[str],
        eps: float,
        *,
        norm: str = "linf",
        transfer: bool = False,
        where: Callable[[EvalRecord], bool] | None = None,
    ) -> EvalRecord | None:
        """An attack row of one of ``attacks`` (registered names, e.g. ``pgd``) at ``eps``."""
        names = {a.lower() for a in attacks}
        rows = [
            e
            for e in self.rows(run.id, transfer=transfer, norm=norm)
            if e.row == "attack"
            and abs(e.eps - eps) < _EPS_TOL
            and e.attack_name.lower() in names
            and (where is None or where(e))
        ]
        return _best(rows)

    def worst_row(
        self, run: RunInfo, eps: float, *, norm: str = "linf", suites: Sequence[str] | None = None
    ) -> EvalRecord | None:
        """The lowest worst-case row at ``eps`` (optionally of evaluations whose suite is in ``suites``)."""
        rows = [
            e
            for e in self.rows(run.id, norm=norm)
            if e.row == "worst-case"
            and abs(e.eps - eps) < _EPS_TOL
            and (suites is None or any(s in e.suite_name for s in suites))
        ]
        return min(rows, key=lambda e: (e.robust_acc, -e.n, e.id)) if rows else None

    def strongest_row(
        self, run: RunInfo, eps: float, *, norm: str = "linf", transfer: bool = False
    ) -> EvalRecord | None:
        """The lowest robust accuracy of any white-box (or transfer) row at ``eps``: the strongest
        attack the study ran there (worst-case rows included)."""
        rows = [
            e
            for e in self.rows(run.id, transfer=transfer, norm=norm)
            if e.row != "clean" and abs(e.eps - eps) < _EPS_TOL
        ]
        return min(rows, key=lambda e: (e.robust_acc, -e.n, e.id)) if rows else None

    def eps_values(
        self, runs: Sequence[RunInfo], *, norm: str = "linf", transfer: bool = False
    ) -> list[float]:
        """ε values (> 0) at which every run in ``runs`` has a row."""
        common: set[float] | None = None
        for r in runs:
            mine = {
                round(e.eps, 9)
                for e in self.rows(r.id, transfer=transfer, norm=norm)
                if e.row != "clean" and e.eps > 0
            }
            common = mine if common is None else common & mine
        return sorted(common or set())


def write_csv(records: Iterable[dict[str, Any]], file: IO[str]) -> int:
    """Write ``records`` (:meth:`ResultSet.to_records`) as CSV with a header of
    :data:`RECORD_FIELDS`; floats keep full precision (``repr``), None is an empty field.
    Returns the number of data lines."""
    writer = csv.DictWriter(file, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
    writer.writeheader()
    k = 0
    for rec in records:
        writer.writerow({f: ("" if rec.get(f) is None else rec.get(f)) for f in RECORD_FIELDS})
        k += 1
    return k


def _best(rows: list[EvalRecord]) -> EvalRecord | None:
    """Prefer standalone rows over cumulative ones, then more examples, then the newest."""
    if not rows:
        return None
    return max(rows, key=lambda e: (not e.cumulative, e.n, e.id))
