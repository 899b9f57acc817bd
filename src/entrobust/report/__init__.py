# ruff: noqa: F401
"""Reports: the papers' tables, figures, audits and the claims check as Markdown and one
self-contained HTML page, all read from the results store.

>>> from entrobust.experiments.store import Store
>>> from entrobust.report import write_report
>>> rep = write_report(Store("ws/results.sqlite"), "ws/report")   # doctest: +SKIP
>>> rep.paths["html"]                                              # doctest: +SKIP

The claims check (:mod:`entrobust.report.claims`, with its paired statistics in
:mod:`entrobust.report.stats`) sits beside the tables: both read a :class:`ResultSet`. This
package never imports :mod:`entrobust.experiments`; the experiment runner imports it. Public names
load lazily, so ``entrobust.report.results`` stays light to import on its own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "Report": "entrobust.report.render",
    "build_report": "entrobust.report.render",
    "write_report": "entrobust.report.render",
    "CLAIMS": "entrobust.report.claims",
    "check_claims": "entrobust.report.claims",
    "format_claims": "entrobust.report.claims",
    "Cell": "entrobust.report.results",
    "EvalRecord": "entrobust.record",
    "ResultSet": "entrobust.report.results",
    "RunInfo": "entrobust.report.results",
    "TABLES": "entrobust.report.tables",
    "Table": "entrobust.report.tables",
    "build_tables": "entrobust.report.tables",
    "PLOTS": "entrobust.report.plots",
    "build_figures": "entrobust.report.plots",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from entrobust.record import EvalRecord
    from entrobust.report.claims import CLAIMS, check_claims, format_claims
    from entrobust.report.plots import PLOTS, build_figures
    from entrobust.report.render import Report, build_report, write_report
    from entrobust.report.results import Cell, ResultSet, RunInfo
    from entrobust.report.tables import TABLES, Table, build_tables


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'entrobust.report' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
