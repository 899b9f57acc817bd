"""``entrobust analyze CHECKPOINT --what ...``: uncertainty / geometry analyses with plots (SPEC §5).

A thin layer over :func:`entrobust.diagnostics.analysis.analyze` — the same analyses an experiment
runs (:data:`entrobust.diagnostics.analysis.ANALYSES`); every analysis writes its
numbers into ``analysis.json`` and its pictures as PNGs in ``--out`` (default:
``<run dir>/analysis``). ``--what toy`` needs no checkpoint.
"""

from __future__ import annotations

import argparse

WHAT_HELP = (
    "comma-separated: geometry (RU Table 4: margin + Jacobian + Q_f + distortion correlation; "
    "also 'table4'), margin, jacobian, histograms, fuzziness, input-surface, weight-landscape, "
    "boundary, toy, or all (default: margin,jacobian,fuzziness)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="margins, Jacobian norms, fuzziness, loss surfaces, landscapes, toy, decision boundary",
        description="Uncertainty and geometry analyses of a checkpoint; JSON + PNG output.",
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="checkpoint stem or file (not needed for toy)")
    p.add_argument("--what", default="margin,jacobian,fuzziness", help=WHAT_HELP)
    p.add_argument("--out", default=None, help="output folder (default: <run dir>/analysis)")
    p.add_argument("--n", type=int, default=200, help="examples analysed (seeded random subset; default 200)")
    p.add_argument("--l2-eps", type=float, default=0.5, help="ε of the ℓ2 PGD20 adversary for Q_f (RU: 0.5)")
    p.add_argument("--distortion", default="deepfool", choices=["deepfool", "cw"], help="minimal-ℓ2 attack")
    p.add_argument("--surfaces", type=int, default=2, help="images for the input-space surfaces (default 2)")
    p.add_argument("--landscape-n", type=int, default=200, help="examples for the weight landscape")
    p.add_argument("--landscape-2d", action="store_true", help="also the 2-D weight landscape (slow)")
    p.add_argument("--adversarial", action="store_true", help="adversarial loss in the weight landscape")
    p.add_argument("--eps", default=None, help="ℓ∞ ε of that adversarial loss (default: training ε)")
    p.add_argument("--classes", default=None, help="two classes for the boundary plot, e.g. 5,8")
    p.add_argument(
        "--toy-dataset", default=None, choices=["point", "gaussian"], help="toy data (default: point)"
    )
    p.add_argument("--dataset", default=None, help="dataset name (default: from the checkpoint metadata)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="split (default: test)")
    p.add_argument("--data-root", default=None, help="dataset folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and directions (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust.diagnostics._cli import out_dir_for, parse_floats
    from entrobust.diagnostics.analysis import ANALYSES, analyze, checkpoint_kinds
    from entrobust.errors import ConfigError

    what = [w.strip() for w in args.what.split(",") if w.strip()]
    if "all" in what:
        what = checkpoint_kinds()
    model = meta = data = dataset = None
    if any(w not in ANALYSES or ANALYSES.get(w).scope == "run" for w in what):
        if args.checkpoint is None:
            raise ConfigError(f"--what {','.join(what)} needs a CHECKPOINT (only 'toy' runs without one)")
        from entrobust.diagnostics._cli import load_target

        model, meta, dataset, data = load_target(
            args.checkpoint, args.device, args.dataset, args.split, args.data_root
        )
    eps_list = parse_floats(args.eps, "--eps")
    classes = [int(c) for c in parse_floats(args.classes, "--classes") or []] or None
    out = out_dir_for(args.checkpoint, args.out, "analysis")
    result = analyze(
        model,
        data,
        what,
        out,
        meta=meta or {},
        dataset=dataset,
        n=args.n,
        l2_eps=args.l2_eps,
        distortion=args.distortion,
        surfaces=args.surfaces,
        landscape_n=args.landscape_n,
        landscape_2d=args.landscape_2d,
        adversarial=args.adversarial,
        eps=eps_list[0] if eps_list else None,
        classes=classes,
        toy_dataset=args.toy_dataset,
        seed=args.seed,
        log=print,
    )
    print(result.summary())
    for p in result.files:
        print(f"wrote {p}")
    return 0
