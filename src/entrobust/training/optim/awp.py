"""Adversarial weight perturbation (Wu, Xia & Wang 2020), a component that wraps any optimizer.

AWP trains at weights w + v, where v is an (approximately) worst-case perturbation of each layer,
scaled relative to that layer's weight norm. Facts from ``csdongxian/AWP`` (``AT_AWP/utils_awp.py``,
``trades_AWP/train_trades_cifar.py``; read, not copied):

* v comes from **one** plain SGD step (lr 0.01) of a proxy copy of the model on −loss at the
  adversarial batch, the proxy in train mode (its BatchNorm statistics are thrown away);
* per layer, the difference Δ = w_proxy − w is rescaled to the layer's norm,
  d = ‖w‖/(‖Δ‖ + 1e-20)·Δ, only for weights with ≥ 2 dims (conv / linear); biases and
  BatchNorm parameters are never perturbed;
* w ← w + γ·d before the training loss, w ← w − γ·d after the optimizer step;
* γ = 0.01 for PGD-AT, 0.005 for TRADES with a 10-epoch warm-up (no AWP in the first epochs).

Because d is normalized per layer, the proxy learning rate only matters through the 1e-20 guard
(the TRADES script uses lr 0.1, the AT script 0.01; both give the same d).

Usage inside a training step (the trainer does this)::

    awp.perturb(model, lambda m: objective(m(x_adv), y))  # loss to *maximize*, at the proxy
    loss = objective(model(x_adv), y); loss.backward()
    optimizer.step()
    awp.restore(model)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.distributed import average_gradients
from entrobust.errors import ConfigError

__all__ = ["AWP"]

_EPS = 1e-20


class AWP:
    """Adversarial weight perturbation with ``perturb`` / ``restore`` around a training step.

    Args:
        gamma: relative size γ of the weight perturbation (0.01 AT, 0.005 TRADES).
        warmup: number of initial epochs (0-based epochs ``< warmup``) trained without AWP.
        proxy_lr: learning rate of the proxy's single SGD step (0.01 in the AT reference).

    Raises :class:`~entrobust.errors.ConfigError` for invalid values.
    """

    def __init__(self, gamma: float = 0.01, *, warmup: int = 0, proxy_lr: float = 0.01) -> None:
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, int | float)
            or not gamma >= 0
            or math.isinf(gamma)
        ):
            raise ConfigError(f"awp gamma must be a finite number >= 0, got {gamma!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"awp warmup must be an integer >= 0, got {warmup!r}")
        if isinstance(proxy_lr, bool) or not isinstance(proxy_lr, int | float) or not proxy_lr > 0:
            raise ConfigError(f"awp proxy_lr must be > 0, got {proxy_lr!r}")
        self.gamma = float(gamma)
        self.warmup = warmup
        self.proxy_lr = float(proxy_lr)
        self._proxy: nn.Module | None = None
        self._proxy_of: int | None = None
        # name -> (original weights, perturbed weights, γ·d) of the perturbation in force
        self._applied: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ API
    def active(self, epoch: int) -> bool:
        """Whether AWP applies in (0-based) ``epoch``."""
        return self.gamma > 0 and epoch >= self.warmup

    @property
    def perturbed(self) -> bool:
        """True between :meth:`perturb` and :meth:`restore`."""
        return bool(self._applied)

    def compute(self, model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]) -> dict[str, Tensor]:
        """The per-layer direction d (rescaled to each layer's weight norm), without applying it.

        ``loss_fn(module)`` returns the scalar training loss of the current (adversarial) batch
        evaluated with ``module``; AWP ascends it.
        """
        proxy = self._proxy_for(model)
        proxy.load_state_dict(model.state_dict())
        proxy.train()
        for p in proxy.parameters():
            p.grad = None
        with torch.enable_grad():
            loss = loss_fn(proxy)
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise ConfigError("AWP loss_fn must return a scalar tensor")
            (-loss).backward()
        # data parallel: every rank ascends the mean gradient of the global batch, so the
        # perturbation — and the weights — stay identical across ranks
        average_gradients(proxy.parameters())
        directions: dict[str, Tensor] = {}
        with torch.no_grad():
            proxy_params = dict(proxy.named_parameters())
            for name, w in model.named_parameters():
                if w.dim() < 2 or not w.requires_grad:
                    continue
                q = proxy_params[name]
                # one SGD step on −loss: q ← q − lr·∇(−loss)
                step = -self.proxy_lr * q.grad if q.grad is not None else torch.zeros_like(q)
                directions[name] = step * (w.norm() / (step.norm() + _EPS))
        for p in proxy.parameters():
            p.grad = None
        return directions

    def perturb(self, model: nn.Module, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        """Compute the perturbation and add γ·d to ``model``'s weights (in place)."""
        if self._applied:
            raise RuntimeError("AWP.perturb called twice without restore")
        directions = self.compute(model, loss_fn)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, d in directions.items():
                w = params[name]
                original = w.detach().clone()
                delta = d.mul(self.gamma)
                w.add_(delta)
                self._applied[name] = (original, w.detach().clone(), delta)

    def restore(self, model: nn.Module) -> None:
        """Subtract γ·d again (after the optimizer step).

        Where a weight still holds exactly its perturbed value (nothing changed it since
        :meth:`perturb`) its original value is put back bit for bit; elsewhere γ·d is subtracted,
        as the reference does after the optimizer step.
        """
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, (original, perturbed, delta) in self._applied.items():
                w = params[name]
                w.copy_(torch.where(w == perturbed, original, w - delta))
        self._applied = {}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters (the perturbation itself never outlives a step)."""
        if self._applied:
            raise RuntimeError("AWP.state_dict called while a perturbation is applied; restore first")
        return {"gamma": self.gamma, "warmup": self.warmup, "proxy_lr": self.proxy_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        unknown = set(state) - {"gamma", "warmup", "proxy_lr"}
        if unknown:
            raise ConfigError(f"unknown AWP state keys: {sorted(unknown)}")
        fresh = AWP(
            gamma=state.get("gamma", self.gamma),
            warmup=state.get("warmup", self.warmup),
            proxy_lr=state.get("proxy_lr", self.proxy_lr),
        )
        self.gamma, self.warmup, self.proxy_lr = fresh.gamma, fresh.warmup, fresh.proxy_lr

    # ------------------------------------------------------------- internals
    def _proxy_for(self, model: nn.Module) -> nn.Module:
        if self._proxy is None or self._proxy_of != id(model):
            self._proxy = copy.deepcopy(model)
            self._proxy_of = id(model)
        return self._proxy

    def __repr__(self) -> str:
        return f"AWP(gamma={self.gamma}, warmup={self.warmup}, proxy_lr={self.proxy_lr})"
