# ruff: noqa: F401
"""Diagnostics (SPEC §5): is the robustness real, and why?

* :func:`audit` — the gradient-obfuscation audit (pass / warn / fail per check, with evidence);
* :class:`GeometryAccumulator` — margins, Jacobian spectral norms, normalized margins,
  non-linearity Q_f, minimal distortion and its correlation, entropy histograms (RU Table 4);
* :func:`conv_fuzziness` — weight uncertainty of conv layers (Min-Max Table 3);
* :func:`input_surface`, :func:`parameter_landscape` — loss landscapes (RU App. C.2, Kanai F.1);
* :func:`toy_surfaces` — the smoothness toy (Kanai §5.1, App. C);
* :func:`certify`, :func:`predict` — randomized smoothing (Cohen et al. 2019);
* :func:`decision_boundary` — 2-class decision regions in 2-D (ATENT Fig. 1).

Public names load lazily, so ``import entrobust.diagnostics`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # accumulators
    "Accumulator": "entrobust.diagnostics.accumulators",
    "MeanAccumulator": "entrobust.diagnostics.accumulators",
    "PearsonAccumulator": "entrobust.diagnostics.accumulators",
    "HistogramAccumulator": "entrobust.diagnostics.accumulators",
    "Histogram": "entrobust.diagnostics.accumulators",
    # audit
    "audit": "entrobust.diagnostics.obfuscation",
    "AuditReport": "entrobust.diagnostics.obfuscation",
    "AuditThresholds": "entrobust.diagnostics.obfuscation",
    "Check": "entrobust.diagnostics.obfuscation",
    "input_gradient_stats": "entrobust.diagnostics.obfuscation",
    "determinism_stats": "entrobust.diagnostics.obfuscation",
    "train_surrogate": "entrobust.diagnostics.surrogate",
    # geometry
    "GeometryAccumulator": "entrobust.diagnostics.geometry",
    "GeometryResult": "entrobust.diagnostics.geometry",
    "analyze_geometry": "entrobust.diagnostics.geometry",
    "decision_margin": "entrobust.diagnostics.geometry",
    "jacobian_spectral_norm": "entrobust.diagnostics.geometry",
    "nonlinearity": "entrobust.diagnostics.geometry",
    "minimal_distortion": "entrobust.diagnostics.geometry",
    "default_l2_adversary": "entrobust.diagnostics.geometry",
    "default_minimal_l2": "entrobust.diagnostics.geometry",
    "table4_rows": "entrobust.diagnostics.geometry",
    "format_table4": "entrobust.diagnostics.geometry",
    "plot_histograms": "entrobust.diagnostics.plots",
    "plot_distortion_scatter": "entrobust.diagnostics.plots",
    # weights
    "fuzziness": "entrobust.diagnostics.weights",
    "conv_fuzziness": "entrobust.diagnostics.weights",
    "first_conv_fuzziness": "entrobust.diagnostics.weights",
    "weight_histograms": "entrobust.diagnostics.weights",
    "plot_weight_histograms": "entrobust.diagnostics.weights",
    "table3": "entrobust.diagnostics.weights",
    # landscapes
    "input_surface": "entrobust.diagnostics.landscape",
    "plot_input_surfaces": "entrobust.diagnostics.landscape",
    "parameter_landscape": "entrobust.diagnostics.landscape",
    "plot_parameter_landscape": "entrobust.diagnostics.landscape",
    "filter_normalized_direction": "entrobust.diagnostics.landscape",
    "toy_surfaces": "entrobust.diagnostics.toy",
    "plot_toy_surfaces": "entrobust.diagnostics.toy",
    "entropy_sgd_loss": "entrobust.diagnostics.toy",
    "linear_adversarial_loss": "entrobust.diagnostics.toy",
    "pgd_adversarial_loss": "entrobust.diagnostics.toy",
    # randomized smoothing
    "predict": "entrobust.diagnostics.smoothing",
    "certify": "entrobust.diagnostics.smoothing",
    "certify_dataset": "entrobust.diagnostics.smoothing",
    "CertifyResult": "entrobust.diagnostics.smoothing",
    "ABSTAIN": "entrobust.diagnostics.smoothing",
    # decision boundary
    "decision_boundary": "entrobust.diagnostics.boundary",
    "plot_boundary": "entrobust.diagnostics.boundary",
    "BoundaryPicture": "entrobust.diagnostics.boundary",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from entrobust.diagnostics.accumulators import (
        Accumulator,
        Histogram,
        HistogramAccumulator,
        MeanAccumulator,
        PearsonAccumulator,
    )
    from entrobust.diagnostics.boundary import BoundaryPicture, decision_boundary, plot_boundary
    from entrobust.diagnostics.geometry import (
        GeometryAccumulator,
        GeometryResult,
        analyze_geometry,
        decision_margin,
        default_l2_adversary,
        default_minimal_l2,
        format_table4,
        jacobian_spectral_norm,
        minimal_distortion,
        nonlinearity,
        table4_rows,
    )
    from entrobust.diagnostics.landscape import (
        filter_normalized_direction,
        input_surface,
        parameter_landscape,
        plot_input_surfaces,
        plot_parameter_landscape,
    )
    from entrobust.diagnostics.obfuscation import (
        AuditReport,
        AuditThresholds,
        Check,
        audit,
        input_gradient_stats,
    )
    from entrobust.diagnostics.plots import plot_distortion_scatter, plot_histograms
    from entrobust.diagnostics.smoothing import ABSTAIN, CertifyResult, certify, certify_dataset, predict
    from entrobust.diagnostics.surrogate import train_surrogate
    from entrobust.diagnostics.toy import (
        entropy_sgd_loss,
        linear_adversarial_loss,
        pgd_adversarial_loss,
        plot_toy_surfaces,
        toy_surfaces,
    )
    from entrobust.diagnostics.weights import (
        conv_fuzziness,
        first_conv_fuzziness,
        fuzziness,
        plot_weight_histograms,
        table3,
        weight_histograms,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'entrobust.diagnostics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
