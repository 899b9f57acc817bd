"""The papers' tables in their own layouts, filled from stored results.

======================  ==============================================================================
name                    layout (source)
======================  ==============================================================================
``ru-table1``           attacks × defenses, Normal | without AT (EntM, LS, ADP) | with AT (PAT, TRADES,
                        PAT-EntM, PAT-LS); white-box rows then black-box (transfer) rows; the rows are
                        RU Table 1's on colour images and RU Table 9's on MNIST-like data (Ju et al. 2020)
``atent-table2``        defenses × (benign, ℓ∞ PGD-20, ℓ∞ CW) at ε = 0.3 (Jagatap et al. 2021, Table 2)
``minmax-table1``       attacks (no attack, FGSM, PGD, CW, MIA, L2BIA, LinfBIA) × Std, Std+L1, Std+L2,
                        Min-Max (Shen, Chen & Wang, Table 1)
``minmax-table3``       fuzziness of the first conv layer: Standard / Adv. / Min-Max × datasets (Table 3)
``kanai-table1``        (dataset, evaluation, model) × AT, AT+EnSGD, AWP, AWP+EnSGD; AutoAttack or PGD
                        robust accuracy (Kanai et al., Table 1)
``geometry``            RU Table 4 rows (margin, ‖∇ₓf‖₂, normalized margin, Q_f, correlation) per model
======================  ==============================================================================

Cells hold mean ± std over seeds and the ids of the rows behind them. Rows and columns with no
stored number at all are left out, and one note line names them (a demo-scale study shows what it
ran); a single cell without data in a row that has some says "not run". Every row shows the ε
and the number of test examples n of its cells, and an attack row
named in RU notation also says plainly what ran (``PGD10-48`` = "PGD, 10 steps, ε = 48/255"). A
row that exists twice, white-box and black-box, is one row *key* per setting with the same label
and an explicit ``setting`` (``report.json`` gives it as a field). A cell filled by a substitute
for the paper's exact attack carries a mark explained in the table's notes (e.g. PGD-20 with 1
restart standing in for RU's 5 restarts). Robust accuracies that a failed / warned stored audit
(⚑) or a stronger stored attack at the same ε (‼ "overstated") contradicts are marked too
(:mod:`entrobust.report.flags`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from entrobust.record import EvalRecord
from entrobust.registry import Registry
from entrobust.report.results import Cell, ResultSet, RunInfo

__all__ = ["TABLES", "Table", "TableSpec", "build_tables", "eps_text", "plain_attack_name"]


def eps_text(eps: float) -> str:
    """ε as people write it: ``0.3``, ``2`` (two decimals or fewer), else ``k/255`` (``32/255``)."""
    if abs(eps - round(eps, 2)) < 1e-9:
        return f"{eps:g}"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


_RU_NAME = re.compile(r"(FGSM)_(\d+(?:\.\d+)?)|(PGD|CW)(\d+)-(\d+(?:\.\d+)?)")


def plain_attack_name(label: str) -> str:
    """What an RU-notation attack label means, in words: ``PGD10-48`` → ``PGD, 10 steps, ε = 48/255``,
    ``CW20-8`` → ``CW loss by PGD, 20 steps, ε = 8/255``, ``FGSM_32`` → ``FGSM, ε = 32/255``; ""
    for other labels (they already say what they are)."""
    m = _RU_NAME.fullmatch(label.strip())
    if m is None:
        return ""
    if m.group(1):
        return f"FGSM, ε = {m.group(2)}/255"
    what = "PGD" if m.group(3) == "PGD" else "CW loss by PGD"
    return f"{what}, {m.group(4)} steps, ε = {m.group(5)}/255"


@dataclass
class Table:
    """A rendered-to-be table: rows × columns of :class:`Cell` plus layout and provenance."""

    name: str
    title: str
    source: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    column_groups: list[tuple[str, int]] = field(default_factory=list)
    row_groups: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dataset: str | None = None
    corner: str = ""
    #: row key → the text shown (default: the key); keys stay unique when labels repeat
    row_labels: dict[str, str] = field(default_factory=dict)
    #: row key → ``white-box`` / ``black-box`` for rows of attacks
    row_settings: dict[str, str] = field(default_factory=dict)

    def cell(self, row: str, col: str) -> Cell:
        return self.cells.get((row, col), Cell())

    def label(self, row: str) -> str:
        """The text shown for row ``row``."""
        return self.row_labels.get(row, row)

    def plain(self, row: str) -> str:
        """What the row's attack is, in words ("" when the label says it already)."""
        return plain_attack_name(self.label(row))

    def _row_cells(self, row: str) -> list[Cell]:
        return [c for c in (self.cell(row, col) for col in self.columns) if not c.empty]

    def eps_text(self, row: str) -> str:
        """The ε of the row's attacked numbers (``0`` for a row of clean accuracies only, ``–`` where
        the numbers are no accuracies; several joined by ``, ``)."""
        values = sorted({round(e, 9) for c in self._row_cells(row) if c.percent for e in c.eps})
        attacked = [e for e in values if e > 0] or values
        return ", ".join(eps_text(e) for e in attacked) or "–"

    def n_text(self, row: str) -> str:
        """The number of test examples behind the row's numbers (``100, 200`` when they differ)."""
        values = sorted({k for c in self._row_cells(row) if c.percent for k in c.n if k > 0})
        return ", ".join(str(k) for k in values) or "–"

    @property
    def filled(self) -> int:
        return sum(1 for c in self.cells.values() if not c.empty)

    def prune(self) -> tuple[list[str], list[str]]:
        """Drop the rows and columns with no stored number at all; return the labels of what was
        dropped (rows, columns), so the table shows what ran and one line can name the rest.
        Row and column groups shrink with their members; an emptied group goes."""
        empty_rows = [r for r in self.rows if all(self.cell(r, c).empty for c in self.columns)]
        empty_cols = [c for c in self.columns if all(self.cell(r, c).empty for r in self.rows)]
        if not empty_rows and not empty_cols:
            return [], []
        # a label shown twice (white-box and black-box) is named with its setting
        twice = {lab for lab in map(self.label, self.rows) if [*map(self.label, self.rows)].count(lab) > 1}
        named = [
            f"{self.row_settings[r]} {self.label(r)}"
            if self.label(r) in twice and r in self.row_settings
            else self.label(r)
            for r in empty_rows
        ]
        self.row_groups = _shrink(self.row_groups, self.rows, set(empty_rows))
        self.column_groups = _shrink(self.column_groups, self.columns, set(empty_cols))
        self.rows = [r for r in self.rows if r not in empty_rows]
        self.columns = [c for c in self.columns if c not in empty_cols]
        self.cells = {k: v for k, v in self.cells.items() if k[0] in self.rows and k[1] in self.columns}
        return named, empty_cols

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "source": self.source,
            "dataset": self.dataset,
            "rows": [
                {
                    "row": self.label(r),
                    "setting": self.row_settings.get(r),
                    "attack": self.plain(r) or None,
                    "eps": self.eps_text(r),
                    "n": self.n_text(r),
                }
                for r in self.rows
            ],
            "columns": self.columns,
            "cells": [
                {"row": self.label(r), "column": c, "setting": self.row_settings.get(r), **cell.to_dict()}
                for (r, c), cell in self.cells.items()
            ],
            "notes": self.notes,
        }


