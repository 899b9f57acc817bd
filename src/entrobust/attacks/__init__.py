"""Attacks (SPEC §3): a threat-model value, a safe base class and one projected-gradient engine."""

from __future__ import annotations

from entrobust.attacks.base import Attack, AttackResult, entropy_of, frozen, margin_of
from entrobust.attacks.threat import NORMS, ThreatModel, flat_norm

__all__ = ["NORMS", "Attack", "AttackResult", "ThreatModel", "entropy_of", "flat_norm", "frozen", "margin_of"]
