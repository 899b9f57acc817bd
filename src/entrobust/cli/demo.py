"""``entrobust demo [--out DIR] [--scale tiny|cpu]``: the main job.

Trains the four papers' key defenses on the embedded mnist5k with the demo's light training budget,
evaluates them with strong attacks (incl. AutoAttack on a subset), audits them for gradient
masking, checks the papers' claims and writes the HTML + Markdown report — about six minutes on a
2-core CPU, resumable (run it again after an interruption). See
:mod:`entrobust.experiments.demo`.
"""

from __future__ import annotations

import argparse

from entrobust.cli.run import add_workers_arg, workers_from
from entrobust.cli.workspace import DEMO_WORKSPACE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train, attack, audit and report the key defenses on mnist5k (about 2½ min on a 2-core CPU)",
        description="The main job: key defenses of the four papers on mnist5k, strong evaluation, audit, "
        "claims check and an HTML report.",
    )
    p.add_argument("--out", "-o", default=DEMO_WORKSPACE, help=f"output folder (default: {DEMO_WORKSPACE})")
    p.add_argument(
        "--scale",
        default="cpu",
        choices=["tiny", "cpu"],
        help="cpu: the real demo (about 2½ min); tiny: one epoch on 256 digits, a smoke test (default: cpu)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default: 1; see docs/experiments.md)"
    )
    p.add_argument("--progress", action="store_true", help="also show tqdm bars for epochs and attacks")
    p.add_argument(
        "--wait", action="store_true", help="if another process is running in OUT, wait for it to finish"
    )
    p.add_argument(
        "--defenses",
        metavar="LABELS",
        help="comma-separated subset of the demo's defenses, e.g. PAT,TRADES (their black-box surrogates "
        "are added; default: all twelve)",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="escalate every model whose audit warned or failed, as run --adaptive (docs/adaptive.md)",
    )
    add_workers_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.experiments.demo import run_demo

    defenses = None if args.defenses is None else [d.strip() for d in args.defenses.split(",") if d.strip()]
    run_demo(
        args.out,
        scale=args.scale,
        device=args.device,
        threads=args.threads,
        progress=args.progress,
        defenses=defenses,
        wait=args.wait,
        workers=workers_from(args),
        adaptive=args.adaptive,
    )
    return 0
