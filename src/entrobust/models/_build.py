"""Shared helper for model builders: check keyword arguments before constructing a network."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from entrobust.errors import ConfigError


def build(cls: type[nn.Module], name: str, /, *args: Any, **kw: Any) -> nn.Module:
    """``cls(*args, **kw)``, but an unknown keyword raises :class:`ConfigError` naming the valid ones.

    Builders receive user kwargs from configs and the CLI; a bare ``TypeError`` from deep in
    ``__init__`` would not say which model or which argument is wrong.
    """
    params = inspect.signature(cls.__init__).parameters
    valid = [
        p.name
        for p in params.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in ("self", "num_classes", "in_channels")
    ]
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    return cls(*args, **kw)
