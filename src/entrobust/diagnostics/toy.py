"""The smoothness toy of Kanai et al., *Smoothness Analysis of Adversarial Training* (§5.1, App. C).

Binary logistic loss of a 2-D model with parameters θ ∈ [−2, 2]²:

* linear model: ℓ_ε(θ) = log(1 + exp(−y θᵀ(x + δ)));
* swish model:  ℓ_ε(θ) = log(1 + exp(−y·swish(θᵀ(x + δ)))), swish(u) = u·sigmoid(u);

with the worst δ in the ball ‖δ‖_p ≤ ε (ε = 0.6). For the linear model the worst case is closed
form (Kanai App. B, proofs of Lemmas 2–3): the loss decreases in y θᵀδ, so

* ℓ2: δ = −ε·y·θ/‖θ‖₂ (the paper writes δ = −ε θ/‖θ‖₂ for y = 1), giving y θᵀδ = −ε‖θ‖₂;
* ℓ∞: δ = −ε·y·sign(θ), giving y θᵀδ = −ε‖θ‖₁;

hence ℓ_ε(θ) = softplus(−y θᵀx + ε‖θ‖_q) with q the dual norm — continuous but with kinks at
θ = 0 (ℓ2) and at every θᵢ = 0 (ℓ∞). The swish model has no closed form; PGD (with restarts)
finds δ. Fig. 2 uses one point x = [−1, 1], y = 1; App. C Fig. 4 uses N = 100 points
x ~ N(0, I₂), y = sign(x₁), and averages.

EntropySGD's smoothed loss (Kanai eq. 10 with β = 1)::

    −F(θ) = −log ∫ exp(−L(θ′) − (γ/2)‖θ − θ′‖²) dθ′

is integrated numerically with SciPy: Gauss–Hermite quadrature (``scipy.special.roots_hermitenorm``,
the default) or adaptive ``scipy.integrate.dblquad`` (slow, exact to tolerance). The paper does
not state γ for the toy; we default to γ = 1 (a smoothing width 1/√γ = 1, a quarter of the grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import integrate
from scipy.special import roots_hermitenorm

from entrobust.errors import ConfigError

ToyNorm = Literal["l2", "linf"]
ToyModel = Literal["linear", "swish"]
#: a loss over parameters: ``loss(theta (..., 2)) -> (...)``
ThetaLoss = Callable[[np.ndarray], np.ndarray]


def _check_norm(norm: str) -> None:
    if norm not in ("l2", "linf"):
        raise ConfigError(f"unknown norm {norm!r}; valid: l2, linf")


def _data(x: np.ndarray | list[float], y: np.ndarray | list[float] | float) -> tuple[np.ndarray, np.ndarray]:
    xs = np.atleast_2d(np.asarray(x, dtype=np.float64))
    ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xs.shape[-1] != 2 or xs.ndim != 2:
        raise ConfigError(f"toy inputs must be 2-D points, got shape {xs.shape}")
    if ys.shape[0] != xs.shape[0]:
        raise ConfigError(f"{xs.shape[0]} points but {ys.shape[0]} labels")
    if not np.all(np.abs(ys) == 1):
        raise ConfigError("toy labels must be +1 or -1")
    return xs, ys


def toy_dataset(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Kanai App. C data: x ~ N(0, I₂), y = sign(x₁) (N = 100)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    y = np.where(x[:, 0] >= 0, 1.0, -1.0)
    return x, y


def swish(u: np.ndarray) -> np.ndarray:
    """swish(u) = u·sigmoid(u) (Ramachandran et al. 2017)."""
    return u / (1.0 + np.exp(-u))


def linear_loss(theta: np.ndarray, x: Any, y: Any) -> np.ndarray:
    """Clean loss mean_n log(1 + exp(−yₙ θᵀxₙ)) for θ of shape (..., 2)."""
    xs, ys = _data(x, y)
    z = -ys * (np.asarray(theta)[..., None, :] * xs).sum(-1)
    return np.logaddexp(0.0, z).mean(-1)  # type: ignore[no-any-return]


def linear_adversarial_loss(theta: np.ndarray, x: Any, y: Any, eps: float, norm: ToyNorm) -> np.ndarray:
    """Closed-form worst-case loss of the linear model (see the module docstring)."""
    _check_norm(norm)
    if eps < 0:
        raise ConfigError(f"eps must be >= 0, got {eps}")
    xs, ys = _data(x, y)
    th = np.asarray(theta, dtype=np.float64)
    dual = np.linalg.norm(th, axis=-1) if norm == "l2" else np.abs(th).sum(-1)
    z = -ys * (th[..., None, :] * xs).sum(-1) + eps * dual[..., None]
    return np.logaddexp(0.0, z).mean(-1)  # type: ignore[no-any-return]


def worst_delta_linear(theta: np.ndarray, y: float, eps: float, norm: ToyNorm) -> np.ndarray:
    """The closed-form worst perturbation δ*(θ) of the linear model (zero at θ = 0 for ℓ2)."""
    _check_norm(norm)
    th = np.asarray(theta, dtype=np.float64)
    if norm == "linf":
        return -eps * y * np.sign(th)  # type: ignore[no-any-return]
    n = np.linalg.norm(th, axis=-1, keepdims=True)
    return np.where(n > 0, -eps * y * th / np.where(n > 0, n, 1.0), 0.0)  # type: ignore[no-any-return]


def model_loss(theta: np.ndarray, x: Any, y: Any, model: ToyModel = "linear") -> np.ndarray:
    """Clean loss of the linear or swish model, averaged over the points."""
    xs, ys = _data(x, y)
    u = (np.asarray(theta, dtype=np.float64)[..., None, :] * xs).sum(-1)
    z = u if model == "linear" else swish(u)
    if model not in ("linear", "swish"):
        raise ConfigError(f"unknown toy model {model!r}; valid: linear, swish")
    return np.logaddexp(0.0, -ys * z).mean(-1)  # type: ignore[no-any-return]


def _logit_and_slope(model: ToyModel, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z(u) and dz/du for the linear (z = u) or swish (z = u·σ(u)) model."""
    if model == "linear":
        return u, np.ones_like(u)
    if model == "swish":
        sig = 1.0 / (1.0 + np.exp(-u))
        return u * sig, sig + u * sig * (1.0 - sig)
    raise ConfigError(f"unknown toy model {model!r}; valid: linear, swish")