def _shrink(groups: list[tuple[str, int]], members: list[str], gone: set[str]) -> list[tuple[str, int]]:
    """``groups`` (name, span over ``members`` in order) without the members in ``gone``."""
    out, i = [], 0
    for name, span in groups:
        kept = sum(1 for m in members[i : i + span] if m not in gone)
        i += span
        if kept:
            out.append((name, kept))
    return out


#: what names the rows and columns a table leaves out (a study at a smaller scale than the papers')
NOT_RUN_NOTE = (
    "Not run in these results, so not shown: {what}. The reproduction scale fills every cell ({how})."
)
REPRODUCE_HOW = "docs/experiments.md, “Reproduction scale”"


TableBuilder = Callable[[ResultSet], list[Table]]


@dataclass(frozen=True)
class TableSpec:
    name: str
    build: TableBuilder
    description: str


TABLES: Registry[TableSpec] = Registry("table")


def _register(name: str, description: str) -> Callable[[TableBuilder], TableBuilder]:
    def add(fn: TableBuilder) -> TableBuilder:
        TABLES.register(name, TableSpec(name, fn, description), help=description)
        return fn

    return add


def build_tables(rs: ResultSet, names: Sequence[str] = ()) -> list[Table]:
    """Build the named tables (default: all) and keep those with at least one filled cell.

    Robust-accuracy cells of a model whose stored audit failed or warned, or that a stronger stored
    attack at the same ε contradicts, are marked with a footnote (:mod:`entrobust.report.flags`)."""
    from entrobust.report.flags import flag_table

    out: list[Table] = []
    for name in names or TABLES.names():
        for t in TABLES.get(name).build(rs):
            if t.filled:
                rows, cols = t.prune()
                what = "; ".join(
                    part
                    for part in (
                        f"rows {', '.join(rows)}" if rows else "",
                        f"columns {', '.join(cols)}" if cols else "",
                    )
                    if part
                )
                if what:
                    t.notes.append(NOT_RUN_NOTE.format(what=what, how=REPRODUCE_HOW))
                flag_table(rs, t)
                out.append(t)
    return out


