"""One registry of analyses (:data:`ANALYSES`), used by ``entrobust analyze`` on a checkpoint and
by an experiment's ``[analysis.KIND]`` tables alike.

Each kind is an :class:`Analysis`: ``fn(context, params) -> JSON dict``, typed default
parameters, a scope, and a ``check`` that rejects a bad value on load. With
``context.pictures`` set (``entrobust analyze``), a kind also writes its PNGs into
``context.out_dir``; an experiment stores the JSON only and the report draws from it.

===================  =====  =======================================================================
kind                 scope  what it computes (source)
===================  =====  =======================================================================
``audit``            run    gradient-obfuscation checks + accuracy-vs-ε / steps curves (RU §5.2,
                            App. C); on a checkpoint it has its own command, ``entrobust audit``
``geometry``         run    RU Table 4: margin, ‖∇ₓf‖₂, normalized margin, Q_f, distortion and its
                            correlation; entropy / confidence histograms (RU §6). ``table4`` is
                            another name for it (:data:`ALIASES`)
``margin``           run    decision margin M = f_y − max_{i≠y} f_i and clean accuracy (RU §6)
``jacobian``         run    ‖∇ₓf‖₂ by power iteration and the normalized margin (RU Table 4)
``histograms``       run    prediction entropy / confidence histograms, clean vs ℓ2 adversarial
``fuzziness``        run    fuzziness per conv layer + weight histograms (Min-Max eqs. 14–15)
``input-surface``    run    input-space loss / margin at x + ε₁·sign ∇ + ε₂·d (RU App. C.2)
``weight-landscape`` run    loss along filter-normalized weight directions (Kanai App. F.1)
``boundary``         run    2-class decision regions in a 2-D PCA embedding (ATENT Fig. 1)
``toy``              study  the smoothness toy surfaces (Kanai §5.1, App. C)
===================  =====  =======================================================================

Old names: ``surface`` and ``landscape`` of ``entrobust analyze`` are refused with the new name
(:data:`RENAMED`); an experiment file's ``[analysis.landscape]`` — the input surface before the
weight landscape made the name ambiguous — is read as ``input-surface`` with a
:class:`DeprecationWarning` (:func:`analysis_kind`).

:meth:`Analysis.validate` rejects unknown parameters and wrong types by name, then checks every
value by building what the analysis would build (threat model, attacks from the registry, the
minimal-distortion attack) without running anything, so an experiment file fails on load — and in
``entrobust run --dry-run`` — not after an hour of training. This module imports torch lazily: the
results store reads its rename table without loading torch.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrobust.errors import ConfigError
from entrobust.registry import Registry

__all__ = [
    "ALIASES",
    "ANALYSES",
    "RENAMED",
    "Analysis",
    "AnalysisContext",
    "AnalysisResult",
    "analysis_kind",
    "analyze",
    "audit_threat",
    "default_eps",
    "toy_smoothness",
]


@dataclass
class AnalysisContext:
    """What an analysis gets: a trained model and its data (run scope) or nothing (study scope).

    ``surrogate`` is a normally trained model of the same data when the experiment has one (used
    by the audit's transfer check instead of training a fresh one). ``reference`` is the strongest
    stored evaluation at the audit's ε (see :func:`audit_threat`), so that the audit notices an
    evaluation attack weaker than its own, or its own weaker than a stored one. ``meta`` is the
    checkpoint's metadata (its training threat is the weight landscape's default).
    """

    dataset: str | None = None
    model: Any = None  # nn.Module
    test: Any = None  # TensorData or (x, y)
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
    meta: dict[str, Any] = field(default_factory=dict)
    #: write each analysis' PNGs into ``out_dir`` (``entrobust analyze``); their paths go to ``files``
    pictures: bool = False
    files: list[Path] = field(default_factory=list)

    def need_model(self, what: str) -> Any:
        """The model, or a clear error naming the analysis when it has no model or no data."""
        if self.model is None or self.test is None:
            raise ConfigError(f"analysis {what!r} needs a model and data")
        return self.model

    def picture(self, name: str) -> Path | None:
        """Where to write picture ``name``, or None when no pictures are wanted."""
        if not self.pictures or self.out_dir is None:
            return None
        path = Path(self.out_dir) / name
        self.files.append(path)
        return path


AnalysisFn = Callable[[AnalysisContext, dict[str, Any]], dict[str, Any]]
CheckFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Analysis:
    """One analysis kind: ``fn(context, params) -> JSON dict``, its defaults and scope.

    ``check(params)`` (optional) raises :class:`ConfigError` for a bad value, building — never
    running — whatever ``fn`` would build from ``params``. ``options`` maps the options of
    :func:`analyze` (the flags of ``entrobust analyze``) to this kind's parameters.
    """

    name: str
    fn: AnalysisFn
    defaults: Mapping[str, Any]
    scope: str = "run"  # "run" (once per trained model) or "study" (once per experiment)
    description: str = ""
    check: CheckFn | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated by ``params``; unknown keys, wrong types and bad values raise naming
        the key (and, for unknown keys, the valid ones)."""
        out = dict(self.defaults)
        for k, v in params.items():
            if k not in self.defaults:
                raise ConfigError(f"unknown parameter {k!r}; valid: {', '.join(sorted(self.defaults))}")
            out[k] = _coerce(k, self.defaults[k], v)
        if self.check is not None:
            self.check(out)
        return out


