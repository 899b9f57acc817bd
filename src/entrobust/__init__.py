"""entrobust: train adversarially robust classifiers with entropy-based regularizers and
evaluate them with attacks strong enough that gradient masking cannot hide."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