# --------------------------------------------------------------------------------- columns
def _runs(rs: ResultSet, column: str, dataset: str | None) -> list[RunInfo]:
    return rs.runs_of(column, dataset)


def _family(dataset: str | None) -> str | None:
    from entrobust.evaluation import dataset_family

    return dataset_family(dataset)


def _main_eps(dataset: str | None) -> float:
    """The ℓ∞ ε a table reads when the paper's ε is one per dataset: the dataset's own default
    threat (:func:`entrobust.data.default_threat`), the ε training, the audit and the study
    analyses use too (0.3 on MNIST, 0.1 on 8×8 digits, 8/255 on colour images)."""
    from entrobust.data.info import default_threat

    return default_threat(dataset)[1]


def _steps(n: int) -> Callable[[EvalRecord], bool]:
    """Row filter: the attack ran with ``steps = n``."""
    return lambda e: e.kwargs.get("steps") == n


# --------------------------------------------------------------------------------- RU Table 1
RU_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("Normal",)),
    ("Without AT", ("EntM", "LS", "ADP")),
    ("With AT", ("PAT", "TRADES", "PAT-EntM", "PAT-LS")),
)


#: the models RU crafts black-box examples on (§5.1: Normal for defenses without AT, PAT with AT)
RU_PROXIES: tuple[str, ...] = ("Normal", "PAT")
#: an empty black-box cell of a proxy column with a single run: nothing else to transfer from
RU_NO_PROXY = "no proxy (1 run)"


def _ru_rows(dataset: str | None) -> tuple[list[str], list[str], str]:
    from entrobust.evaluation.suites import RU_CIFAR_ROWS, RU_MNIST_ROWS

    if _family(dataset) == "mnist":
        return list(RU_MNIST_ROWS), ["PGD10-32", "PGD10-48", "PGD20-32", "PGD20-48"], "Table 9 (MNIST)"
    return (
        list(RU_CIFAR_ROWS),
        ["PGD10-4", "PGD10-8", "PGD20-4", "PGD20-8"],
        "Tables 1-3 (CIFAR-10/100, SVHN)",
    )


