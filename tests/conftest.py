"""Suite-wide settings.

Every test process computes with one torch thread (and so do the processes the tests start,
through ``OMP_NUM_THREADS``): results then do not depend on how many cores the machine has or on
how many test workers share them, and a number computed here and in a child process takes the
same floating-point path. Tests that change the thread count get it reset afterwards.

Property tests (hypothesis) draw the same examples on every run and have no time limit per
example: a loaded machine must not fail a test with ``DeadlineExceeded``, and CI must not pass
or fail by the luck of the draw. ``ENTROBUST_HYPOTHESIS=explore`` draws new examples each run
(for hunting bugs locally; a failure prints the example to add with ``@example``).

Tests that start several busy processes at once (gloo ranks, concurrent writers) carry the
``multiprocess`` marker; ``make test`` runs them after the parallel part, alone, so that they never
compete with test workers for the cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# `entrobust run` / `demo` run in-process unless a test asks for workers (--workers / workers=)
os.environ.setdefault("ENTROBUST_WORKERS", "1")

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

_QUIET = [HealthCheck.too_slow]
settings.register_profile(
    "repeatable", derandomize=True, database=None, deadline=None, suppress_health_check=_QUIET
)
settings.register_profile("explore", deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("ENTROBUST_HYPOTHESIS", "repeatable"))


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of an untrained LeNet5 on 8×8 digits, trained without adversary: what the
    command-line tests of ``audit`` / ``analyze`` / ``eval`` load."""
    from entrobust.checkpoint import save_checkpoint
    from entrobust.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet5", dataset="digits", input_size=8)
    stem = tmp_path_factory.mktemp("run") / "best"
    save_checkpoint(stem, model, metadata={"recipe": {"method": {"adversary": {"kind": "none"}}}})
    return stem
