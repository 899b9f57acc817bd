"""Constructed models for the alarm and escalation tests, and points they classify.

``Scaled``: a linear model whose logits are multiplied by ``scale``; with 1000 its softmax
saturates, so the cross-entropy gradient is exactly zero while the margins are intact (a model
that masks CE alone). ``Detached``: the same predictions with every input gradient zero, so every
gradient attack is stuck.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

D, C, EPS = 64, 4, 0.3


class Scaled(nn.Module):
    """Linear logits × ``scale``: with 1000, CE saturates (∇CE = 0 exactly) but margins are intact."""

    def __init__(self, scale: float = 1000.0) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(C, D, generator=torch.Generator().manual_seed(0)))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * (x.flatten(1) @ self.w.t())


class Detached(nn.Module):
    """Predictions follow the input, every input gradient is zero: all gradient attacks are stuck."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Scaled(1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.detach()) + 0.0 * x.flatten(1)[:, :1]


def points(n: int = 40) -> tuple[Tensor, Tensor]:
    """Points 0.12 per pixel from 0.5 towards a class: the linear model's margins need ε ≈ 0.15–0.2
    of a directed attack, which a random start in the ε = 0.3 ball almost never supplies."""
    w = Scaled(1.0).w
    c = torch.arange(n) % C
    noise = 0.03 * torch.randn(n, D, generator=torch.Generator().manual_seed(0))
    x = (0.5 + 0.12 * torch.sign(w[c] - w.mean(0)) + noise).clamp(0, 1).view(n, 1, 8, 8)
    return x, Scaled(1.0)(x).argmax(1)
