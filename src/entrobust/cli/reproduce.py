"""``entrobust reproduce [--out DIR] [--papers ru,atent,minmax,kanai]``: the reproduction scale.

Every paper table on mnist5k with the converged cpu recipes, three seeds per compared defense,
white-box attacks on 1,000 test digits and AutoAttack on 500; one resumable workspace per paper.
See :mod:`entrobust.experiments.reproduce` and docs/experiments.md, "Reproduction scale".
"""

from __future__ import annotations

import argparse

from entrobust.cli.run import add_workers_arg, workers_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="every paper table on mnist5k, 3 seeds, 1,000 test digits (hours on a 2-core CPU)",
        description="The reproduction scale: the four study files of experiments/, one workspace per paper.",
    )
    p.add_argument(
        "--out", "-o", default="entrobust-reproduce", help="output folder (one workspace per paper)"
    )
    p.add_argument("--papers", default=None, help="comma-separated subset of ru, atent, minmax, kanai")
    p.add_argument("--experiments", default=None, help="folder of the study files (default: ./experiments)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what each paper trains and evaluates; run nothing"
    )
    p.add_argument(
        "--wait", action="store_true", help="if another process is running in a workspace, wait for it"
    )
    add_workers_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.experiments.reproduce import reproduction_experiments, run_reproduction

    papers = None if args.papers is None else [s.strip() for s in args.papers.split(",") if s.strip()]
    if args.dry_run:
        total = 0
        for paper, exp in reproduction_experiments(papers, folder=args.experiments).items():
            plan = exp.plan()
            total += len(plan)
            epochs = sum(pr.config.epochs for pr in plan)
            print(f"{paper}: {exp.name}, {len(plan)} training runs ({epochs} epochs in all)")
            for ev in exp.evaluations:
                n = "all" if ev.max_examples is None else ev.max_examples
                how = " (transfer)" if ev.transfer else ""
                print(f"  evaluation {ev.name}: {ev.suite} on {n} test digits{how}")
            for a in exp.analyses:
                print(f"  analysis {a.kind}")
        print(f"{total} training runs in all")
        return 0
    run_reproduction(
        args.out, papers=papers, folder=args.experiments, workers=workers_from(args), wait=args.wait
    )
    return 0
