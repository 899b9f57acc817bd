"""Data-parallel scaling: examples per second of PAT training and PGD evaluation on 1 and W ranks.

Each configuration runs as a real process group (``torch.multiprocessing`` spawn with the
variables ``torchrun`` sets; ``gloo`` on CPU, ``nccl`` on CUDA with one GPU per rank), all in one
run of this script, and the speed-up is measured against the 1-rank run of the same script:

* **PAT training** — one epoch of ``ru/pat`` (PGD-``--steps`` adversary, global batch
  ``--batch-size``, ``--examples`` training examples, SmallCNN on mnist5k); examples/s = training
  examples ÷ the slowest rank's epoch time (validation excluded).
* **PGD evaluation** — ``evaluate`` with a PGD-``--steps`` suite on ``--eval-examples`` test
  examples, sharded by chunks; examples/s = examples ÷ wall time of the slowest rank.

On CPU every rank gets ``--threads`` threads (default 1), so W ranks use W cores: the ratio shows
what data parallelism buys on cores that would otherwise idle, not a free lunch on a busy machine.
With GPUs (``--device cuda``) ranks 1…N use one GPU each. Usage::

    python benchmarks/bench_scaling.py [--ranks 1 2] [--device cpu] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, args: dict[str, Any], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(args["threads"])
    from entrobust import distributed
    from entrobust.evaluation import evaluate
    from entrobust.training.presets import preset_config
    from entrobust.training.trainer import Trainer

    distributed.init(device=args["device"])
    try:
        cfg = preset_config("ru/pat", dataset="mnist5k", scale="cpu").with_overrides(
            {
                "epochs": 1,
                "batch_size": args["batch_size"],
                "max_train_examples": args["examples"],
                "model": "smallcnn",
                "model_kwargs": {},
                "validation.size": 0,
                "method.adversary.steps": args["steps"],
                "device": args["device"],
                "threads": args["threads"],
            }
        )
        result = Trainer(cfg, None, progress=False).fit()
        train_s = max(distributed.all_gather_objects(result.history[-1]["train_time_s"]))

        from entrobust.data import load_dataset

        test = load_dataset("mnist5k", "test")
        distributed.barrier()
        t0 = time.perf_counter()
        evaluate(
            result.model,
            test,
            f"pgd:steps={args['steps']}",
            eps=0.3,
            batch_size=args["eval_batch"],
            max_examples=args["eval_examples"],
            progress=False,
            keep_examples=False,
        )
        eval_s = max(distributed.all_gather_objects(time.perf_counter() - t0))
        if rank == 0:
            record = {"train_s": train_s, "eval_s": eval_s}
            Path(out).write_text(json.dumps(record))
    finally:
        distributed.shutdown()
    distributed.exit_now(0)


def measure(world: int, args: dict[str, Any]) -> dict[str, float]:
    """Seconds of the PAT epoch and of the PGD evaluation on ``world`` ranks."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        mp.spawn(_rank_main, args=(world, _port(), args, out), nprocs=world, join=True)
        return dict(json.loads(Path(out).read_text()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument(
        "--ranks", type=int, nargs="+", default=[1, 2], help="world sizes to compare (first = base)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (training adversary and evaluation)")
    p.add_argument("--examples", type=int, default=1024, help="training examples in the epoch")
    p.add_argument("--batch-size", type=int, default=128, help="global training batch")
    p.add_argument("--eval-examples", type=int, default=512)
    p.add_argument("--eval-batch", type=int, default=64, help="examples per evaluation chunk")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    if a.quick:
        a.examples, a.eval_examples, a.steps = 256, 128, 3
    if a.device.startswith("cuda"):
        need = max(a.ranks)
        if torch.cuda.device_count() < need:
            print(f"need {need} GPUs, found {torch.cuda.device_count()}", file=sys.stderr)
            return 2
    args = {
        "device": a.device,
        "threads": a.threads,
        "steps": a.steps,
        "examples": a.examples,
        "batch_size": a.batch_size,
        "eval_examples": a.eval_examples,
        "eval_batch": a.eval_batch,
    }
    print(
        f"PAT (PGD-{a.steps}) epoch on {a.examples} examples, batch {a.batch_size}; PGD-{a.steps} evaluation "
        f"of {a.eval_examples} examples; {a.device}, {a.threads} thread(s) per rank; {os.cpu_count()} CPUs"
    )
    rows = []
    for world in a.ranks:
        r = measure(world, args)
        rows.append({"ranks": world, **r})
    base = rows[0]
    print(f"{'ranks':>5} | {'train ex/s':>10} | {'speed-up':>8} | {'eval ex/s':>9} | {'speed-up':>8}")
    for r in rows:
        r["train_ex_s"] = a.examples / r["train_s"]
        r["eval_ex_s"] = a.eval_examples / r["eval_s"]
        r["train_speedup"] = base["train_s"] / r["train_s"]
        r["eval_speedup"] = base["eval_s"] / r["eval_s"]
        print(
            f"{r['ranks']:>5} | {r['train_ex_s']:>10.1f} | {r['train_speedup']:>7.2f}× | "
            f"{r['eval_ex_s']:>9.1f} | {r['eval_speedup']:>7.2f}×"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"args": args, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
