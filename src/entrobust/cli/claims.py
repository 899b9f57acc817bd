"""``entrobust claims [--workspace DIR] [--experiment NAME]``: the papers' claims C1–C11 checked on
stored results (reproduced / refuted / inconclusive, with the effect, its 95 % interval, p and n)."""

from __future__ import annotations

import argparse
import json

from entrobust.cli.workspace import add_selection_args, open_store


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "claims",
        help="check the papers' claims C1-C11 on stored results",
        description="Evaluate the papers' qualitative claims on the results in a workspace.",
    )
    add_selection_args(p)
    p.add_argument("--only", default="", help="comma-separated claim ids, e.g. C1,C3 (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.report.claims import CLAIMS, check_claims, format_claims
    from entrobust.report.results import ResultSet

    store = open_store(args.workspace)
    ids = [c.strip().upper() for c in args.only.split(",") if c.strip()]
    for cid in ids:
        CLAIMS.get(cid)
    rs = ResultSet.from_store(store, experiment=args.experiment, run_ids=args.runs)
    results = check_claims(rs, ids)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=str, ensure_ascii=False))
    else:
        print(format_claims(results))
    return 0