ANALYSES: Registry[Analysis] = Registry("analysis")

#: names ``entrobust analyze`` no longer takes → the current name (refused with a message)
RENAMED: dict[str, str] = {"surface": "input-surface", "landscape": "weight-landscape"}
#: other names of a kind, accepted everywhere
ALIASES: dict[str, str] = {"table4": "geometry"}
#: an experiment file's old kind → its current name (read with a DeprecationWarning)
_EXPERIMENT_RENAMED: dict[str, str] = {"landscape": "input-surface"}
#: kinds with a command of their own; ``analyze`` refuses them
_OWN_COMMAND: dict[str, str] = {"audit": "entrobust audit"}


def _register(a: Analysis) -> Analysis:
    return ANALYSES.register(a.name, a, help=a.description)


def analysis_kind(name: str, where: str = "analysis") -> str:
    """The current name of experiment analysis kind ``name``: an alias gives its kind; the old
    ``landscape`` gives ``input-surface`` and a :class:`DeprecationWarning` naming ``where``."""
    name = ALIASES.get(name, name)
    new = _EXPERIMENT_RENAMED.get(name)
    if new is None:
        return name
    warnings.warn(
        f"{where}: analysis kind {name!r} is now called {new!r} (the input-space loss surface; "
        "the weight-space landscape is 'weight-landscape'); "
        f"write [analysis.{new}]",
        DeprecationWarning,
        stacklevel=2,
    )
    return new


def stored_kind(stored: str) -> str:
    """An analysis kind as a results store holds it, under its current name, without a warning."""
    return _EXPERIMENT_RENAMED.get(stored, stored)


# ------------------------------------------------------------------------------------ helpers
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


def default_eps(dataset: str | None, norm: str = "linf") -> float:
    """The usual threat radius of a dataset: ℓ∞ from the dataset's own default threat
    (:func:`entrobust.data.default_threat`: 0.3 on MNIST, 0.1 on 8×8 digits, 8/255 on colour
    images); ℓ2 2.0 on MNIST-like data (ATENT Table 1) and 0.5 on colour images."""
    if norm == "l2":
        from entrobust.evaluation import dataset_family

        return 2.0 if dataset_family(dataset) == "mnist" else 0.5
    from entrobust.data import default_threat

    return default_threat(dataset)[1]


def _xy(data: Any) -> tuple[Any, Any]:
    from entrobust.diagnostics._util import as_xy

    return as_xy(data.to_float() if hasattr(data, "to_float") else data)


def _subset(data: Any, n: int, seed: int) -> tuple[Any, Any]:
    """A seeded random subset of ``n`` examples, in the data's order."""
    import torch

    x, y = _xy(data)
    if n < x.shape[0]:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=g)[:n].sort().values
        x, y = x[idx], y[idx]
    return x, y


def _finite(v: Any) -> Any:
    """JSON-safe: NaN / inf → None, tuples → lists, recursively."""
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
def _geometry_result(ctx: AnalysisContext, p: dict[str, Any], what: str, **acc: Any) -> Any:
    from entrobust.diagnostics import analyze_geometry

    model = ctx.need_model(what)
    x, y = _subset(ctx.test, p["n"], ctx.seed)
    return analyze_geometry(model, x, y, batch_size=p["batch_size"], seed=ctx.seed, **acc)