@_register("ru-table1", "RU Table 1/9: attacks x defenses without / with AT, white- and black-box")
def ru_table1(rs: ResultSet) -> list[Table]:
    tables = []
    for ds in rs.datasets():
        white, black, which = _ru_rows(ds)
        columns = [c for _, cols in RU_GROUPS for c in cols]
        keys = {r: f"{r} [black-box]" for r in black}  # a key per setting; both show the same label
        rows = ["Clean", *white, *keys.values()]
        t = Table(
            "ru-table1",
            f"RU Table 1 layout — accuracy (%) under attacks on {ds}",
            f"Ju et al. 2020 (RU), {which}; black-box rows crafted on a surrogate "
            "(Normal without AT, PAT with AT)",
            rows,
            columns,
            column_groups=[(g, len(cols)) for g, cols in RU_GROUPS],
            row_groups=[("", 1), ("White-Box", len(white)), ("Black-Box", len(black))],
            dataset=ds,
            corner="Attacks",
            row_labels={k: r for r, k in keys.items()},
            row_settings={**{r: "white-box" for r in white}, **{k: "black-box" for k in keys.values()}},
        )
        restarts: dict[str, set[str]] = {}
        for col in columns:
            runs = _runs(rs, col, ds)
            t.cells[("Clean", col)] = rs.cell(runs, rs.clean_row)
            for label in white:
                c = rs.cell(runs, lambda r, lab=label: rs.labelled_row(r, lab))
                t.cells[(label, col)] = _mark_changed(rs, runs, c, label, restarts)
            for label in black:
                c = rs.cell(runs, lambda r, lab=label: rs.labelled_row(r, lab, transfer=True))
                if c.empty and col in RU_PROXIES and len(runs) == 1:
                    c.absent = RU_NO_PROXY
                t.cells[(keys[label], col)] = _mark_changed(rs, runs, c, label, restarts, transfer=True)
        by_args: dict[str, list[str]] = {}
        for label, kws in restarts.items():
            by_args.setdefault(", ".join(sorted(kws)), []).append(label)
        for args, labels in sorted(by_args.items()):
            rows_txt = ", ".join(dict.fromkeys(labels))
            t.notes.append(f"* run with {args} instead of the paper's setting (RU: 5 restarts): {rows_txt}")
        t.notes.append(
            "White-box cells are each attack's own accuracy (independent rows); 'not run' = no stored row."
        )
        if any(t.cell(k, c).absent == RU_NO_PROXY for k in keys.values() for c in RU_PROXIES):
            t.notes.append(
                f"'{RU_NO_PROXY}': the black-box rows of the proxies themselves (Normal, PAT) transfer from "
                "another run of the same recipe (RU §5.1: a proxy trained on identical data); with one "
                "seed there is none. The reproduction scale's seeds fill them."
            )
        tables.append(t)
    return tables


def _mark_changed(
    rs: ResultSet,
    runs: list[RunInfo],
    c: Cell,
    label: str,
    notes: dict[str, set[str]],
    transfer: bool = False,
) -> Cell:
    """Mark a RU-named cell whose attack ran with non-default arguments (e.g. fewer restarts)."""
    for r in runs:
        row = rs.labelled_row(r, label, transfer=transfer)
        if row is not None and row.kwargs:
            changed = {f"{k}={v}" for k, v in row.kwargs.items() if k not in ("seed",)}
            if changed:
                notes.setdefault(label, set()).update(changed)
                c.note = "*"
    if c.empty:
        c.note = ""
    return c


# --------------------------------------------------------------------------------- ATENT Table 2
ATENT_ROWS: tuple[str, ...] = ("SGD", "Entropy SGD", "ℓ∞ PGD-AT", "TRADES", "MMA", "MART", "ℓ∞ ATENT")


@_register("atent-table2", "ATENT Table 2: defenses x (benign, linf PGD-20, linf CW) at eps 0.3")
def atent_table2(rs: ResultSet) -> list[Table]:
    tables = []
    for ds in rs.datasets():
        eps = _main_eps(ds)
        cols = ["Benign", f"ℓ∞ PGD-20 ε={eps:.3g}", f"ℓ∞ CW ε={eps:.3g}"]
        t = Table(
            "atent-table2",
            f"ATENT Table 2 layout — robust accuracy (%) on {ds}",
            "Jagatap et al. 2021 (ATENT), Table 2 (MNIST, ℓ∞ ε = 0.3; PGD-20 step 0.01)",
            list(ATENT_ROWS),
            cols,
            dataset=ds,
            corner="Defense ↓ / Attack →",
        )
        subs = False
        for row in ATENT_ROWS:
            runs = _runs(rs, row, ds)
            t.cells[(row, cols[0])] = rs.cell(runs, rs.clean_row)
            exact = rs.cell(runs, lambda r, e=eps: rs.attack_row(r, ["pgd"], e, where=_steps(20)))
            if exact.empty:
                exact = rs.cell(runs, lambda r, e=eps: rs.attack_row(r, ["pgd"], e), note="†")
                subs = subs or not exact.empty
            t.cells[(row, cols[1])] = exact
            t.cells[(row, cols[2])] = rs.cell(runs, lambda r, e=eps: rs.attack_row(r, ["cw-pgd"], e))
        if subs:
            t.notes.append("† PGD with another number of steps than the paper's 20 (see the cell's sources)")
        t.notes.append("CW = the ε-bounded CW-margin loss optimized by PGD (RU's and ATENT's ℓ∞ CW reading).")
        tables.append(t)
    return tables


