"""Analyses an experiment can run after training: a registry (:data:`EXPERIMENT_ANALYSES`) of
small adapters from a trained run to the diagnostics of :mod:`entrobust.diagnostics`, each with
typed parameters and returning JSON for the results store.

``entrobust analyze`` on one checkpoint has its own list, :data:`entrobust.diagnostics.analysis.
CHECKPOINT_ANALYSES` (options from the command line, PNG files beside the JSON); a name means the
same quantity in both (``input-surface``, ``fuzziness``, ``toy``).

=================  ========  ======================================================================
kind               scope     what it stores (source)
=================  ========  ======================================================================
``audit``          run       gradient-obfuscation checks + accuracy-vs-ε / steps curves (RU §5.2,
                             App. C)
``geometry``       run       RU Table 4 rows: margin, ‖∇ₓf‖₂, normalized margin, Q_f, distortion,
                             correlation; entropy / confidence histograms (RU §6)
``fuzziness``      run       fuzziness per conv layer + weight histograms (Min-Max eqs. 14–15)
``input-surface``  run       input-space loss / margin surfaces at x + ε₁·sign ∇ + ε₂·d (RU App. C.2)
``toy``            study     the smoothness toy surfaces (Kanai §5.1, App. C)
=================  ========  ======================================================================

``landscape``, the input surface's name before the weight-space landscape of ``entrobust analyze``
made it ambiguous, is still read from experiment files as ``input-surface`` with a
:class:`DeprecationWarning` (:data:`RENAMED_KINDS`).

Each kind has typed defaults; :meth:`Analysis.validate` rejects unknown parameters and wrong
types by name, then checks every value by building what the analysis would build (its threat
model and attacks from the registry, its minimal-distortion attack) without running anything, so
an experiment file fails on load — and in ``entrobust run --dry-run`` — not after an hour of
training.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrobust.errors import ConfigError
from entrobust.registry import Registry

__all__ = [
    "EXPERIMENT_ANALYSES",
    "RENAMED_KINDS",
    "Analysis",
    "AnalysisContext",
    "analysis_kind",
    "audit_threat",
    "default_eps",
]


@dataclass
class AnalysisContext:
    """What an analysis gets: the trained model and its data (run scope) or nothing (study scope).

    ``surrogate`` is a normally trained model of the same data when the experiment has one (used
    by the audit's transfer check instead of training a fresh one). ``reference`` is the strongest
    stored evaluation at the audit's ε (see :func:`audit_threat`), so that the audit notices an
    evaluation attack weaker than its own, or its own weaker than a stored one.
    """

    dataset: str | None = None
    model: Any = None  # nn.Module
    test: Any = None  # TensorData
    train: Any = None  # TensorData
    surrogate: Any = None  # nn.Module | None
    #: the strongest stored white-box evaluation of this run at the analysis' threat (the audit's
    #: ``strong-attack`` reference): ``{"accuracy", "attack", "n", "evaluation"}``, or None
    reference: dict[str, Any] | None = None
    #: test-set indices a stored evaluation at the audit's threat already broke: the audit reuses
    #: them instead of attacking them again (``audit(..., known_broken=...)``)
    known_broken: list[int] | None = None
    out_dir: Path | None = None
    seed: int = 0
    log: Callable[[str], Any] = field(default=lambda _m: None)


AnalysisFn = Callable[[AnalysisContext, dict[str, Any]], dict[str, Any]]
CheckFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Analysis:
    """One analysis kind: ``fn(context, params) -> JSON dict``, its defaults and scope.

    ``check(params)`` (optional) raises :class:`ConfigError` for a bad value, building — never
    running — whatever ``fn`` would build from ``params``.
    """

    name: str
    fn: AnalysisFn
    defaults: Mapping[str, Any]
    scope: str = "run"  # "run" (once per trained model) or "study" (once per experiment)
    description: str = ""
    check: CheckFn | None = None

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated by ``params``; unknown keys, wrong types and bad values raise naming
        the key (and, for unknown keys, the valid ones)."""
        out = dict(self.defaults)
        for k, v in params.items():
            if k not in self.defaults:
                raise ConfigError(f"unknown parameter {k!r}; valid: {', '.join(sorted(self.defaults))}")
            d = self.defaults[k]
            out[k] = _coerce(k, d, v)
        if self.check is not None:
            self.check(out)
        return out


def _at_least(p: Mapping[str, Any], minimum: float, *keys: str) -> None:
    for k in keys:
        if p[k] < minimum:
            raise ConfigError(f"{k}: must be >= {minimum:g}, got {p[k]!r}")


def _positive(p: Mapping[str, Any], *keys: str) -> None:
    for k in keys:
        v = p[k]
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{k}: must be a finite number > 0, got {v!r}")


def _coerce(key: str, default: Any, value: Any) -> Any:
    if value is None or default is None:
        if isinstance(value, str) and default is None and key in ("eps",):
            return _fraction(key, value)
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            return _fraction(key, value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(default, list | tuple):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return list(value)
    return value


def _fraction(key: str, value: str) -> float:
    from entrobust.evaluation.suites import parse_value

    v = parse_value(value)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"{key}: expected a number or a fraction like '8/255', got {value!r}")
    return float(v)


EXPERIMENT_ANALYSES: Registry[Analysis] = Registry("experiment analysis")

#: old kind → its current name (accepted in experiment files, with a DeprecationWarning)
RENAMED_KINDS: dict[str, str] = {"landscape": "input-surface"}


def _register(a: Analysis) -> Analysis:
    return EXPERIMENT_ANALYSES.register(a.name, a, help=a.description)


def analysis_kind(name: str, where: str = "analysis") -> str:
    """The current name of analysis kind ``name``: a renamed kind (:data:`RENAMED_KINDS`) gives its
    new name and a :class:`DeprecationWarning` naming ``where``; any other name is returned as is."""
    new = RENAMED_KINDS.get(name)
    if new is None:
        return name
    warnings.warn(
        f"{where}: analysis kind {name!r} is now called {new!r} (the input-space loss surface; "
        "the weight-space landscape is 'weight-landscape' of `entrobust analyze`); "
        f"write [analysis.{new}]",
        DeprecationWarning,
        stacklevel=2,
    )
    return new


def default_eps(dataset: str | None, norm: str = "linf") -> float:
    """The usual threat radius of a dataset: ℓ∞ from the dataset's own default threat
    (:func:`entrobust.data.default_threat`: 0.3 on MNIST, 0.1 on 8×8 digits, 8/255 on colour
    images); ℓ2 2.0 on MNIST-like data (ATENT Table 1) and 0.5 on colour images."""
    if norm == "l2":
        from entrobust.evaluation import dataset_family

        return 2.0 if dataset_family(dataset) == "mnist" else 0.5
    from entrobust.data import default_threat

    return default_threat(dataset)[1]


def _subset(data: Any, n: int, seed: int) -> tuple[Any, Any]:
    import torch

    d = data.to_float() if hasattr(data, "to_float") else data
    x, y = (d.x, d.y) if hasattr(d, "x") else d
    if n < x.shape[0]:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=g)[:n].sort().values
        x, y = x[idx], y[idx]
    return x, y


