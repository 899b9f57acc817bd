"""Parameter regularizers: differentiable scalar functions of a model, in :data:`REGULARIZERS`.

The Min-Max regularizer of Shen, Chen & Wang (*A Study on the Uncertainty of Convolutional
Layers*, eq. 5) adds λ‖W_conv‖₁ − μ‖W_conv‖₂² to the training loss, where W_conv are the
weights of every convolution (biases excluded): the L1 term pulls most weights to zero, the
negative squared L2 term pushes the others away from zero (the "Min-Max property", §3.4).
``l1`` and ``negl2`` are the paper's ablations Std.+L1 and Std.+L2 (Tables 1–2). The paper gives
no values for λ, μ; pick them with a documented sweep. Note that −μ‖W‖₂² is unbounded below:
only the data term keeps the weights finite. Plain weight decay belongs to the optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.registry import Registry
from entrobust.training.method_config import SCOPES


def penalized_weights(model: nn.Module, scope: str = "conv") -> list[Tensor]:
    """The weights a regularizer acts on.

    ``"conv"``: the ``weight`` of every convolution (``Conv1d/2d/3d`` and transposed) — the
    Min-Max paper's W_conv; ``"all"``: every parameter with ≥ 2 dimensions (conv and linear
    weights, no biases or normalization scales).
    """
    if scope == "conv":
        return [m.weight for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if scope == "all":
        return [p for p in model.parameters() if p.dim() >= 2]
    raise ConfigError(f"unknown regularizer scope {scope!r}; valid: {', '.join(SCOPES)}")


def _zero(model: nn.Module) -> Tensor:
    p = next(iter(model.parameters()), None)
    return torch.zeros((), device=p.device if p is not None else "cpu")


def l1_norm(model: nn.Module, scope: str = "conv") -> Tensor:
    """‖W‖₁ = Σ |w| over :func:`penalized_weights`."""
    weights = penalized_weights(model, scope)
    return torch.stack([w.abs().sum() for w in weights]).sum() if weights else _zero(model)


def sq_l2_norm(model: nn.Module, scope: str = "conv") -> Tensor:
    """‖W‖₂² = Σ w² over :func:`penalized_weights`."""
    weights = penalized_weights(model, scope)
    return torch.stack([w.pow(2).sum() for w in weights]).sum() if weights else _zero(model)


def minmax(model: nn.Module, lam: float, mu: float, scope: str = "conv") -> Tensor:
    """Min-Max regularizer λ‖W_conv‖₁ − μ‖W_conv‖₂²  (Shen, Chen & Wang, eq. 5)."""
    return lam * l1_norm(model, scope) - mu * sq_l2_norm(model, scope)


def l1(model: nn.Module, lam: float, mu: float = 0.0, scope: str = "conv") -> Tensor:
    """λ‖W_conv‖₁ — the Std.+L1 ablation (Min-Max paper Tables 1–2); ``mu`` must be 0."""
    if mu != 0.0:
        raise ConfigError("regularizer l1 takes only lam; set mu = 0 (or use minmax)")
    return lam * l1_norm(model, scope)


def negl2(model: nn.Module, lam: float = 0.0, mu: float = 0.0, scope: str = "conv") -> Tensor:
    """−μ‖W_conv‖₂² — the Std.+L2 ablation (Min-Max paper Tables 1–2); ``lam`` must be 0."""
    if lam != 0.0:
        raise ConfigError("regularizer negl2 takes only mu; set lam = 0 (or use minmax)")
    return -mu * sq_l2_norm(model, scope)


def no_regularizer(model: nn.Module, lam: float = 0.0, mu: float = 0.0, scope: str = "conv") -> Tensor:
    """No parameter regularizer (a zero scalar)."""
    if lam != 0.0 or mu != 0.0:
        raise ConfigError("regularizer 'none' takes no lam or mu; choose minmax, l1 or negl2")
    return _zero(model)


@dataclass(frozen=True)
class RegularizerSpec:
    """A registered regularizer ``fn(model, lam, mu, scope) -> scalar`` and its source."""

    fn: Callable[..., Tensor]
    source: str

    def __call__(self, model: nn.Module, lam: float, mu: float, scope: str = "conv") -> Tensor:
        for name, value in (("lam", lam), ("mu", mu)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"regularizer.{name} must be a finite number >= 0, got {value}")
        return self.fn(model, lam=lam, mu=mu, scope=scope)


REGULARIZERS: Registry[RegularizerSpec] = Registry("regularizer")
REGULARIZERS.register("none", RegularizerSpec(no_regularizer, "-"), help="no parameter regularizer")
REGULARIZERS.register(
    "minmax", RegularizerSpec(minmax, "Shen, Chen & Wang eq. 5"), help="λ‖W_conv‖₁ − μ‖W_conv‖₂² (Min-Max)"
)
REGULARIZERS.register(
    "l1", RegularizerSpec(l1, "Shen, Chen & Wang Tables 1-2 (Std.+L1)"), help="λ‖W_conv‖₁ (ablation)"
)
REGULARIZERS.register(
    "negl2", RegularizerSpec(negl2, "Shen, Chen & Wang Tables 1-2 (Std.+L2)"), help="−μ‖W_conv‖₂² (ablation)"
)
