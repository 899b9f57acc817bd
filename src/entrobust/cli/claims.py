"""``entrobust claims [--workspace DIR] [--experiment NAME]``: the papers' claims C1–C11 checked on
stored results (reproduced / not reproduced / not enough data, with the numbers)."""

from __future__ import annotations

import argparse
import json

from entrobust.cli.run import DEFAULT_WORKSPACE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "claims",
        help="check the papers' claims C1-C11 on stored results",
        description="Evaluate the papers' qualitative claims on the results in a workspace.",
    )
    p.add_argument(
        "--workspace", "-w", default=DEFAULT_WORKSPACE, help=f"results folder (default: {DEFAULT_WORKSPACE})"
    )
    p.add_argument(
        "--experiment", "-e", default=None, help="only the runs of this experiment (default: all runs)"
    )
    p.add_argument(
        "--runs", nargs="+", default=None, metavar="ID", help="only these run ids (prefixes accepted)"
    )
    p.add_argument("--only", default="", help="comma-separated claim ids, e.g. C1,C3 (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.errors import EntrobustError
    from entrobust.experiments.claims import CLAIMS, check_claims, format_claims
    from entrobust.experiments.runner import store_path
    from entrobust.experiments.store import Store
    from entrobust.report.results import ResultSet

    path = store_path(args.workspace)
    if not path.exists():
        raise EntrobustError(f"no results store at {path}; run an experiment first (entrobust run / demo)")
    ids = [c.strip().upper() for c in args.only.split(",") if c.strip()]
    for cid in ids:
        CLAIMS.get(cid)
    rs = ResultSet.from_store(Store(path), experiment=args.experiment, run_ids=args.runs)
    results = check_claims(rs, ids)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=str, ensure_ascii=False))
    else:
        print(format_claims(results))
    return 0
