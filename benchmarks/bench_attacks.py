"""Attack cost versus the forward/backward passes it cannot avoid (SmallCNN, mnist5k, batch 250).

A K-step gradient attack needs K forward passes and K input-gradient backward passes; nothing
else it does (random start, sign, projection, success tracking) should cost much. For each attack
this script times the attack and the bare passes (``torch.autograd.grad`` w.r.t. the input, the
parameters frozen exactly as the attack base freezes them) and prints the ratio. Target: PGD-10
≤ 1.03× its 10 bare passes.

AutoAttack standard runs on a small subset; its wall time is compared with the sum of its four
components run one after another by hand on the points still robust (what AutoAttack must do
anyway), and with :func:`entrobust.evaluation.evaluate` running the ``autoattack-standard``
suite. ``evaluate`` with PGD-10 is compared with the bare PGD-10 call plus the clean pass.

AutoAttack's cost is also given as a ratio to a fixed reference workload measured in the same
run: ``REFERENCE_PASSES`` bare forward + input-gradient backward passes of the same model on the
same points (``--aa-ref-n`` points; ``--aa-only`` runs just that). When the official
implementation (``fra31/auto-attack``, not a dependency) is checked out at the path in the
environment variable ``ENTROBUST_OFFICIAL_AUTOATTACK`` (or ``--official PATH``), it runs on the
same model and points, interleaved with the other two, and the ratio of the medians, both
robust accuracies and the points only one of them breaks are printed too. ``--aa-checkpoint``
evaluates a trained mnist5k checkpoint (e.g. the demo's AT model) instead of the SmallCNN.

Usage: ``python benchmarks/bench_attacks.py [--device cpu|cuda] [--repeat 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: bare forward + backward passes of the fixed reference workload AutoAttack is compared with
REFERENCE_PASSES = 100
OFFICIAL_ENV = "ENTROBUST_OFFICIAL_AUTOATTACK"


class Clock:
    """Wall time, or the process's CPU time on a CPU device.

    On a CPU shared with other jobs the wall time of the same call varies by tens of percent
    from one minute to the next; with one torch thread the process's CPU time does not depend
    on the neighbours, so it is the fair measure of how much work a call does. On CUDA the
    wall time (after synchronizing) is the right measure.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "wall" if device.type == "cuda" else "cpu"

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() if self.kind == "wall" else time.process_time()

    def time(self, fn: Callable[[], Any]) -> float:
        t0 = self.now()
        fn()
        return self.now() - t0


