"""Data parallelism on PyTorch's own engine: ``torch.distributed`` launched by ``torchrun``.

entrobust never starts processes itself. ``torchrun --nproc_per_node N -m entrobust train ...``
(or ``--nnodes``/``--rdzv-*`` for several machines) starts N copies of the same command and sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` reads
them and joins the process group (``nccl`` on CUDA, ``gloo`` on CPU). Without those variables
everything here is a no-op for a world of one, so library code calls these helpers
unconditionally.

**Global-batch randomness.** Under data parallelism, the training batch of a step is the union of
the ranks' shards (rank ``r`` holds rows ``r, r + W, r + 2W, …`` of the global batch, the layout of
``DistributedSampler``). Every rank is seeded identically, and per-example noise that training
draws — random starts of adversaries, ATENT/SGLD noise, Gaussian input noise — is drawn for the
**global** batch and sliced to the rank's rows (:func:`batch_noise` inside :func:`batch_shard`).
The ranks' random generators therefore stay in lock-step, weight-space noise (Entropy-SGD's
Langevin term) is the same on every rank, and a data-parallel step computes what one process
computes on the global batch, up to the order of floating-point sums.
"""

from __future__ import annotations

import contextvars
import datetime
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from entrobust.errors import ConfigError

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "average_gradients",
    "barrier",
    "batch_noise",
    "batch_shard",
    "broadcast_object",
    "exit_now",
    "info",
    "init",
    "is_main",
    "launched",
    "local_device",
    "rank",
    "reduce_sums",
    "shard_indices",
    "shutdown",
    "unwrap",
    "world_size",
]

T = TypeVar("T")
_ENV = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``world_size`` processes in all, this one is ``rank``
    (``local_rank`` on its node); ``backend`` is ``None`` for a single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher setting ``RANK``/``WORLD_SIZE``) started us."""
    return all(k in os.environ for k in _ENV)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def is_main() -> bool:
    """True on rank 0: the process that logs, shows progress and writes files."""
    return rank() == 0


def info() -> DistInfo:
    """The current :class:`DistInfo`."""
    if not _active():
        return DistInfo()
    return DistInfo(world_size(), rank(), int(os.environ.get("LOCAL_RANK", rank())), str(dist.get_backend()))


def local_device(name: str = "auto") -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is used, else as ``select_device``."""
    from entrobust.runtime import select_device

    dev = select_device(name)
    if dev.type == "cuda" and dev.index is None and _active():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def init(device: str = "auto", backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the launcher's environment; return :func:`info`.

    A no-op returning a world of one when not :func:`launched` (or already initialised).
    ``backend`` defaults to ``nccl`` when the job runs on CUDA and ``gloo`` otherwise.
    Raises :class:`ConfigError` when the environment is incomplete or the backend is unusable.
    """
    if _active() or not launched():
        return info()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed support")
    try:
        world, rk = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rk < world:
        raise ConfigError(f"bad launcher environment: RANK={rk}, WORLD_SIZE={world}")
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ConfigError(f"{key} is not set; start the job with torchrun (see README 'Scaling out')")
    dev = local_device(device)
    chosen = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if chosen == "nccl" and not dist.is_nccl_available():
        raise ConfigError("backend 'nccl' is not available in this torch build; use gloo")
    dist.init_process_group(
        backend=chosen,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=dev if dev.type == "cuda" else None,
    )
    return info()


def shutdown() -> None:
    """Leave the process group (no-op without one), after every rank has arrived here."""
    if _active():
        if world_size() > 1:
            dist.barrier()  # a rank tearing down while a peer still talks aborts gloo
        dist.destroy_process_group()


def exit_now(code: int) -> None:
    """Flush and end a rank's process without interpreter finalization.

    Gloo's worker threads can still hold tensors when Python tears down, and that sometimes ends
    a finished rank with SIGABRT ("terminate called without an active exception"; discussed in
    pytorch/pytorch PR #179291), which ``torchrun`` would report as a failure. Called after
    :func:`shutdown` by the CLI and the test launcher of a launched job.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _active() and world_size() > 1:
        dist.barrier()


# ------------------------------------------------------------------------------ collectives
def _comm_device() -> torch.device:
    if _active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sums(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64; identity for one process)."""
    if not _active() or world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each ``.grad`` by its mean over ranks (what DDP does inside ``backward``).

    For gradients computed outside the DDP wrapper, e.g. the AWP proxy's ascent step; parameters
    without a gradient are skipped (they must be the same on every rank).
    """
    if not _active() or world_size() == 1:
        return
    w = world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(w)


def all_gather_objects(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (picklable objects; CPU tensors)."""
    if not _active() or world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank."""
    if not _active() or world_size() == 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard_indices(n: int) -> range:
    """The items ``rank, rank + W, …`` of ``range(n)``: round-robin work for this rank."""
    return range(rank(), n, world_size())


def unwrap(model: nn.Module, *, compiled: bool = True) -> nn.Module:
    """The module inside ``DataParallel`` / ``DistributedDataParallel`` wrappers and (unless
    ``compiled=False``) inside a ``torch.compile`` wrapper.

    Attacks run on ``unwrap(model, compiled=False)``: their input-gradient passes must not
    trigger DDP's gradient all-reduce, but may use the compiled graph. Checkpoints hold
    ``unwrap(model)``, the plain model, so a run saved under DDP loads into a single process and
    vice versa.
    """
    while True:
        inner = getattr(model, "_orig_mod", None) if compiled else None  # torch.compile's wrapper
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


# ------------------------------------------------------------------------------ global-batch noise
_SHARD: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "entrobust_shard", default=None
)


@contextmanager
def batch_shard(world: int, rank_: int) -> Iterator[None]:
    """Within this block, per-example noise is drawn for a global batch of ``world`` shards and
    sliced to rows ``rank_::world`` (see the module docstring). ``world == 1`` changes nothing."""
    if world < 1 or not 0 <= rank_ < world:
        raise ConfigError(f"need world >= 1 and 0 <= rank < world, got {world}, {rank_}")
    token = _SHARD.set((world, rank_) if world > 1 else None)
    try:
        yield
    finally:
        _SHARD.reset(token)


def batch_noise(
    kind: str,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``randn`` (``kind="normal"``) or ``rand`` (``"uniform"``) noise of ``shape`` whose first
    axis indexes examples; inside :func:`batch_shard` these are this rank's rows of the global
    batch's noise, so the result does not depend on how the batch is split over ranks."""
    draw = torch.randn if kind == "normal" else torch.rand
    shard = _SHARD.get()
    shape = tuple(int(s) for s in shape)
    if shard is None or not shape or shape[0] == 0:
        return draw(shape, generator=generator, dtype=dtype, device=device)
    w, r = shard
    full = draw((shape[0] * w, *shape[1:]), generator=generator, dtype=dtype, device=device)
    return full[r::w].contiguous()
