"""Loss landscapes in input space (RU App. C.2, Figs. 5–6) and parameter space (Kanai App. F.1, Fig. 7).

Input space: around one labelled image (x, y), the cross-entropy loss and the decision margin
M = f_y − max_{i≠y} f_i at

    x′ = x + ε₁·d₁ + ε₂·d₂,   d₁ = sign(∇ₓ CE(f(x), y)),  d₂ random with ‖d₂‖∞ = 1,

for ε₁, ε₂ ∈ [−0.04, 0.04]. We draw d₂ with independent random signs (a Rademacher vector, so
every pixel moves by exactly ε₂); ``d2="uniform"`` gives U[−1, 1] rescaled to ‖d₂‖∞ = 1.
x′ is not clamped to [0, 1] by default (a pure geometric slice, as the paper plots);
``clamp=True`` evaluates only valid images.

Parameter space: the loss at w + α·d (1-D) or w + α·d₁ + β·d₂ (2-D) along *filter-normalized*
random directions (Li et al. 2018, "Visualizing the loss landscape of neural nets"), as in
Kanai App. F.1 following Wu et al. (AWP): for every weight with ≥ 2 dims each filter dᵢ (a slice
along dim 0) is rescaled to ‖dᵢ‖ = ‖wᵢ‖; biases and normalization parameters get d = 0.
α runs from −1 to 1 in steps of 0.1 in the paper. The loss can be clean or adversarial (an
attack is re-run at every perturbed weight, the L_ε of Kanai Fig. 7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entrobust.attacks.base import AttackResult, frozen, margin_of
from entrobust.diagnostics._util import batches, model_device, pyplot
from entrobust.errors import ConfigError


@dataclass
class InputSurface:
    """Loss and margin on an (ε₁, ε₂) grid around one image; arrays are indexed [i2, i1]."""

    eps1: np.ndarray
    eps2: np.ndarray
    loss: np.ndarray
    margin: np.ndarray
    label: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps1": self.eps1.tolist(),
            "eps2": self.eps2.tolist(),
            "loss": self.loss.tolist(),
            "margin": self.margin.tolist(),
            "label": self.label,
        }


def input_surface(
    model: nn.Module,
    x: Tensor,
    y: int | Tensor,
    *,
    radius: float = 0.04,
    resolution: int = 21,
    d2: Literal["sign", "uniform"] = "sign",
    clamp: bool = False,
    seed: int = 0,
    batch_size: int = 256,
) -> InputSurface:
    """CE loss and decision margin at x + ε₁·sign(∇ₓCE) + ε₂·d₂ (RU App. C.2) for one image x (C, H, W)."""
    if resolution < 2:
        raise ConfigError(f"resolution must be >= 2, got {resolution}")
    if radius <= 0:
        raise ConfigError(f"radius must be > 0, got {radius}")
    dev = model_device(model)
    x0 = x.detach().to(dev).unsqueeze(0).float()
    label = int(y)
    yt = torch.tensor([label], device=dev)
    with frozen(model, "eval"):
        xg = x0.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg), yt)
            (grad,) = torch.autograd.grad(loss, xg)
        d1 = grad.sign()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if d2 == "sign":
            dir2 = torch.randint(0, 2, x0.shape, generator=gen).float().mul(2).sub(1)
        elif d2 == "uniform":
            dir2 = torch.rand(x0.shape, generator=gen).mul(2).sub(1)
            dir2 = dir2 / dir2.abs().max().clamp_min(1e-12)
        else:
            raise ConfigError(f"unknown random direction {d2!r}; valid: sign, uniform")
        dir2 = dir2.to(dev)
        e = torch.linspace(-radius, radius, resolution, device=dev)
        e2g, e1g = torch.meshgrid(e, e, indexing="ij")  # [i2, i1]
        pts = x0 + e1g.reshape(-1, 1, 1, 1) * d1 + e2g.reshape(-1, 1, 1, 1) * dir2
        if clamp:
            pts = pts.clamp(0.0, 1.0)
        losses, margins = [], []
        with torch.no_grad():
            for i in range(0, pts.shape[0], batch_size):
                xb = pts[i : i + batch_size]
                logits = model(xb)
                yb = yt.expand(xb.shape[0])
                losses.append(F.cross_entropy(logits, yb, reduction="none"))
                margins.append(margin_of(logits, yb))
    shape = (resolution, resolution)
    return InputSurface(
        eps1=e.cpu().numpy(),
        eps2=e.cpu().numpy(),
        loss=torch.cat(losses).reshape(shape).cpu().numpy(),
        margin=torch.cat(margins).reshape(shape).cpu().numpy(),
        label=label,
    )


def plot_input_surfaces(surfaces: dict[str, InputSurface], path: str | Path, *, what: str = "loss") -> Path:
    """3-D surfaces of ``what`` ("loss" → RU Fig. 5, "margin" → RU Fig. 6), one panel per entry."""
    if what not in ("loss", "margin"):
        raise ConfigError(f"what must be 'loss' or 'margin', got {what!r}")
    if not surfaces:
        raise ConfigError("plot_input_surfaces needs at least one surface")
    plt = pyplot()
    n = len(surfaces)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = plt.figure(figsize=(4.2 * cols, 3.8 * rows), dpi=100)
    for i, (name, s) in enumerate(surfaces.items()):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        g1, g2 = np.meshgrid(s.eps1, s.eps2)
        z = s.loss if what == "loss" else s.margin
        ax.plot_surface(g1, g2, z, cmap="coolwarm" if what == "margin" else "viridis", linewidth=0)
        if what == "margin":
            ax.contour(g1, g2, z, levels=[0.0], colors="k", offset=float(np.min(z)))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("ε₁ (sign ∇ₓCE)", fontsize=8)
        ax.set_ylabel("ε₂ (random)", fontsize=8)
        ax.set_zlabel("CE loss" if what == "loss" else "margin", fontsize=8)
        ax.tick_params(labelsize=7)
    title = (
        "Input-space loss surface"
        if what == "loss"
        else "Decision margin surface (black line: M = 0, where reached)"
    )
    fig.suptitle(f"{title} at x + ε₁·d₁ + ε₂·d₂ (RU App. C.2)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- parameter space


def filter_normalized_direction(model: nn.Module, *, seed: int = 0) -> dict[str, Tensor]:
    """A random Gaussian direction with each filter rescaled to its weight's norm (Li et al. 2018).

    Keys are parameter names; parameters with < 2 dims (biases, BatchNorm) get zeros.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if p.dim() < 2:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
        w = p.detach()
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        wn = w.flatten(1).norm(dim=1)
        out[name] = d * (wn / dn).view(-1, *([1] * (p.dim() - 1)))
    return out


