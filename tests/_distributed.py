"""Run a function on W CPU processes joined by a ``gloo`` process group (tests only).

``spawn(fn, world, *args, tmp=tmp_path)`` starts ``world`` processes with
:func:`torch.multiprocessing.spawn`, sets the variables ``torchrun`` would set (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``), lets
:func:`entrobust.distributed.init` join the group, calls ``fn(rank, world, *args)`` and returns the
per-rank return values (saved with ``torch.save``). ``fn`` must be a module-level function.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, world: int, port: int, fn: Any, args: tuple[Any, ...], out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from entrobust import distributed

    distributed.init(device="cpu", timeout_s=120)
    try:
        result = fn(rank, world, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.shutdown()
    distributed.exit_now(0)


def spawn(fn: Any, world: int, *args: Any, tmp: Path) -> list[Any]:
    """``[fn(0, world, *args), …, fn(world - 1, world, *args)]`` computed on ``world`` ranks."""
    out = Path(tmp) / f"ranks-{free_port()}"
    out.mkdir(parents=True)
    mp.spawn(_entry, args=(world, free_port(), fn, args, str(out)), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
