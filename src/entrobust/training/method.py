"""A training method = adversary × objective × regularizer × scheme (SPEC §4, STYLE rule 5).

:class:`MethodConfig` is typed data (frozen dataclasses, ``to_dict`` / ``from_dict`` with errors
that name the key); :class:`Method` turns it into the per-batch loss the trainer minimizes::

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
import dataclasses
import math
import types
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import torch
from torch import Tensor, nn

from entrobust.distributed import batch_noise, unwrap
from entrobust.errors import ConfigError, UnknownNameError
from entrobust.training.adversaries import (
    ADVERSARIES,
    ATENT_INITS,
    ATENT_PROJECTS,
    BN_MODES,
    GAMMA_READINGS,
    ATENTSampler,
    build_adversary,
)
from entrobust.training.objectives import BASES, OBJECTIVES, atent, atent_weights
from entrobust.training.regularizers import REGULARIZERS, SCOPES

SCHEMES: tuple[str, ...] = ("mixed", "alternating")
PGD_INITS: tuple[str, ...] = ("none", "uniform", "gaussian")


# --------------------------------------------------------------------------- typed config helpers
def _type_name(tp: Any) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "a boolean", dict: "a table"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _check_value(value: Any, tp: Any, where: str) -> None:
    """Raise :class:`ConfigError` if ``value`` does not fit the annotation ``tp``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return
        tp = next(a for a in options if a is not type(None))
        origin = get_origin(tp)
    if origin is dict or tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where} must be a table with string keys, got {value!r}")
        return
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
    elif tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")


def _from_dict(cls: Any, d: Any, where: str) -> dict[str, Any]:
    """Check the keys of ``d`` against dataclass ``cls``; return them as kwargs."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a table, got {d!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in names:
            raise ConfigError(f"unknown key {where}.{key}; valid: {', '.join(names)}")
    return dict(d)


def _check_types(obj: Any, where: str) -> None:
    """Check every field of dataclass instance ``obj`` against its annotation."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _check_value(getattr(obj, f.name), hints[f.name], f"{where}.{f.name}")


