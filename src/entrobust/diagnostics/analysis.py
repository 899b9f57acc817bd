"""Run named analyses of one model and write their numbers (JSON) and pictures (PNG) to a folder.

``analyze(model, data, ["margin", "fuzziness", ...], out_dir)`` is what ``entrobust analyze``
calls; each analysis is a function registered in :data:`CHECKPOINT_ANALYSES` that returns a
JSON-able dict and may add PNG files. An experiment's analyses, with typed parameters and results
kept in the store, are another list: :data:`entrobust.experiments.analyses.EXPERIMENT_ANALYSES`.

Two names were renamed so that each says which space it explores: ``surface`` is now
``input-surface`` (loss and margin around an input, RU App. C.2) and ``landscape`` is now
``weight-landscape`` (loss along weight directions, Kanai App. F.1); the old names raise an error
naming the new ones (:data:`RENAMED`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.diagnostics._util import as_xy, model_device
from entrobust.errors import ConfigError
from entrobust.io import atomic_write_text
from entrobust.registry import Registry


@dataclass
class Context:
    """What every analysis may use; ``x``/``y`` are a seeded random subset of ``n`` examples."""

    model: nn.Module | None
    x: Tensor | None
    y: Tensor | None
    out: Path
    meta: dict[str, Any]
    dataset: str | None
    options: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    log: Callable[[str], Any] = lambda _m: None

    def need_model(self, what: str) -> tuple[nn.Module, Tensor, Tensor]:
        if self.model is None or self.x is None or self.y is None:
            raise ConfigError(f"analysis {what!r} needs a model and data")
        return self.model, self.x, self.y


Analysis = Callable[[Context], dict[str, Any]]
CHECKPOINT_ANALYSES: Registry[Analysis] = Registry("checkpoint analysis")
#: old name → current name; an old name is refused with a message naming the new one
RENAMED: dict[str, str] = {"surface": "input-surface", "landscape": "weight-landscape"}


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


def _geometry(ctx: Context, full: bool) -> dict[str, Any]:
    from entrobust.diagnostics.geometry import (
        GeometryAccumulator,
        default_l2_adversary,
        default_minimal_l2,
        format_table4,
    )
    from entrobust.diagnostics.plots import plot_distortion_scatter, plot_histograms

    model, x, y = ctx.need_model("table4" if full else "jacobian")
    eps = float(ctx.options.get("l2_eps", 0.5))
    acc = GeometryAccumulator(
        jacobian=True,
        adversary=default_l2_adversary(eps) if full else None,
        distortion=default_minimal_l2(str(ctx.options.get("distortion", "deepfool"))) if full else None,
        keep_examples=full,
    )
    dev = model_device(model)
    for i in range(0, x.shape[0], 100):
        acc.update(model, x[i : i + 100].to(dev), y[i : i + 100].to(dev))
    res = acc.compute()
    out = res.to_dict()
    if not full:
        out.pop("examples", None)
    name = ctx.meta.get("name") or "model"
    table = format_table4({str(name): res}, adversary=f"PGD20-{eps:g} (ℓ2)")
    out["table4"] = table
    out["summary"] = (
        f"margin {res.margin:.4g}, ‖∇ₓf‖₂ {res.jacobian_norm:.4g}, "
        f"normalized margin {res.normalized_margin:.4g}"
        + (f", Q_f {res.nonlinearity:.4g}, corr {res.correlation:.4g}" if full else "")
    )
    if full:
        ctx.files.append(plot_histograms({str(name): res}, ctx.out / "histograms.png"))
        if res.counts.get("correlation_pairs", 0) > 0:
            ctx.files.append(plot_distortion_scatter({str(name): res}, ctx.out / "distortion_scatter.png"))
    return out


@CHECKPOINT_ANALYSES.register(
    "margin", help="decision margin M = f_y − max_{i≠y} f_i and clean accuracy (RU §6)"
)
def _margin(ctx: Context) -> dict[str, Any]:
    from entrobust.diagnostics.geometry import GeometryAccumulator

    model, x, y = ctx.need_model("margin")
    acc = GeometryAccumulator(jacobian=False)
    dev = model_device(model)
    for i in range(0, x.shape[0], 200):
        acc.update(model, x[i : i + 200].to(dev), y[i : i + 200].to(dev))
    res = acc.compute()
    return {
        "n": res.n,
        "clean_accuracy": res.clean_accuracy,
        "margin": res.margin,
        "histograms": {k: h.to_dict() for k, h in res.histograms.items() if k.endswith("clean")},
        "summary": f"mean margin {res.margin:.4g}, clean accuracy {res.clean_accuracy:.4f}",
    }


@CHECKPOINT_ANALYSES.register(
    "jacobian", help="spectral norm of the input Jacobian and normalized margin (RU Table 4)"
)
def _jacobian(ctx: Context) -> dict[str, Any]:
    return _geometry(ctx, full=False)


@CHECKPOINT_ANALYSES.register(
    "table4", help="all RU Table 4 rows: + ℓ2 PGD20 accuracy, Q_f, distortion correlation"
)
def _table4(ctx: Context) -> dict[str, Any]:
    return _geometry(ctx, full=True)


@CHECKPOINT_ANALYSES.register(
    "histograms", help="prediction entropy / confidence histograms, clean vs ℓ2 adversarial"
)
def _histograms(ctx: Context) -> dict[str, Any]:
    from entrobust.diagnostics.geometry import GeometryAccumulator, default_l2_adversary
    from entrobust.diagnostics.plots import plot_histograms

    model, x, y = ctx.need_model("histograms")
    acc = GeometryAccumulator(
        jacobian=False, adversary=default_l2_adversary(float(ctx.options.get("l2_eps", 0.5)))
    )
    dev = model_device(model)
    for i in range(0, x.shape[0], 100):
        acc.update(model, x[i : i + 100].to(dev), y[i : i + 100].to(dev))
    res = acc.compute()
    ctx.files.append(plot_histograms({"model": res}, ctx.out / "histograms.png"))
    return {
        "histograms": {k: h.to_dict() for k, h in res.histograms.items()},
        "summary": f"adversarial accuracy {res.adv_accuracy:.4f}",
    }


@CHECKPOINT_ANALYSES.register(
    "fuzziness", help="fuzziness of each conv layer's weights and weight histograms (Min-Max)"
)
def _fuzziness(ctx: Context) -> dict[str, Any]:
    from entrobust.diagnostics.weights import conv_fuzziness, plot_weight_histograms, weight_histograms

    if ctx.model is None:
        raise ConfigError("analysis 'fuzziness' needs a model")
    fz = conv_fuzziness(ctx.model)
    ctx.files.append(plot_weight_histograms({"model": ctx.model}, ctx.out / "weights.png"))
    first = next(iter(fz.values()))
    return {
        "per_layer": fz,
        "first_conv": first,
        "histograms": [h.to_dict() for h in weight_histograms(ctx.model)],
        "summary": f"first conv fuzziness {first:.4f} ({len(fz)} conv layers)",
    }


@CHECKPOINT_ANALYSES.register(
    "input-surface", help="input-space loss and margin surfaces around test images (RU App. C.2)"
)
def _input_surface(ctx: Context) -> dict[str, Any]:
    from entrobust.diagnostics.landscape import input_surface, plot_input_surfaces

    model, x, y = ctx.need_model("input-surface")
    k = max(1, int(ctx.options.get("surfaces", 2)))
    surfaces = {
        f"example {i} (label {int(y[i])})": input_surface(
            model, x[i], int(y[i]), seed=int(ctx.options.get("seed", 0))
        )
        for i in range(min(k, x.shape[0]))
    }
    ctx.files.append(plot_input_surfaces(surfaces, ctx.out / "surface_loss.png", what="loss"))
    ctx.files.append(plot_input_surfaces(surfaces, ctx.out / "surface_margin.png", what="margin"))
    return {"surfaces": {k: s.to_dict() for k, s in surfaces.items()}, "summary": f"{len(surfaces)} images"}


@CHECKPOINT_ANALYSES.register(
    "weight-landscape", help="loss along filter-normalized weight directions, 1-D (+2-D) (Kanai F.1)"
)
def _weight_landscape(ctx: Context) -> dict[str, Any]:
    from entrobust.attacks import ThreatModel, build_attack
    from entrobust.diagnostics._cli import default_threat
    from entrobust.diagnostics.landscape import parameter_landscape, plot_parameter_landscape

    model, x, y = ctx.need_model("weight-landscape")
    m = int(ctx.options.get("landscape_n", 200))
    xs, ys = x[:m], y[:m]
    attack = None
    if ctx.options.get("adversarial"):
        norm, eps = default_threat(ctx.meta, ctx.dataset)
        eps = float(ctx.options.get("eps") or eps)
        attack = build_attack("pgd", ThreatModel(norm, eps), steps=10, seed=int(ctx.options.get("seed", 0)))
    seed = int(ctx.options.get("seed", 0))
    lands = {"1-D": parameter_landscape(model, xs, ys, attack=attack, seed=seed)}
    if ctx.options.get("landscape_2d"):
        grid = [round(v, 10) for v in torch.linspace(-1, 1, 11).tolist()]
        lands["2-D"] = parameter_landscape(model, xs, ys, alphas=grid, two_d=True, attack=attack, seed=seed)
    ctx.files.append(plot_parameter_landscape(lands, ctx.out / "landscape.png"))
    one = lands["1-D"]
    mid = len(one.alphas) // 2
    return {
        "landscapes": {k: v.to_dict() for k, v in lands.items()},
        "summary": f"loss at w {one.loss[mid]:.4g}, at α=±1: {one.loss[0]:.4g} / {one.loss[-1]:.4g}",
    }


@CHECKPOINT_ANALYSES.register(
    "toy", help="smoothness toy: linear/swish adversarial losses and EnSGD −F (Kanai §5.1, C)"
)
def _toy(ctx: Context) -> dict[str, Any]:
    from entrobust.diagnostics.toy import plot_toy_surfaces, toy_surfaces

    out: dict[str, Any] = {}
    for ds in ("point", "gaussian"):
        ctx.log(f"analyze: toy surfaces ({ds})")
        res = toy_surfaces(
            dataset=ds, resolution=41 if ds == "point" else 31, seed=int(ctx.options.get("seed", 0))
        )
        ctx.files.append(plot_toy_surfaces(res, ctx.out / f"toy_{ds}.png"))
        out[ds] = res.to_dict()
    out["summary"] = "Kanai Fig. 2 (point) and Figs. 4–5 (gaussian)"
    return out


@CHECKPOINT_ANALYSES.register(
    "boundary", help="2-class decision regions in a 2-D PCA embedding (ATENT Fig. 1)"
)
def _boundary(ctx: Context) -> dict[str, Any]:
    from entrobust.diagnostics.boundary import decision_boundary, plot_boundary

    model, x, y = ctx.need_model("boundary")
    classes = ctx.options.get("classes")
    if classes is None:
        present = sorted({int(v) for v in y.tolist()})
        classes = [5, 8] if {5, 8} <= set(present) else present[:2]
    pic = decision_boundary(model, x, y, classes=classes, seed=int(ctx.options.get("seed", 0)))
    ctx.files.append(plot_boundary({"model": pic}, ctx.out / "boundary.png"))
    d = pic.to_dict()
    d["summary"] = f"classes {pic.classes}, accuracy {pic.accuracy:.4f}"
    return d


def analyze(
    model: nn.Module | None,
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
    """Run the analyses named in ``what`` (see :data:`CHECKPOINT_ANALYSES`); write
    ``analysis.json`` + PNGs.

    ``data`` (TensorData or ``(x, y)``) is reduced to a seeded random subset of ``n`` examples;
    ``options`` go to the analyses (``l2_eps``, ``distortion``, ``surfaces``, ``landscape_n``,
    ``landscape_2d``, ``adversarial``, ``eps``, ``classes``).
    """
    names = list(dict.fromkeys(what))
    for w in names:
        if w in RENAMED:
            raise ConfigError(
                f"analysis {w!r} is now called {RENAMED[w]!r} "
                "(input-surface: loss around an input; weight-landscape: loss along weight directions)"
            )
        CHECKPOINT_ANALYSES.get(w)  # raises UnknownNameError listing the valid names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = y = None
    if data is not None:
        xa, ya = as_xy(data)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(xa.shape[0], generator=g)[: max(1, n)]
        x, y = xa[idx], ya[idx]
    say = log or (lambda _m: None)
    ctx = Context(model, x, y, out, dict(meta or {}), dataset, {**options, "seed": seed}, log=say)
    parts: dict[str, dict[str, Any]] = {}
    for w in names:
        say(f"analyze: {w}")
        parts[w] = CHECKPOINT_ANALYSES.get(w)(ctx)
    atomic_write_text(out / "analysis.json", json.dumps(_clean(parts), indent=1))
    return AnalysisResult(parts, list(dict.fromkeys([out / "analysis.json", *ctx.files])))


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None, tuples → lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
