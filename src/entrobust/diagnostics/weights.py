"""Weight uncertainty of convolution layers (Shen, Chen & Wang, Min-Max paper §4–5).

Fuzziness of a weight vector W = [w₁ … w_N] (Min-Max eqs. 14–15)::

    ρᵢ = 1 / (1 + |wᵢ|)
    Fuzziness(W) = −(1/N) Σᵢ [ρᵢ log ρᵢ + (1 − ρᵢ) log(1 − ρᵢ)]

It is largest (log 2 in nats) when every ρᵢ = 0.5 (|wᵢ| = 1) and goes to 0 as weights go to 0
(ρ → 1) or to ±∞ (ρ → 0). The paper does not name the logarithm's base; we use the natural log
(its Table 3 values — 0.44 for a standard LeNet — fit nats for first-layer weights of magnitude
≈ 0.2) and expose ``base`` for bits. 0·log 0 is taken as 0.

Also: weight histograms per conv layer (Min-Max Figs. 4–5) and the Table 3 layout
(rows = models, columns = datasets, value = fuzziness of the first conv layer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError


def fuzziness(weights: Tensor, *, base: float = math.e) -> float:
    """Fuzziness of all entries of ``weights`` (Min-Max eq. 14 with ρ of eq. 15)."""
    w = weights.detach().reshape(-1).to("cpu", torch.float64)
    if w.numel() == 0:
        raise ConfigError("fuzziness of an empty weight tensor is undefined")
    if base <= 0 or base == 1:
        raise ConfigError(f"log base must be positive and != 1, got {base}")
    rho = 1.0 / (1.0 + w.abs())
    h = -(torch.xlogy(rho, rho) + torch.xlogy(1 - rho, 1 - rho))
    return float(h.mean()) / math.log(base)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every convolution in ``model``, in definition order."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def _weight(m: nn.Module) -> Tensor:
    w = getattr(m, "weight", None)
    if not isinstance(w, Tensor):
        raise ConfigError(f"{type(m).__name__} has no weight tensor")
    return w


def conv_fuzziness(model: nn.Module, *, base: float = math.e) -> dict[str, float]:
    """Fuzziness of each convolution's weight (bias excluded), keyed by module name."""
    layers = conv_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no convolution layers to measure fuzziness on")
    return {name: fuzziness(_weight(m), base=base) for name, m in layers}


def first_conv_fuzziness(model: nn.Module, *, base: float = math.e) -> float:
    """Fuzziness of the first convolution's weight — the quantity of Min-Max Table 3."""
    return next(iter(conv_fuzziness(model, base=base).values()))


@dataclass(frozen=True)
class WeightHistogram:
    """Histogram of one layer's weights; ``near_zero`` counts |w| < ``zero_width``."""

    layer: str
    edges: list[float]
    counts: list[int]
    near_zero: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "edges": self.edges,
            "counts": self.counts,
            "near_zero": self.near_zero,
            "total": self.total,
        }


def weight_histograms(
    model: nn.Module, *, bins: int = 50, limit: float | None = None, zero_width: float = 1e-2
) -> list[WeightHistogram]:
    """Per-conv-layer weight histograms over ``[−limit, limit]`` (default: the layer's max |w|).

    ``near_zero`` is the count the Min-Max paper compares across models (§5.3: "the number of
    parameters close to zero"); ``zero_width`` sets what "close" means.
    """
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    out = []
    for name, m in conv_layers(model):
        w = _weight(m).detach().reshape(-1).to("cpu", torch.float64)
        lim = float(limit) if limit is not None else max(float(w.abs().max()), 1e-8)
        counts = torch.histc(w.clamp(-lim, lim), bins=bins, min=-lim, max=lim)
        edges = torch.linspace(-lim, lim, bins + 1, dtype=torch.float64)
        out.append(
            WeightHistogram(
                layer=name,
                edges=edges.tolist(),
                counts=[int(c) for c in counts.tolist()],
                near_zero=int((w.abs() < zero_width).sum()),
                total=int(w.numel()),
            )
        )
    return out


def plot_weight_histograms(
    models: Mapping[str, nn.Module], path: str | Path, *, layer: int = 0, bins: int = 60
) -> Path:
    """Overlaid histograms of one conv layer's weights for several models (Min-Max Figs. 4–5).

    ``layer`` indexes the model's convolutions (0 = the first, as in the paper).
    """
    from entrobust.diagnostics._util import pyplot

    if not models:
        raise ConfigError("plot_weight_histograms needs at least one model")
    plt = pyplot()
    weights = {}
    for name, model in models.items():
        layers = conv_layers(model)
        if layer >= len(layers):
            raise ConfigError(f"model {name!r} has {len(layers)} conv layers, asked for layer {layer}")
        weights[name] = _weight(layers[layer][1]).detach().reshape(-1).cpu().numpy()
    lim = max(float(abs(w).max()) for w in weights.values())
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, w in weights.items():
        fz = fuzziness(torch.as_tensor(w))
        ax.hist(
            w,
            bins=bins,
            range=(-lim, lim),
            histtype="step",
            linewidth=1.6,
            label=f"{name} (fuzziness {fz:.3f})",
        )
    ax.set_xlabel(f"weight value (conv layer {layer})")
    ax.set_ylabel("count")
    ax.set_title("Convolution weight distribution")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def table3(values: Mapping[str, Mapping[str, float]], datasets: Sequence[str] | None = None) -> str:
    """Min-Max Table 3 layout: rows = models, columns = datasets, cells = first-conv fuzziness.

    ``values[model][dataset]`` is a fuzziness (e.g. from :func:`first_conv_fuzziness`); missing
    cells print as "—".
    """
    cols = list(datasets) if datasets is not None else sorted({d for row in values.values() for d in row})
    w0 = max([len(m) for m in values] + [5])
    widths = [max(8, len(c)) for c in cols]
    head = "".ljust(w0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=False))
    lines = [head, "-" * len(head)]
    for model, row in values.items():
        cells = [(f"{row[c]:.4f}" if c in row else "—").rjust(w) for c, w in zip(cols, widths, strict=False)]
        lines.append(model.ljust(w0) + "  " + "  ".join(cells))
    return "\n".join(lines)