def pgd_adversarial_loss(
    theta: np.ndarray,
    x: Any,
    y: Any,
    eps: float,
    norm: ToyNorm,
    *,
    model: ToyModel = "swish",
    steps: int = 100,
    step_size: float | None = None,
    restarts: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """Worst-case loss found by PGD on δ for each θ (..., 2) and each point; averaged over points.

    Steepest ascent (sign steps for ℓ∞, normalized gradient for ℓ2) with projection onto the
    ε-ball (no box: the toy lives in ℝ²), step ``2.5·ε/steps`` by default, from δ = 0 and from
    ``restarts`` uniform random starts; the per-(θ, point) maximum counts. The gradient
    ∇_δ ℓ = −y·σ(−y z)·z′(u)·θ is analytic (u = θᵀ(x + δ), z the model's logit).
    """
    _check_norm(norm)
    if steps < 1 or restarts < 0:
        raise ConfigError(f"need steps >= 1 and restarts >= 0, got {steps}, {restarts}")
    if eps < 0:
        raise ConfigError(f"eps must be >= 0, got {eps}")
    _logit_and_slope(model, np.zeros(1))  # validates the model name
    xs, ys = _data(x, y)
    th_in = np.asarray(theta, dtype=np.float64)
    shape = th_in.shape[:-1]
    th = th_in.reshape(-1, 1, 2)  # (G, 1, 2)
    xt, yt = xs[None], ys[None]  # (1, N, 2), (1, N)
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    rng = np.random.default_rng(seed)
    size = (th.shape[0], xs.shape[0], 2)

    def project(d: np.ndarray) -> np.ndarray:
        if norm == "linf":
            return np.clip(d, -eps, eps)
        n = np.linalg.norm(d, axis=-1, keepdims=True)
        return d * np.minimum(1.0, eps / np.maximum(n, 1e-300))

    def loss_of(d: np.ndarray) -> np.ndarray:
        z, _ = _logit_and_slope(model, (th * (xt + d)).sum(-1))
        return np.logaddexp(0.0, -yt * z)  # type: ignore[no-any-return]

    best = np.full(size[:2], -np.inf)
    for r in range(restarts + 1):
        d = np.zeros(size) if r == 0 else project(rng.uniform(-eps, eps, size))
        for _ in range(steps):
            z, dz = _logit_and_slope(model, (th * (xt + d)).sum(-1))
            coef = -yt / (1.0 + np.exp(yt * z)) * dz  # dℓ/du
            g = coef[..., None] * th
            if norm == "linf":
                step = np.sign(g)
            else:
                step = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-300)
            d = project(d + alpha * step)
        best = np.maximum(best, loss_of(d))
    return best.mean(-1).reshape(shape)  # type: ignore[no-any-return]


