"""The gradient-obfuscation audit's cost relative to AutoAttack standard on the same model and points.

The audit (:func:`entrobust.diagnostics.audit`, all 11 checks, default budgets) and AutoAttack
standard (APGD-CE, APGD-T, FAB-T, Square; :class:`entrobust.attacks.autoattack.AutoAttack`) run on
the same ``--n`` test digits of mnist5k against a SmallCNN briefly trained with FGSM + random start
(Wong et al. 2020) at the threat ε, so that a good part of the points is robust and every check
has work to do. The measure is the process's CPU time (``time.process_time``) with one torch
thread: it does not depend on other jobs sharing the machine. Prints both times, their ratio and
the audit's time per stage (``report.settings["stage_seconds"]``, wall time).

The audit runs twice: alone, and reusing AutoAttack's result as a study does
(``known_broken`` = the points AutoAttack broke, ``reference_accuracy`` = its robust accuracy), so
both ratios come from one run on one model. ``--full`` is the full-size setting: the default
``entrobust audit`` budgets on n = 200 points.

Usage: ``python benchmarks/bench_audit.py [--n 100] [--eps 0.1] [--quick | --full] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def build_model(eps: float, steps: int, seed: int = 0) -> nn.Module:
    """SmallCNN trained for ``steps`` Adam steps of 128 digits with FGSM-RS adversarial examples."""
    from entrobust.data import load_dataset
    from entrobust.data.loader import BatchLoader
    from entrobust.models import create_model

    torch.manual_seed(seed)
    model = create_model("smallcnn", dataset="mnist5k")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = BatchLoader(load_dataset("mnist5k", "train"), 128, shuffle=True, seed=seed)
    model.train()
    step = 0
    while step < steps:
        for x, y in loader:
            delta = (torch.rand_like(x) * 2 - 1) * eps
            delta.requires_grad_(True)
            loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
            (g,) = torch.autograd.grad(loss, delta)
            delta = (delta + 1.25 * eps * g.sign()).clamp(-eps, eps).detach()
            opt.zero_grad()
            F.cross_entropy(model((x + delta).clamp(0, 1)), y).backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="test digits (both the audit and AutoAttack)")
    p.add_argument("--eps", type=float, default=0.1, help="ℓ∞ threat ε (training and evaluation)")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="smoke run: 20 digits, 40 training steps")
    p.add_argument("--full", action="store_true", help="full size: the default audit on 200 digits")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.train_steps = 20, 40
    elif args.full:
        args.n = 200
    torch.set_num_threads(1)
    from entrobust.attacks import ThreatModel
    from entrobust.attacks.autoattack import AutoAttack
    from entrobust.data import load_dataset
    from entrobust.diagnostics import audit

    model = build_model(args.eps, args.train_steps)
    test = load_dataset("mnist5k", "test").to_float()
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(test.x.shape[0], generator=g)[: args.n]
    x: Tensor = test.x[idx]
    y: Tensor = test.y[idx]
    threat = ThreatModel("linf", args.eps)
    train = load_dataset("mnist5k", "train")

    t0 = time.process_time()
    x_aa, aa = AutoAttack(threat, version="standard", seed=0).run(model, x, y)
    aa_cpu = time.process_time() - t0
    aa_robust = list(aa.robust_accuracy.values())[-1]
    with torch.no_grad():
        broken = (~model(x_aa).argmax(1).eq(y) | ~model(x).argmax(1).eq(y)).nonzero().squeeze(1)

    t0 = time.process_time()
    report = audit(model, (x, y), threat, n=args.n, train_data=train, seed=0)
    audit_cpu = time.process_time() - t0

    t0 = time.process_time()
    reused = audit(
        model,
        (x, y),
        threat,
        n=args.n,
        train_data=train,
        seed=0,
        known_broken=broken,
        reference_accuracy=aa_robust,
    )
    reuse_cpu = time.process_time() - t0

    out: dict[str, Any] = {
        "n": args.n,
        "eps": args.eps,
        "clean_accuracy": report.clean_accuracy,
        "autoattack_robust_accuracy": aa_robust,
        "audit_status": report.status,
        "audit_cpu_s": audit_cpu,
        "autoattack_cpu_s": aa_cpu,
        "ratio": audit_cpu / max(aa_cpu, 1e-9),
        "stage_seconds": report.settings["stage_seconds"],
        "audit_reuse_cpu_s": reuse_cpu,
        "audit_reuse_status": reused.status,
        "ratio_reuse": reuse_cpu / max(aa_cpu, 1e-9),
        "reused_points": int(broken.numel()),
        "stage_seconds_reuse": reused.settings["stage_seconds"],
    }
    print(
        f"bench_audit: smallcnn (FGSM-RS, {args.train_steps} steps) on {args.n} mnist5k digits, ℓ∞ ε = "
        f"{args.eps:g}, 1 thread, CPU time"
    )
    print(
        f"  clean {report.clean_accuracy:.3f}; AutoAttack robust {aa_robust:.3f}; "
        f"audit {report.status.upper()}"
    )
    print(f"  audit      {audit_cpu:8.1f} s")
    print(f"  AutoAttack {aa_cpu:8.1f} s")
    print(f"  ratio      {out['ratio']:8.2f}×  (audit ÷ AutoAttack)")
    print(
        f"  audit reusing AutoAttack's {broken.numel()} broken points {reuse_cpu:8.1f} s, "
        f"ratio {out['ratio_reuse']:.2f}× ({reused.status.upper()})"
    )
    print("  audit stages (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in out["stage_seconds"].items()))
    print(
        "  reusing (wall s):      " + ", ".join(f"{k} {v:.1f}" for k, v in out["stage_seconds_reuse"].items())
    )
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
