"""``entrobust run FILE [--workspace DIR]``: run (or resume) an experiment file.

Trains what is missing, evaluates, analyses and writes the report (see
:mod:`entrobust.experiments.runner`). Rerunning after an interruption — even ``kill -9`` —
continues where it stopped; finished work is never repeated. One process at a time per workspace:
a second one stops at once naming the first (pid, host, start), or with ``--wait`` waits for it
(:mod:`entrobust.experiments.lock`). ``--workers N`` runs independent trainings, evaluations and
analyses in N worker processes (default: every core; the stored results are the same for every N
when the study fixes ``threads``).
"""

from __future__ import annotations

import argparse

from entrobust.cli.workspace import DEFAULT_WORKSPACE, add_workspace_arg

__all__ = ["DEFAULT_WORKSPACE", "add_parser", "add_workers_arg", "run", "workers_from"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run or resume an experiment file (train, evaluate, analyse, report)",
        description="Run (or resume) an experiment TOML file: train missing runs, evaluate, analyse, report.",
    )
    p.add_argument("file", help="experiment TOML file (see experiments/ and docs/experiments.md)")
    add_workspace_arg(p)
    p.add_argument(
        "--report-dir", default=None, help="where the report goes (default: WORKSPACE/reports/NAME)"
    )
    p.add_argument("--no-report", action="store_true", help="skip writing the report")
    p.add_argument(
        "--stages",
        default="train,evaluate,analyse,report",
        help="comma-separated stages to run (default: train,evaluate,analyse,report)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate the file and print the plan; run nothing")
    p.add_argument("--progress", action="store_true", help="also show tqdm bars for epochs and attacks")
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another process is running in the workspace, wait for it to finish (default: stop)",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="after an audit that warned or failed, evaluate that model again with the attacks its "
        "evidence calls for (EOT, margin losses, more Square queries, transfer, ...) and report the "
        "worst case beside the flag (docs/adaptive.md)",
    )
    add_workers_arg(p)
    p.set_defaults(func=run)


def add_workers_arg(p: argparse.ArgumentParser) -> None:
    """``--workers N``: worker processes of the runner (default: every core, or $ENTROBUST_WORKERS)."""
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes running independent trainings, evaluations and analyses at once "
        "(default: $ENTROBUST_WORKERS, else the number of cores; 1: everything in this process)",
    )


def workers_from(args: argparse.Namespace) -> int | None:
    """The ``--workers`` value, else ``$ENTROBUST_WORKERS``, else None (every core)."""
    import os

    if args.workers is not None:
        return int(args.workers)
    env = os.environ.get("ENTROBUST_WORKERS", "").strip()
    if not env:
        return None
    if not env.isdigit():
        from entrobust.errors import ConfigError

        raise ConfigError(f"ENTROBUST_WORKERS must be a whole number of processes, got {env!r}")
    return int(env)


def run(args: argparse.Namespace) -> int:
    from entrobust.experiments.spec import load_experiment

    exp = load_experiment(args.file)
    if args.dry_run:
        plan = exp.plan()
        print(f"experiment {exp.name} ({exp.scale} scale): {len(plan)} training run(s)")
        for pr in plan:
            c = pr.config
            print(
                f"  {pr.label:<16} {pr.preset:<26} {pr.dataset:<10} {pr.model:<10} seed {pr.seed}"
                f"  {c.epochs} epoch(s), adversary {c.method.adversary.kind}"
            )
        for ev in exp.evaluations:
            print(f"  evaluation {ev.name}: {ev.suite} {'(transfer)' if ev.transfer else ''}")
        for a in exp.analyses:
            print(f"  analysis {a.kind}")
        return 0
    from entrobust import distributed
    from entrobust.experiments.runner import run_experiment

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    distributed.init(exp.device)  # under torchrun: train and evaluate data-parallel, rank 0 writes
    try:
        res = run_experiment(
            exp,
            args.workspace,
            progress=args.progress,
            report=not args.no_report,
            report_dir=args.report_dir,
            stages=stages,
            wait=args.wait,
            workers=workers_from(args),
            adaptive=args.adaptive,
        )
    finally:
        distributed.shutdown()
    if res.report:
        print(f"report: {res.report.get('html')}")
    return 0
