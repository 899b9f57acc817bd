"""Plots of the geometry results: entropy / confidence histograms and the margin–distortion scatter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from entrobust.diagnostics._util import pyplot
from entrobust.diagnostics.geometry import GeometryResult
from entrobust.errors import ConfigError


def plot_histograms(results: Mapping[str, GeometryResult], path: str | Path) -> Path:
    """Prediction entropy and confidence histograms, clean (filled) vs adversarial (outline).

    One row per model, two columns (entropy in nats, confidence = max softmax probability);
    counts are normalized to fractions of the examples.
    """
    if not results:
        raise ConfigError("plot_histograms needs at least one result")
    plt = pyplot()
    rows = len(results)
    fig, axes = plt.subplots(rows, 2, figsize=(9.0, 2.8 * rows), dpi=110, squeeze=False)
    for r, (name, res) in enumerate(results.items()):
        for c, what in enumerate(("entropy", "confidence")):
            ax = axes[r, c]
            for kind, style in (("clean", {"alpha": 0.55}), ("adv", {"histtype": "step", "linewidth": 1.8})):
                h = res.histograms.get(f"{what}_{kind}")
                if h is None or h.total == 0:
                    continue
                edges = np.asarray(h.edges)
                frac = np.asarray(h.counts, dtype=float) / h.total
                ax.hist(
                    edges[:-1],
                    bins=edges,
                    weights=frac,
                    label="clean" if kind == "clean" else "adversarial",
                    **style,
                )  # type: ignore[arg-type]
            ax.set_xlabel(
                "prediction entropy (nats)" if what == "entropy" else "confidence (max probability)"
            )
            ax.set_ylabel("fraction")
            ax.set_title(f"{name}: {what}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_distortion_scatter(results: Mapping[str, GeometryResult], path: str | Path) -> Path:
    """Normalized margin vs minimal ℓ2 distortion per example (RU Fig. 4), with Pearson r.

    Needs results computed with ``keep_examples=True`` and a distortion attack.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 4.2), dpi=120)
    drawn = 0
    for name, res in results.items():
        nm = np.asarray(res.examples.get("normalized_margin", []), dtype=float)
        d = np.asarray(res.examples.get("distortion", []), dtype=float)
        if nm.size == 0 or d.size != nm.size:
            continue
        ok = np.isfinite(nm) & np.isfinite(d)
        ax.scatter(nm[ok], d[ok], s=8, alpha=0.6, label=f"{name} (r = {res.correlation:.3f})")
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise ConfigError(
            "no per-example margins and distortions: use keep_examples=True and a distortion attack"
        )
    ax.set_xlabel("normalized margin M / ‖∇ₓf‖₂")
    ax.set_ylabel("minimal ℓ2 distortion ‖x_adv − x‖₂")
    ax.set_title("Normalized margin vs distortion (RU Fig. 4)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
