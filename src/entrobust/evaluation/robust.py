"""Which examples a model still classifies correctly, clean or after an attack: the one rule behind
every robust accuracy the library reports.

An example counts as correct when the model's prediction is its label — by one forward, or, for a
randomized model scored over ``draws`` forwards, when a strict majority of the draws are right
(:func:`entrobust.attacks.engine.accuracy_over_draws`; Athalye et al. 2018 §4.3). The evaluation
(:func:`entrobust.evaluation.evaluate`, the majority check of randomized models), the trainer's
validation (:class:`entrobust.training.handlers.Validator`) and the gradient-obfuscation audit
(:func:`entrobust.diagnostics.audit`) all count with :func:`correct`; :func:`clean_correct` and
:func:`robust_correct` run it over a whole set in batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from entrobust.attacks.base import frozen
from entrobust.attacks.engine import accuracy_over_draws
from entrobust.errors import ConfigError
from entrobust.evaluation.sharding import sharded_map

__all__ = ["clean_correct", "correct", "robust_correct"]

AttackFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


def correct(model: nn.Module, x: Tensor, y: Tensor, *, draws: int = 1) -> Tensor:
    """Per example of one batch (bool, on ``x``'s device): ``model`` classifies ``x`` as ``y`` —
    by one forward, or by a strict majority of ``draws`` forwards. Runs in eval mode without
    gradients; the model's mode and ``requires_grad`` flags are restored after.

    Args:
        model: the classifier (logits ``(B, classes)``).
        x: inputs ``(B, ...)`` on the model's device; y: labels ``(B,)``.
        draws: forwards of a randomized model (1: a deterministic one).
    """
    with frozen(model, "eval"), torch.no_grad():
        if draws > 1:
            return accuracy_over_draws(model, x, y, draws) > 0.5
        return model(x).argmax(1).eq(y)


def clean_correct(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int, draws: int = 1) -> Tensor:
    """:func:`correct` over a whole set, ``batch_size`` examples at a time (batches round-robin over
    the ranks of a ``torch.distributed`` job, every rank gets all results). Returns a CPU bool
    tensor ``(N,)``.

    Raises:
        ConfigError: ``batch_size`` < 1.
    """
    return _per_batch(lambda xb, yb: correct(model, xb, yb, draws=draws), model, x, y, batch_size)


def robust_correct(
    model: nn.Module, attack: AttackFn, x: Tensor, y: Tensor, *, batch_size: int, draws: int = 1
) -> Tensor:
    """Per example (CPU bool ``(N,)``): still classified correctly after ``attack(model, x, y)``,
    batch by batch as :func:`clean_correct`. A clean mistake counts as broken whatever the attack
    does. A seeded attack gives each example the same result in any batch, so the answer does not
    depend on how the batches fall over ranks.

    Raises:
        ConfigError: ``batch_size`` < 1.
    """

    def one(xb: Tensor, yb: Tensor) -> Tensor:
        return correct(model, attack(model, xb, yb), yb, draws=draws)

    return _per_batch(one, model, x, y, batch_size)


def _per_batch(
    fn: Callable[[Tensor, Tensor], Tensor], model: nn.Module, x: Tensor, y: Tensor, batch_size: int
) -> Tensor:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dev = _device(model)

    def one(i: int) -> Tensor:
        return fn(x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)).cpu()

    out = sharded_map(one, range(0, x.shape[0], batch_size))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-less model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")
