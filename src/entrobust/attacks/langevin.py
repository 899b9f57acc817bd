"""The SGLD dynamics of ATENT (Jagatap et al. 2021, Alg. 1 ℓ2 and Alg. 2 ℓ∞), written once.

Both users build on :class:`Langevin`: the ``atent`` attack (:class:`~entrobust.attacks.gradient.
ATENT`, which adds a seeded noise source and keeps the strongest sample) and the training
sampler (:class:`~entrobust.training.adversaries.ATENTSampler`, which adds ATENT's reading of γ,
BatchNorm modes and the sample trajectory the training loss needs). Follows
``GauriJagatap/StochAT`` adversarial/functional.py (``_langevin_samples``) and utils.py
(``random_perturbation``).

One step from x′ with ascent gradient ∇ (Alg. 1 / 2, line 7)::

    x′ ← x′ + η′·steepest(∇) + γ·(x − x′) + ε_n·√(2η′)·N(0, I)

with steepest(∇) = sign(∇) for ℓ∞ and ∇/‖∇‖₂ for ℓ2 (:meth:`ThreatModel.steepest_step`), the
pull-back γ (ℓ2 only; 0 for ℓ∞), then a projection onto the ball (``project``: ``every`` step,
the ``last`` step only, or ``none``) or else a clamp to the [0, 1] box.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from entrobust.attacks.threat import ThreatModel, batch_view, flat_norm
from entrobust.distributed import batch_noise

__all__ = ["INITS", "PROJECTS", "Langevin", "NoiseSource", "global_noise"]

#: start points x′⁰ = x + δ (see :meth:`Langevin.start`)
INITS: tuple[str, ...] = ("sign", "sphere", "surface", "gaussian", "uniform", "none")
PROJECTS: tuple[str, ...] = ("last", "every", "none")

#: standard normal noise shaped like its argument
NoiseSource = Callable[[Tensor], Tensor]


def global_noise(like: Tensor) -> Tensor:
    """N(0, I) shaped like ``like`` from torch's global RNG, following the data-parallel global
    batch (:func:`entrobust.distributed.batch_noise`): the training sampler's source."""
    return batch_noise("normal", like.shape, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class Langevin:
    """The start and the steps of ATENT's SGLD sampler in a threat model.

    Args:
        threat: norm and radius r of the ball (``threat.eps``, a float or per-example ``(N,)``)
            and the box; projections and the uniform start use it.
        step_size: η′, a float or a tensor broadcastable against x (per-example step).
        noise: ε_n of the noise term ε_n·√(2η′)·N(0, I) (StochAT ``ep``; 1e-3 in ATENT B.1–B.3).
        pull: γ of the ℓ2 pull-back γ·(x − x′) (0: none).
        init: ``sign`` x + r·sign(N(0, I)); ``sphere`` N(0, I) projected onto the ℓ2 ball of
            radius r; ``surface`` x + r·g/‖g‖₂ (always on the sphere); ``gaussian`` x + r·N(0, I)
            (ℓ∞) or x + r·N(0, I)/√d (ℓ2, so E‖δ‖² = r²); ``uniform`` in the ball; ``none``.
        project: ``every``, ``last`` or ``none`` (see the module docstring).
        clamp_start: clamp x′⁰ to the box (``False``: the reference's unclamped start).
    """

    threat: ThreatModel
    step_size: float | Tensor
    noise: float = 1e-3
    pull: float = 0.0
    init: str = "sign"
    project: str = "last"
    clamp_start: bool = True

    @property
    def noise_std(self) -> float | Tensor:
        """Standard deviation of the per-step noise, ε_n·√(2η′)."""
        if isinstance(self.step_size, Tensor):
            return self.noise * torch.sqrt(2 * self.step_size)
        return self.noise * math.sqrt(2.0 * self.step_size)

    def _radius(self, x: Tensor) -> float | Tensor:
        eps = self.threat.eps
        return self.threat.eps_for(x) if isinstance(eps, Tensor) else float(eps)

    def start(self, x: Tensor, draw: NoiseSource = global_noise) -> Tensor:
        """x′⁰ = x + δ (``init``), clamped to the box unless ``clamp_start`` is off."""
        t, r = self.threat, self._radius(x)
        if self.init == "none":
            return x.clone()
        if self.init == "uniform":
            return t.random_start(x, "uniform", clamp=self.clamp_start)
        g = draw(x)
        if self.init == "sign":
            delta = r * g.sign()
        elif self.init == "sphere":
            n = flat_norm(g, "l2").view(-1, *([1] * (x.dim() - 1)))
            delta = g * torch.clamp(r / (n + 1e-12), max=1.0)
        elif self.init == "surface":
            delta = r * g / (batch_view(flat_norm(g, "l2"), g) + 1e-12)
        elif t.norm == "linf":  # gaussian
            delta = r * g
        else:
            delta = r * g / math.sqrt(x[0].numel())
        if not self.clamp_start:
            return x + delta
        return torch.clamp(x + delta, t.lower, t.upper)

    def step(
        self, x: Tensor, x_k: Tensor, grad: Tensor, last: bool, draw: NoiseSource = global_noise
    ) -> Tensor:
        """One Langevin step from ``x_k`` with ascent gradient ``grad``; ``last``: the final step."""
        t = self.threat
        out = x_k + self.step_size * t.steepest_step(grad)
        if self.pull:
            out = out + self.pull * (x - x_k)
        if self.noise:
            out = out + self.noise_std * draw(x_k)
        if self.project == "every" or (self.project == "last" and last):
            return t.project(out, x)
        return torch.clamp(out, t.lower, t.upper)
