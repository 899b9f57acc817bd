"""``entrobust audit CHECKPOINT``: the gradient-obfuscation audit (SPEC §5).

A thin layer over :func:`entrobust.diagnostics.audit`: loads the checkpoint and the test split
of its dataset, runs the checks, prints the pass / warn / fail table and writes ``audit.json``,
``audit_eps.png`` and ``audit_steps.png`` into ``--out`` (default: ``<run dir>/audit``).

Under ``torchrun --nproc_per_node N -m entrobust audit ...`` the per-example passes are sharded
over the N ranks (same report as one process); only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse

from entrobust.cli.eval import add_bpda_option, apply_bpda


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="gradient-obfuscation audit: transfer gap, random search, ε/steps curves, ...",
        description="Check whether a checkpoint's robustness is real or the attacks are being fooled.",
    )
    p.add_argument("checkpoint", help="checkpoint stem or .json/.safetensors file")
    p.add_argument(
        "--eps", default=None, help="ε of the threat model, e.g. 0.3 or 8/255 (default: training ε)"
    )
    p.add_argument(
        "--norm", default=None, choices=["linf", "l2"], help="threat norm (default: training norm)"
    )
    p.add_argument(
        "--n",
        "--examples",
        dest="n",
        type=int,
        default=200,
        help="examples audited (seeded random subset; default 200; under torchrun write --examples: "
        "torchrun takes --n for an abbreviation of its own options)",
    )
    p.add_argument("--out", default=None, help="output folder (default: <run dir>/audit)")
    p.add_argument("--dataset", default=None, help="dataset name (default: from the checkpoint metadata)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="split audited (default: test)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: entrobust's data root)")
    p.add_argument(
        "--surrogate", default=None, help="checkpoint of a normally trained surrogate (default: train one)"
    )
    p.add_argument(
        "--surrogate-epochs", type=int, default=3, help="epochs of the on-the-fly surrogate (default 3)"
    )
    p.add_argument("--pgd-steps", type=int, default=20, help="steps of the reference PGD (default 20)")
    p.add_argument(
        "--random-search-samples", type=int, default=10_000, help="samples per point (default 10000)"
    )
    p.add_argument("--random-search-n", type=int, default=25, help="PGD-robust points searched (default 25)")
    p.add_argument("--curve-n", type=int, default=100, help="examples for the ε / steps curves (default 100)")
    p.add_argument("--checks", default=None, help="comma-separated subset of checks (default: all)")
    p.add_argument("--batch-size", type=int, default=200, help="examples per attack call (default 200)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the subset, surrogate and attacks (default 0)"
    )
    add_bpda_option(p)
    p.add_argument(
        "--eot-iter",
        type=int,
        default=None,
        help="forwards averaged per gradient (EOT; default: 10 for a randomized model, else 1)",
    )
    p.add_argument(
        "--reference-accuracy",
        type=float,
        default=None,
        help="robust accuracy of the strongest stored evaluation at this eps (e.g. AutoAttack), "
        "compared with the audit's gradient attack",
    )
    p.add_argument(
        "--from-eval",
        default=None,
        metavar="FILE",
        help="a saved evaluation of this checkpoint (eval --save STEM.json or eval --json FILE) at the "
        "audit's eps: the points it broke are reused, not attacked again, and its robust accuracy "
        "is the reference unless --reference-accuracy is given",
    )
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a check fails")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from entrobust import distributed

    distributed.init(args.device)  # no-op unless started by torchrun
    try:
        return _run(args, distributed.is_main())
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, main: bool) -> int:
    from entrobust import distributed
    from entrobust.attacks import ThreatModel
    from entrobust.diagnostics import audit
    from entrobust.diagnostics._cli import default_threat, load_target, out_dir_for, parse_floats

    device = str(distributed.local_device(args.device))  # cuda:LOCAL_RANK under torchrun
    model, meta, dataset, data = load_target(
        args.checkpoint, device, args.dataset, args.split, args.data_root
    )
    norm, eps = default_threat(meta, dataset)
    if args.eps is not None:
        eps = (parse_floats(args.eps, "--eps") or [eps])[0]
    norm = args.norm or norm
    model = apply_bpda(model, args.bpda)
    surrogate = None
    if args.surrogate:
        from entrobust.checkpoint import load_checkpoint
        from entrobust.diagnostics._util import model_device

        surrogate, _ = load_checkpoint(args.surrogate, map_location=model_device(model))
    train = None
    if surrogate is None and "transfer-gap" in (args.checks or "transfer-gap"):
        from entrobust.data import load_dataset

        train = load_dataset(dataset, "train", root=args.data_root)
    known_broken, reference = None, args.reference_accuracy
    if args.from_eval:
        from entrobust.evaluation.adaptive import broken_indices, stored_accuracy

        known_broken = broken_indices(args.from_eval, eps, norm)
        if reference is None:
            reference = stored_accuracy(args.from_eval, eps, norm)
    report = audit(
        model,
        data,
        ThreatModel(norm, eps),
        surrogate,
        n=args.n,
        batch_size=args.batch_size,
        pgd_steps=args.pgd_steps,
        random_search_samples=args.random_search_samples,
        random_search_n=args.random_search_n,
        curve_n=args.curve_n,
        train_data=train,
        surrogate_epochs=args.surrogate_epochs,
        checks=[c.strip() for c in args.checks.split(",") if c.strip()] if args.checks else None,
        seed=args.seed,
        log=None if args.quiet else print,
        eot_iter=args.eot_iter,
        reference_accuracy=reference,
        known_broken=known_broken,
    )
    if not main:
        return 1 if args.strict and not report.passed else 0  # rank 0 prints and writes
    report.settings["checkpoint"] = str(args.checkpoint)
    report.settings["dataset"] = dataset
    report.settings["split"] = args.split
    report.settings["bpda"] = args.bpda
    report.settings["from_eval"] = args.from_eval
    print(report.table())
    paths = report.save(out_dir_for(args.checkpoint, args.out, "audit"))
    for p in paths.values():
        print(f"wrote {p}")
    return 1 if args.strict and not report.passed else 0
