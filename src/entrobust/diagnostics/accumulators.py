"""Additive accumulators: ``update`` per batch, ``compute`` at the end (STYLE rule 8).

Every accumulator keeps only *sums* (float64 totals and integer histogram counts) in
``self.state``, so the result is the same over one batch or many, in any order, and two
accumulators — e.g. the shards of a distributed evaluation — combine with :meth:`merge`. The
pattern follows PyTorch-Ignite's ``reset/update/compute`` metrics (``ignite/metrics/metric.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from entrobust.errors import ConfigError


class Accumulator:
    """Base class: named additive tensors in ``self.state``; subclasses add ``update``/``compute``."""

    def __init__(self) -> None:
        self.state: dict[str, Tensor] = {}
        self.reset()

    def _zeros(self) -> dict[str, Tensor]:
        """The initial state (all zeros); override in subclasses."""
        return {}

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.state = self._zeros()

    def _add(self, name: str, value: Tensor | float) -> None:
        v = torch.as_tensor(value).detach().to("cpu", torch.float64)
        self.state[name] = self.state[name] + v

    def merge(self, other: Accumulator) -> None:
        """Add the state of ``other`` (another shard of the same accumulator) to this one."""
        if type(other) is not type(self) or other.state.keys() != self.state.keys():
            raise ConfigError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k, v in other.state.items():
            if v.shape != self.state[k].shape:
                raise ConfigError(f"cannot merge {type(self).__name__}: state {k!r} has another shape")
            self.state[k] = self.state[k] + v


class MeanAccumulator(Accumulator):
    """Mean (and standard deviation) of a per-example quantity, ignoring non-finite values."""

    def _zeros(self) -> dict[str, Tensor]:
        z = torch.zeros((), dtype=torch.float64)
        return {"n": z.clone(), "sum": z.clone(), "sumsq": z.clone()}

    def add(self, values: Tensor) -> None:
        v = values.detach().reshape(-1).to("cpu", torch.float64)
        v = v[torch.isfinite(v)]
        self._add("n", float(v.numel()))
        self._add("sum", v.sum())
        self._add("sumsq", (v * v).sum())

    @property
    def count(self) -> int:
        return int(self.state["n"])

    def mean(self) -> float:
        n = float(self.state["n"])
        return float(self.state["sum"]) / n if n else float("nan")

    def std(self) -> float:
        n = float(self.state["n"])
        if n < 2:
            return float("nan")
        var = (float(self.state["sumsq"]) - float(self.state["sum"]) ** 2 / n) / (n - 1)
        return math.sqrt(max(var, 0.0))


class PearsonAccumulator(Accumulator):
    """Pearson correlation of paired per-example values (pairs with a non-finite member are skipped)."""

    def _zeros(self) -> dict[str, Tensor]:
        return {k: torch.zeros((), dtype=torch.float64) for k in ("n", "sx", "sy", "sxx", "syy", "sxy")}

    def add(self, a: Tensor, b: Tensor) -> None:
        a = a.detach().reshape(-1).to("cpu", torch.float64)
        b = b.detach().reshape(-1).to("cpu", torch.float64)
        if a.shape != b.shape:
            raise ConfigError(f"paired values differ in length: {a.numel()} and {b.numel()}")
        ok = torch.isfinite(a) & torch.isfinite(b)
        a, b = a[ok], b[ok]
        self._add("n", float(a.numel()))
        self._add("sx", a.sum())
        self._add("sy", b.sum())
        self._add("sxx", (a * a).sum())
        self._add("syy", (b * b).sum())
        self._add("sxy", (a * b).sum())

    @property
    def count(self) -> int:
        return int(self.state["n"])

    def correlation(self) -> float:
        """r = cov(a, b) / (σ_a σ_b); NaN with fewer than 2 pairs or a constant member."""
        s = {k: float(v) for k, v in self.state.items()}
        n = s["n"]
        if n < 2:
            return float("nan")
        cov = s["sxy"] - s["sx"] * s["sy"] / n
        va = s["sxx"] - s["sx"] ** 2 / n
        vb = s["syy"] - s["sy"] ** 2 / n
        if va <= 0 or vb <= 0:
            return float("nan")
        return max(-1.0, min(1.0, cov / math.sqrt(va * vb)))


class HistogramAccumulator(Accumulator):
    """Counts of a per-example quantity in fixed bins over ``[low, high]`` (values outside are clipped)."""

    def __init__(self, low: float, high: float, bins: int = 20) -> None:
        if not high > low:
            raise ConfigError(f"histogram range must have high > low, got [{low}, {high}]")
        if bins < 1:
            raise ConfigError(f"bins must be >= 1, got {bins}")
        self.low, self.high, self.bins = float(low), float(high), int(bins)
        super().__init__()

    def _zeros(self) -> dict[str, Tensor]:
        return {"counts": torch.zeros(self.bins, dtype=torch.float64)}

    def add(self, values: Tensor) -> None:
        v = values.detach().reshape(-1).to("cpu", torch.float64)
        v = v[torch.isfinite(v)].clamp(self.low, self.high)
        idx = ((v - self.low) / (self.high - self.low) * self.bins).floor().long().clamp(0, self.bins - 1)
        self._add("counts", torch.bincount(idx, minlength=self.bins).to(torch.float64))

    def edges(self) -> list[float]:
        step = (self.high - self.low) / self.bins
        return [self.low + i * step for i in range(self.bins + 1)]

    def result(self) -> Histogram:
        return Histogram(self.edges(), [int(c) for c in self.state["counts"].tolist()])


@dataclass(frozen=True)
class Histogram:
    """Bin edges (``bins + 1``) and counts (``bins``)."""

    edges: list[float]
    counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "counts": list(self.counts)}

    @property
    def total(self) -> int:
        return sum(self.counts)
