"""The threat model: a norm ball of radius ε around x, intersected with the [0, 1] box.

It owns everything that depends on the norm — projection, random start, the steepest-ascent step
and the distance — so an attack is written once and works for ℓ∞ and ℓ2 (STYLE rule 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from entrobust.distributed import batch_noise
from entrobust.errors import ConfigError

Norm = Literal["linf", "l2"]
NORMS: tuple[str, ...] = ("linf", "l2")
_TINY = 1e-12


def batch_view(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example vector ``(N,)`` to broadcast against ``x`` ``(N, ...)``."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def flat_norm(v: Tensor, norm: str) -> Tensor:
    """Per-example ℓ∞ or ℓ2 norm of ``v`` ``(N, ...)`` → ``(N,)``."""
    flat = v.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2, dim=1)


def draw_noise(
    kind: str, shape: tuple[int, ...], generator: torch.Generator | None, x: Tensor, shared: bool
) -> Tensor:
    """CPU-drawn noise on ``x``'s device; per-example noise follows the data-parallel global
    batch (:func:`entrobust.distributed.batch_noise`), a shared pattern is drawn as is."""
    if shared:
        draw = torch.randn if kind == "normal" else torch.rand
        return draw(shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)
    return batch_noise(kind, shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)


def large_eps_message(eps: float, norm: str, diameter: float, what: str = "") -> str:
    """Why an ε at least the box's ``diameter`` is refused, with the 0–255 reading as a hint."""
    return (
        f"{norm} eps {eps:g} is at least the diameter {diameter:.4g} of the image box{what}: the "
        "ball contains every image, so robust accuracy is 0 by construction. eps is in pixel units "
        f"of [0, 1] images — did you mean {eps:g}/255 = {eps / 255:.4g}? If the large eps is "
        "intended, pass allow_large_eps=True (entrobust eval: --allow-large-eps)"
    )