# --------------------------------------------------------------------------------- Min-Max
MINMAX_COLS: tuple[str, ...] = ("Std.", "Std.+L1", "Std.+L2", "Min-Max")
MINMAX_ROWS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("FGSM", "FGSM", ("fgsm",)),
    ("PGD", "PGD", ("pgd",)),
    ("CW", "CW", ("cw-pgd",)),
    ("MIA", "MIA", ("mim",)),
    ("L2BIA", "L2BIA", ("bim",)),
    ("LinfBIA", "LinfBIA", ("bim",)),
)


@_register("minmax-table1", "Min-Max Table 1: attacks x Std, Std+L1, Std+L2, Min-Max (accuracy at eps 0.3)")
def minmax_table1(rs: ResultSet) -> list[Table]:
    tables = []
    for ds in rs.datasets():
        eps = 0.3 if _family(ds) == "mnist" else 0.03
        rows = ["No attack", *[r for r, _, _ in MINMAX_ROWS]]
        t = Table(
            "minmax-table1",
            f"Min-Max Table 1 layout — accuracy (%) on {ds}, ε = {eps:g}",
            "Shen, Chen & Wang, Table 1 (MNIST, ε = 0.3) / Table 2 (CIFAR-10, ε = 0.03); suite 'minmax'",
            rows,
            list(MINMAX_COLS),
            dataset=ds,
            corner="Attack",
        )
        subs = False
        for col in MINMAX_COLS:
            runs = _runs(rs, col, ds)
            t.cells[("No attack", col)] = rs.cell(runs, rs.clean_row)
            for row, label, names in MINMAX_ROWS:
                norm = "l2" if row == "L2BIA" else "linf"

                def exact(
                    r: RunInfo, label: str = label, norm: str = norm, eps: float = eps
                ) -> EvalRecord | None:
                    hits = [
                        e
                        for e in rs.rows(r.id, norm=norm)
                        if e.row == "attack"
                        and e.attack == label
                        and "minmax" in e.suite_name
                        and abs(e.eps - eps) < 1e-6
                    ]
                    return max(hits, key=lambda e: (e.n, e.id)) if hits else None

                c = rs.cell(runs, exact)
                if c.empty and row in ("FGSM", "PGD", "CW"):
                    c = rs.cell(
                        runs,
                        lambda r, names=names, norm=norm, e=eps: rs.attack_row(r, names, e, norm=norm),
                        note="†",
                    )
                    subs = subs or not c.empty
                t.cells[(row, col)] = c
        if subs:
            t.notes.append(
                "† the same attack family from another suite (other steps / step size) — "
                "see the cell's sources"
            )
        tables.append(t)
    return tables


@_register("minmax-table3", "Min-Max Table 3: fuzziness of the first conv layer, models x datasets")
def minmax_table3(rs: ResultSet) -> list[Table]:
    datasets = rs.datasets()
    rows = (("Standard model", "Std."), ("Adv. model", "Adv."), ("Min-Max model", "Min-Max"))
    t = Table(
        "minmax-table3",
        "Min-Max Table 3 layout — fuzziness of the first convolution layer's weights",
        "Shen, Chen & Wang, Table 3 (eq. 14, natural log); analysis 'fuzziness'",
        [r for r, _ in rows],
        datasets,
        corner="Model",
    )
    for row, col_alias in rows:
        for ds in datasets:
            runs = _runs(rs, col_alias, ds)
            if col_alias == "Adv." and not runs:
                runs = rs.runs_for(("PAT", "PGD-AT", "AT", "Adv"), ds)
            t.cells[(row, ds)] = rs.analysis_cell(runs, "fuzziness", lambda a: a["first"])
    t.notes.append("Adv. model: the Min-Max paper's alternating clean/PGD model, else PAT / PGD-AT / AT.")
    return [t]


