"""Typed method configuration: adversary × objective × regularizer × scheme, as data (STYLE rule 9).

:class:`MethodConfig` and its sections are frozen dataclasses that import nothing but the errors
and the typed converter (:mod:`entrobust.training.convert`): constructing one checks types,
ranges and the combinations that need no registry, and resolves the ``"auto"`` values of
:class:`AdversaryConfig`. Names are checked against the registries (adversaries, objectives,
regularizers, attack losses) in one binding step, :mod:`entrobust.training.bind`,
which :meth:`MethodConfig.from_dict` — and so every config loader — calls, and which
:class:`~entrobust.training.method.Method` calls before it builds anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_type_hints

from entrobust.errors import ConfigError
from entrobust.training.convert import convert, dataclass_from

__all__ = [
    "ADVERSARY_KINDS",
    "ATENT_INITS",
    "ATENT_L2_GAMMA",
    "ATENT_PROJECTS",
    "BN_MODES",
    "BN_PASSES",
    "GAMMA_READINGS",
    "PGD_INITS",
    "SCHEMES",
    "SCOPES",
    "AdversaryConfig",
    "MethodConfig",
    "ObjectiveConfig",
    "RegularizerConfig",
]

SCHEMES: tuple[str, ...] = ("mixed", "alternating")
PGD_INITS: tuple[str, ...] = ("none", "uniform", "gaussian")
#: the adversary kinds whose ``"auto"`` values :class:`AdversaryConfig` resolves (each is
#: registered in :data:`entrobust.training.adversaries.ADVERSARIES`)
ADVERSARY_KINDS: tuple[str, ...] = ("none", "pgd", "trades", "mart", "atent-l2", "atent-linf")
BN_MODES: tuple[str, ...] = ("eval", "train")
#: train-mode forwards that move BatchNorm running statistics: only those the loss needs, or also
#: the extra ones the reference scripts make (see :class:`MethodConfig`)
BN_PASSES: tuple[str, ...] = ("minimal", "reference")
ATENT_INITS: tuple[str, ...] = ("sign", "sphere", "gaussian", "uniform", "none")
ATENT_PROJECTS: tuple[str, ...] = ("last", "every", "none")
GAMMA_READINGS: tuple[str, ...] = ("inverse-eps", "literal")
ATENT_L2_GAMMA = 0.05  # ATENT B.2 / StochAT notebooks/cifar_exps_l2.py (gamma = 0.05)
#: parameter-regularizer scopes: convolution weights (the Min-Max paper) or all weight matrices
SCOPES: tuple[str, ...] = ("conv", "all")


def _table(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be a table, got {d!r}")
    return d


def _convert_fields(obj: Any, where: str) -> None:
    """Check and convert every field of dataclass instance ``obj`` against its annotation."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        _set(obj, f.name, convert(hints[f.name], getattr(obj, f.name), f"{where}.{f.name}"))


