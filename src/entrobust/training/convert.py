"""The one typed converter of entrobust's configuration (STYLE rule 9).

:func:`convert` checks a plain value (parsed TOML / JSON, a dict, a ``--set`` override) against a
type annotation and returns it converted; :func:`dataclass_from` builds a config dataclass from a
table with it. Every config loader uses these two — :mod:`entrobust.training.config`
(``TrainConfig``), :mod:`entrobust.training.method_config` (``MethodConfig``) and the scalar
fields of experiment files (:mod:`entrobust.experiments.spec`) — so a wrong type reads the same
everywhere: ``optimizer.lr: expected a number, got str 'fast'``. Imports nothing but the errors.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from entrobust.errors import ConfigError, EntrobustError

__all__ = ["convert", "dataclass_from", "type_name"]


def type_name(tp: Any) -> str:
    """``int`` → ``"int"``, ``str | None`` → ``"str | None"``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def convert(tp: Any, value: Any, key: str) -> Any:
    """Check/convert ``value`` against annotation ``tp``; raise :class:`ConfigError` naming ``key``.

    ``bool`` needs true/false; ``int`` an integer (an integral float such as ``3.0`` becomes 3);
    ``float`` a finite number (integers become floats); ``str`` a string; ``tuple[T, ...]`` a list;
    ``dict`` a table with string keys (values unchecked); ``X | None`` also ``None``; a dataclass a
    table (via :func:`dataclass_from`) or an instance; ``Any`` anything.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be empty (None)")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: expected {type_name(tp)}, got {value!r}"
        )
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {_got(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {_got(value)}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {_got(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_got(value)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {_got(value)}")
        item = args[0] if args else Any
        return tuple(convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table/dict, got {_got(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{key}: keys must be strings, got {k!r}")
            out[k] = v
        return out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table/dict, got {_got(value)}")
        return dataclass_from(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {type_name(tp)}")  # pragma: no cover


def dataclass_from(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """``cls(**data)`` with every value converted by :func:`convert`.

    An unknown key raises :class:`ConfigError` naming it (``optimizer.lrr``) and listing the valid
    ones; errors from the dataclass's own checks are re-raised as :class:`ConfigError` prefixed
    with ``prefix``.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"unknown config key {where!r}; valid keys{' of ' + prefix if prefix else ''}: {', '.join(names)}"
        )
    kwargs = {
        name: convert(hints[name], value, f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except EntrobustError as exc:
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{exc}") from None
    except TypeError as exc:  # pragma: no cover - a missing required field
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None