def _choice(value: str, valid: tuple[str, ...] | list[str], where: str) -> None:
    if value not in valid:
        raise ConfigError(f"{where} must be one of {', '.join(valid)}, got {value!r}")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class AdversaryConfig:
    """The inner step. ``"auto"`` values are resolved per ``kind`` at construction (and the
    resolved values are what :meth:`MethodConfig.to_dict` records):

    ==============  ======  ==========  ==========  =======  ================================
    kind            norm    loss        init        project  step_size (None →)
    ==============  ======  ==========  ==========  =======  ================================
    pgd             linf    ce          uniform     every    2.5·ε/steps (Madry et al. 2018)
    trades          linf    kl          gaussian    every    2.5·ε/steps; σ = 0.001 (TRADES)
    mart            linf    ce          gaussian    every    2.5·ε/steps; σ = 0.001 (mart.py)
    atent-linf      linf    ce          sign        last     2.5·r/steps
    atent-l2        l2      ce          sphere      none     0.5·ε/steps (StochAT l2 notebook)
    ==============  ======  ==========  ==========  =======  ================================

    ``loss`` is any attack-engine loss name (``ce``, ``cw``, ``dlr``, ``ls-ce``, ``entm``, ...)
    with ``loss_kwargs`` (e.g. ``{"lam": 2.0}`` for PAT-EntM); ``trades`` always uses ``kl``.
    ``bn_mode`` is the BatchNorm mode while generating (default eval; ATENT presets use train,
    as the reference). ATENT extras: ``noise`` (ε of ε·√(2η′)·N(0, I)), ``gamma`` (ℓ2 pull-back,
    default 0.05; ℓ∞ radius 1/γ, see ``gamma_reading`` and :class:`ATENTSampler`), ``alpha``
    (EMA coefficient, 0.9), ``samples`` (0 = every one of the ``steps`` iterates is a sample;
    S > 0 = only the last S, the earlier ones are burn-in), ``project`` (last / every / none).
    """

    kind: str = "none"
    norm: str = "auto"
    eps: float = 0.3
    steps: int = 10
    step_size: float | None = None
    init: str = "auto"
    init_sigma: float = 0.001
    loss: str = "auto"
    loss_kwargs: dict[str, float] = field(default_factory=dict)
    bn_mode: str = "eval"
    samples: int = 0
    gamma: float | None = None
    gamma_reading: str = "inverse-eps"
    noise: float = 0.001
    alpha: float = 0.9
    project: str = "auto"

    section: ClassVar[str] = "adversary"

    def __post_init__(self) -> None:
        w = self.section
        _check_types(self, w)
        _set(self, "loss_kwargs", dict(self.loss_kwargs))
        if self.kind not in ADVERSARIES:
            raise ConfigError(f"unknown {w}.kind {self.kind!r}; valid: {', '.join(ADVERSARIES.names())}")
        _choice(self.bn_mode, BN_MODES, f"{w}.bn_mode")
        _choice(self.gamma_reading, GAMMA_READINGS, f"{w}.gamma_reading")
        for name in ("eps", "init_sigma", "noise"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{w}.{name} must be a finite number >= 0, got {value}")
        if self.steps < 1:
            raise ConfigError(f"{w}.steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"{w}.alpha must be in [0, 1], got {self.alpha}")
        if not 0 <= self.samples <= self.steps:
            raise ConfigError(f"{w}.samples must be in [0, steps = {self.steps}], got {self.samples}")
        if self.gamma is not None and not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"{w}.gamma must be a number > 0, got {self.gamma}")
        for name, value in self.loss_kwargs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{w}.loss_kwargs.{name} must be a number, got {value!r}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ConfigError(f"{w}.step_size must be a number > 0, got {self.step_size}")
        atent_kind = self.kind.startswith("atent")
        # ---- norm
        implied = {"atent-l2": "l2", "atent-linf": "linf"}.get(self.kind)
        if self.norm == "auto":
            _set(self, "norm", implied or "linf")
        else:
            _choice(self.norm, ("linf", "l2"), f"{w}.norm")
            if implied and self.norm != implied:
                raise ConfigError(f"{w}.norm = {self.norm!r} contradicts kind {self.kind!r}")
        # ---- loss
        if self.loss == "auto":
            _set(self, "loss", "kl" if self.kind == "trades" else "ce")
        if self.kind == "trades" and self.loss != "kl":
            raise ConfigError(f"{w}.loss of a trades adversary is kl (got {self.loss!r}); use kind = pgd")
        if self.kind == "mart" and self.loss != "ce":
            raise ConfigError(f"{w}.loss of a mart adversary is ce (got {self.loss!r}); use kind = pgd")
        if atent_kind and self.loss == "kl":
            raise ConfigError(f"{w}.loss of an ATENT sampler must be a label loss (ce, entm, ...), not kl")
        # ---- init
        if self.init == "auto":
            default = {"none": "none", "pgd": "uniform", "trades": "gaussian", "mart": "gaussian"}
            default |= {"atent-linf": "sign", "atent-l2": "sphere"}
            _set(self, "init", default[self.kind])
        _choice(self.init, ATENT_INITS if atent_kind else PGD_INITS, f"{w}.init")
        # ---- projection
        if self.project == "auto":
            _set(self, "project", {"atent-linf": "last", "atent-l2": "none"}.get(self.kind, "every"))
        if atent_kind:
            _choice(self.project, ATENT_PROJECTS, f"{w}.project")
        elif self.project != "every":
            raise ConfigError(f"{w}.project applies to ATENT samplers only; PGD projects every step")
        # ---- step size and γ
        if self.kind != "none" and self.step_size is None:
            if self.kind == "atent-l2":
                step = 0.5 * self.eps / self.steps
            elif self.kind == "atent-linf" and self.gamma_reading == "literal" and self.gamma is not None:
                step = 2.5 / self.gamma / self.steps
            else:
                step = 2.5 * self.eps / self.steps
            if step <= 0:
                raise ConfigError(f"{w}.step_size cannot default from eps = 0; set it explicitly")
            _set(self, "step_size", step)
        if self.kind == "atent-l2" and self.gamma is None:
            _set(self, "gamma", 0.05)
        if self.kind != "none":
            try:  # build once so a bad loss or γ fails here, naming the section
                build_adversary(self)
            except ConfigError as exc:
                raise ConfigError(f"{w}: {exc}") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdversaryConfig:
        """Validate and build; unknown keys and wrong types raise :class:`ConfigError`."""
        return cls(**_from_dict(cls, d, cls.section))


@dataclass(frozen=True)
class ObjectiveConfig:
    """The loss on logits: ``kind`` in :data:`OBJECTIVES` with its ``params``.

    Examples: ``{"lam": 2.0}`` (entm), ``{"gamma": 0.74}`` (ls), ``{"beta": 6.0, "base": "ce"}``
    (trades; ``{"beta": 3.0, "base": "entm", "lam": 2.0}`` is TRADES-EntM), ``{"beta": 6.0}``
    (mart), ``{"alpha": 2.0, "beta": 0.5}`` (adp), ``{"ema": "stochat", "base": "ce"}`` (atent;
    its α is ``adversary.alpha``). ``mix_alpha``: α of mix(α) for single-logit objectives under an
    adversary (PAT 0.5, Madry 0). ``noise_sigma``: Gaussian-noise augmentation x + σ·N(0, I) of
    every training input (randomized-smoothing training, ``locuslab/smoothing`` code/train.py: added
    in [0, 1] pixel space, not clamped); 0 = off.
    """

    kind: str = "ce"
    params: dict[str, Any] = field(default_factory=dict)
    mix_alpha: float = 0.0
    noise_sigma: float = 0.0

    section: ClassVar[str] = "objective"

    def __post_init__(self) -> None:
        w = self.section
        _check_types(self, w)
        _set(self, "params", dict(self.params))
        try:
            spec = OBJECTIVES.get(self.kind)
        except UnknownNameError:
            raise ConfigError(
                f"unknown {w}.kind {self.kind!r}; valid: {', '.join(OBJECTIVES.names())}"
            ) from None
        spec.check_params(self.params, f"{w}.params")
        if not 0.0 <= self.mix_alpha <= 1.0:
            raise ConfigError(f"{w}.mix_alpha must be in [0, 1], got {self.mix_alpha}")
        if self.mix_alpha and spec.inputs in ("pair", "samples"):
            raise ConfigError(
                f"{w}.mix_alpha does not apply to {self.kind} (it combines clean and adversarial)"
            )
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise ConfigError(f"{w}.noise_sigma must be a number >= 0, got {self.noise_sigma}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectiveConfig:
        """Validate and build; unknown keys and wrong types raise :class:`ConfigError`."""
        return cls(**_from_dict(cls, d, cls.section))


@dataclass(frozen=True)
class RegularizerConfig:
    """Parameter regularizer ``kind`` in :data:`REGULARIZERS` with weights ``lam`` (λ, L1) and
    ``mu`` (μ, negative squared L2) over ``scope`` (``conv`` weights — the Min-Max paper — or
    ``all`` weight matrices)."""

    kind: str = "none"
    lam: float = 0.0
    mu: float = 0.0
    scope: str = "conv"

    section: ClassVar[str] = "regularizer"

    def __post_init__(self) -> None:
        w = self.section
        _check_types(self, w)
        if self.kind not in REGULARIZERS:
            raise ConfigError(f"unknown {w}.kind {self.kind!r}; valid: {', '.join(REGULARIZERS.names())}")
        _choice(self.scope, SCOPES, f"{w}.scope")
        for name in ("lam", "mu"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{w}.{name} must be a number >= 0, got {value}")
        if self.kind == "l1" and self.mu:
            raise ConfigError(f"{w}.mu must be 0 for kind l1 (use minmax for both terms)")
        if self.kind == "negl2" and self.lam:
            raise ConfigError(f"{w}.lam must be 0 for kind negl2 (use minmax for both terms)")
        if self.kind == "none" and (self.lam or self.mu):
            raise ConfigError(f"{w}.lam / mu need a kind (minmax, l1 or negl2)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegularizerConfig:
        """Validate and build; unknown keys and wrong types raise :class:`ConfigError`."""
        return cls(**_from_dict(cls, d, cls.section))


@dataclass(frozen=True)
class MethodConfig:
    """adversary × objective × regularizer × scheme; see the module docstring.

    ``memory_light`` (ATENT only): :meth:`Method.backward` back-propagates each SGLD sample's
    weighted loss as soon as it is computed, so memory does not grow with the number of samples
    (the reference keeps all L graphs for one backward at the end).
    """

    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    scheme: str = "mixed"
    memory_light: bool = False

    def __post_init__(self) -> None:
        for name, cls in (("adversary", AdversaryConfig), ("objective", ObjectiveConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(
                    f"{name} must be an {cls.__name__}, got {type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.regularizer, RegularizerConfig):
            raise ConfigError(
                f"regularizer must be a RegularizerConfig, got {type(self.regularizer).__name__}"
            )
        _check_value(self.scheme, str, "scheme")
        _check_value(self.memory_light, bool, "memory_light")
        _choice(self.scheme, SCHEMES, "scheme")
        adv, obj = self.adversary, self.objective
        inputs = OBJECTIVES.get(obj.kind).inputs
        if adv.kind == "none":
            if inputs in ("pair", "samples"):
                raise ConfigError(
                    f"objective.kind {obj.kind!r} needs an adversary (adversary.kind is 'none')"
                )
            if obj.mix_alpha:
                raise ConfigError("objective.mix_alpha needs an adversary (adversary.kind is 'none')")
            if self.scheme == "alternating":
                raise ConfigError("scheme 'alternating' needs an adversary (adversary.kind is 'none')")
        if inputs == "samples" and not adv.kind.startswith("atent"):
            raise ConfigError(
                f"objective.kind 'atent' needs an ATENT sampler, got adversary.kind {adv.kind!r}"
            )
        if inputs == "samples" and obj.noise_sigma:
            raise ConfigError("objective.noise_sigma does not combine with ATENT (its sampler adds noise)")
        if self.scheme == "alternating" and (inputs in ("pair", "samples") or obj.mix_alpha):
            raise ConfigError(
                "scheme 'alternating' trains on clean or adversarial batches alone: it needs a "
                "single-input objective (ce, entm, ls, adp) and objective.mix_alpha = 0"
            )
        if self.memory_light and inputs != "samples":
            raise ConfigError("memory_light applies to the ATENT objective only")

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the *resolved* config (``from_dict(to_dict())`` round-trips)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodConfig:
        """Build from a nested dict (e.g. a TOML table); missing sections take their defaults.

        Raises :class:`ConfigError` naming the key for unknown keys, wrong types, unknown kinds
        and contradictory combinations.
        """
        kw = _from_dict(cls, d, "method")
        if "adversary" in kw and not isinstance(kw["adversary"], AdversaryConfig):
            kw["adversary"] = AdversaryConfig.from_dict(kw["adversary"])
        if "objective" in kw and not isinstance(kw["objective"], ObjectiveConfig):
            kw["objective"] = ObjectiveConfig.from_dict(kw["objective"])
        if "regularizer" in kw and not isinstance(kw["regularizer"], RegularizerConfig):
            kw["regularizer"] = RegularizerConfig.from_dict(kw["regularizer"])
        return cls(**kw)

    @property
    def adversarial(self) -> bool:
        """True when the method generates adversarial (or ATENT) examples."""
        return self.adversary.kind != "none"


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
        for k, (x_k, logits) in enumerate(sampler.trajectory(model, x, y, train_forward=True)):
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
