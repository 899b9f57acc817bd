"""Split independent jobs over data-parallel ranks and gather their results in job order.

Sharded evaluation (``evaluate``, the obfuscation audit) only ever needs two patterns on top of
:mod:`entrobust.distributed`:

* :func:`sharded_map` — jobs ``items[0] … items[n−1]`` (batches, attack chunks) run round-robin
  on the ranks (rank ``r`` runs items ``r, r + W, …``) and every rank receives the full list of
  results in job order, so what happens next is identical on every rank and identical to one
  process running the jobs one after the other. Each job must be a pure function of its item
  (seeded by it), which is what makes the outcome independent of the world size.
* :func:`on_main` — rank 0 does something alone (read the resume state, train a surrogate) and
  every rank receives its return value.

A failure on one rank is reported to all of them (the collective still completes), so no rank
waits forever for a peer that died; the failing rank re-raises its own exception and the others
raise a copy of it (an :class:`RuntimeError` naming the rank when it cannot be pickled), so a
user mistake found by rank 0 (e.g. a resume state made with other arguments) is the same
:class:`~entrobust.errors.ConfigError` everywhere. For a single process both are plain calls.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from entrobust import distributed

__all__ = ["on_main", "sharded_map"]

T = TypeVar("T")
U = TypeVar("U")


def _portable(exc: Exception, rank: int) -> Exception:
    """``exc`` itself when it survives pickling, else a :class:`RuntimeError` describing it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"rank {rank} failed: {type(exc).__name__}: {exc}")


def sharded_map(fn: Callable[[U], T], items: Sequence[U]) -> list[T]:
    """``[fn(item) for item in items]`` on every rank, each computed once, round-robin over ranks.

    Results must be picklable (keep tensors on the CPU). With ``len(items) <= world_size`` this
    is one *round*: rank ``r`` computes ``items[r]``.
    """
    n = len(items)
    if distributed.world_size() == 1:
        return [fn(item) for item in items]
    mine: dict[int, T] = {}
    err: Exception | None = None
    try:
        for i in distributed.shard_indices(n):
            mine[i] = fn(items[i])
    except Exception as exc:  # reported to every rank below, so none blocks in the gather
        err = exc
    parts = distributed.all_gather_objects(
        (mine, None if err is None else _portable(err, distributed.rank()))
    )
    if err is not None:
        raise err
    for _, other in parts:
        if other is not None:
            raise other
    merged: dict[int, T] = {}
    for part, _ in parts:
        merged.update(part)
    return [merged[i] for i in range(n)]


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 only and broadcast to every rank (picklable result)."""
    if distributed.world_size() == 1:
        return fn()
    box: tuple[Any, Exception | None] = (None, None)
    err: Exception | None = None
    if distributed.is_main():
        try:
            box = (fn(), None)
        except Exception as exc:  # reported to every rank, see the module docstring
            err = exc
            box = (None, _portable(exc, 0))
    got = distributed.broadcast_object(box)
    if err is not None:
        raise err
    if got[1] is not None:
        raise got[1]
    return got[0]  # type: ignore[no-any-return]