@dataclass(frozen=True, eq=False)
class ThreatModel:
    """(norm, ε, box): the set {x′ : ‖x′ − x‖_norm ≤ ε, lower ≤ x′ ≤ upper}.

    ``eps`` is a float or a per-example tensor of shape ``(N,)``; ε is in pixel units of [0, 1]
    images (8/255, 0.3, ...). Raises :class:`ConfigError` for an unknown norm, a negative or
    non-finite ε, or an empty box.

    An ε at least the box's diameter in the norm makes the ball contain the whole box, so every
    image is "reachable" and robust accuracy is 0 % by construction — almost always ε written in
    0–255 units (``8`` for ``8/255``). Such an ε is refused unless ``allow_large_eps=True``: for
    ℓ∞ here (diameter ``upper − lower``), for ℓ2 by :meth:`check_input` once the input size d is
    known (diameter ``(upper − lower)·√d``); every attack's call runs that check.
    """

    norm: str
    eps: float | Tensor
    lower: float = 0.0
    upper: float = 1.0
    allow_large_eps: bool = False

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        if isinstance(self.eps, Tensor):
            if self.eps.dim() > 1:
                raise ConfigError(f"per-example eps must have shape (N,), got {tuple(self.eps.shape)}")
            if not bool(torch.isfinite(self.eps).all()) or bool((self.eps < 0).any()):
                raise ConfigError("eps must be finite and >= 0 for every example")
        else:
            if not math.isfinite(float(self.eps)) or float(self.eps) < 0:
                raise ConfigError(f"eps must be finite and >= 0, got {self.eps}")
        if not self.lower < self.upper:
            raise ConfigError(f"box lower {self.lower} must be below upper {self.upper}")
        if self.norm == "linf":
            self._check_diameter(self.upper - self.lower, "")

    def _max_eps(self) -> float:
        if isinstance(self.eps, Tensor):
            return float(self.eps.max()) if self.eps.numel() else 0.0
        return float(self.eps)

    def _check_diameter(self, diameter: float, what: str) -> None:
        if self.allow_large_eps:
            return
        e = self._max_eps()
        if e >= diameter:
            raise ConfigError(large_eps_message(e, self.norm, diameter, what))

    def check_input(self, x: Tensor) -> None:
        """Refuse an ℓ2 ε at least the diameter (upper − lower)·√d of the box of ``x`` ``(N, ...)``
        (see the class docstring); ℓ∞ was checked at construction. Raises :class:`ConfigError`."""
        if self.norm == "l2" and x.dim() >= 1:
            d = math.prod(x.shape[1:])
            self._check_diameter((self.upper - self.lower) * math.sqrt(d), f" for inputs of {d} values")

    # ------------------------------------------------------------------ helpers
    def eps_for(self, x: Tensor) -> Tensor:
        """ε as a tensor broadcastable against ``x`` (shape ``(N, 1, 1, ...)``), x's dtype."""
        n = x.shape[0]
        if isinstance(self.eps, Tensor):
            e = self.eps.to(device=x.device, dtype=x.dtype).reshape(-1)
            if e.numel() == 1:
                e = e.expand(n)
            elif e.numel() != n:
                raise ConfigError(f"per-example eps has {e.numel()} entries for a batch of {n}")
        else:
            e = torch.full((n,), float(self.eps), device=x.device, dtype=x.dtype)
        return batch_view(e, x)

    def with_eps(self, eps: float | Tensor, *, allow_large_eps: bool | None = None) -> ThreatModel:
        """The same threat model with another ε (``allow_large_eps`` overrides this one's, e.g. for
        the audit's ε-curve, which grows on purpose until the ball holds the whole box)."""
        allow = self.allow_large_eps if allow_large_eps is None else allow_large_eps
        return ThreatModel(self.norm, eps, self.lower, self.upper, allow)

    def subset(self, index: Tensor) -> ThreatModel:
        """Restrict a per-example ε to the examples selected by ``index``."""
        if isinstance(self.eps, Tensor) and self.eps.numel() > 1:
            return self.with_eps(self.eps[index.to(self.eps.device)])
        return self

    def is_zero(self) -> bool:
        """True when ε is 0 for every example."""
        if isinstance(self.eps, Tensor):
            return bool((self.eps == 0).all())
        return float(self.eps) == 0.0

    # --------------------------------------------------------------- geometry
    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """‖x_adv − x‖ per example, shape ``(N,)``."""
        return flat_norm(x_adv - x, self.norm)

    def project_ball(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Closest point (ℓ∞: exact; ℓ2: radial) of the ε-ball around ``x``, *not* clamped to the
        box — the unclamped random start of the TRADES / MART / StochAT scripts."""
        eps = self.eps_for(x)
        delta = x_adv - x
        if self.norm == "linf":
            return x + torch.maximum(torch.minimum(delta, eps), -eps)
        norms = batch_view(flat_norm(delta, "l2"), x)
        return x + delta * torch.clamp(eps / (norms + _TINY), max=1.0)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Closest point (ℓ∞: exact; ℓ2: radial) of the ε-ball around ``x``, clamped to the box.

        For ℓ∞ the two constraints are box-separable so the result is the exact projection onto
        their intersection; for ℓ2 radial scaling followed by clamping stays inside both sets,
        because clamping toward the box (which contains x) never increases the distance to x.
        """
        eps = self.eps_for(x)
        delta = x_adv - x
        if self.norm == "linf":
            delta = torch.maximum(torch.minimum(delta, eps), -eps)
        else:
            norms = batch_view(flat_norm(delta, "l2"), x)
            factor = torch.clamp(eps / (norms + _TINY), max=1.0)
            delta = delta * factor
        out = torch.clamp(x + delta, self.lower, self.upper)
        if self.norm == "l2":
            # guard float rounding: shrink the few examples that landed a hair outside
            d = out - x
            n = batch_view(flat_norm(d, "l2"), x)
            out = torch.where(n > eps, x + d * (eps / (n + _TINY)) * (1 - 1e-6), out)
        return out

    def random_start(
        self,
        x: Tensor,
        kind: str = "uniform",
        sigma: float = 0.001,
        generator: torch.Generator | None = None,
        shared: bool = False,
        clamp: bool = True,
    ) -> Tensor:
        """A random point near ``x``: ``none`` (x itself), ``uniform`` in the ε-ball, or
        ``gaussian`` x + σ·N(0, I); projected into the threat model.

        ``shared=True`` draws one noise pattern and uses it (scaled by each example's ε) for every
        example, so a seeded attack gives example i the same start alone or inside any batch.

        ``clamp=False`` projects onto the ε-ball only and leaves the start outside the [lower,
        upper] box where the noise puts it, so the first gradient is taken at the unclamped
        x + δ, as ``yaodongyu/TRADES`` trades.py ``trades_loss``, ``YisenWang/MART`` mart.py
        ``mart_loss`` and ``GauriJagatap/StochAT`` adversarial/functional.py ``_langevin_samples``
        do (every later iterate is clamped by :meth:`project`). On images with many pixels at
        exactly 0 or 1 (MNIST) the clamped start (default) drops the noise on those pixels and
        changes the first ascent direction: a TRADES adversary from a clamped start reaches a
        higher KL (+11–20 % measured on MNIST cnn4 models; issue 14).
        """
        ball = self.project if clamp else self.project_ball
        if kind == "none":
            return x.clone()
        shape = (1, *x.shape[1:]) if shared else tuple(x.shape)
        if kind == "uniform":
            eps = self.eps_for(x)
            if self.norm == "linf":
                u = draw_noise("uniform", shape, generator, x, shared)
                delta = (2 * u - 1) * eps
            else:
                g = draw_noise("normal", shape, generator, x, shared)
                g = g / (batch_view(flat_norm(g, "l2"), g) + _TINY)
                d = x[0].numel()
                r = draw_noise("uniform", shape[:1], generator, x, shared)
                delta = g * batch_view(r.pow(1.0 / d), g) * eps
            return ball(x + delta, x)
        if kind == "gaussian":
            if sigma < 0:
                raise ConfigError(f"gaussian start sigma must be >= 0, got {sigma}")
            g = draw_noise("normal", shape, generator, x, shared)
            return ball(x + sigma * g, x)
        raise ConfigError(f"unknown random start {kind!r}; valid: none, uniform, gaussian")

    def steepest_step(self, grad: Tensor) -> Tensor:
        """Unit steepest-ascent direction for the norm: sign(g) for ℓ∞, g/‖g‖₂ for ℓ2."""
        if self.norm == "linf":
            return grad.sign()
        return grad / (batch_view(flat_norm(grad, "l2"), grad) + _TINY)