#: ``attack(model, x, y) -> x_adv`` used for the adversarial loss
AttackFn = Callable[[nn.Module, Tensor, Tensor], Any]


def dataset_loss(
    model: nn.Module, x: Tensor, y: Tensor, *, attack: AttackFn | None = None, batch_size: int = 200
) -> float:
    """Mean CE over (x, y) in eval mode, at adversarial inputs when ``attack`` is given."""
    dev = model_device(model)
    total, n = 0.0, 0
    for xb, yb in batches(x, y, batch_size):
        xb, yb = xb.to(dev), yb.to(dev)
        if attack is not None:
            out = attack(model, xb, yb)
            xb = (out.x_adv if isinstance(out, AttackResult) else out).detach()
        with frozen(model, "eval"), torch.no_grad():
            total += float(F.cross_entropy(model(xb), yb, reduction="sum"))
        n += int(yb.shape[0])
    return total / max(n, 1)


@dataclass
class ParameterLandscape:
    """Loss along α (1-D: ``loss`` shape (A,)) or (α, β) (2-D: shape (B, A), indexed [iβ, iα])."""

    alphas: np.ndarray
    betas: np.ndarray | None
    loss: np.ndarray
    adversarial: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "betas": None if self.betas is None else self.betas.tolist(),
            "loss": self.loss.tolist(),
            "adversarial": self.adversarial,
        }


def parameter_landscape(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    alphas: Sequence[float] | None = None,
    betas: Sequence[float] | None = None,
    two_d: bool = False,
    attack: AttackFn | None = None,
    seed: int = 0,
    batch_size: int = 200,
) -> ParameterLandscape:
    """Loss at w + α·d₁ (+ β·d₂ when ``two_d``) along filter-normalized directions (Kanai App. F.1).

    ``alphas`` default: −1 … 1 in steps of 0.1 (Kanai Fig. 7). The weights are restored exactly
    afterwards, also when an exception interrupts the sweep.
    """
    a = np.round(np.arange(-1.0, 1.0 + 1e-9, 0.1), 10) if alphas is None else np.asarray(alphas, float)
    b = (a if betas is None else np.asarray(betas, float)) if two_d else None
    d1 = filter_normalized_direction(model, seed=seed)
    d2 = filter_normalized_direction(model, seed=seed + 1) if two_d else None
    params = dict(model.named_parameters())
    saved = {k: p.detach().clone() for k, p in params.items()}
    try:
        if b is None:
            loss = np.empty(len(a))
            for i, al in enumerate(a):
                with torch.no_grad():
                    for k, p in params.items():
                        p.copy_(saved[k] + float(al) * d1[k])
                loss[i] = dataset_loss(model, x, y, attack=attack, batch_size=batch_size)
        else:
            assert d2 is not None
            loss = np.empty((len(b), len(a)))
            for j, be in enumerate(b):
                for i, al in enumerate(a):
                    with torch.no_grad():
                        for k, p in params.items():
                            p.copy_(saved[k] + float(al) * d1[k] + float(be) * d2[k])
                    loss[j, i] = dataset_loss(model, x, y, attack=attack, batch_size=batch_size)
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])
    return ParameterLandscape(a, b, loss, attack is not None)


def plot_parameter_landscape(landscapes: dict[str, ParameterLandscape], path: str | Path) -> Path:
    """1-D curves (one line per entry) or 2-D contour maps (one panel per entry)."""
    if not landscapes:
        raise ConfigError("plot_parameter_landscape needs at least one landscape")
    plt = pyplot()
    one_d = {k: v for k, v in landscapes.items() if v.betas is None}
    two_d = {k: v for k, v in landscapes.items() if v.betas is not None}
    panels = (1 if one_d else 0) + len(two_d)
    fig, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.0), dpi=110, squeeze=False)
    col = 0
    if one_d:
        ax = axes[0, 0]
        for name, ls in one_d.items():
            ax.plot(ls.alphas, ls.loss, marker="o", markersize=3, label=name)
        ax.set_xlabel("α (filter-normalized direction)")
        ax.set_ylabel("adversarial loss" if any(v.adversarial for v in one_d.values()) else "loss")
        ax.set_title("Loss along w + α·d")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        col = 1
    for name, ls in two_d.items():
        ax = axes[0, col]
        assert ls.betas is not None
        cs = ax.contourf(ls.alphas, ls.betas, ls.loss, levels=20, cmap="viridis")
        ax.contour(ls.alphas, ls.betas, ls.loss, levels=10, colors="k", linewidths=0.4)
        fig.colorbar(cs, ax=ax)
        ax.plot([0], [0], "r*", markersize=10)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax.set_title(f"{name}: loss at w + α·d₁ + β·d₂")
        col += 1
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