def entropy_sgd_loss(
    loss: ThetaLoss,
    theta: np.ndarray,
    *,
    gamma: float = 1.0,
    nodes: int = 32,
    method: Literal["hermite", "dblquad"] = "hermite",
    radius: float = 8.0,
    chunk: int = 64,
) -> np.ndarray:
    """EntropySGD's −F(θ) = −log ∫ exp(−L(θ′) − (γ/2)‖θ−θ′‖²) dθ′ (Kanai eq. 10, β = 1) for θ (..., 2).

    ``hermite``: θ′ = θ + t/√γ turns the integral into (1/γ)·∫ exp(−L(θ + t/√γ)) e^{−‖t‖²/2} dt,
    a tensor-product Gauss–Hermite rule with ``nodes`` points per axis (evaluated in log space).
    ``dblquad``: adaptive quadrature over the box θ ± radius/√γ (the Gaussian mass outside is
    below e^{−radius²/2}); one call per θ, slow but tolerance-controlled.
    """
    if not gamma > 0:
        raise ConfigError(f"gamma must be > 0, got {gamma}")
    th = np.asarray(theta, dtype=np.float64)
    if th.shape[-1] != 2:
        raise ConfigError(f"theta must have a last dimension of 2, got shape {th.shape}")
    if method == "hermite":
        if nodes < 2:
            raise ConfigError(f"nodes must be >= 2, got {nodes}")
        t, w = roots_hermitenorm(nodes)
        t1, t2 = np.meshgrid(t, t, indexing="ij")
        logw = (np.log(w)[:, None] + np.log(w)[None, :]).reshape(-1)
        offsets = np.stack([t1.reshape(-1), t2.reshape(-1)], axis=-1) / math.sqrt(gamma)  # (K, 2)
        flat = th.reshape(-1, 2)
        out = np.empty(flat.shape[0])
        for i in range(0, flat.shape[0], chunk):  # chunks bound the (θ, node, point) temporaries
            vals = loss(flat[i : i + chunk, None, :] + offsets)  # (chunk, K)
            a = logw - vals
            amax = a.max(-1, keepdims=True)
            out[i : i + chunk] = amax[:, 0] + np.log(np.exp(a - amax).sum(-1)) - math.log(gamma)
        return -out.reshape(th.shape[:-1])  # type: ignore[no-any-return]
    if method == "dblquad":
        flat = th.reshape(-1, 2)
        out = np.empty(flat.shape[0])
        half = radius / math.sqrt(gamma)
        for i, (a0, b0) in enumerate(flat):

            def integrand(t2: float, t1: float, a0: float = a0, b0: float = b0) -> float:
                v = float(loss(np.array([t1, t2])))
                return math.exp(-v - 0.5 * gamma * ((t1 - a0) ** 2 + (t2 - b0) ** 2))

            val, _ = integrate.dblquad(
                integrand, a0 - half, a0 + half, b0 - half, b0 + half, epsabs=1e-10, epsrel=1e-8
            )
            out[i] = -math.log(val)
        return out.reshape(th.shape[:-1])
    raise ConfigError(f"unknown integration method {method!r}; valid: hermite, dblquad")


@dataclass
class ToySurfaces:
    """Loss surfaces over a θ grid (``theta1``, ``theta2`` are the axes; surfaces are [i2, i1])."""

    theta1: np.ndarray
    theta2: np.ndarray
    eps: float
    gamma: float
    surfaces: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "theta1": self.theta1.tolist(),
            "theta2": self.theta2.tolist(),
            "eps": self.eps,
            "gamma": self.gamma,
            "surfaces": {k: v.tolist() for k, v in self.surfaces.items()},
        }


