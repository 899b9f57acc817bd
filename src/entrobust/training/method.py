"""A training method = adversary × objective × regularizer × scheme (SPEC §4, STYLE rule 5).

:class:`MethodConfig` is typed data (:mod:`entrobust.training.method_config`, re-exported here);
:func:`~entrobust.training.bind.bind_method` checks its names against the registries;
:class:`Method` turns it into the per-batch loss the trainer minimizes::

    x_adv  = adversary(model, x, y)                      none / pgd / trades / mart / atent-*
    loss   = objective(f(x), f(x_adv), y)                 ce / entm / ls / adp  mixed with mix(α),
                                                          trades / mart on (clean, adv), atent on
                                                          the SGLD samples
           + regularizer(model)                           none / minmax / l1 / negl2

Schemes: ``mixed`` — every batch uses ``mix(α) = α·obj(clean) + (1 − α)·obj(adv)`` (PAT α = 0.5,
Madry AT α = 0; RU eqs. 2 and 5); ``alternating`` — even steps train on the clean batch, odd steps
on its adversarial version (the "adversarial model" of the Min-Max paper, §3.3 and §5.3).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.distributed import batch_noise, unwrap
from entrobust.errors import ConfigError
from entrobust.training.adversaries import ATENTSampler, Replay, build_adversary
from entrobust.training.bind import bind_method
from entrobust.training.method_config import (
    SCHEMES,
    AdversaryConfig,
    MethodConfig,
    ObjectiveConfig,
    RegularizerConfig,
)
from entrobust.training.objectives import BASES, OBJECTIVES, atent, atent_weights
from entrobust.training.regularizers import REGULARIZERS

__all__ = [
    "SCHEMES",
    "AdversaryConfig",
    "Method",
    "MethodConfig",
    "ObjectiveConfig",
    "RegularizerConfig",
    "bind_method",
]


# --------------------------------------------------------------------------- the method
def _backward_fp32(t: Tensor) -> None:
    """``t.backward()`` with autocast switched off (backward passes under autocast are not
    recommended by the PyTorch AMP docs; the memory-light ATENT path interleaves them)."""
    with torch.autocast(t.device.type, enabled=False):
        t.backward()


class Method:
    """The per-batch training loss of a :class:`MethodConfig` (the contract of TRAINING_API.md).

    Deterministic given torch's global RNG state (all sampling uses it). Training forwards run in
    the model's current mode (train mode on entry); the adversary switches to its ``bn_mode`` and
    restores the mode. Objectives are evaluated on separate clean and adversarial forwards (no
    concatenation, so BatchNorm statistics are never mixed across the two batches).
    """

    #: context for the forward passes (``accel.autocast_factory`` for bf16; set by the trainer)
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext

    def __init__(self, config: MethodConfig | dict[str, Any]) -> None:
        if isinstance(config, dict):
            config = MethodConfig.from_dict(config)
        if not isinstance(config, MethodConfig):
            raise ConfigError(f"Method needs a MethodConfig, got {type(config).__name__}")
        bind_method(config)
        self.config = config
        self.adversary = build_adversary(config.adversary)
        self.spec = OBJECTIVES.get(config.objective.kind)
        self.regularizer = REGULARIZERS.get(config.regularizer.kind)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Method(adversary={c.adversary.kind}, objective={c.objective.kind}, "
            f"regularizer={c.regularizer.kind}, scheme={c.scheme})"
        )

    # ------------------------------------------------------------------ variants
    def scaled(self, factor: float) -> Method:
        """This method with its adversary's radius scaled by ``factor`` (the trainer's ε ramp;
        :meth:`AdversaryConfig.scaled`), sharing this method's ``autocast``."""
        adversary = self.config.adversary.scaled(factor)
        method = Method(dataclasses.replace(self.config, adversary=adversary))
        method.autocast = self.autocast
        return method

    def replaying(self, model: nn.Module, x: Tensor, y: Tensor, step: int) -> Method:
        """The method to train batch ``step`` with under AWP, crafting its examples **once**.

        As in ``AT_AWP`` / ``TRADES_AWP``, the adversarial examples are crafted at the unperturbed
        weights and reused for both the proxy's ascent and the training loss: the result is a
        shallow copy whose adversary replays them (this method is not mutated). Adversaries that
        are not ``replayable`` (ATENT's samplers) and clean steps return this method itself, so
        its own loss is ascended and the examples are re-drawn.
        """
        adversary = self.adversary
        if adversary is None or not self.is_adversarial_step(step) or not adversary.replayable:
            return self
        replay = copy.copy(self)
        replay.adversary = Replay(self.adversarial_examples(model, x, y), adversary.bn_mode)
        return replay

    # ------------------------------------------------------------------ pieces
    def is_adversarial_step(self, step: int) -> bool:
        """Whether batch ``step`` uses the adversary (alternating: odd steps only)."""
        if self.adversary is None:
            return False
        return self.config.scheme == "mixed" or step % 2 == 1

    def adversarial_examples(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
        """The adversary's examples for ``(x, y)`` (ATENT: the last sample); ``None`` without one."""
        if self.adversary is None:
            return None
        return self.adversary(unwrap(model, compiled=False), x, y)

    def regularization(self, model: nn.Module) -> Tensor | None:
        """The parameter regularizer's value (``None`` for kind ``none``)."""
        r = self.config.regularizer
        if r.kind == "none":
            return None
        return self.regularizer(unwrap(model, compiled=False), r.lam, r.mu, r.scope)

    def _noisy(self, x: Tensor) -> Tensor:
        sigma = self.config.objective.noise_sigma
        return x + sigma * batch_noise("normal", x.shape, dtype=x.dtype, device=x.device) if sigma else x

    def _forward(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """(objective input, prediction logits): member logits ``[K, N, C]`` for ADP."""
        if self.spec.inputs == "members":
            from entrobust.models.ensemble import Ensemble, ensemble_member_logits

            members = ensemble_member_logits(model, x).float()
            return members, Ensemble.combine(members)
        out = model(x).float()  # objectives in float32 also under bf16 autocast
        return out, out

    def _objective(self, *inputs: Tensor, y: Tensor) -> Tensor:
        return self.spec.fn(*inputs, y, reduction="mean", **self.config.objective.params)

    @staticmethod
    def _acc(logits: Tensor, y: Tensor) -> float:
        return float(logits.detach().argmax(dim=-1).eq(y).float().mean())

    # ------------------------------------------------------------------ the loss
    def loss(self, model: nn.Module, x: Tensor, y: Tensor, step: int = 0) -> tuple[Tensor, dict[str, float]]:
        """Scalar training loss (objective + regularizer) for one batch, and its stats.

        ``stats``: ``loss``; ``clean_acc`` when clean logits were computed; ``adv_acc`` when
        adversarial ones were (ATENT: the last sample); ``reg`` when a regularizer is set. All are
        read from logits the loss needed anyway (no extra forwards).
        """
        if self.spec.inputs == "samples":
            return self._atent(model, x, y, light=False)
        stats: dict[str, float] = {}
        x_adv = (
            self.adversarial_examples(model, x, y)
            if self.adversary is not None and self.is_adversarial_step(step)
            else None
        )
        obj = self.config.objective
        if self.spec.inputs == "pair":
            assert x_adv is not None
            z_clean, p_clean = self._forward(model, self._noisy(x))
            z_adv, p_adv = self._forward(model, self._noisy(x_adv))
            if self.config.bn_passes == "reference" and obj.kind == "trades":
                self._extra_pass(model, x)  # trades_loss re-runs model(x_natural) for the KL target
            loss = self._objective(z_clean, z_adv, y=y)
            stats.update(clean_acc=self._acc(p_clean, y), adv_acc=self._acc(p_adv, y))
        elif x_adv is None:
            z, p = self._forward(model, self._noisy(x))
            loss = self._objective(z, y=y)
            stats["clean_acc"] = self._acc(p, y)
        else:
            z_adv, p_adv = self._forward(model, self._noisy(x_adv))
            loss = self._objective(z_adv, y=y)
            stats["adv_acc"] = self._acc(p_adv, y)
            if obj.mix_alpha > 0:
                z, p = self._forward(model, self._noisy(x))
                loss = obj.mix_alpha * self._objective(z, y=y) + (1.0 - obj.mix_alpha) * loss
                stats["clean_acc"] = self._acc(p, y)
        reg = self.regularization(model)
        if reg is not None:
            loss = loss + reg
            stats["reg"] = float(reg.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats

    def _extra_pass(self, model: nn.Module, x: Tensor) -> None:
        """A train-mode forward without gradient that only moves BatchNorm running statistics
        (``bn_passes = "reference"``); skipped in eval mode, where nothing would move."""
        if model.training:
            with torch.no_grad(), self.autocast():
                model(x)

    def after_step(self, model: nn.Module, x: Tensor, step: int = 0) -> None:
        """Called by the trainer after the optimizer step on batch ``(x, ·)``: with ``bn_passes =
        "reference"`` and a single-input objective under an adversary (PGD-AT), the clean
        logging forward of ``csdongxian/AWP`` AT_AWP/train_cifar10.py (after ``opt.step()``,
        model in train mode), which moves the BatchNorm running statistics. Otherwise nothing."""
        if (
            self.config.bn_passes == "reference"
            and self.spec.inputs in ("logits", "members")
            and self.adversary is not None
            and self.is_adversarial_step(step)
        ):
            self._extra_pass(model, x)

    def backward(
        self, model: nn.Module, x: Tensor, y: Tensor, step: int = 0
    ) -> tuple[float, dict[str, float]]:
        """Back-propagate the batch loss into the parameters' ``.grad``; return (loss, stats).

        ``loss(...).backward()``, except for ATENT with ``memory_light``, which back-propagates
        each sample's weighted loss as it goes (same gradient, memory of one sample).
        """
        if self.spec.inputs == "samples" and self.config.memory_light:
            with self.autocast():
                _, stats = self._atent(model, x, y, light=True)
            return stats["loss"], stats
        with self.autocast():
            loss, stats = self.loss(model, x, y, step)
        loss.backward()
        return stats["loss"], stats

    def _atent(
        self, model: nn.Module, x: Tensor, y: Tensor, *, light: bool
    ) -> tuple[Tensor, dict[str, float]]:
        """ATENT: EMA over the SGLD sample losses (Alg. 1–2 lines 8–11)."""
        sampler = self.adversary
        assert isinstance(sampler, ATENTSampler)
        adv = self.config.adversary
        params = dict(self.config.objective.params)
        ema = str(params.pop("ema", "stochat"))
        base = str(params.pop("base", "ce"))
        kept = adv.samples or adv.steps
        burn_in = adv.steps - kept
        weights = atent_weights(kept, adv.alpha, ema)
        logits_kept: list[Tensor] = []
        total: Tensor = torch.zeros((), device=x.device)
        last: Tensor | None = None
        shared = self.config.bn_passes == "minimal"  # reference: separate gradient forwards (2L)
        for k, (x_k, logits) in enumerate(sampler.trajectory(model, x, y, train_forward=shared)):
            if k < burn_in:
                continue
            if logits is None:
                logits = model(x_k).float()
            last = logits.detach()
            if light:
                term = weights[k - burn_in] * BASES[base](logits, y, reduction="mean", **params)
                _backward_fp32(term)
                total = total + term.detach()
            else:
                logits_kept.append(logits)
        if not light:
            total = atent(torch.stack(logits_kept), y, alpha=adv.alpha, ema=ema, base=base, **params)
        stats: dict[str, float] = {}
        assert last is not None
        stats["adv_acc"] = self._acc(last, y)
        reg = self.regularization(model)
        if reg is not None:
            if light:
                _backward_fp32(reg)
                reg = reg.detach()
            total = total + reg
            stats["reg"] = float(reg.detach())
        stats["loss"] = float(total.detach())
        return total, stats