def _choice(value: str, valid: tuple[str, ...] | list[str], where: str) -> None:
    if value not in valid:
        raise ConfigError(f"{where} must be one of {', '.join(valid)}, got {value!r}")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


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

    ``clamp_start`` (default ``True``): clamp the random start to the [0, 1] box before the first
    gradient. ``False`` is the reference scripts' behaviour for TRADES (trades.py), MART (mart.py)
    and ATENT (StochAT functional.py): the first gradient is taken at the unclamped x + δ; the
    paper presets of those methods set it (issue 14, docs/methods.md).
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
    clamp_start: bool = True

    section: ClassVar[str] = "adversary"

    def __post_init__(self) -> None:
        w = self.section
        _convert_fields(self, w)
        _set(self, "loss_kwargs", dict(self.loss_kwargs))
        if self.kind not in ADVERSARY_KINDS:
            raise ConfigError(f"unknown {w}.kind {self.kind!r}; valid: {', '.join(ADVERSARY_KINDS)}")
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
            _set(self, "gamma", ATENT_L2_GAMMA)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdversaryConfig:
        """Validate and build; unknown keys and wrong types raise :class:`ConfigError`."""
        return dataclass_from(cls, _table(d, cls.section), cls.section)  # type: ignore[no-any-return]

    def scaled(self, factor: float) -> AdversaryConfig:
        """This adversary with its radius scaled by ``factor`` (the trainer's ε ramp,
        ``schedule.eps_warmup_epochs``): ε and the step size scale; ``atent-linf``'s γ, whose ball
        radius is 1/γ, divides by ``factor``, so the radius shrinks with ε."""
        changes: dict[str, Any] = {"eps": self.eps * factor}
        if self.step_size is not None:
            changes["step_size"] = self.step_size * factor
        if self.kind == "atent-linf" and self.gamma is not None:
            changes["gamma"] = self.gamma / factor
        return dataclasses.replace(self, **changes)


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
        _convert_fields(self, w)
        _set(self, "params", dict(self.params))
        if not 0.0 <= self.mix_alpha <= 1.0:
            raise ConfigError(f"{w}.mix_alpha must be in [0, 1], got {self.mix_alpha}")
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise ConfigError(f"{w}.noise_sigma must be a number >= 0, got {self.noise_sigma}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectiveConfig:
        """Validate and build; unknown keys and wrong types raise :class:`ConfigError`."""
        return dataclass_from(cls, _table(d, cls.section), cls.section)  # type: ignore[no-any-return]


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
        _convert_fields(self, w)
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
        return dataclass_from(cls, _table(d, cls.section), cls.section)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class MethodConfig:
    """adversary × objective × regularizer × scheme; see the module docstring.

    ``memory_light`` (ATENT only): :meth:`Method.backward` back-propagates each SGLD sample's
    weighted loss as soon as it is computed, so memory does not grow with the number of samples
    (the reference keeps all L graphs for one backward at the end).

    ``bn_passes``: which train-mode forwards move BatchNorm running statistics. ``minimal``
    (default): only the forwards the loss needs. ``reference``: also the reference scripts' extra
    ones, so a model's running statistics follow the reference run (gradients are unchanged):

    * ``trades`` objective: a second clean forward after the adversarial one (clean, adversarial,
      clean, as ``yaodongyu/TRADES`` trades.py ``trades_loss``, whose KL target re-runs
      ``model(x_natural)``);
    * ``atent`` objective: the sampler's gradient forwards run separately in ``bn_mode`` instead of
      being shared with the training forwards — 2L forwards per batch, as the StochAT notebooks'
      ``adversarial_training_entropy``, instead of L + 1;
    * a single-input objective under an adversary (PGD-AT): a clean forward after the optimizer
      step, the logging forward of ``csdongxian/AWP`` AT_AWP/train_cifar10.py (``output =
      model(normalize(X))`` after ``opt.step()``), run by the trainer (:meth:`Method.after_step`)
      once per optimizer step (Entropy-SGD: after the outer step, on its last minibatch).

    MART makes no extra forward (``mart_loss``: one clean, one adversarial).
    """

    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    scheme: str = "mixed"
    memory_light: bool = False
    bn_passes: str = "minimal"

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
        _set(self, "scheme", convert(str, self.scheme, "scheme"))
        _set(self, "memory_light", convert(bool, self.memory_light, "memory_light"))
        _set(self, "bn_passes", convert(str, self.bn_passes, "bn_passes"))
        _choice(self.scheme, SCHEMES, "scheme")
        _choice(self.bn_passes, BN_PASSES, "bn_passes")
        adv, obj = self.adversary, self.objective
        if adv.kind == "none":
            if obj.mix_alpha:
                raise ConfigError("objective.mix_alpha needs an adversary (adversary.kind is 'none')")
            if self.scheme == "alternating":
                raise ConfigError("scheme 'alternating' needs an adversary (adversary.kind is 'none')")
        # checks that need the objective's inputs (pair / samples / members) are in bind_method

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the *resolved* config (``from_dict(to_dict())`` round-trips)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodConfig:
        """Build from a nested dict (e.g. a TOML table) and bind it (:func:`~entrobust.training.
        bind.bind_method`); missing sections take their defaults.

        Raises :class:`ConfigError` naming the key for unknown keys, wrong types, unknown kinds
        and contradictory combinations.
        """
        cfg: MethodConfig = dataclass_from(cls, _table(d, "method"), "method")
        from entrobust.training.bind import bind_method  # the binding step: names → registries

        bind_method(cfg)
        return cfg

    @property
    def adversarial(self) -> bool:
        """True when the method generates adversarial (or ATENT) examples."""
        return self.adversary.kind != "none"
