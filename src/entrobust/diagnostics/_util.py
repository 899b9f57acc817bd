"""Small helpers shared by the diagnostics: batching, devices, the Agg backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError, DataError

if TYPE_CHECKING:
    from entrobust.data.tensordata import TensorData

DataLike = Union["TensorData", tuple[Tensor, Tensor]]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-less model)."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def as_xy(data: DataLike) -> tuple[Tensor, Tensor]:
    """``(x float32 in [0, 1], y int64)`` from a :class:`TensorData` or an ``(x, y)`` pair."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise DataError(f"data must be a TensorData or an (x, y) pair, got a tuple of {len(data)}")
        x, y = data
    else:
        x, y = data.x, data.y
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise DataError("data must hold torch tensors x and y")
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    if not x.is_floating_point():
        raise DataError(f"images must be uint8 or floating point, got {x.dtype}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{x.shape[0]} images but {y.shape[0]} labels")
    return x.float(), y.long()


def take(data: DataLike, n: int | None) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples (all when ``n`` is None) as float images and labels."""
    x, y = as_xy(data)
    if n is not None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        x, y = x[:n], y[:n]
    return x, y


def batches(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive slices of ``(x, y)`` of at most ``batch_size`` examples."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (safe on headless machines)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
