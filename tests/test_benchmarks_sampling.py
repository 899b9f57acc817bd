"""The benchmark scripts measure what they say: a class-balanced test subset, CPU-time clocks."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_presets_table_tests_every_class_not_the_first_two() -> None:
    """mnist5k's test split is sorted by class; ``--n 200`` must not mean "only 0s and 1s"."""
    subset = _load("presets_table").stratified_subset
    y = torch.arange(10).repeat_interleave(100)  # sorted by class, like mnist5k
    idx = subset(y, 200, seed=0)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200
    assert torch.bincount(y[idx], minlength=10).tolist() == [20] * 10
    assert torch.equal(idx, subset(y, 200, seed=0))  # seeded
    assert not torch.equal(idx, subset(y, 200, seed=1))
    odd = subset(y, 25, seed=0)
    counts = torch.bincount(y[odd], minlength=10)
    assert int(counts.sum()) == 25 and int(counts.max() - counts.min()) <= 1


def test_bench_training_times_cpu_seconds_not_wall_time() -> None:
    clock = _load("bench_training").clock
    wall, t = time.perf_counter(), clock("cpu")
    time.sleep(0.3)  # waiting (like being descheduled on a busy machine) costs no CPU time
    assert clock("cpu") - t < 0.15 < time.perf_counter() - wall
