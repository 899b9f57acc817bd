"""The attack registry: names (``pgd``, ``apgd-ce``, ``PGD20-8``, ...) → attack factories.

A factory is ``factory(threat: ThreatModel, **kwargs) -> Attack``. Parametric names of the RU
paper (``FGSM_k``, ``PGDp-k``, ``CWp-k``) are resolved by patterns that build both the threat
model and the attack from the name alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from entrobust.attacks.base import Attack
from entrobust.attacks.threat import ThreatModel
from entrobust.errors import ConfigError, UnknownNameError
from entrobust.registry import Registry

AttackFactory = Callable[..., Attack]
ATTACKS: Registry[AttackFactory] = Registry("attack")


@dataclass(frozen=True)
class NamedPattern:
    """A family of names like ``PGD20-8``: regex → (threat, factory, kwargs)."""

    regex: re.Pattern[str]
    build: Callable[[re.Match[str]], tuple[ThreatModel, AttackFactory, dict[str, object]]]
    example: str
    help: str


PATTERNS: list[NamedPattern] = []


def register_pattern(regex: str, example: str, help: str) -> Callable[..., object]:
    """Decorator for a parametric family of names (see :data:`PATTERNS`)."""

    def add(build: Callable[[re.Match[str]], tuple[ThreatModel, AttackFactory, dict[str, object]]]) -> object:
        PATTERNS.append(NamedPattern(re.compile(regex + r"\Z"), build, example, help))
        return build

    return add


def build_attack(
    name: str,
    threat: ThreatModel | None = None,
    *,
    norm: str = "linf",
    eps: float | None = None,
    **kwargs: object,
) -> Attack:
    """Build attack ``name`` for ``threat`` (or ``norm``/``eps``); ``kwargs`` go to the factory.

    ``name`` is a registered name or a parametric RU name: ``FGSM_8``, ``PGD20-8``, ``CW20-8``
    (ε = k/255). Raises :class:`~entrobust.errors.UnknownNameError` listing valid names.
    """
    import entrobust.attacks.library  # noqa: F401  (registers every built-in attack)

    for pattern in PATTERNS:
        m = pattern.regex.match(name)
        if m:
            t, factory, defaults = pattern.build(m)
            if threat is not None:
                t = threat
            return factory(t, **{**defaults, **kwargs})
    if name not in ATTACKS:
        families = ", ".join(p.example for p in PATTERNS)
        valid = ", ".join(sorted(ATTACKS.names()))
        raise UnknownNameError(f"unknown attack {name!r}; valid: {valid}; families: {families}")
    factory = ATTACKS.get(name)
    if threat is None:
        if eps is None:
            raise ConfigError(f"attack {name!r} needs a threat model or eps=")
        threat = ThreatModel(norm, eps)
    return factory(threat, **kwargs)
