"""Train every preset's ``cpu`` variant on mnist5k and tabulate wall time, clean and PGD-40 accuracy.

    python benchmarks/presets_table.py [--presets ru/pat,ru/entm] [--n 1000] [--out presets.md]

Each preset trains from scratch (seed 0) into a temporary directory; the *last* checkpoint is
evaluated on the mnist5k test split: clean accuracy and ℓ∞ PGD-40 (ε = 0.3, step 0.01, uniform
start) robust accuracy. PGD-40 alone is a weak verdict for defenses that may mask gradients
(EntM, LS alone): use ``entrobust audit`` / the demo's strong suite before trusting those rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


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
    x, y = test.x[: args.n], test.y[: args.n]
    pgd = build_attack("pgd", ThreatModel("linf", 0.3), steps=40, step_size=0.01, seed=0)
    lines = ["| preset | wall s | clean % | PGD-40 ε=0.3 % |", "|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name in names:
        config = preset_config(name, dataset="mnist5k", scale="cpu")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = train(config, Path(tmp), progress=False, log=lambda _msg: None)
            wall = time.perf_counter() - start
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
        row = f"| `{name}` | {wall:.0f} | {100 * clean / len(x):.1f} | {100 * robust / len(x):.1f} |"
        lines.append(row)
        print(row, flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
