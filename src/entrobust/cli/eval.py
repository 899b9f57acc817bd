"""``entrobust eval CHECKPOINT --suite NAME[,NAME] --eps 0.1,0.2,0.3``: robust accuracy table.

A thin layer over :func:`entrobust.evaluation.evaluate` (STYLE rule 13): it loads the checkpoint,
the dataset named in its metadata (test split), runs the suite, prints the table and optionally
writes JSON (``--json``), the full result (``--save``) and resume state (``--resume-state``).

Under ``torchrun --nproc_per_node N -m entrobust eval ...`` the evaluation is sharded over the N
ranks (same result as one process); only rank 0 prints and writes files. ``--amp bf16`` runs the
forwards in bfloat16, ``--fp32-check N`` cross-checks a sample in float32 (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from entrobust.diagnostics._util import DataLike


def add_bpda_option(p: argparse.ArgumentParser) -> None:
    """``--bpda MODULE`` (shared by ``eval`` and ``audit``)."""
    p.add_argument(
        "--bpda",
        default=None,
        metavar="MODULE",
        help="attack through submodule MODULE (a non-differentiable preprocessing) with BPDA: its "
        "forward runs, its backward is the identity (Athalye et al. 2018 §4.1; docs/adaptive.md)",
    )


def apply_bpda(model: Any, name: str | None) -> Any:
    """``model`` with submodule ``name`` wrapped in BPDA (:func:`entrobust.attacks.bpda.with_bpda`),
    or ``model`` itself when no name is given."""
    if not name:
        return model
    from entrobust.attacks.bpda import with_bpda

    return with_bpda(model, name)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="robust accuracy of a checkpoint under an attack suite (per-example worst case)",
        description="Evaluate a checkpoint under a suite of attacks at several eps; print the table.",
    )
    p.add_argument("checkpoint", help="checkpoint stem or .json/.safetensors file")
    p.add_argument(
        "--suite",
        default="quick",
        help="suite name(s) and/or attacks, comma separated: quick, ru, minmax, strong, "
        "autoattack-standard, autoattack-plus, or e.g. 'pgd:steps=40,fgsm' (default: quick)",
    )
    p.add_argument(
        "--eps", default=None, help="comma-separated eps values, e.g. 0.1,0.3 or 8/255 (default: suite's)"
    )
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="norm of rows without their own")
    p.add_argument(
        "--n",
        "--max-examples",
        dest="n",
        type=int,
        default=None,
        help="evaluate a seeded random subset of N examples (under torchrun write --max-examples: "
        "torchrun takes --n for an abbreviation of its own options)",
    )
    p.add_argument("--dataset", default=None, help="dataset name (default: from the checkpoint metadata)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="dataset split (default: test)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: entrobust's data root)")
    p.add_argument("--batch-size", type=int, default=250, help="examples per attack call (default: 250)")
    p.add_argument(
        "--mode", default="cascade", choices=["cascade", "independent"], help="see docs/evaluation.md"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and of the attacks (default: 0)")
    p.add_argument(
        "--json", default=None, metavar="FILE", help="write the summary and per-example records as JSON"
    )
    p.add_argument(
        "--save", default=None, metavar="STEM", help="write STEM.json + STEM.safetensors (adv examples)"
    )
    p.add_argument(
        "--resume-state", default=None, metavar="DIR", help="resume state folder (continue if it exists)"
    )
    p.add_argument(
        "--amp",
        default="off",
        choices=["off", "bf16"],
        help="run forwards under bf16 autocast (losses stay float32; default: off)",
    )
    p.add_argument(
        "--fp32-check",
        type=int,
        default=0,
        metavar="N",
        help="with --amp bf16: re-run a seeded sample of up to N attacked examples in float32 "
        "and report how many outcomes differ (default: 0, no check)",
    )
    p.add_argument(
        "--allow-large-eps",
        action="store_true",
        help="run an eps whose ball contains the whole image box (linf eps >= 1, l2 eps >= sqrt(d)); "
        "refused otherwise as eps in 0-255 units (8 for 8/255)",
    )
    add_bpda_option(p)
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="escalate on evidence (the stored audit, else a quick probe): add EOT "
        "(autoattack-rand), margin-loss, longer or more-query rows as docs/adaptive.md tabulates, "
        "always a 5000-query Square row; the worst case over all rows is reported",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def _parse_eps(text: str | None) -> list[float] | None:
    from entrobust.errors import ConfigError
    from entrobust.evaluation.evaluate import parse_eps

    if text is None:
        return None
    out = parse_eps(text, "--eps")  # the parser evaluate() itself uses
    if not out:
        raise ConfigError("--eps needs at least one value")
    return out


def run(args: argparse.Namespace) -> int:
    from entrobust import distributed

    distributed.init(args.device)  # no-op unless started by torchrun
    try:
        return _run(args, distributed.is_main())
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, main: bool) -> int:
    from entrobust import distributed
    from entrobust.checkpoint import load_checkpoint
    from entrobust.data import load_dataset
    from entrobust.errors import ConfigError
    from entrobust.io import atomic_write_json

    eps = _parse_eps(args.eps)
    device = distributed.local_device(args.device)  # cuda:LOCAL_RANK under torchrun
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    spec = meta.get("model", {})
    dataset = args.dataset or spec.get("dataset") or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"checkpoint {args.checkpoint} names no dataset; pass --dataset")
    data = load_dataset(dataset, args.split, root=args.data_root)

    from entrobust.evaluation import evaluate

    model = apply_bpda(model, args.bpda)
    suite = args.suite
    if args.adaptive:
        suite = _adaptive_suite(
            args.suite,
            model,
            data,
            device,
            checkpoint=args.checkpoint,
            eps=eps,
            norm=args.norm,
            dataset=dataset,
            bpda=args.bpda,
        )
    result = evaluate(
        model,
        data,
        suite,
        eps,
        args.norm,
        batch_size=args.batch_size,
        max_examples=args.n,
        device=device,
        state_path=args.resume_state,
        progress=not args.no_progress,
        seed=args.seed,
        keep_examples=args.save is not None or args.resume_state is not None,
        mode=args.mode,
        dataset=dataset,
        amp=args.amp,
        fp32_check=args.fp32_check,
        allow_large_eps=args.allow_large_eps,
    )
    if not main:
        return 0  # every rank holds the same result; rank 0 prints and writes it
    result.meta["checkpoint"] = str(args.checkpoint)
    result.meta["split"] = args.split
    note = stored_audit_note(args.checkpoint)
    if note:
        result.meta.setdefault("warnings", []).append(note)
    print(result.table())
    check = result.meta.get("fp32_check")
    if check:
        print(
            f"fp32 check: {check['disagree']} of {check['checked']} re-checked attack outcomes "
            "differ between bf16 and float32"
        )
    if args.json:
        atomic_write_json(args.json, result.to_dict(per_example=True))
        print(f"wrote {args.json}")
    if args.save:
        path = result.save(args.save)
        print(f"wrote {path} (+ .safetensors)")
    return 0


def _adaptive_suite(
    suite: str,
    model: nn.Module,
    data: DataLike,
    device: torch.device,
    *,
    checkpoint: str,
    eps: list[float] | None,
    norm: str,
    dataset: str,
    bpda: str | None,
) -> str:
    """``--adaptive``: the suite plus what the evidence calls for (docs/adaptive.md).

    The evidence is the checkpoint's stored audit (``<run dir>/audit/audit.json``) when there is
    one, else a quick probe (determinism, input gradients and CE- vs margin-PGD on 64 points at the
    largest ε), plus a check for randomized outputs and for a non-differentiable submodule;
    :func:`entrobust.evaluation.adaptive.escalation` turns it into rows. The evaluation's worst
    case covers the added rows.
    """
    from entrobust.attacks import ThreatModel
    from entrobust.attacks.base import frozen
    from entrobust.attacks.engine import is_stochastic
    from entrobust.diagnostics import audit
    from entrobust.diagnostics._util import as_xy
    from entrobust.evaluation import get_suite
    from entrobust.evaluation.adaptive import escalation, nondifferentiable_modules

    x, y = as_xy(data)
    with frozen(model, "eval"):
        stochastic = is_stochastic(model, x[:64].to(device))
    evidence: Any = stored_audit(checkpoint)
    if evidence is not None:
        print(f"adaptive: evidence from the stored audit ({evidence.get('status', '?')})")
    else:
        grid = eps or list(get_suite(suite, dataset).default_eps(dataset) or [])
        if grid:
            threat = ThreatModel(norm, max(grid))
            print(f"adaptive: no stored audit; probing 64 points at {norm} eps={max(grid):g}")
            evidence = audit(
                model,
                (x, y),
                threat,
                n=64,
                batch_size=64,
                pgd_steps=10,
                checks=["determinism", "gradients", "loss-gap"],
            )
    nondiff = [] if bpda else nondifferentiable_modules(model, x[:8].to(device))
    esc = escalation(evidence, stochastic=stochastic, nondifferentiable=nondiff, bpda=bpda)
    for reason in esc.reasons:
        print(f"adaptive: {reason}")
    for advice in esc.advice:
        print(f"adaptive: ADVICE: {advice}")
    print(f"adaptive: adding {', '.join(esc.rows)}; the worst case covers every row")
    return esc.suite(suite)


def stored_audit(checkpoint: str) -> dict[str, Any] | None:
    """The checkpoint's stored audit (``<run dir>/audit/audit.json``) as a dict, or None."""
    import json

    from entrobust.diagnostics._cli import out_dir_for

    try:
        path = out_dir_for(checkpoint, None, "audit") / "audit.json"
        if not path.is_file():
            return None
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(report, dict):
        report["path"] = str(path)
        return report
    return None


def stored_audit_note(checkpoint: str) -> str | None:
    """A warning line when the checkpoint's stored audit (``<run dir>/audit/audit.json``) did not
    pass, so a robust accuracy is never printed without the flag next to it."""
    report = stored_audit(checkpoint)
    if report is None:
        return None
    status = str(report.get("status", "pass"))
    if status == "pass":
        return None
    flagged = [c["name"] for c in report.get("checks", []) if c.get("status") != "pass"]
    eps = (report.get("threat") or {}).get("eps")
    return (
        f"the stored audit of this checkpoint ({report['path']}, eps={eps}) is {status.upper()} "
        f"({', '.join(flagged)}): these robust accuracies may be overstated; see docs/adaptive.md "
        "or rerun with --adaptive"
    )
