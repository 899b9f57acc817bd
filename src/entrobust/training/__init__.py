# ruff: noqa: F401
"""Training (SPEC §4): methods = adversary × objective × regularizer, one trainer, optimizers, presets.

>>> from entrobust.training import preset_config, train
>>> cfg = preset_config("ru/pat", dataset="mnist5k", scale="cpu")   # doctest: +SKIP
>>> result = train(cfg, "runs/pat")                                 # doctest: +SKIP

Public names are imported lazily (``entrobust.training.X`` loads only the module that defines
``X``), so ``import entrobust.training.optim`` stays light. :data:`_EXPORTS` is the one list of
them (``__all__`` is derived from it); the ``TYPE_CHECKING`` imports only give type checkers
and IDEs the same names with their types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name → defining module
_EXPORTS: dict[str, str] = {
    # objectives / regularizers / methods (methods helper)
    "OBJECTIVES": "entrobust.training.objectives",
    "REGULARIZERS": "entrobust.training.regularizers",
    "Method": "entrobust.training.method",
    "MethodConfig": "entrobust.training.method",
    "AdversaryConfig": "entrobust.training.method",
    "ObjectiveConfig": "entrobust.training.method",
    "RegularizerConfig": "entrobust.training.method",
    # optimizers
    "OPTIMIZERS": "entrobust.training.optim",
    "AWP": "entrobust.training.optim",
    "EntropySGD": "entrobust.training.optim",
    "EntropySGD2": "entrobust.training.optim",
    "build_optimizer": "entrobust.training.optim",
    # configuration
    "TrainConfig": "entrobust.training.config",
    "OptimizerConfig": "entrobust.training.config",
    "AWPConfig": "entrobust.training.config",
    "ScheduleConfig": "entrobust.training.config",
    "ValidationConfig": "entrobust.training.config",
    "load_config": "entrobust.training.config",
    "apply_overrides": "entrobust.training.config",
    # trainer
    "Trainer": "entrobust.training.trainer",
    "TrainResult": "entrobust.training.trainer",
    "Callback": "entrobust.training.trainer",
    "train": "entrobust.training.trainer",
    # presets
    "PRESETS": "entrobust.training.presets",
    "Preset": "entrobust.training.presets",
    "preset_config": "entrobust.training.presets",
    "resolve_config": "entrobust.training.presets",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from entrobust.training.config import (
        AWPConfig,
        OptimizerConfig,
        ScheduleConfig,
        TrainConfig,
        ValidationConfig,
        apply_overrides,
        load_config,
    )
    from entrobust.training.method import (
        AdversaryConfig,
        Method,
        MethodConfig,
        ObjectiveConfig,
        RegularizerConfig,
    )
    from entrobust.training.objectives import OBJECTIVES
    from entrobust.training.optim import AWP, OPTIMIZERS, EntropySGD, EntropySGD2, build_optimizer
    from entrobust.training.presets import PRESETS, Preset, preset_config, resolve_config
    from entrobust.training.regularizers import REGULARIZERS
    from entrobust.training.trainer import Callback, Trainer, TrainResult, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'entrobust.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
