"""Training-loop overhead: how close is one epoch to its count of gradient evaluations?

1. PAT with PGD-K (mix α = 0.5): epoch time ÷ time of (K + 2) bare forward+backward passes per
   batch (K attack steps + the clean and the adversarial training pass). 1.0 = no overhead beyond
   the gradient evaluations themselves.
2. TRADES (K KL steps), ATENT ℓ∞ (K SGLD samples), Entropy-SGD PGD-AT (L = 5 inner steps, each on a
   fresh batch with PGD-K at the inner weights): epoch time ÷ PAT's epoch time, all with the same
   K, the same batches and the same number of gradient evaluations per batch up to ±1 forward
   (TRADES needs one extra clean forward for its KL target, PGD-AT one pass fewer than PAT).

SmallCNN on mnist5k (``--batches`` batches of ``--batch-size``), CPU unless ``--device`` says so.
On a CPU every time is **process CPU time** (``time.process_time``), not wall time: on a shared
machine other programs stretch wall time but not the CPU seconds this process spends (on a GPU,
wall time with synchronization). The results are **ratios** to the bare forward+backward time
measured in the same run (before and after the methods, averaged, so drift shows), which stay
meaningful when the machine is slower or busier. Prints a table. Usage::

    python benchmarks/bench_training.py [--steps 5] [--batches 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F


def clock(device: torch.device | str = "cpu") -> float:
    """Seconds for timing: process CPU time on a CPU (unaffected by other programs sharing the
    machine), wall time after synchronizing on a GPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def bare_pass_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds (:func:`clock`) of one forward+backward (CE, parameter gradients) on the batch."""
    model.train()
    times = []
    for _ in range(repeats + 2):
        t = clock(x.device)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        times.append(clock(x.device) - t)
    return statistics.median(times[2:])


def epoch_time(config: Any, train_data: Any, repeats: int) -> float:
    """Median seconds of one training epoch (no validation) over ``repeats`` epochs."""
    from entrobust.training import Trainer

    trainer = Trainer(config, None, train_data=train_data, progress=False)
    trainer.setup()
    device = getattr(trainer, "device", "cpu")
    times = []
    for epoch in range(repeats):
        t = clock(device)
        trainer.run_epoch(epoch)
        times.append(clock(device) - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="K: attack steps / SGLD samples")
    parser.add_argument("--batches", type=int, default=8, help="batches per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="epochs timed per method (median)")
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from entrobust.data import load_dataset
    from entrobust.models import create_model
    from entrobust.runtime import select_device, set_threads
    from entrobust.training import TrainConfig

    threads = set_threads(args.threads)
    device = select_device(args.device)
    K, n = args.steps, args.batches * args.batch_size
    data = load_dataset("mnist5k", "train")
    data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n])

    model = create_model(args.model, dataset="mnist5k").to(device)
    x = data.x[: args.batch_size].float().div(255).to(device)
    y = data.y[: args.batch_size].to(device)
    t_pass = bare_pass_time(model, x, y, repeats=10)

    def cfg(method: dict[str, Any], optimizer: dict[str, Any] | None = None) -> TrainConfig:
        return TrainConfig.from_dict(
            {
                "dataset": "mnist5k",
                "model": args.model,
                "epochs": 100,
                "batch_size": args.batch_size,
                "method": method,
                "optimizer": optimizer or {"name": "sgd", "lr": 0.01},
                "validation": {"size": 0},
                "device": args.device,
                "augment": False,
            }
        )

    eps, step = 0.3, 0.1
    pgd = {"kind": "pgd", "eps": eps, "steps": K, "step_size": step}
    methods = {
        "PAT (PGD-K, α=0.5)": (cfg({"adversary": pgd, "objective": {"kind": "ce", "mix_alpha": 0.5}}), K + 2),
        "TRADES (K KL steps)": (
            cfg(
                {
                    "adversary": {"kind": "trades", "eps": eps, "steps": K, "step_size": step},
                    "objective": {"kind": "trades", "params": {"beta": 6.0}},
                }
            ),
            K + 2,
        ),
        "ATENT ℓ∞ (K samples)": (
            cfg(
                {
                    "adversary": {
                        "kind": "atent-linf",
                        "eps": eps,
                        "steps": K,
                        "step_size": step,
                        "bn_mode": "train",
                    },
                    "objective": {"kind": "atent"},
                }
            ),
            K + 1,
        ),
        "EntropySGD PGD-AT (L=5)": (
            cfg(
                {"adversary": pgd},
                {"name": "entropy-sgd", "lr": 1.0, "momentum": 0.9, "nesterov": True, "kwargs": {"L": 5}},
            ),
            K + 1,
        ),
    }
    print(
        f"model {args.model}, device {device}, threads {threads}, K = {K}, "
        f"{args.batches} batches of {args.batch_size}"
    )
    times = {name: epoch_time(c, data, args.repeats) for name, (c, _) in methods.items()}
    t_after = bare_pass_time(model, x, y, repeats=10)
    drift = t_after / t_pass
    t_pass = (t_pass + t_after) / 2
    unit = "CPU" if device.type == "cpu" else "wall"
    print(f"bare forward+backward: {1000 * t_pass:.1f} ms {unit} per batch (after ÷ before: {drift:.2f})")
    pat = times["PAT (PGD-K, α=0.5)"]
    print()
    head = f"epoch {unit} s"
    print(f"{'method':<26} {head:>12} {'passes/batch':>13} {'÷ bare passes':>14} {'÷ PAT':>7}")
    for name, (_, passes) in methods.items():
        t = times[name]
        ideal = args.batches * passes * t_pass
        print(f"{name:<26} {t:>12.2f} {passes:>13d} {t / ideal:>14.2f} {t / pat:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