# --------------------------------------------------------------------------------- Kanai Table 1
KANAI_COLS: tuple[str, ...] = ("AT", "AT+EnSGD", "AWP", "AWP+EnSGD")


@_register("kanai-table1", "Kanai Table 1: AutoAttack / PGD robust accuracy of AT, AT+EnSGD, AWP, AWP+EnSGD")
def kanai_table1(rs: ResultSet) -> list[Table]:
    rows: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    for ds in rs.datasets():
        eps = _main_eps(ds)
        models = sorted({r.model or "?" for c in KANAI_COLS for r in _runs(rs, c, ds)})
        for m in models:
            aa_row, pgd_row = f"{ds} (AA, {m})", f"{ds} (PGD, {m})"
            rows += [aa_row, pgd_row]
            for col in KANAI_COLS:
                runs = [r for r in _runs(rs, col, ds) if (r.model or "?") == m]
                cells[(aa_row, col)] = rs.cell(
                    runs, lambda r, e=eps: rs.worst_row(r, e, suites=("autoattack",))
                )
                cells[(pgd_row, col)] = rs.cell(
                    runs, lambda r, e=eps: rs.attack_row(r, ["pgd"], e, where=_steps(20))
                )
    eps_all = ", ".join(dict.fromkeys(f"{ds}: ℓ∞ ε = {eps_text(_main_eps(ds))}" for ds in rs.datasets()))
    t = Table(
        "kanai-table1",
        f"Kanai Table 1 layout — robust accuracy (%) against AutoAttack (AA) and PGD-20 ({eps_all})",
        "Kanai et al., Table 1 (CIFAR-10 AA; SVHN / CIFAR-100 PGD); mean ± std over seeds",
        rows,
        list(KANAI_COLS),
        cells,
        corner="Dataset (attack, model)",
    )
    t.notes.append("AA = worst case over the AutoAttack standard cascade (APGD-CE, APGD-T, FAB-T, Square).")
    return [t]


def _analysis_n(rs: ResultSet, run_id: str, kind: str) -> int:
    got = rs.analysis(run_id, kind)
    n = (got[1] if got else {}).get("n")
    return int(n) if isinstance(n, int | float) and not math.isnan(n) else 0


# --------------------------------------------------------------------------------- geometry
GEOMETRY_ROWS: tuple[tuple[str, str], ...] = (
    ("margin", "M_f,x"),
    ("jacobian_norm", "‖∇ₓf(x)‖₂"),
    ("normalized_margin", "M_f,x / ‖∇ₓf(x)‖₂"),
    ("adv_accuracy", "Accuracy (ℓ2 PGD20-0.5)"),
    ("nonlinearity", "Q_f(x_adv, x)"),
    ("correlation", "Correlation(M/‖∇f‖, ‖x_adv − x‖₂)"),
)


@_register("geometry", "RU Table 4: margin, Jacobian norm, normalized margin, Q_f, correlation per model")
def geometry_table(rs: ResultSet) -> list[Table]:
    tables = []
    for ds in rs.datasets():
        labels = [
            lab for lab in rs.labels(ds) if any(rs.analysis(r.id, "geometry") for r in rs.runs_for(lab, ds))
        ]
        if not labels:
            continue
        t = Table(
            "geometry",
            f"RU Table 4 layout — margins, Jacobian and non-linearity on {ds}",
            "Ju et al. 2020 (RU), Table 4 (means over test examples); analysis 'geometry'",
            [name for _, name in GEOMETRY_ROWS],
            labels,
            dataset=ds,
            corner="Metric",
        )
        for key, name in GEOMETRY_ROWS:
            for lab in labels:
                c = rs.analysis_cell(rs.runs_for(lab, ds), "geometry", lambda a, key=key: a[key])
                c.percent = key == "adv_accuracy"  # an accuracy: in % like every other one
                if c.percent:
                    c.eps = [0.5] * len(c.values)  # ℓ2 PGD20-0.5
                    ns = [_analysis_n(rs, run, "geometry") for run in c.runs]
                    c.n = ns if all(ns) else []
                t.cells[(name, lab)] = c
        tables.append(t)
    return tables
