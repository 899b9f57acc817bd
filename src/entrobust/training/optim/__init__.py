"""Optimizers (SPEC §4.4): a registry of factories plus Entropy-SGD and AWP.

``build_optimizer("entropy-sgd", model.parameters(), lr=0.1, L=20)``; ``OPTIMIZERS`` lists the
names (``entrobust list optimizers``). Every factory takes ``(params, *, lr, momentum,
weight_decay, nesterov, **extra)`` and returns a :class:`torch.optim.Optimizer` whose
``state_dict`` round-trips. ``closure_calls(opt)`` says how many minibatches one ``step`` draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from entrobust.errors import ConfigError
from entrobust.registry import Registry
from entrobust.training.optim.awp import AWP
from entrobust.training.optim.entropy_sgd import EntropySGD, EntropySGD2

__all__ = ["AWP", "OPTIMIZERS", "EntropySGD", "EntropySGD2", "build_optimizer", "closure_calls"]

OptimizerFactory = Callable[..., Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


def _torch_call(name: str, make: Callable[[], Optimizer]) -> Optimizer:
    try:
        return make()
    except (ValueError, TypeError) as exc:  # torch validates with ValueError
        raise ConfigError(f"optimizer {name!r}: {exc}") from None


@OPTIMIZERS.register("sgd", help="SGD with (Nesterov) momentum and weight decay (torch.optim.SGD)")
def _sgd(
    params: Params,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    **extra: Any,
) -> Optimizer:
    return _torch_call(
        "sgd",
        lambda: torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **extra
        ),
    )


@OPTIMIZERS.register("adam", help="Adam (torch.optim.Adam); momentum/nesterov are ignored, betas via extra")
def _adam(
    params: Params,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    **extra: Any,
) -> Optimizer:
    if "betas" in extra:
        extra = {**extra, "betas": tuple(extra["betas"])}
    return _torch_call("adam", lambda: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **extra))


def _entropy_factory(cls: type[EntropySGD]) -> OptimizerFactory:
    def make(
        params: Params,
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        **extra: Any,
    ) -> Optimizer:
        try:
            return cls(params, lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **extra)
        except TypeError as exc:
            raise ConfigError(f"optimizer {cls.__name__}: {exc}") from None

    return make


OPTIMIZERS.register(
    "entropy-sgd",
    _entropy_factory(EntropySGD),
    help="Entropy-SGD (Chaudhari et al. 2017 Alg. 1; Lua reference): L SGLD steps on fresh batches",
)
OPTIMIZERS.register(
    "entropy-sgd2",
    _entropy_factory(EntropySGD2),
    help="2nd-order Entropy-SGD: diagonal Newton step with the SGLD variance (Kanai et al. App. D)",
)


def build_optimizer(
    name: str,
    params: Params,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    **extra: Any,
) -> Optimizer:
    """Build registered optimizer ``name``; unknown names list the valid ones."""
    factory = OPTIMIZERS.get(name)
    return factory(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **extra)


def closure_calls(optimizer: Optimizer) -> int:
    """Minibatches one ``optimizer.step(closure)`` draws (``L`` for Entropy-SGD, else 1)."""
    return int(getattr(optimizer, "closure_calls", 1))
