"""Report figures drawn from a :class:`~entrobust.report.results.ResultSet` (whichever data exist).

=================  ==========================================================================
key                what (source)
=================  ==========================================================================
``eps-curve``      accuracy vs ε: the audit's PGD curve per model, and the strongest stored
                   white-box attack per ε (RU Fig. 1)
``steps-curve``    accuracy vs PGD steps at the audit's ε (RU Fig. 2)
``training``       training loss and validation / training robust accuracy per epoch
``sweeps``         robust accuracy vs a swept hyperparameter (λ, μ, γ ...) of one preset
``entropy``        prediction entropy and confidence histograms, clean vs adversarial (RU §6)
``weights``        first-conv-layer weight histograms (Min-Max Figs. 4–5)
``surfaces``       input-space loss surfaces (RU App. C.2, Fig. 5)
``toy``            the smoothness toy's loss surfaces (Kanai Fig. 2)
=================  ==========================================================================

Each builder returns :class:`Figure` objects holding PNG bytes, a caption and the ids of the
stored rows drawn (so a plot, like a table cell, traces to the store).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from entrobust.registry import Registry
from entrobust.report.results import ResultSet, RunInfo

__all__ = ["PLOTS", "Figure", "build_figures"]


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    png: bytes
    sources: list[str] = field(default_factory=list)
    dataset: str | None = None


PlotFn = Callable[[ResultSet], list[Figure]]
PLOTS: Registry[PlotFn] = Registry("plot")


def _plt() -> Any:
    from entrobust.diagnostics._util import pyplot

    return pyplot()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


#: 12 colours that stay apart (tab10 plus black and mustard; tab20's light/dark pairs do not)
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#000000",
    "#b8860b",
)
#: one marker per series, so that even a colour-blind reader or a grey print tells 12 series apart
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")
#: line styles cycling with the markers
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per label (:data:`PALETTE`, cycling beyond 12)."""
    return {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}


def _styles(labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker and line style per label: no two of 12 series share all three (and no two
    share colour and marker), so every curve of a 12-model plot is told apart."""
    return {
        lab: {
            "color": PALETTE[i % len(PALETTE)],
            "marker": MARKERS[i % len(MARKERS)],
            "ls": LINESTYLES[i % len(LINESTYLES)],
        }
        for i, lab in enumerate(labels)
    }


def _legend_outside(ax: Any) -> None:
    """Legend to the right of the axes, so it never hides a curve."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _colorbar(fig: Any, mappable: Any, ax: Any) -> None:
    cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=6)


def shared_levels(grids: Sequence[Any], n: int) -> list[float]:
    """``n + 1`` contour levels spanning every grid in ``grids`` (NaN ignored): panels drawn with
    them share one colour scale, so equal colours mean equal values across models."""
    lo, hi = math.inf, -math.inf
    for g in grids:
        for row in g:
            for v in row if isinstance(row, list | tuple) else [row]:
                if isinstance(v, int | float) and math.isfinite(v):
                    lo, hi = min(lo, float(v)), max(hi, float(v))
    if not math.isfinite(lo):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1e-6
    return [lo + (hi - lo) * k / n for k in range(n + 1)]


def _first(rs: ResultSet, label: str, ds: str) -> list[RunInfo]:
    return rs.runs_for(label, ds)


def build_figures(rs: ResultSet, keys: Sequence[str] = ()) -> list[Figure]:
    """Every figure of ``keys`` (default all) that has data."""
    out: list[Figure] = []
    for key in keys or PLOTS.names():
        out.extend(PLOTS.get(key)(rs))
    return out