@dataclass(frozen=True)
class _AdvLoss:
    """θ ↦ closed-form adversarial loss of the linear model on fixed data (for −F(θ))."""

    x: np.ndarray
    y: np.ndarray
    eps: float
    norm: ToyNorm

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return linear_adversarial_loss(theta, self.x, self.y, self.eps, self.norm)


def toy_surfaces(
    *,
    dataset: Literal["point", "gaussian"] = "point",
    eps: float = 0.6,
    lim: float = 2.0,
    resolution: int = 41,
    gamma: float = 1.0,
    pgd_steps: int = 50,
    pgd_restarts: int = 4,
    nodes: int = 32,
    seed: int = 0,
) -> ToySurfaces:
    """All surfaces of Kanai Fig. 2 (``dataset="point"``: x = [−1, 1], y = 1) or Figs. 4–5
    (``"gaussian"``: 100 points x ~ N(0, I), y = sign(x₁)).

    Keys: ``linear-clean``, ``linear-l2``, ``linear-linf`` (closed form), ``swish-clean``,
    ``swish-l2``, ``swish-linf`` (PGD), ``ensgd-l2``, ``ensgd-linf`` (−F of the linear
    adversarial losses).
    """
    if resolution < 2:
        raise ConfigError(f"resolution must be >= 2, got {resolution}")
    if dataset == "point":
        x, y = np.array([[-1.0, 1.0]]), np.array([1.0])
    elif dataset == "gaussian":
        x, y = toy_dataset(100, seed)
    else:
        raise ConfigError(f"unknown toy dataset {dataset!r}; valid: point, gaussian")
    t = np.linspace(-lim, lim, resolution)
    g1, g2 = np.meshgrid(t, t)  # surfaces[i2, i1] = value at (t[i1], t[i2])
    theta = np.stack([g1, g2], axis=-1)
    s: dict[str, np.ndarray] = {"linear-clean": linear_loss(theta, x, y)}
    norms: tuple[ToyNorm, ...] = ("l2", "linf")
    for norm in norms:
        s[f"linear-{norm}"] = linear_adversarial_loss(theta, x, y, eps, norm)
    s["swish-clean"] = model_loss(theta, x, y, "swish")
    for norm in norms:
        s[f"swish-{norm}"] = pgd_adversarial_loss(
            theta,
            x,
            y,
            eps,
            norm,
            model="swish",
            steps=pgd_steps,
            restarts=pgd_restarts,
            seed=seed,
        )
    for norm in norms:
        s[f"ensgd-{norm}"] = entropy_sgd_loss(_AdvLoss(x, y, eps, norm), theta, gamma=gamma, nodes=nodes)
    return ToySurfaces(t, t, eps, gamma, s)


_TITLES = {
    "linear-clean": "(a) linear, clean",
    "linear-l2": "(b) linear, ℓ2 adversarial",
    "linear-linf": "(c) linear, ℓ∞ adversarial",
    "swish-clean": "(d) swish, clean",
    "swish-l2": "(e) swish, ℓ2 (PGD)",
    "swish-linf": "(f) swish, ℓ∞ (PGD)",
    "ensgd-l2": "(g) EnSGD −F, ℓ2",
    "ensgd-linf": "(h) EnSGD −F, ℓ∞",
}


def plot_toy_surfaces(result: ToySurfaces, path: str | Path) -> Path:
    """3-D surface plots of every toy surface in a 2×4 grid (Kanai Fig. 2 layout)."""
    from entrobust.diagnostics._util import pyplot

    plt = pyplot()
    keys = [k for k in _TITLES if k in result.surfaces]
    cols = 4
    rows = max(1, math.ceil(len(keys) / cols))
    fig = plt.figure(figsize=(4.0 * cols, 3.6 * rows), dpi=100)
    g1, g2 = np.meshgrid(result.theta1, result.theta2)
    for i, k in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        ax.plot_surface(g1, g2, result.surfaces[k], cmap="viridis", linewidth=0, antialiased=True)
        ax.set_title(_TITLES[k], fontsize=10)
        ax.set_xlabel("θ₁", fontsize=8)
        ax.set_ylabel("θ₂", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Smoothness toy (Kanai et al. §5.1): ε = {result.eps}, γ = {result.gamma}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
