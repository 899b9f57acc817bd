"""The binding step: a config (plain data) meets the registries (STYLE rule 9, issue 13).

Configs — :class:`~entrobust.training.config.TrainConfig`, :class:`~entrobust.training.
method_config.MethodConfig` — are frozen dataclasses that import nothing but the errors and the
typed converter; constructing one checks types, ranges and registry-free combinations. Names
(adversary, objective, regularizer, engine loss, optimizer) and what depends on them are checked
here, in one place: :func:`bind_config` for a whole training config (every config loader —
:func:`~entrobust.training.config.config_from_dict`, the preset resolver, experiment validation —
calls it, so a bad combination fails at load time, not when that run trains) and
:func:`bind_method` for a method alone (:class:`~entrobust.training.method.Method` calls it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from entrobust.errors import ConfigError, EntrobustError, UnknownNameError
from entrobust.training.adversaries import ADVERSARIES, build_adversary
from entrobust.training.method_config import MethodConfig
from entrobust.training.objectives import OBJECTIVES
from entrobust.training.regularizers import REGULARIZERS

if TYPE_CHECKING:
    from entrobust.training.config import OptimizerConfig, TrainConfig

__all__ = ["bind_config", "bind_method", "bind_optimizer"]


def bind_config(cfg: TrainConfig) -> None:
    """Bind a whole training config: its method (errors name ``method.<key>``), that its model can
    train the method, and its optimizer phases. Raises :class:`ConfigError`."""
    try:
        bind_method(cfg.method)
    except EntrobustError as exc:
        raise ConfigError(method_error(str(exc))) from None
    bind_method(cfg.method, model=cfg.model)
    bind_optimizer(cfg.optimizer)


def method_error(msg: str) -> str:
    """``"adversary.eps must be ..."`` → ``"method.adversary.eps must be ..."``."""
    head = msg.split(":", 1)[0]
    keyed = bool(head) and " " not in head and head[0].isalpha()
    return msg if msg.startswith("method") else f"method.{msg}" if keyed else f"method: {msg}"


def bind_optimizer(opt: OptimizerConfig) -> None:
    """Build every phase's optimizer on a dummy parameter, so an unknown name or a bad keyword
    fails at load time naming ``optimizer``. Raises :class:`ConfigError`."""
    import torch

    for phase in opt.phases():
        where = "optimizer" if phase == 1 else f"optimizer ({opt.phase_name(phase)})"
        try:
            opt.build([torch.zeros(1, requires_grad=True)], phase)
        except EntrobustError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def bind_method(config: MethodConfig, *, model: str | None = None) -> None:
    """Check ``config``'s names against the registries — the one binding step.

    :class:`MethodConfig` is data: constructing it checks types, ranges and registry-free
    combinations. This checks the rest: ``adversary.kind`` in :data:`ADVERSARIES` (and builds the
    adversary once, so an unknown engine loss or a γ that contradicts ε fails here), the objective
    in :data:`OBJECTIVES` with its params, the regularizer in :data:`REGULARIZERS`, and the
    combinations that depend on what the objective takes (pair / samples / members).
    With ``model`` (a model name) it also checks that the model can train the objective (ADP needs
    the member logits of an ``ensemble``). :meth:`MethodConfig.from_dict`, every
    :class:`~entrobust.training.config.TrainConfig` loader (so experiment validation and the preset
    resolver) and :class:`Method` call it. Raises :class:`ConfigError` naming the key.
    """
    adv, obj, reg = config.adversary, config.objective, config.regularizer
    if adv.kind not in ADVERSARIES:
        raise ConfigError(f"unknown adversary.kind {adv.kind!r}; valid: {', '.join(ADVERSARIES.names())}")
    if adv.kind != "none":
        try:  # build once so a bad loss or γ fails here, naming the section
            build_adversary(adv)
        except ConfigError as exc:
            raise ConfigError(f"adversary: {exc}") from None
    try:
        spec = OBJECTIVES.get(obj.kind)
    except UnknownNameError:
        raise ConfigError(
            f"unknown objective.kind {obj.kind!r}; valid: {', '.join(OBJECTIVES.names())}"
        ) from None
    spec.check_params(obj.params, "objective.params")
    inputs = spec.inputs
    if obj.mix_alpha and inputs in ("pair", "samples"):
        raise ConfigError(
            f"objective.mix_alpha does not apply to {obj.kind} (it combines clean and adversarial)"
        )
    if reg.kind not in REGULARIZERS:
        raise ConfigError(f"unknown regularizer.kind {reg.kind!r}; valid: {', '.join(REGULARIZERS.names())}")
    if adv.kind == "none" and inputs in ("pair", "samples"):
        raise ConfigError(f"objective.kind {obj.kind!r} needs an adversary (adversary.kind is 'none')")
    if inputs == "samples" and not adv.kind.startswith("atent"):
        raise ConfigError(f"objective.kind 'atent' needs an ATENT sampler, got adversary.kind {adv.kind!r}")
    if inputs == "samples" and obj.noise_sigma:
        raise ConfigError("objective.noise_sigma does not combine with ATENT (its sampler adds noise)")
    if config.scheme == "alternating" and (inputs in ("pair", "samples") or obj.mix_alpha):
        raise ConfigError(
            "scheme 'alternating' trains on clean or adversarial batches alone: it needs a "
            "single-input objective (ce, entm, ls, adp) and objective.mix_alpha = 0"
        )
    if config.memory_light and inputs != "samples":
        raise ConfigError("memory_light applies to the ATENT objective only")
    if model is not None and inputs == "members" and model != "ensemble":
        raise ConfigError(
            f"model: objective {obj.kind!r} trains the members of an ensemble, so it needs model = "
            f'"ensemble" (with model_kwargs member and k, e.g. {{member = "cnn4", k = 3}}), not {model!r}'
        )
