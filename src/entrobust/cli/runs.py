"""``entrobust runs [--workspace DIR] [--status S] [--preset P] ... [--json | --csv FILE]``: list the
runs of a workspace, or export their evaluation rows as CSV (:meth:`ResultSet.to_records`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from entrobust.cli.workspace import add_workspace_arg, open_store

if TYPE_CHECKING:
    from entrobust.experiments.store import Store


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs", help="list the runs in a results workspace", description="List and filter runs."
    )
    add_workspace_arg(p)
    p.add_argument(
        "--status", choices=["pending", "running", "done", "failed"], help="only runs with this status"
    )
    p.add_argument("--preset", help="only runs of this preset")
    p.add_argument("--dataset", help="only runs on this dataset")
    p.add_argument("--model", help="only runs of this model")
    p.add_argument("--experiment", help="only runs used by this experiment")
    p.add_argument("--seed", type=int, help="only runs with this seed")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument(
        "--csv",
        metavar="FILE",
        help="write every evaluation row of the listed runs as CSV (one line per row, with the run's "
        "label, preset, dataset, model and seed; accuracies as fractions) to FILE, or - for stdout",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.errors import EntrobustError

    store = open_store(args.workspace)
    path = store.path
    filters = {k: getattr(args, k) for k in ("status", "preset", "dataset", "model", "seed")}
    runs = store.runs(**{k: v for k, v in filters.items() if v is not None})
    labels: dict[str, str] = {}
    if args.experiment is not None:
        members = store.members(args.experiment)
        if not members:
            raise EntrobustError(
                f"no experiment {args.experiment!r} in {path}; "
                f"experiments: {', '.join(store.experiments()) or '(none)'}"
            )
        labels = {m["run_id"]: m["label"] for m in members}
        runs = [r for r in runs if r.id in labels]
    else:
        for m in store.members():
            labels.setdefault(m["run_id"], m["label"])
    if args.csv is not None:
        return _write_csv(store, [r.id for r in runs], labels, args.csv)
    counts = {r.id: len(store.evaluations(r.id)) for r in runs}
    if args.json:
        print(json.dumps(
            [
                {
                    "id": r.id, "label": labels.get(r.id, r.name), "preset": r.preset, "dataset": r.dataset,
                    "model": r.model, "seed": r.seed, "status": r.status, "checkpoint": r.checkpoint,
                    "evaluation_rows": counts[r.id], "summary": r.summary,
                }
                for r in runs
            ],
            indent=2,
            default=str,
            ensure_ascii=False,
        ))  # fmt: skip
        return 0
    head = (
        f"{'run id':<17} {'label':<16} {'preset':<26} {'dataset':<9} {'model':<9} {'seed':>4} "
        f"{'status':<8} {'evals':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        print(
            f"{r.id:<17} {labels.get(r.id, r.name):<16} {r.preset or '-':<26} {r.dataset or '-':<9} "
            f"{r.model or '-':<9} {'' if r.seed is None else r.seed:>4} {r.status:<8} {counts[r.id]:>5}"
        )
    print(f"{len(runs)} run(s) in {path}")
    return 0


def _write_csv(store: Store, run_ids: list[str], labels: dict[str, str], dest: str) -> int:
    """The evaluation rows of ``run_ids`` as CSV to ``dest`` (``-``: stdout), atomically for a file."""
    import io
    import sys

    from entrobust.io import atomic_write_text
    from entrobust.report.results import ResultSet, write_csv

    records = ResultSet.from_store(store, run_ids=run_ids).to_records() if run_ids else []
    for rec in records:  # the label the listing shows (the selected experiment's)
        rec["label"] = labels.get(rec["run_id"], rec["label"])
    buf = io.StringIO()
    k = write_csv(records, buf)
    if dest == "-":
        sys.stdout.write(buf.getvalue())
    else:
        atomic_write_text(dest, buf.getvalue())
        print(f"{k} evaluation row(s) of {len(run_ids)} run(s) -> {dest}", file=sys.stderr)
    return 0