# ------------------------------------------------------------------------------------ curves
@PLOTS.register("eps-curve")
def eps_curves(rs: ResultSet) -> list[Figure]:
    figs = []
    for ds in rs.datasets():
        labels = rs.labels(ds)
        styles = _styles(labels)
        audit_lines: list[tuple[str, list[float], list[float]]] = []
        eval_lines: list[tuple[str, list[float], list[float]]] = []
        sources: list[str] = []
        for lab in labels:
            runs = _first(rs, lab, ds)
            for r in runs[:1]:
                got = rs.analysis(r.id, "audit")
                c = (got[1].get("curves") or {}).get("eps") if got else None
                if c and c.get("eps"):
                    audit_lines.append((lab, c["eps"], c["accuracy"]))
                    sources.append(f"analysis:{got[0]}")  # type: ignore[index]
            pts: list[tuple[float, float]] = []
            if runs:
                for e in rs.eps_values(runs[:1]):
                    row = rs.strongest_row(runs[0], e)
                    if row is not None:
                        pts.append((e, row.robust_acc))
                        sources.append(f"evaluation:{row.id}")
                clean = rs.clean_row(runs[0])
                if clean is not None and pts:
                    pts.insert(0, (0.0, clean.robust_acc))
                    sources.append(f"evaluation:{clean.id}")
            if len(pts) >= 2:
                eval_lines.append((lab, [p[0] for p in pts], [p[1] for p in pts]))
        panels = [
            (t, lines)
            for t, lines in (
                ("audit: PGD accuracy vs ε", audit_lines),
                ("strongest stored attack per ε", eval_lines),
            )
            if lines
        ]
        if not panels:
            continue
        plt = _plt()
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
        for ax, (title, lines) in zip(axes[0], panels, strict=False):
            for lab, xs, ys in lines:
                ax.plot(xs, [100 * y for y in ys], ms=4, lw=1.3, label=lab, **styles[lab])
            ax.set_xlabel("ε (ℓ∞)")
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
        _legend_outside(axes[0][-1])
        figs.append(
            Figure(
                "eps-curve",
                f"Accuracy vs ε — {ds}",
                "Robust accuracy must fall monotonically and reach ≈ 0 at large ε (RU §5.2, Fig. 1). "
                "Left: the audit's PGD curve; right: the lowest accuracy of any stored white-box row at "
                "each ε.",
                _png(fig),
                sources,
                ds,
            )
        )
    return figs


@PLOTS.register("steps-curve")
def steps_curves(rs: ResultSet) -> list[Figure]:
    figs = []
    for ds in rs.datasets():
        labels = rs.labels(ds)
        styles = _styles(labels)
        lines, sources, eps = [], [], None
        for lab in labels:
            for r in _first(rs, lab, ds)[:1]:
                got = rs.analysis(r.id, "audit")
                c = (got[1].get("curves") or {}).get("steps") if got else None
                if got and c and c.get("steps"):
                    lines.append((lab, c["steps"], c["accuracy"]))
                    sources.append(f"analysis:{got[0]}")
                    eps = (got[1].get("threat") or {}).get("eps", eps)
        if not lines:
            continue
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        for lab, xs, ys in lines:
            ax.plot(xs, [100 * y for y in ys], ms=4, lw=1.3, label=lab, **styles[lab])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("PGD steps k (step size max(1/510, 2ε/k))")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        _legend_outside(ax)
        title = f"Accuracy vs PGD steps — {ds}" + (f", ε = {eps:.3g}" if isinstance(eps, float) else "")
        figs.append(
            Figure(
                "steps-curve",
                title,
                "Accuracy must converge as the number of steps grows (RU §5.2, Fig. 2).",
                _png(fig),
                sources,
                ds,
            )
        )
    return figs


@PLOTS.register("training")
def training_curves(rs: ResultSet) -> list[Figure]:
    figs = []
    for ds in rs.datasets():
        labels = [lab for lab in rs.labels(ds) if any(rs.epochs.get(r.id) for r in _first(rs, lab, ds))]
        if not labels:
            continue
        colors = _colors(labels)
        markers = {lab: _styles(labels)[lab]["marker"] for lab in labels}
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.6))
        any_robust = False
        for lab in labels:
            run = _first(rs, lab, ds)[0]
            ep = rs.epochs.get(run.id) or []
            xs = [e["epoch"] for e in ep]
            axes[0].plot(
                xs,
                [e.get("train_loss", math.nan) for e in ep],
                marker=markers[lab],
                ms=4,
                label=lab,
                color=colors[lab],
            )
            key = "val_robust_acc" if any(_ok(e.get("val_robust_acc")) for e in ep) else "train_robust_acc"
            ys = [e.get(key) for e in ep]
            if any(_ok(y) for y in ys):
                any_robust = True
                pct = [100 * y if isinstance(y, int | float) and _ok(y) else math.nan for y in ys]
                style = "-" if key == "val_robust_acc" else "--"
                axes[1].plot(xs, pct, marker=markers[lab], ms=4, color=colors[lab], ls=style, label=lab)
        axes[0].set_title("training loss", fontsize=10)
        axes[1].set_title(
            "robust accuracy per epoch (solid: validation, dashed: training batches)", fontsize=9
        )
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_ylim(-2, 102)
        _legend_outside(axes[1])
        if not any_robust:
            axes[1].text(0.5, 0.5, "no robust accuracy logged", ha="center", transform=axes[1].transAxes)
        runs = [r.id for lab in labels for r in _first(rs, lab, ds)[:1]]
        figs.append(
            Figure(
                "training",
                f"Training curves — {ds}",
                "First seed of each defense; per-epoch rows of the store.",
                _png(fig),
                [f"epochs:{r}" for r in runs],
                ds,
            )
        )
    return figs