def _finite(v: Any) -> Any:
    """JSON-safe: NaN / inf → None, recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


# ------------------------------------------------------------------------------------ audit
def _audit(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.attacks import ThreatModel
    from entrobust.diagnostics import audit

    norm, eps = audit_threat(ctx.dataset, p)
    kwargs: dict[str, Any] = {
        "n": p["n"],
        "pgd_steps": p["pgd_steps"],
        "random_search_samples": p["random_search_samples"],
        "random_search_n": p["random_search_n"],
        "curve_n": p["curve_n"],
        "curve_steps": p["curve_steps"],
        "steps_grid": tuple(int(s) for s in p["steps_grid"]),
        "surrogate_epochs": p["surrogate_epochs"],
        "square_queries": p["square_queries"],
        "square_n": p["square_n"],
        "strong_iter": p["strong_iter"],
        "seed": ctx.seed,
        "log": ctx.log,
    }
    if ctx.reference is not None:
        kwargs["reference_accuracy"] = float(ctx.reference["accuracy"])
    if ctx.known_broken:
        kwargs["known_broken"] = list(ctx.known_broken)
    if p["checks"]:
        kwargs["checks"] = list(p["checks"])
    if p["eps_factors"]:
        kwargs["eps_factors"] = tuple(float(f) for f in p["eps_factors"])
    report = audit(
        ctx.model,
        ctx.test,
        ThreatModel(norm, eps),
        surrogate=ctx.surrogate,
        train_data=ctx.train,
        **kwargs,
    )
    out: dict[str, Any] = _finite(report.to_dict())
    out["surrogate"] = "experiment" if ctx.surrogate is not None else "trained on the fly"
    if ctx.reference is not None:
        out["reference"] = dict(ctx.reference)
    return out


def audit_threat(dataset: str | None, params: Mapping[str, Any]) -> tuple[str, float]:
    """(norm, ε) the ``audit`` analysis runs at for ``dataset`` with (validated) ``params``."""
    norm = str(params.get("norm", "linf"))
    eps = params.get("eps")
    return norm, float(eps) if eps is not None else default_eps(dataset, norm)


def _check_audit(p: dict[str, Any]) -> None:
    from entrobust.attacks import ThreatModel, build_attack
    from entrobust.diagnostics.obfuscation import AUDIT_CHECKS

    _positive(p, "eps")
    _at_least(
        p, 1, "n", "random_search_samples", "random_search_n", "curve_n", "surrogate_epochs",
        "square_queries", "square_n", "strong_iter",
    )  # fmt: skip
    unknown = sorted(set(p["checks"]) - set(AUDIT_CHECKS))
    if unknown:
        raise ConfigError(f"checks: unknown audit check(s) {unknown}; valid: {', '.join(AUDIT_CHECKS)}")
    for i, f in enumerate(p["eps_factors"]):
        if isinstance(f, bool) or not isinstance(f, int | float) or not math.isfinite(f) or f < 0:
            raise ConfigError(f"eps_factors[{i}]: must be a finite number >= 0, got {f!r}")
    steps = [("pgd_steps", p["pgd_steps"]), ("curve_steps", p["curve_steps"])]
    steps += [(f"steps_grid[{i}]", s) for i, s in enumerate(p["steps_grid"])]
    for key, s in steps:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ConfigError(f"{key}: expected an integer, got {s!r}")
    try:
        threat = ThreatModel(p["norm"], p["eps"] if p["eps"] is not None else default_eps(None, p["norm"]))
    except ConfigError as exc:
        raise ConfigError(f"norm: {exc}") from None
    for key, s in steps:  # the PGD attacks the audit runs, built from the registry
        try:
            build_attack("pgd", threat, steps=s, seed=0)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None


_register(
    Analysis(
        "audit",
        _audit,
        {
            "eps": None,
            "norm": "linf",
            "n": 200,
            "pgd_steps": 20,
            "random_search_samples": 10_000,
            "random_search_n": 25,
            "curve_n": 100,
            "curve_steps": 20,
            "steps_grid": [8, 16, 32, 64, 128, 256],
            "eps_factors": [],
            "surrogate_epochs": 3,
            "square_queries": 1000,
            "square_n": 50,
            "strong_iter": 50,
            "checks": [],
        },
        description="gradient-obfuscation audit with accuracy-vs-eps and accuracy-vs-steps curves (RU §5.2)",
        check=_check_audit,
    )
)


# ------------------------------------------------------------------------------------ geometry
def _geometry(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import analyze_geometry, default_l2_adversary, default_minimal_l2

    x, y = _subset(ctx.test, p["n"], ctx.seed)
    result = analyze_geometry(
        ctx.model,
        x,
        y,
        batch_size=p["batch_size"],
        jacobian=True,
        adversary=default_l2_adversary(p["adv_eps"], p["adv_steps"]) if p["adv_steps"] > 0 else None,
        distortion=default_minimal_l2(p["distortion"]) if p["distortion"] else None,
        power_iters=p["power_iters"],
        seed=ctx.seed,
        keep_examples=True,
    )
    out: dict[str, Any] = _finite(result.to_dict())
    out["adversary"] = f"PGD{p['adv_steps']}-{p['adv_eps']:g} (l2)"
    return out


def _check_geometry(p: dict[str, Any]) -> None:
    from entrobust.diagnostics import default_l2_adversary, default_minimal_l2

    _at_least(p, 1, "n", "batch_size", "power_iters")
    _at_least(p, 0, "adv_steps")
    if p["adv_steps"] > 0:
        _positive(p, "adv_eps")
        default_l2_adversary(p["adv_eps"], p["adv_steps"])
    if p["distortion"]:
        try:
            default_minimal_l2(p["distortion"])
        except ConfigError as exc:
            raise ConfigError(f"distortion: {exc}") from None


_register(
    Analysis(
        "geometry",
        _geometry,
        {
            "n": 200,
            "batch_size": 100,
            "adv_eps": 0.5,
            "adv_steps": 20,
            "distortion": "deepfool",
            "power_iters": 50,
        },
        description="RU Table 4: margin, Jacobian norm, normalized margin, Q_f, distortion correlation, "
        "entropy histograms",
        check=_check_geometry,
    )
)


# ------------------------------------------------------------------------------------ fuzziness
def _fuzziness(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import conv_fuzziness, weight_histograms

    fz = conv_fuzziness(ctx.model)
    hists = weight_histograms(ctx.model, bins=p["bins"], limit=p["limit"], zero_width=p["zero_width"])
    return _finite(
        {
            "layers": fz,
            "first": next(iter(fz.values())),
            "mean": sum(fz.values()) / len(fz),
            "histograms": [h.to_dict() for h in hists],
        }
    )


def _check_fuzziness(p: dict[str, Any]) -> None:
    _at_least(p, 1, "bins")
    _positive(p, "limit")
    _at_least(p, 0, "zero_width")


_register(
    Analysis(
        "fuzziness",
        _fuzziness,
        {"bins": 50, "limit": 0.5, "zero_width": 0.01},
        description="fuzziness of conv weights per layer and weight histograms (Min-Max eqs. 14-15, Table 3)",
        check=_check_fuzziness,
    )
)


# ------------------------------------------------------------------------------------ input surface
def _input_surface(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import input_surface

    x, y = _subset(ctx.test, max(1, p["examples"]), ctx.seed)
    surfaces = [
        input_surface(
            ctx.model, x[i], y[i], radius=p["radius"], resolution=p["resolution"], seed=ctx.seed + i
        ).to_dict()
        for i in range(x.shape[0])
    ]
    return _finite({"surfaces": surfaces, "radius": p["radius"]})


def _check_input_surface(p: dict[str, Any]) -> None:
    _at_least(p, 1, "examples")
    _at_least(p, 2, "resolution")
    _positive(p, "radius")


_register(
    Analysis(
        "input-surface",
        _input_surface,
        {"examples": 1, "radius": 0.04, "resolution": 15},
        description="input-space loss and margin surfaces along sign-gradient and random directions "
        "(RU App. C.2)",
        check=_check_input_surface,
    )
)


# ------------------------------------------------------------------------------------ toy
def _toy(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import toy_surfaces

    res = toy_surfaces(
        dataset=p["dataset"],
        eps=p["eps"],
        resolution=p["resolution"],
        gamma=p["gamma"],
        pgd_steps=p["pgd_steps"],
        pgd_restarts=p["pgd_restarts"],
        seed=ctx.seed,
    )
    out: dict[str, Any] = _finite(res.to_dict())
    out["smoothness"] = toy_smoothness(res.theta1, res.theta2, {k: v for k, v in res.surfaces.items()})
    return out


def toy_smoothness(theta1: Any, theta2: Any, surfaces: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Where each toy surface bends sharply: the largest jump of the finite-difference gradient
    between neighbouring grid cells, on the axes (θ₁ = 0 or θ₂ = 0), at the origin, and elsewhere.

    A kink (non-smooth point) shows as a gradient jump that does not shrink with the grid step;
    smooth surfaces have jumps of order (second derivative × step). Used by claim C11.
    """
    import numpy as np

    t1, t2 = np.asarray(theta1, float), np.asarray(theta2, float)
    h = float(t1[1] - t1[0]) if t1.size > 1 else 1.0
    out: dict[str, dict[str, float]] = {}
    for name, s in surfaces.items():
        z = np.asarray(s, float)
        g1 = np.diff(z, axis=1) / h  # d/dθ1 at midpoints [i2, i1+1/2]
        g2 = np.diff(z, axis=0) / h
        j1 = np.abs(np.diff(g1, axis=1))  # jump of d/dθ1 across the cell centre (i2, i1+1)
        j2 = np.abs(np.diff(g2, axis=0))  # jump of d/dθ2 across (i2+1, i1)
        c1 = t1[1:-1]  # θ1 at the jump centres of j1
        c2 = t2[1:-1]
        near = 1.5 * h
        on_axis1 = np.abs(c1) < near  # jumps of d/dθ1 at θ1 ≈ 0 (crossing the θ1 = 0 axis)
        on_axis2 = np.abs(c2) < near
        rows2 = np.abs(t2) < near
        cols1 = np.abs(t1) < near
        axis_jumps = np.concatenate([j1[:, on_axis1].ravel(), j2[on_axis2, :].ravel()])
        origin = np.concatenate([j1[np.ix_(rows2, on_axis1)].ravel(), j2[np.ix_(on_axis2, cols1)].ravel()])
        off_axes = np.concatenate(
            [j1[np.ix_(~rows2, ~on_axis1)].ravel(), j2[np.ix_(~on_axis2, ~cols1)].ravel()]
        )
        axis_only = np.concatenate(
            [j1[np.ix_(~rows2, on_axis1)].ravel(), j2[np.ix_(on_axis2, ~cols1)].ravel()]
        )
        out[name] = {
            "step": h,
            "max_jump_origin": float(origin.max()) if origin.size else 0.0,
            "max_jump_axes": float(axis_jumps.max()) if axis_jumps.size else 0.0,
            "max_jump_axes_off_origin": float(axis_only.max()) if axis_only.size else 0.0,
            "max_jump_elsewhere": float(off_axes.max()) if off_axes.size else 0.0,
        }
    return out


def _check_toy(p: dict[str, Any]) -> None:
    if p["dataset"] not in ("point", "gaussian"):
        raise ConfigError(f"dataset: unknown toy dataset {p['dataset']!r}; valid: point, gaussian")
    _at_least(p, 2, "resolution")
    _at_least(p, 1, "pgd_steps", "pgd_restarts")
    _at_least(p, 0, "eps")
    _positive(p, "gamma")


_register(
    Analysis(
        "toy",
        _toy,
        {"dataset": "point", "eps": 0.6, "resolution": 41, "gamma": 1.0, "pgd_steps": 30, "pgd_restarts": 2},
        scope="study",
        description="Kanai smoothness toy: linear/swish adversarial losses and the EntropySGD-smoothed loss",
        check=_check_toy,
    )
)
