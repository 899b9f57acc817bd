"""``entrobust report [--workspace DIR] [--experiment NAME | --runs ID ...] --out DIR``.

Renders the papers' tables, figures, audits and the claims check from the results store as
Markdown and one self-contained HTML page (:mod:`entrobust.report`).
"""

from __future__ import annotations

import argparse

from entrobust.cli.workspace import add_selection_args, open_store


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the HTML + Markdown report of stored results",
        description="Render tables, figures, audits and claims from a results workspace.",
    )
    add_selection_args(p)
    p.add_argument("--out", "-o", required=True, help="output folder for report.html, report.md, report.json")
    p.add_argument("--title", default="", help="page title")
    p.add_argument(
        "--tables", default="", help="comma-separated table names (default: every table with data)"
    )
    p.add_argument("--no-claims", action="store_true", help="leave the claims check out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.errors import UnknownNameError
    from entrobust.experiments.spec import ReportSpec
    from entrobust.report import TABLES, write_report

    store = open_store(args.workspace)
    tables = tuple(t.strip() for t in args.tables.split(",") if t.strip())
    for t in tables:
        if t not in TABLES:
            raise UnknownNameError(f"unknown table {t!r}; valid: {', '.join(TABLES.names())}")
    rep = write_report(
        store,
        args.out,
        experiment=args.experiment,
        run_ids=args.runs,
        title=args.title,
        spec=ReportSpec(tables=tables, claims=not args.no_claims),
    )
    print(f"{len(rep.tables)} table(s), {len(rep.figures)} figure(s), {len(rep.claims)} claim(s)")
    print(f"report: {rep.paths['html']}")
    print(f"        {rep.paths['markdown']}")
    return 0
