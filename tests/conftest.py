"""Suite-wide settings.

Every test process computes with one torch thread (and so do the processes the tests start,
through ``OMP_NUM_THREADS``): results then do not depend on how many cores the machine has or on
how many test workers share them, and a number computed here and in a child process takes the
same floating-point path. Tests that change the thread count get it reset afterwards.

Tests that start several busy processes at once (gloo ranks, concurrent writers) carry the
``multiprocess`` marker; ``make test`` runs them after the parallel part, alone, so that they never
compete with test workers for the cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
