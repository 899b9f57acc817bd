"""A scripted toy problem whose per-example worst case is known in closed form.

Images are 1×1×4 "records": pixel 0 = class code c/10, pixel 1 = example id/1000, pixel 2 = a
3-bit mask (which scripted attacks work on this example), pixel 3 = threshold t ∈ [0, 0.45].
:class:`FlagModel` predicts c, or c + 1 once pixel 3 exceeds 0.5. :class:`Scripted` attack k adds
``strength·ε`` (times a seeded uniform draw when ``random``) to pixel 3 of the examples whose mask
has bit k — so attack k at ε fools example i iff bit k is set and t_i + strength·ε > 0.5.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.attacks.base import Attack
from entrobust.attacks.threat import ThreatModel

C = 10

#: (label, ε) → list of example ids attacked (filled by every Scripted call)
CALLS: dict[tuple[str, float], list[int]] = defaultdict(list)
#: raise after this many more chunks (None: never) — simulates a crash mid-evaluation
CRASH = threading.local()


class Crash(RuntimeError):
    pass


class FlagModel(nn.Module):
    """Predicts the class code of pixel 0, shifted by one when pixel 3 > 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, x: Tensor) -> Tensor:
        f = x.flatten(1)
        c = (f[:, 0] * 10).round().long() % C
        flip = f[:, 3] > 0.5
        pred = torch.where(flip, (c + 1) % C, c)
        return F.one_hot(pred, C).float() * self.scale + f[:, 3:4] * 0.01


def make_data(n: int, seed: int = 0, wrong: float = 0.1) -> tuple[Tensor, Tensor]:
    """``n`` toy records and labels (a fraction ``wrong`` is misclassified already)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, C, (n,), generator=g)
    x = torch.zeros(n, 1, 1, 4)
    x[:, 0, 0, 0] = c.float() / 10
    x[:, 0, 0, 1] = torch.arange(n).float() / 1000
    x[:, 0, 0, 2] = torch.randint(0, 8, (n,), generator=g).float() / 8
    x[:, 0, 0, 3] = torch.rand(n, generator=g) * 0.45
    y = c.clone()
    bad = torch.rand(n, generator=g) < wrong
    y[bad] = (c[bad] + 3) % C
    return x, y


def ids_of(x: Tensor) -> list[int]:
    return [int(v) for v in (x[:, 0, 0, 1] * 1000).round().long()]


def works(x: Tensor, bit: int) -> Tensor:
    mask = (x[:, 0, 0, 2] * 8).round().long()
    return (mask >> bit) & 1 == 1


class Scripted(Attack):
    """Scripted attack ``bit`` with ``strength`` (see the module docstring)."""

    def __init__(
        self,
        threat: ThreatModel,
        *,
        bit: int = 0,
        strength: float = 0.9,
        random: bool = False,
        label: str = "",
        seed: int | None = None,
    ) -> None:
        super().__init__(threat, seed=seed)
        self.bit, self.strength, self.random, self.label = bit, strength, random, label

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Any:
        left = getattr(CRASH, "left", None)
        if left is not None:
            if left <= 0:
                raise Crash("simulated crash")
            CRASH.left = left - 1
        eps = float(self.threat.eps)  # type: ignore[arg-type]
        CALLS[(self.label, round(eps, 9))].extend(ids_of(x))
        amount = torch.full((x.shape[0],), self.strength * eps)
        if self.random:
            amount = amount * torch.rand(x.shape[0], generator=self.generator())
        x_adv = x.clone()
        x_adv[:, 0, 0, 3] += torch.where(works(x, self.bit), amount, torch.zeros_like(amount))
        fooled = x_adv[:, 0, 0, 3] > 0.5
        first = torch.where(fooled, torch.full_like(y, 3), torch.full_like(y, -1))
        return x_adv, first


def scripted(threat: ThreatModel, **kw: Any) -> Attack:
    """Factory usable as a :class:`SuiteEntry` attack."""
    return Scripted(threat, **kw)


def expected_fooled(x: Tensor, y: Tensor, rows: list[tuple[int, float]], eps: float) -> Tensor:
    """Ground truth of the deterministic case: fooled (or wrong) at ``eps`` by any row."""
    model = FlagModel()
    with torch.no_grad():
        wrong = model(x).argmax(1).ne(y)
    fooled = wrong.clone()
    t = x[:, 0, 0, 3]
    for bit, strength in rows:
        hit = works(x, bit) & ((t + torch.tensor(strength * eps, dtype=t.dtype)) > 0.5)
        fooled |= hit
    return fooled