def _ok(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


@PLOTS.register("sweeps")
def sweeps(rs: ResultSet) -> list[Figure]:
    """Robust accuracy vs the one numeric config key that varies among runs of one preset."""
    figs = []
    for ds in rs.datasets():
        by_preset: dict[str, list[RunInfo]] = {}
        for r in rs.runs:
            if r.dataset == ds and r.preset:
                by_preset.setdefault(r.preset, []).append(r)
        for preset, runs in by_preset.items():
            flats = [_flat(r.config) for r in runs]
            keys = set().union(*flats) - {"seed", "preset"}
            varying = [k for k in sorted(keys) if len({repr(f.get(k)) for f in flats}) > 1]
            numeric = [k for k in varying if all(_ok(f.get(k)) for f in flats)]
            if len(varying) != 1 or len(numeric) != 1:
                continue
            key = numeric[0]
            eps_all = rs.eps_values(runs)
            if not eps_all:
                continue
            e = eps_all[-1]
            pts: dict[float, list[float]] = {}
            clean: dict[float, list[float]] = {}
            sources = []
            for r, f in zip(runs, flats, strict=False):
                row = rs.strongest_row(r, e)
                c = rs.clean_row(r)
                if row is None:
                    continue
                pts.setdefault(float(f[key]), []).append(row.robust_acc)
                sources.append(f"evaluation:{row.id}")
                if c is not None:
                    clean.setdefault(float(f[key]), []).append(c.robust_acc)
                    sources.append(f"evaluation:{c.id}")
            if len(pts) < 2:
                continue
            xs = sorted(pts)
            plt = _plt()
            fig, ax = plt.subplots(figsize=(5.6, 3.6))
            ax.plot(
                xs, [100 * sum(pts[x]) / len(pts[x]) for x in xs], marker="o", label=f"robust (ε={e:.3g})"
            )
            if clean:
                cx = sorted(clean)
                ax.plot(
                    cx, [100 * sum(clean[x]) / len(clean[x]) for x in cx], marker="s", ls="--", label="clean"
                )
            ax.set_xlabel(key)
            ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            figs.append(
                Figure(
                    "sweeps",
                    f"Sweep of {key} — {preset} on {ds}",
                    "Mean over seeds of the strongest stored attack at the largest ε.",
                    _png(fig),
                    sources,
                    ds,
                )
            )
    return figs


@PLOTS.register("entropy")
def entropy_histograms(rs: ResultSet) -> list[Figure]:
    figs = []
    for ds in rs.datasets():
        items = []
        for lab in rs.labels(ds):
            for r in _first(rs, lab, ds)[:1]:
                got = rs.analysis(r.id, "geometry")
                h = (got[1].get("histograms") or {}) if got else {}
                if got and h.get("entropy_clean"):
                    items.append((lab, h, f"analysis:{got[0]}"))
        if not items:
            continue
        colors = _colors([i[0] for i in items])
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.6))
        for ax, what in zip(axes, ("entropy", "confidence"), strict=False):
            for lab, h, _ in items:
                for kind, ls in (("clean", "-"), ("adv", "--")):
                    hist = h.get(f"{what}_{kind}")
                    if not hist or not sum(hist["counts"]):
                        continue
                    edges, counts = hist["edges"], hist["counts"]
                    total = sum(counts)
                    ax.step(edges[:-1], [100 * c / total for c in counts], where="post", ls=ls,
                            color=colors[lab], label=f"{lab} ({kind})")  # fmt: skip
            ax.set_xlabel("prediction entropy (nats)" if what == "entropy" else "max softmax probability")
            ax.set_ylabel("% of examples")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=6, ncol=2)
        figs.append(
            Figure(
                "entropy",
                f"Entropy and confidence histograms — {ds}",
                "Solid: clean test points; dashed: at the ℓ2 PGD20-0.5 adversary (RU §6). "
                "Uncertainty-promoting "
                "defenses move mass to high entropy / low confidence.",
                _png(fig),
                [s for _, _, s in items],
                ds,
            )
        )
    return figs


