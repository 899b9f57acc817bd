"""Model architectures (SPEC §2), all taking [0, 1] images with normalization inside.

Importing this package registers every built-in architecture in :data:`MODELS`.
"""

from __future__ import annotations

# Importing the families registers their architectures.
from entrobust.models import ensemble, resnet, small, wide_resnet
from entrobust.models.core import (
    MODELS,
    ModelEntry,
    Normalize,
    NormalizedModel,
    create_model,
    register_model,
)
from entrobust.models.ensemble import Ensemble, ensemble_member_logits

__all__ = [
    "MODELS",
    "Ensemble",
    "ModelEntry",
    "Normalize",
    "NormalizedModel",
    "create_model",
    "ensemble",
    "ensemble_member_logits",
    "register_model",
    "resnet",
    "small",
    "wide_resnet",
]
