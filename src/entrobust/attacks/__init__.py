"""Attacks (SPEC §3): a threat-model value, a safe base class and one projected-gradient engine.

``build_attack("pgd", ThreatModel("linf", 0.3), steps=40)`` or ``build_attack("PGD20-8")``;
adaptive evaluation (EOT, BPDA, ``autoattack-rand``): docs/adaptive.md.
``ATTACKS`` lists every registered name (``entrobust list attacks``).
"""

from __future__ import annotations

import entrobust.attacks.library  # noqa: F401  (registers the built-in attacks)
from entrobust.attacks.base import Attack, AttackResult, entropy_of, frozen, margin_of
from entrobust.attacks.bpda import BPDA, with_bpda
from entrobust.attacks.engine import accuracy_over_draws, eot_value_and_grad, is_stochastic
from entrobust.attacks.losses import LOSSES, resolve_loss
from entrobust.attacks.registry import ATTACKS, PATTERNS, build_attack
from entrobust.attacks.threat import NORMS, ThreatModel, flat_norm

__all__ = [
    "ATTACKS",
    "BPDA",
    "LOSSES",
    "NORMS",
    "PATTERNS",
    "Attack",
    "AttackResult",
    "ThreatModel",
    "accuracy_over_draws",
    "build_attack",
    "entropy_of",
    "eot_value_and_grad",
    "flat_norm",
    "frozen",
    "is_stochastic",
    "margin_of",
    "resolve_loss",
    "with_bpda",
]