@PLOTS.register("weights")
def weight_histograms(rs: ResultSet) -> list[Figure]:
    figs = []
    for ds in rs.datasets():
        items = []
        for lab in rs.labels(ds):
            for r in _first(rs, lab, ds)[:1]:
                got = rs.analysis(r.id, "fuzziness")
                hs = got[1].get("histograms") if got else None
                if got and hs:
                    items.append((lab, hs[0], got[1].get("first"), f"analysis:{got[0]}"))
        if not items:
            continue
        colors = _colors([i[0] for i in items])
        plt = _plt()
        from matplotlib import ticker

        cols = min(len(items), 4)
        rows = math.ceil(len(items) / cols)
        fig, axes = plt.subplots(
            rows,
            cols,
            figsize=(2.9 * cols, 2.2 * rows),
            squeeze=False,
            sharex=True,
            sharey=True,
            layout="constrained",
        )
        for ax in axes.ravel()[len(items) :]:
            ax.axis("off")
        for ax, (lab, h, fz, _) in zip(axes.ravel(), items, strict=False):
            total = max(sum(h["counts"]), 1)
            pct = [100 * c / total for c in h["counts"]]
            ax.stairs(pct, h["edges"], fill=True, color=colors[lab], alpha=0.8)
            fzs = f"fuzziness {fz:.3f}" if isinstance(fz, float) else ""
            ax.set_title(lab, fontsize=9)
            if fzs:
                ax.text(0.97, 0.92, fzs, ha="right", va="top", fontsize=7, transform=ax.transAxes)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
        fig.supxlabel("weight value (first conv layer)", fontsize=8)
        fig.supylabel("% of weights (log scale)", fontsize=8)
        figs.append(
            Figure(
                "weights",
                f"First-conv-layer weight histograms — {ds}",
                "Min-Max Figs. 4–5: the Min-Max regularizer pushes weights to 0 or away from it "
                "(lower fuzziness). One panel per model, shared axes.",
                _png(fig),
                [i[3] for i in items],
                ds,
            )
        )
    return figs


@PLOTS.register("surfaces")
def input_surfaces(rs: ResultSet) -> list[Figure]:
    figs = []
    for ds in rs.datasets():
        items = []
        for lab in rs.labels(ds):
            for r in _first(rs, lab, ds)[:1]:
                got = rs.analysis(r.id, "input-surface")
                if got and got[1].get("surfaces"):
                    items.append((lab, got[1]["surfaces"][0], f"analysis:{got[0]}"))
        if not items:
            continue
        plt = _plt()
        cols = min(len(items), 5)
        rows = math.ceil(len(items) / cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.3 * cols, 2.8 * rows), squeeze=False, layout="constrained"
        )
        for ax in axes.ravel():
            ax.axis("off")
        levels = shared_levels([s["loss"] for _, s, _ in items], 15)
        cs = None
        for ax, (lab, s, _) in zip(axes.ravel(), items, strict=False):
            ax.axis("on")
            cs = ax.contourf(s["eps1"], s["eps2"], s["loss"], levels=levels, cmap="viridis", extend="neither")
            ax.contour(s["eps1"], s["eps2"], s["margin"], levels=[0.0], colors="w", linewidths=1.0)
            ax.set_title(lab, fontsize=9)
            ax.tick_params(labelsize=6)
        if cs is not None:  # one colour bar: every panel uses the same loss → colour mapping
            cb = fig.colorbar(cs, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
            cb.set_label("CE loss (shared scale)", fontsize=7)
            cb.ax.tick_params(labelsize=6)
        fig.supxlabel("ε₁ (sign of ∇ₓ CE)", fontsize=8)
        fig.supylabel("ε₂ (random ±1 direction)", fontsize=8)
        figs.append(
            Figure(
                "surfaces",
                f"Input-space loss surfaces — {ds}",
                "CE loss at x + ε₁·sign(∇ₓCE) + ε₂·d (RU App. C.2, Fig. 5); white: decision boundary "
                "(margin 0).",
                _png(fig),
                [i[2] for i in items],
                ds,
            )
        )
    return figs


@PLOTS.register("toy")
def toy_surfaces(rs: ResultSet) -> list[Figure]:
    got = rs.study_analysis("toy")
    if not got or not got[1].get("surfaces"):
        return []
    res = got[1]
    names = [
        n
        for n in (
            "linear-clean",
            "linear-l2",
            "linear-linf",
            "ensgd-l2",
            "ensgd-linf",
            "swish-l2",
            "swish-linf",
        )
        if n in res["surfaces"]
    ]
    plt = _plt()
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, n in zip(axes.ravel(), names, strict=False):
        ax.axis("on")
        cs = ax.contourf(res["theta1"], res["theta2"], res["surfaces"][n], levels=20, cmap="magma")
        ax.set_title(n, fontsize=9)
        ax.tick_params(labelsize=6)
        _colorbar(fig, cs, ax)
    return [
        Figure(
            "toy",
            f"Smoothness toy — loss surfaces over θ (ε = {res.get('eps')})",
            "Kanai §5.1 / Fig. 2: the ℓ2 adversarial loss has a kink only at θ = 0, the ℓ∞ one along θᵢ = 0; "
            "EntropySGD's smoothed loss −F(θ) has none.",
            _png(fig),
            [f"analysis:{got[0]}"],
        )
    ]