def _geometry(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import default_l2_adversary, default_minimal_l2, format_table4
    from entrobust.diagnostics.plots import plot_distortion_scatter, plot_histograms

    res = _geometry_result(
        ctx,
        p,
        "geometry",
        jacobian=True,
        adversary=default_l2_adversary(p["adv_eps"], p["adv_steps"]) if p["adv_steps"] > 0 else None,
        distortion=default_minimal_l2(p["distortion"]) if p["distortion"] else None,
        power_iters=p["power_iters"],
        keep_examples=True,
    )
    out: dict[str, Any] = _finite(res.to_dict())
    out["adversary"] = f"PGD{p['adv_steps']}-{p['adv_eps']:g} (l2)"
    name = str(ctx.meta.get("name") or "model")
    out["table4"] = format_table4({name: res}, adversary=out["adversary"])
    out["summary"] = (
        f"margin {res.margin:.4g}, ‖∇ₓf‖₂ {res.jacobian_norm:.4g}, normalized margin "
        f"{res.normalized_margin:.4g}, Q_f {res.nonlinearity:.4g}, corr {res.correlation:.4g}"
    )
    if path := ctx.picture("histograms.png"):
        plot_histograms({name: res}, path)
    if res.counts.get("correlation_pairs", 0) > 0 and (path := ctx.picture("distortion_scatter.png")):
        plot_distortion_scatter({name: res}, path)
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
        options={"n": "n", "l2_eps": "adv_eps", "distortion": "distortion"},
    )
)


