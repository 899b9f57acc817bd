"""``entrobust certify CHECKPOINT --sigma 0.12``: randomized-smoothing certification (Cohen et al. 2019).

A thin layer over :func:`entrobust.diagnostics.smoothing.certify_dataset`: CERTIFY on ``--count``
test images (seeded random subset), certified accuracy at ``--radii``; writes ``certify.json``
and ``certify.png`` into ``--out`` (default: ``<run dir>/certify``). Defaults n0 = 100,
n = 100,000, α = 0.001 are those of ``locuslab/smoothing`` ``code/certify.py``; ATENT Table 5
reports σ = 0.12 at r = 0.435.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certify",
        help="randomized smoothing: certified ℓ2 accuracy at radii (Cohen et al. 2019)",
        description="Certify a checkpoint with randomized smoothing (PREDICT/CERTIFY, Clopper-Pearson).",
    )
    p.add_argument("checkpoint", help="checkpoint stem or .json/.safetensors file")
    p.add_argument(
        "--sigma", type=float, default=0.12, help="noise standard deviation in [0,1] pixels (0.12)"
    )
    p.add_argument("--n0", type=int, default=100, help="selection samples (default 100)")
    p.add_argument("--n", type=int, default=100_000, help="estimation samples (default 100000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default 0.001)")
    p.add_argument("--batch", type=int, default=1000, help="noisy copies per forward (default 1000)")
    p.add_argument("--count", type=int, default=100, help="test images certified (default 100)")
    p.add_argument("--radii", default="0,0.25,0.435,0.5,0.75,1.0", help="radii for certified accuracy")
    p.add_argument("--out", default=None, help="output folder (default: <run dir>/certify)")
    p.add_argument("--dataset", default=None, help="dataset name (default: from the checkpoint metadata)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="split (default: test)")
    p.add_argument("--data-root", default=None, help="dataset folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of the noise (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from entrobust.diagnostics._cli import load_target, out_dir_for, parse_floats
    from entrobust.diagnostics._util import as_xy
    from entrobust.diagnostics.smoothing import certify_dataset, plot_certified_accuracy
    from entrobust.errors import ConfigError
    from entrobust.io import atomic_write_text

    if args.count < 1:
        raise ConfigError(f"--count must be >= 1, got {args.count}")
    model, _meta, dataset, data = load_target(
        args.checkpoint, args.device, args.dataset, args.split, args.data_root
    )
    x, y = as_xy(data)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(x.shape[0], generator=g)[: args.count]
    from entrobust.diagnostics._util import model_device

    dev = model_device(model)
    result = certify_dataset(
        model,
        x[idx].to(dev),
        y[idx],
        sigma=args.sigma,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch=args.batch,
        radii=parse_floats(args.radii, "--radii") or [0.0],
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(result.table())
    out = out_dir_for(args.checkpoint, args.out, "certify")
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **result.to_dict(),
        "checkpoint": str(args.checkpoint),
        "dataset": dataset,
        "indices": idx.tolist(),
    }
    atomic_write_text(out / "certify.json", json.dumps(record, indent=2))
    plot_certified_accuracy(result, str(out / "certify.png"))
    print(f"wrote {out / 'certify.json'}")
    print(f"wrote {out / 'certify.png'}")
    return 0