def paired(
    a: Callable[[], Any], b: Callable[[], Any], clock: Clock, repeat: int, warmup: int = 1
) -> tuple[float, float]:
    """Min times of ``a`` and ``b`` measured alternately (a, b, a, b, ...) after ``warmup`` rounds."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(clock.time(a))
        tb.append(clock.time(b))
    return min(ta), min(tb)


def bare_passes(model: nn.Module, x: Tensor, y: Tensor, k: int) -> None:
    """K forward + input-gradient backward passes, parameters frozen, eval mode: the floor."""
    from entrobust.attacks import frozen

    with frozen(model, "eval"), torch.enable_grad():
        for _ in range(k):
            xr = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xr), y, reduction="sum")
            torch.autograd.grad(loss, xr)


def bare_forwards(model: nn.Module, x: Tensor, k: int) -> None:
    with torch.no_grad():
        for _ in range(k):
            model(x)


def build_model(device: torch.device, train_steps: int, seed: int) -> tuple[nn.Module, Tensor, Tensor]:
    """SmallCNN briefly trained on mnist5k (``train_steps`` Adam steps of 128), and the test split."""
    from entrobust.data import BatchLoader, load_dataset
    from entrobust.models import create_model

    torch.manual_seed(seed)
    model = create_model("smallcnn", dataset="mnist5k").to(device)
    if train_steps > 0:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = BatchLoader(load_dataset("mnist5k", "train"), 128, shuffle=True, seed=seed, device=device)
        model.train()
        step, epoch = 0, 0
        while step < train_steps:
            loader.set_epoch(epoch)
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
                step += 1
                if step >= train_steps:
                    break
            epoch += 1
    model.eval()
    test = load_dataset("mnist5k", "test").to_float()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=g)  # the split is sorted by class: mix it
    return model, test.x[order].to(device), test.y[order].to(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: steadier timings)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--aa-n", type=int, default=25, help="points for AutoAttack / Square")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--aa-eps", type=float, default=0.15)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat, fewer attacks (smoke run)")
    p.add_argument("--aa-only", action="store_true", help="only AutoAttack vs the reference workload")
    p.add_argument("--aa-ref-n", type=int, default=50, help="points for AutoAttack vs the reference")
    p.add_argument("--aa-ref-eps", type=float, default=0.1, help="ℓ∞ ε of AutoAttack vs the reference")
    p.add_argument(
        "--aa-checkpoint",
        default=None,
        help="a trained mnist5k checkpoint for AutoAttack vs the reference (default: the SmallCNN above)",
    )
    p.add_argument(
        "--official",
        default=os.environ.get(OFFICIAL_ENV),
        help=f"path of a fra31/auto-attack checkout (default: ${OFFICIAL_ENV}); compared when given",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from entrobust.attacks import ThreatModel, build_attack
    from entrobust.evaluation import evaluate
    from entrobust.runtime import select_device

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    clock = Clock(device)
    repeat = 1 if args.quick else args.repeat
    model, x_all, y_all = build_model(device, args.train_steps, seed=0)
    x, y = x_all[: args.batch], y_all[: args.batch]
    with torch.no_grad():
        clean_acc = float(model(x).argmax(1).eq(y).float().mean())
    print(
        f"bench_attacks: smallcnn on mnist5k, batch {x.shape[0]}, device {device}, threads "
        f"{torch.get_num_threads()}, clean accuracy {clean_acc:.1%}; {clock.kind} time, min of {repeat} "
        "(AutoAttack vs reference / official: medians)"
    )

    rows: list[dict[str, Any]] = []

    def row(name: str, t: float, floor: float, what: str, **extra: Any) -> None:
        rows.append(
            {"name": name, "seconds": t, "floor_seconds": floor, "floor": what, "ratio": t / floor, **extra}
        )
        print(
            f"  {name:<38} {t:8.3f} s   floor {floor:8.3f} s ({what:<22})  ratio {t / floor:6.3f}x",
            flush=True,
        )

    xr, yr = x_all[: args.aa_ref_n], y_all[: args.aa_ref_n]
    aa_model = model
    if args.aa_checkpoint:
        from entrobust.checkpoint import load_checkpoint

        aa_model, _ = load_checkpoint(args.aa_checkpoint, map_location=device)

    def aa_vs_reference() -> None:
        for r in _autoattack_vs_reference(aa_model, xr, yr, args.aa_ref_eps, clock, repeat, args.official):
            row(**r)

    if args.aa_only:
        aa_vs_reference()
        out = {"device": str(device), "threads": torch.get_num_threads(), "clock": clock.kind, "rows": rows}
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(out, f, indent=2)
        return out

    gradient: list[tuple[str, str, dict[str, Any], int]] = [
        ("FGSM", "fgsm", {}, 1),
        ("PGD-10", "pgd", {"steps": 10}, 10),
    ]
    if not args.quick:
        gradient += [("PGD-40", "pgd", {"steps": 40}, 40), ("APGD-CE (100 it)", "apgd-ce", {}, 100)]
    for name, attack_name, kw, k in gradient:
        attack = build_attack(attack_name, ThreatModel("linf", args.eps), **kw)

        def run_attack(a: Any = attack) -> None:
            a(model, x, y)

        def run_bare(k: int = k) -> None:
            bare_passes(model, x, y, k)

        t, floor = paired(run_attack, run_bare, clock, repeat)
        row(name, t, floor, f"{k} fwd+bwd passes")

    # evaluate() around PGD-10: one clean pass + the attack + its return_info forward
    pgd10 = build_attack("pgd", ThreatModel("linf", args.eps), steps=10)
    xc, yc = x.cpu(), y.cpu()
    t_eval, t_bare_eval = paired(
        lambda: evaluate(model, (xc, yc), "pgd:steps=10", args.eps, progress=False, device=device),
        lambda: [bare_forwards(model, x, 1), pgd10(model, x, y, return_info=True)],  # type: ignore[func-returns-value]
        clock,
        repeat,
    )
    row("evaluate(PGD-10)", t_eval, t_bare_eval, "PGD-10 + clean fwd")

    # Square and AutoAttack on a small subset
    xs, ys = x_all[: args.aa_n], y_all[: args.aa_n]
    q = 100 if args.quick else 300
    sq = build_attack("square", ThreatModel("linf", args.aa_eps), n_queries=q)
    t_sq, t_fw = paired(lambda: sq(model, xs, ys), lambda: bare_forwards(model, xs, q), clock, repeat)
    row(f"Square ({q} queries, n={args.aa_n})", t_sq, t_fw, f"{q} forwards (upper)")

    if not args.quick:
        for r in _autoattack(model, xs, ys, args.aa_eps, clock, repeat, evaluate):
            row(r["name"], r["seconds"], r["floor_seconds"], r["floor"])
        aa_vs_reference()

    out = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "clock": clock.kind,
        "clean_accuracy": clean_acc,
        "rows": rows,
    }
    pgd = next(r for r in rows if r["name"] == "PGD-10")
    verdict = "OK" if pgd["ratio"] <= 1.03 else "ABOVE TARGET"
    print(f"PGD-10 ratio {pgd['ratio']:.3f}x (target <= 1.03x): {verdict}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return out


def _autoattack(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, clock: Clock, repeat: int, evaluate: Any
) -> list[dict[str, Any]]:
    """AutoAttack standard vs its components run by hand on the still-robust points."""
    from entrobust.attacks import ThreatModel, build_attack

    threat = ThreatModel("linf", eps)
    aa = build_attack("autoattack-standard", threat)

    def by_hand() -> float:
        """The cascade by hand: clean pass, then each component on the points still robust
        (plus the forward that checks its result); the summed time of those calls."""
        total = 0.0
        t0 = clock.now()
        with torch.no_grad():
            robust = model(x).argmax(1).eq(y)
        total += clock.now() - t0
        for name in aa.attacks:  # type: ignore[attr-defined]
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            comp = aa.component(name, threat)  # type: ignore[attr-defined]
            t0 = clock.now()
            adv = comp(model, x[idx], y[idx])
            with torch.no_grad():
                fooled = model(adv).argmax(1).ne(y[idx])
            total += clock.now() - t0
            robust[idx[fooled]] = False
        return total

    xc, yc = x.cpu(), y.cpu()
    t_aa, t_parts, t_eval = [], [], []
    for _ in range(repeat):  # interleaved rounds
        t_aa.append(clock.time(lambda: aa(model, x, y)))
        t_parts.append(by_hand())
        t_eval.append(
            clock.time(
                lambda: evaluate(model, (xc, yc), "autoattack-standard", eps, progress=False, device=x.device)
            )
        )
    report = aa.last_report  # type: ignore[attr-defined]
    if report is not None:
        stages = ", ".join(f"{k} {v:.0%}" for k, v in report.robust_accuracy.items())
        print(f"  AutoAttack robust accuracy by stage (eps {eps}): {stages}")
    n = x.shape[0]
    return [
        {
            "name": f"AutoAttack standard (n={n})",
            "seconds": min(t_aa),
            "floor_seconds": min(t_parts),
            "floor": "sum of components",
        },
        {
            "name": f"evaluate(autoattack-standard, n={n})",
            "seconds": min(t_eval),
            "floor_seconds": min(t_parts),
            "floor": "sum of components",
        },
    ]


def _autoattack_vs_reference(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, clock: Clock, repeat: int, official: str | None
) -> list[dict[str, Any]]:
    """AutoAttack standard (ℓ∞ ``eps``) ÷ ``REFERENCE_PASSES`` bare fwd+bwd passes of the same
    model and points; and ÷ the official AutoAttack on them when ``official`` is a checkout.

    The runs are interleaved (entrobust, reference, official; ``repeat`` rounds) and each ratio
    is between medians, so a neighbour's load spike hits all of them alike. Rows are keyword
    arguments of ``row``; the robust accuracies and the per-example comparison are in
    ``robust`` so the speed is never read without the strength.
    """
    from entrobust.attacks import ThreatModel
    from entrobust.attacks.autoattack import AutoAttack

    aa = AutoAttack(ThreatModel("linf", eps), version="standard", seed=0, batch_size=250)
    results: dict[str, Tensor] = {}

    def ours() -> None:
        _, report = aa.run(model, x, y)
        results["entrobust"] = report.robust.cpu()

    runs: list[tuple[str, Callable[[], Any]]] = [
        ("entrobust", ours),
        ("reference", lambda: bare_passes(model, x, y, REFERENCE_PASSES)),
    ]
    if official:
        sys.path.insert(0, official)
        from autoattack import AutoAttack as OfficialAutoAttack  # the official checkout, not a dependency

        def theirs() -> None:
            torch.manual_seed(0)
            adversary = OfficialAutoAttack(
                model, norm="Linf", eps=eps, version="standard", device=x.device, seed=0, verbose=False
            )
            x_adv = adversary.run_standard_evaluation(x, y, bs=250)
            with torch.no_grad():
                results["official"] = model(x_adv).argmax(1).eq(y).cpu()

        runs.append(("official", theirs))
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for _ in range(repeat):
        for name, fn in runs:
            times[name].append(clock.time(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    n = x.shape[0]
    rob = float(results["entrobust"].float().mean())
    print(f"  AutoAttack standard (eps {eps}, n={n}): robust accuracy {rob:.1%}; medians of {repeat}")
    out: list[dict[str, Any]] = [
        {
            "name": f"AutoAttack std eps {eps} (n={n})",
            "t": med["entrobust"],
            "floor": med["reference"],
            "what": f"{REFERENCE_PASSES} fwd+bwd passes",
            "robust": {"entrobust": rob},
        }
    ]
    if official:
        ours_rob, off_rob = results["entrobust"], results["official"]
        rob_off = float(off_rob.float().mean())
        ours_worse = int((ours_rob & ~off_rob).sum())  # robust for entrobust, broken by the official code
        off_worse = int((off_rob & ~ours_rob).sum())
        vs_ref = med["official"] / med["reference"]
        print(
            f"  official AutoAttack: robust accuracy {rob_off:.1%} ({vs_ref:.1f}x the reference); points "
            f"only the official code breaks: {ours_worse}, only entrobust: {off_worse}"
        )
        out.append(
            {
                "name": f"AutoAttack std vs official (n={n})",
                "t": med["entrobust"],
                "floor": med["official"],
                "what": "official AutoAttack",
                "robust": {
                    "entrobust": rob,
                    "official": rob_off,
                    "broken_only_by_official": ours_worse,
                    "broken_only_by_entrobust": off_worse,
                },
            }
        )
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