def _margin(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    res = _geometry_result(ctx, p, "margin", jacobian=False)
    return {
        "n": res.n,
        "clean_accuracy": res.clean_accuracy,
        "margin": res.margin,
        "histograms": {k: h.to_dict() for k, h in res.histograms.items() if k.endswith("clean")},
        "summary": f"mean margin {res.margin:.4g}, clean accuracy {res.clean_accuracy:.4f}",
    }


def _check_sizes(p: dict[str, Any]) -> None:
    _at_least(p, 1, *(k for k in ("n", "batch_size", "power_iters") if k in p))


_register(
    Analysis(
        "margin",
        _margin,
        {"n": 200, "batch_size": 200},
        description="decision margin M = f_y − max_{i≠y} f_i and clean accuracy (RU §6)",
        check=_check_sizes,
        options={"n": "n"},
    )
)


def _jacobian(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    res = _geometry_result(ctx, p, "jacobian", jacobian=True, power_iters=p["power_iters"])
    out: dict[str, Any] = _finite(res.to_dict())
    out.pop("examples", None)
    out["summary"] = (
        f"margin {res.margin:.4g}, ‖∇ₓf‖₂ {res.jacobian_norm:.4g}, "
        f"normalized margin {res.normalized_margin:.4g}"
    )
    return out


_register(
    Analysis(
        "jacobian",
        _jacobian,
        {"n": 200, "batch_size": 100, "power_iters": 100},
        description="spectral norm of the input Jacobian and normalized margin (RU Table 4)",
        check=_check_sizes,
        options={"n": "n"},
    )
)


def _histograms(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import default_l2_adversary
    from entrobust.diagnostics.plots import plot_histograms

    res = _geometry_result(
        ctx, p, "histograms", jacobian=False, adversary=default_l2_adversary(p["adv_eps"], p["adv_steps"])
    )
    if path := ctx.picture("histograms.png"):
        plot_histograms({"model": res}, path)
    return {
        "histograms": {k: h.to_dict() for k, h in res.histograms.items()},
        "adv_accuracy": res.adv_accuracy,
        "summary": f"adversarial accuracy {res.adv_accuracy:.4f}",
    }


def _check_histograms(p: dict[str, Any]) -> None:
    _at_least(p, 1, "n", "batch_size", "adv_steps")
    _positive(p, "adv_eps")


_register(
    Analysis(
        "histograms",
        _histograms,
        {"n": 200, "batch_size": 100, "adv_eps": 0.5, "adv_steps": 20},
        description="prediction entropy / confidence histograms, clean vs ℓ2 adversarial",
        check=_check_histograms,
        options={"n": "n", "l2_eps": "adv_eps"},
    )
)


# ------------------------------------------------------------------------------------ fuzziness
def _fuzziness(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import conv_fuzziness, plot_weight_histograms, weight_histograms

    if ctx.model is None:
        raise ConfigError("analysis 'fuzziness' needs a model")
    fz = conv_fuzziness(ctx.model)
    hists = weight_histograms(ctx.model, bins=p["bins"], limit=p["limit"], zero_width=p["zero_width"])
    if path := ctx.picture("weights.png"):
        plot_weight_histograms({"model": ctx.model}, path)
    first = next(iter(fz.values()))
    return _finite(
        {
            "layers": fz,
            "first": first,
            "mean": sum(fz.values()) / len(fz),
            "histograms": [h.to_dict() for h in hists],
            "summary": f"first conv fuzziness {first:.4f} ({len(fz)} conv layers)",
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


# ------------------------------------------------------------------------------------ surfaces
def _input_surface(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import input_surface, plot_input_surfaces

    model = ctx.need_model("input-surface")
    x, y = _subset(ctx.test, max(1, p["examples"]), ctx.seed)
    surfaces = {
        f"example {i} (label {int(y[i])})": input_surface(
            model, x[i], y[i], radius=p["radius"], resolution=p["resolution"], seed=ctx.seed + i
        )
        for i in range(x.shape[0])
    }
    for what in ("loss", "margin"):
        if path := ctx.picture(f"surface_{what}.png"):
            plot_input_surfaces(surfaces, path, what=what)
    return _finite(
        {
            "surfaces": [s.to_dict() for s in surfaces.values()],
            "radius": p["radius"],
            "summary": f"{len(surfaces)} images",
        }
    )


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
        options={"surfaces": "examples"},
    )
)


def _weight_landscape(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    import torch

    from entrobust.attacks import ThreatModel, build_attack
    from entrobust.diagnostics import parameter_landscape, plot_parameter_landscape
    from entrobust.diagnostics._cli import default_threat

    model = ctx.need_model("weight-landscape")
    x, y = _subset(ctx.test, p["n"], ctx.seed)
    attack = None
    if p["adversarial"]:
        norm, eps = default_threat(ctx.meta, ctx.dataset)
        eps = float(p["eps"] or eps)
        attack = build_attack("pgd", ThreatModel(norm, eps), steps=p["steps"], seed=ctx.seed)
    lands = {"1-D": parameter_landscape(model, x, y, attack=attack, seed=ctx.seed)}
    if p["two_d"]:
        grid = [round(v, 10) for v in torch.linspace(-1, 1, 11).tolist()]
        lands["2-D"] = parameter_landscape(model, x, y, alphas=grid, two_d=True, attack=attack, seed=ctx.seed)
    if path := ctx.picture("landscape.png"):
        plot_parameter_landscape(lands, path)
    one = lands["1-D"]
    mid = len(one.alphas) // 2
    return _finite(
        {
            "landscapes": {k: v.to_dict() for k, v in lands.items()},
            "summary": f"loss at w {one.loss[mid]:.4g}, at α=±1: {one.loss[0]:.4g} / {one.loss[-1]:.4g}",
        }
    )


def _check_weight_landscape(p: dict[str, Any]) -> None:
    _at_least(p, 1, "n", "steps")
    _positive(p, "eps")


_register(
    Analysis(
        "weight-landscape",
        _weight_landscape,
        {"n": 200, "two_d": False, "adversarial": False, "eps": None, "steps": 10},
        description="loss along filter-normalized weight directions, 1-D (+2-D) (Kanai App. F.1)",
        check=_check_weight_landscape,
        options={"landscape_n": "n", "landscape_2d": "two_d", "adversarial": "adversarial", "eps": "eps"},
    )
)


def _boundary(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import decision_boundary, plot_boundary

    model = ctx.need_model("boundary")
    x, y = _subset(ctx.test, p["n"], ctx.seed)
    classes = p["classes"]
    if classes is None:
        present = sorted({int(v) for v in y.tolist()})
        classes = [5, 8] if {5, 8} <= set(present) else present[:2]
    pic = decision_boundary(model, x, y, classes=classes, seed=ctx.seed)
    if path := ctx.picture("boundary.png"):
        plot_boundary({"model": pic}, path)
    d = _finite(pic.to_dict())
    d["summary"] = f"classes {pic.classes}, accuracy {pic.accuracy:.4f}"
    return d


def _check_boundary(p: dict[str, Any]) -> None:
    _at_least(p, 1, "n")
    c = p["classes"]
    if c is not None and (
        not isinstance(c, list | tuple)
        or len(c) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in c)
        or c[0] == c[1]
    ):
        raise ConfigError(f"classes: expected two different class indices, got {c!r}")


_register(
    Analysis(
        "boundary",
        _boundary,
        {"n": 200, "classes": None},
        description="2-class decision regions in a 2-D PCA embedding (ATENT Fig. 1)",
        check=_check_boundary,
        options={"n": "n", "classes": "classes"},
    )
)


# ------------------------------------------------------------------------------------ toy
def _toy(ctx: AnalysisContext, p: dict[str, Any]) -> dict[str, Any]:
    from entrobust.diagnostics import plot_toy_surfaces, toy_surfaces

    ctx.log(f"toy surfaces ({p['dataset']})")
    res = toy_surfaces(
        dataset=p["dataset"],
        eps=p["eps"],
        resolution=p["resolution"],
        gamma=p["gamma"],
        pgd_steps=p["pgd_steps"],
        pgd_restarts=p["pgd_restarts"],
        seed=ctx.seed,
    )
    if path := ctx.picture(f"toy_{p['dataset']}.png"):
        plot_toy_surfaces(res, path)
    out: dict[str, Any] = _finite(res.to_dict())
    out["smoothness"] = toy_smoothness(res.theta1, res.theta2, dict(res.surfaces))
    fig = "Fig. 2" if p["dataset"] == "point" else "Figs. 4–5"
    out["summary"] = f"Kanai {fig} ({p['dataset']})"
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
        options={"toy_dataset": "dataset"},
    )
)


# ------------------------------------------------------------------------------------ analyze
@dataclass
class AnalysisResult:
    """The JSON-able results per analysis and the files written."""

    parts: dict[str, dict[str, Any]]
    files: list[Path]

    def summary(self) -> str:
        lines = []
        for name, part in self.parts.items():
            s = part.get("summary")
            lines.append(f"{name}: {s}" if s else name)
        return "\n".join(lines)


def checkpoint_kinds() -> list[str]:
    """The kinds :func:`analyze` runs for ``all``: every kind without a command of its own."""
    return [k for k in ANALYSES.names() if k not in _OWN_COMMAND]


def _current(name: str) -> str:
    if name in RENAMED:
        raise ConfigError(
            f"analysis {name!r} is now called {RENAMED[name]!r} "
            "(input-surface: loss around an input; weight-landscape: loss along weight directions)"
        )
    name = ALIASES.get(name, name)
    if name in _OWN_COMMAND:
        raise ConfigError(f"analysis {name!r} has its own command: {_OWN_COMMAND[name]}")
    ANALYSES.get(name)  # raises UnknownNameError listing the valid names
    return name


def analyze(
    model: Any,
    data: Any,
    what: Sequence[str],
    out_dir: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    dataset: str | None = None,
    n: int = 200,
    seed: int = 0,
    log: Callable[[str], Any] | None = None,
    **options: Any,
) -> AnalysisResult:
    """Run the analyses named in ``what`` (kinds of :data:`ANALYSES`) on one model; write
    ``analysis.json`` and their PNGs into ``out_dir``.

    ``data`` is a TensorData or ``(x, y)``; each analysis draws its own seeded subset of ``n``
    examples. ``options`` (``l2_eps``, ``distortion``, ``surfaces``, ``landscape_n``,
    ``landscape_2d``, ``adversarial``, ``eps``, ``classes``, ``toy_dataset``) reach each kind
    through its :attr:`Analysis.options`; ``None`` means the kind's default.
    """
    names = list(dict.fromkeys(_current(w) for w in what))
    given = {"n": n, **{k: v for k, v in options.items() if v is not None}}
    params = {
        w: ANALYSES.get(w).validate({p: given[o] for o, p in ANALYSES.get(w).options.items() if o in given})
        for w in names
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    ctx = AnalysisContext(
        dataset=dataset, model=model, test=data, out_dir=out, seed=seed, log=say,
        meta=dict(meta or {}), pictures=True,
    )  # fmt: skip
    parts: dict[str, dict[str, Any]] = {}
    for w in names:
        say(f"analyze: {w}")
        parts[w] = ANALYSES.get(w).fn(ctx, params[w])
    from entrobust.io import atomic_write_text

    atomic_write_text(out / "analysis.json", json.dumps(_finite(parts), indent=1))
    return AnalysisResult(parts, list(dict.fromkeys([out / "analysis.json", *ctx.files])))
