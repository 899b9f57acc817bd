"""``entrobust runs [--workspace DIR] [--status S] [--preset P] ...``: list the runs of a workspace."""

from __future__ import annotations

import argparse
import json

from entrobust.cli.workspace import add_workspace_arg, open_store


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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
