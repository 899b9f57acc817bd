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

Usage: ``python benchmarks/bench_attacks.py [--device cpu|cuda] [--repeat 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], Any], device: torch.device, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Min and median wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": statistics.median(times)}


def paired(
    a: Callable[[], Any], b: Callable[[], Any], device: torch.device, repeat: int, warmup: int = 1
) -> tuple[float, float]:
    """Min wall times of ``a`` and ``b`` measured alternately (a, b, a, b, ...), so a change in
    machine load during the run hits both alike."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
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
    p.add_argument("--aa-n", type=int, default=50, help="points for AutoAttack / Square")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--aa-eps", type=float, default=0.15)
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat, fewer attacks (smoke run)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from entrobust.attacks import ThreatModel, build_attack
    from entrobust.evaluation import evaluate
    from entrobust.runtime import select_device

    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    repeat = 1 if args.quick else args.repeat
    model, x_all, y_all = build_model(device, args.train_steps, seed=0)
    x, y = x_all[: args.batch], y_all[: args.batch]
    with torch.no_grad():
        clean_acc = float(model(x).argmax(1).eq(y).float().mean())
    print(
        f"bench_attacks: smallcnn on mnist5k, batch {x.shape[0]}, device {device}, threads "
        f"{torch.get_num_threads()}, clean accuracy {clean_acc:.1%}, repeat {repeat} (min time)"
    )

    rows: list[dict[str, Any]] = []

    def row(name: str, t: float, floor: float, what: str) -> None:
        rows.append({"name": name, "seconds": t, "floor_seconds": floor, "floor": what, "ratio": t / floor})
        print(f"  {name:<36} {t:8.3f} s   floor {floor:8.3f} s ({what:<22})  ratio {t / floor:6.3f}x", flush=True)

    gradient = [("FGSM", "fgsm", {}, 1), ("PGD-10", "pgd", {"steps": 10}, 10)]
    if not args.quick:
        gradient += [("PGD-40", "pgd", {"steps": 40}, 40), ("APGD-CE (100 it)", "apgd-ce", {}, 100)]
    for name, attack_name, kw, k in gradient:
        attack = build_attack(attack_name, ThreatModel("linf", args.eps), **kw)
        t, floor = paired(lambda a=attack: a(model, x, y), lambda k=k: bare_passes(model, x, y, k), device, repeat)
        row(name, t, floor, f"{k} fwd+bwd passes")

    # evaluate() around PGD-10: one clean pass + the attack + its return_info forward
    pgd10 = build_attack("pgd", ThreatModel("linf", args.eps), steps=10)
    xc, yc = x.cpu(), y.cpu()
    t_eval, t_bare_eval = paired(
        lambda: evaluate(model, (xc, yc), "pgd:steps=10", args.eps, progress=False, device=device),
        lambda: (bare_forwards(model, x, 1), pgd10(model, x, y, return_info=True)),
        device,
        repeat,
    )
    row("evaluate(PGD-10)", t_eval, t_bare_eval, "PGD-10 + clean fwd")

    # Square and AutoAttack on a small subset
    xs, ys = x_all[: args.aa_n], y_all[: args.aa_n]
    q = 100 if args.quick else 300
    sq = build_attack("square", ThreatModel("linf", args.aa_eps), n_queries=q)
    t_sq, t_fw = paired(lambda: sq(model, xs, ys), lambda: bare_forwards(model, xs, q), device, repeat)
    row(f"Square ({q} queries, n={args.aa_n})", t_sq, t_fw, f"{q} forwards (upper)")

    if not args.quick:
        aa_res = _autoattack(model, xs, ys, args.aa_eps, device, repeat, evaluate)
        for r in aa_res:
            row(r["name"], r["seconds"], r["floor_seconds"], r["floor"])

    out = {"device": str(device), "threads": torch.get_num_threads(), "clean_accuracy": clean_acc, "rows": rows}
    pgd = next(r for r in rows if r["name"] == "PGD-10")
    verdict = "OK" if pgd["ratio"] <= 1.03 else "ABOVE TARGET"
    print(f"PGD-10 ratio {pgd['ratio']:.3f}x (target <= 1.03x): {verdict}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return out


def _autoattack(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, device: torch.device, repeat: int, evaluate: Any
) -> list[dict[str, Any]]:
    """AutoAttack standard vs its components run by hand on the still-robust points."""
    from entrobust.attacks import ThreatModel, build_attack

    threat = ThreatModel("linf", eps)
    aa = build_attack("autoattack-standard", threat)

    def by_hand() -> float:
        """Run the cascade by hand; return the summed time of the component calls only."""
        total = 0.0
        t0 = time.perf_counter()
        with torch.no_grad():
            robust = model(x).argmax(1).eq(y)
        _sync(device)
        total += time.perf_counter() - t0
        for name in aa.attacks:  # type: ignore[attr-defined]
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            comp = aa.component(name, threat)  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            adv = comp(model, x[idx], y[idx])
            with torch.no_grad():
                fooled = model(adv).argmax(1).ne(y[idx])
            _sync(device)
            total += time.perf_counter() - t0
            robust[idx[fooled]] = False
        return total

    def wall(fn: Callable[[], Any]) -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    xc, yc = x.cpu(), y.cpu()
    t_aa, t_parts, t_eval = [], [], []
    for _ in range(repeat):  # interleaved rounds: load drift hits all three alike
        t_aa.append(wall(lambda: aa(model, x, y)))
        t_parts.append(by_hand())
        t_eval.append(
            wall(lambda: evaluate(model, (xc, yc), "autoattack-standard", eps, progress=False, device=device))
        )
    report = aa.last_report  # type: ignore[attr-defined]
    if report is not None:
        print(f"  AutoAttack robust accuracy by stage: {report.robust_accuracy}")
    t_aa, t_parts, t_eval = min(t_aa), min(t_parts), min(t_eval)  # type: ignore[assignment]
    n = x.shape[0]
    return [
        {
            "name": f"AutoAttack standard (n={n})",
            "seconds": t_aa,
            "floor_seconds": t_parts,
            "floor": "sum of components",
        },
        {
            "name": f"evaluate(autoattack-standard, n={n})",
            "seconds": t_eval,
            "floor_seconds": t_parts,
            "floor": "sum of components",
        },
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
