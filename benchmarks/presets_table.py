"""Train every preset's ``cpu`` variant on mnist5k and tabulate CPU time, clean and PGD-40 accuracy.

    python benchmarks/presets_table.py [--presets ru/pat,ru/entm] [--n 1000] [--out presets.md]

Each preset trains from scratch (seed 0) into a temporary directory; the *last* checkpoint is
evaluated on a seeded, class-stratified subset of ``--n`` examples of the mnist5k test split (the
split is sorted by class: its first 200 would be only 0s and 1s): clean accuracy and ℓ∞ PGD-40
(ε = 0.3, step 0.01, uniform start) robust accuracy. Training time is the process's CPU time,
which other programs on a shared machine do not stretch. PGD-40 alone is a weak verdict for
defenses that may mask gradients (EntM, LS alone): use ``entrobust audit`` / the demo's strong
suite before trusting those rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def stratified_subset(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` examples, as equal a share of every class as ``n`` allows (the first
    ``n mod C`` classes get one more), drawn at random with ``seed`` and shuffled."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y).tolist()
    n = min(n, len(y))
    picks = []
    for i, c in enumerate(classes):
        members = torch.nonzero(y == c).flatten()
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        picks.append(members[torch.randperm(len(members), generator=g)[:share]])
    idx = torch.cat(picks)
    return idx[torch.randperm(len(idx), generator=g)]


def main(argv: list[str] | None = None) -> int:
    from entrobust.attacks import ThreatModel, build_attack
    from entrobust.data import load_dataset
    from entrobust.training import PRESETS, preset_config, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="", help="comma-separated names (default: all)")
    parser.add_argument("--n", type=int, default=1000, help="test examples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="", help="also write the Markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.presets.split(",") if n] or PRESETS.names()
    test = load_dataset("mnist5k", "test").to_float()
    idx = stratified_subset(test.y, args.n, seed=0)
    x, y = test.x[idx], test.y[idx]
    pgd = build_attack("pgd", ThreatModel("linf", 0.3), steps=40, step_size=0.01, seed=0)
    lines = [f"| preset | CPU s | clean % (n={len(y)}) | PGD-40 ε=0.3 % |", "|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name in names:
        config = preset_config(name, dataset="mnist5k", scale="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.process_time()
            result = train(config, Path(tmp), progress=False, log=lambda _msg: None)
            cpu = time.process_time() - start
        model = result.model.eval()
        with torch.no_grad():
            clean = sum(
                int((model(x[i : i + 500]).argmax(1) == y[i : i + 500]).sum()) for i in range(0, len(x), 500)
            )
        robust = 0
        for i in range(0, len(x), 500):
            xa = pgd(model, x[i : i + 500], y[i : i + 500])
            with torch.no_grad():
                robust += int((model(xa).argmax(1) == y[i : i + 500]).sum())
        row = f"| `{name}` | {cpu:.0f} | {100 * clean / len(x):.1f} | {100 * robust / len(x):.1f} |"
        lines.append(row)
        print(row, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
