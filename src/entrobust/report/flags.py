"""Flags on robust-accuracy cells: numbers a stored audit or a stronger stored attack contradicts.

A robustness table must never show a clean-looking robust accuracy for a model whose evidence says
otherwise (issue 16.4, 17.3). :func:`flag_table` marks, in place, every attacked accuracy cell
(ε > 0) of a table:

* ``⚑`` — the run's stored gradient-obfuscation audit (analysis ``audit``) failed or warned; the
  footnote names the run, the audit's threat and the checks that did not pass.
* ``‼`` — a stronger white-box attack stored for the same run at the same ε and norm (e.g. the
  AutoAttack worst case) leaves clearly fewer points robust: the row's number overstates
  robustness (Croce & Hein 2020). "Clearly": the gap exceeds :data:`OVERSTATED_ABS` (3 pp), 20 %
  of the row's own accuracy, and twice the standard error of the difference of two binomial
  proportions on the two rows' examples (the rows may use different test subsets).

The marks are appended to :attr:`Cell.note`, so Markdown, HTML and ``report.json`` all carry them.
"""

from __future__ import annotations

import math
from typing import Any

from entrobust.record import EvalRecord
from entrobust.report.results import ResultSet, RunInfo

__all__ = ["AUDIT_MARK", "OVERSTATED_MARK", "audit_problems", "flag_table", "stronger_row"]

AUDIT_MARK = "⚑"
OVERSTATED_MARK = "‼"
#: the smallest gap (fraction) between a row and a stronger stored attack that marks the row
OVERSTATED_ABS = 0.03
#: ... and the smallest gap relative to the row's own accuracy
OVERSTATED_REL = 0.2


def audit_problems(rs: ResultSet, run_id: str) -> dict[str, Any] | None:
    """The stored audit of ``run_id`` when it failed or warned: status, threat, and the failing /
    warning checks; None when there is no audit or it passed."""
    got = rs.analysis(run_id, "audit")
    if got is None:
        return None
    aid, a = got
    status = str(a.get("status", "pass"))
    if status not in ("fail", "warn"):
        return None
    checks = [c for c in a.get("checks", []) if c.get("status") in ("fail", "warn")]
    return {
        "status": status,
        "threat": a.get("threat") or {},
        "fail": [str(c["name"]) for c in checks if c.get("status") == "fail"],
        "warn": [str(c["name"]) for c in checks if c.get("status") == "warn"],
        "source": f"analysis:{aid}",
    }


def _se(p: float, n: int) -> float:
    p = min(max(p, 0.0), 1.0)
    return p * (1 - p) / max(n, 1)


def stronger_row(rs: ResultSet, run: RunInfo, row: EvalRecord) -> EvalRecord | None:
    """The strongest white-box row of ``run`` at ``row``'s ε and norm when it contradicts ``row``
    (see the module docstring), else None."""
    if row.transfer or row.eps <= 0:
        return None
    best = rs.strongest_row(run, row.eps, norm=row.norm)
    if best is None or best.id == row.id:
        return None
    gap = row.robust_acc - best.robust_acc
    noise = 2 * math.sqrt(_se(row.robust_acc, row.n) + _se(best.robust_acc, best.n))
    if gap > max(OVERSTATED_ABS, OVERSTATED_REL * row.robust_acc, noise) + 1e-9:
        return best
    return None


def row_name(row: EvalRecord) -> str:
    """How a stored row is named in a footnote: ``AutoAttack`` for an AutoAttack worst case, the
    attack label otherwise (``worst case of <evaluation>`` for other worst-case rows)."""
    if row.row == "worst-case":
        return "AutoAttack" if "autoattack" in row.suite_name else f"worst case of {row.evaluation}"
    return row.attack


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def flag_table(rs: ResultSet, table: Any) -> None:
    """Mark ``table``'s attacked accuracy cells (see the module docstring) and add footnotes."""
    by_id = {e.id: e for e in rs.evaluations}
    runs = {r.id: r for r in rs.runs}
    audit_notes: dict[str, str] = {}
    over_notes: list[str] = []
    for (row_key, col), cell in table.cells.items():
        if not cell.percent or cell.empty:
            continue
        marks = ""
        for src, run_id in zip(cell.sources, cell.runs, strict=False):
            if not src.startswith("evaluation:"):
                continue
            row = by_id.get(int(src.split(":", 1)[1]))
            run = runs.get(run_id)
            if row is None or run is None or row.eps <= 0:
                continue
            bad = audit_problems(rs, run_id)
            if bad is not None:
                if AUDIT_MARK not in marks:
                    marks += AUDIT_MARK
                if run_id not in audit_notes:
                    th = bad["threat"]
                    which = "; ".join(
                        f"{', '.join(names)} ({what})"
                        for names, what in ((bad["fail"], "fail"), (bad["warn"], "warn"))
                        if names
                    )
                    audit_notes[run_id] = (
                        f"{AUDIT_MARK} {run.label} (seed {run.seed}): stored audit {bad['status'].upper()} "
                        f"at {th.get('norm', '?')} ε = {_eps(th.get('eps'))} — {which}; its robust "
                        f"accuracies may be overstated ({bad['source']})"
                    )
            strong = stronger_row(rs, run, row)
            if strong is not None:
                if OVERSTATED_MARK not in marks:
                    marks += OVERSTATED_MARK
                over_notes.append(
                    f"{OVERSTATED_MARK} {table.label(row_key)} / {col}: overstated — {row.attack} says "
                    f"{_pct(row.robust_acc)} (n = {row.n}) where {row_name(strong)} says "
                    f"{_pct(strong.robust_acc)} (n = {strong.n}) at {row.norm} ε = {_eps(row.eps)} "
                    f"for {run.label} (evaluation:{strong.id})"
                )
        if marks:
            cell.note = cell.note + marks
    table.notes.extend(audit_notes.values())
    table.notes.extend(dict.fromkeys(over_notes))


def _eps(v: Any) -> str:
    from entrobust.report.tables import eps_text

    try:
        return eps_text(float(v))
    except (TypeError, ValueError):
        return "?"
