"""Training adversaries — the inner step of a method (SPEC §4.1), registered in :data:`ADVERSARIES`.

* ``none`` — clean training.
* ``pgd`` — projected gradient ascent on any engine loss (:class:`~entrobust.attacks.engine.
  ProjectedGradient`): PAT maximizes CE, PAT-EntM maximizes L_entm (RU eq. 5), and so on.
* ``trades`` — maximize KL(p(x) ‖ p(x′)) summed over the batch, start x + 0.001·N(0, I)
  (``yaodongyu/TRADES`` trades.py).
* ``mart`` — MART's PGD on CE, start x + 0.001·N(0, I) (``YisenWang/MART`` mart.py).
* ``atent-l2`` / ``atent-linf`` — the SGLD samplers of ATENT (Jagatap et al. 2021, Alg. 1 and 2),
  :class:`ATENTSampler`.

Every adversary runs the model in its own BatchNorm mode (``bn_mode``: ``eval`` as in TRADES /
MART / MadryLab, ``train`` as in robust_overfitting / AWP / ATENT), with parameters frozen, and
restores the model's mode afterwards; the returned examples are detached.

``clamp_start`` (every adversary): ``True`` clamps the random start to the [0, 1] box before the
first gradient; ``False`` takes the first gradient at the unclamped x + δ, as the reference
scripts of TRADES (trades.py ``trades_loss``), MART (mart.py ``mart_loss``) and ATENT
(StochAT adversarial/functional.py ``_langevin_samples`` after utils.py ``random_perturbation``)
do. The paper presets of those methods use ``False`` (issue 14); see docs/methods.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

from entrobust.attacks.base import frozen
from entrobust.attacks.engine import ProjectedGradient, make_objective
from entrobust.attacks.langevin import Langevin
from entrobust.attacks.threat import ThreatModel
from entrobust.distributed import unwrap
from entrobust.errors import ConfigError
from entrobust.registry import Registry
from entrobust.training.method_config import (
    ATENT_INITS,
    ATENT_L2_GAMMA,
    ATENT_PROJECTS,
    BN_MODES,
    GAMMA_READINGS,
    AdversaryConfig,
)

__all__ = [
    "ADVERSARIES",
    "ATENT_INITS",
    "ATENT_L2_GAMMA",
    "ATENT_PROJECTS",
    "BN_MODES",
    "GAMMA_READINGS",
    "ATENTSampler",
    "Adversary",
    "GradientAdversary",
    "Replay",
    "build_adversary",
]


class Adversary(Protocol):
    """``adversary(model, x, y) -> x_adv`` (detached, inside the adversary's threat model).

    ``replayable``: its examples of one batch can be crafted once and reused (AWP crafts them at
    the unperturbed weights, :meth:`~entrobust.training.method.Method.replaying`); a sampler
    whose loss needs the whole trajectory (ATENT) is not.
    """

    bn_mode: str
    replayable: bool

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor: ...


class GradientAdversary:
    """PGD-style adversary on the shared engine (used by ``pgd``, ``trades`` and ``mart``).

    A thin wrapper over :class:`~entrobust.attacks.engine.ProjectedGradient` with one run, the
    final iterate and torch's global RNG (so a training run is reproducible from its RNG state).
    ``clamp_start=False`` takes the first gradient at the unclamped random start, as TRADES'
    ``trades_loss`` and MART's ``mart_loss`` (both start at x + 0.001·N(0, I) and clamp only after
    the first step); ``True`` (default) clamps the start to the box first.
    """

    replayable = True

    def __init__(
        self,
        threat: ThreatModel,
        *,
        steps: int,
        step_size: float,
        init: str,
        init_sigma: float,
        loss: str,
        loss_kwargs: Mapping[str, float] | None = None,
        bn_mode: str = "eval",
        clamp_start: bool = True,
    ) -> None:
        if bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        self.bn_mode = bn_mode
        self.attack = ProjectedGradient(
            threat,
            steps=steps,
            step_size=step_size,
            init=init,
            sigma=init_sigma,
            loss=loss,
            loss_kwargs=dict(loss_kwargs or {}),
            model_mode="train" if bn_mode == "train" else "eval",
            clamp_start=clamp_start,
        )

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(model, x, y)

    def __repr__(self) -> str:
        return f"GradientAdversary({self.attack!r}, bn_mode={self.bn_mode})"


class ATENTSampler:
    """SGLD sampler of ATENT (Jagatap et al. 2021, Alg. 1 ℓ2 and Alg. 2 ℓ∞; App. B).

    Draws L samples x′¹…x′ᴸ of the Gibbs distribution p(x′) ∝ exp(L(x′) − γ/2·‖x′ − x‖) by
    Langevin steps from x′⁰ = x + δ, following ``GauriJagatap/StochAT`` adversarial/functional.py
    (``_langevin_samples``) and its training notebooks:

    * ℓ2 (Alg. 1): x′ ← x′ + η′·∇/‖∇‖₂ + γ(x − x′) + ε·√(2η′)·N(0, I); the gradient is normalized
      per example and the pull-back is applied with coefficient γ as in the code (the paper's
      Alg. 1 writes η′·γ; pass ``gamma = η′·γ_paper`` for that). No projection by default.
    * ℓ∞ (Alg. 2): x′ ← x′ + η′·sign(∇) + ε·√(2η′)·N(0, I), no pull-back; the *last* iterate is
      projected onto the ℓ∞ ball of radius 1/γ around x (``project="every"`` projects every step,
      the paper's MNIST variant; ``"none"`` never).

    The start and the steps are :class:`~entrobust.attacks.langevin.Langevin` (shared with the
    ``atent`` attack) on torch's global RNG; this class adds the reading of γ, the BatchNorm
    mode of the gradient forwards and the sample trajectory of the training loss.

    Every iterate is clamped to the [0, 1] box. ∇ is the input gradient of the ascent loss
    (``loss``, CE by default) summed over the batch; scale does not matter after sign / per-example
    normalization. Each of the L iterates is one sample; the training loss is an EMA over their
    losses (:func:`entrobust.training.objectives.atent`).

    **Reading of γ (SPEC §4.1).** For ℓ∞ the paper's ball radius is 1/γ, but its CIFAR γ = 1/0.0031
    conflicts with its MNIST γ = 3.33 = 1/0.3 and with the code, which projects onto ε = 0.031.
    Default ``gamma_reading="inverse-eps"``: 1/γ = ε, the radius is ``eps`` (a ``gamma`` that
    disagrees with 1/ε by more than 1 % is an error). ``"literal"``: the radius is 1/``gamma``
    exactly as printed (γ = 1/0.0031 → radius 0.0031). For ℓ2, γ is the pull-back coefficient
    (default 0.05, ATENT B.2) and ``eps`` the initial radius.

    **Initialization** (radius r = the ℓ∞ radius, or ``eps`` for ℓ2): ``sign`` x + r·sign(N(0, I))
    (StochAT utils.py ``random_perturbation`` for ℓ∞), ``sphere`` x + N(0, I) projected onto the ℓ2
    ball of radius r (its ℓ2 branch: for images, a uniform direction at distance r), ``gaussian``
    x + r·N(0, I) (ℓ∞) or x + r·N(0, I)/√d (ℓ2, so E‖δ‖² = r²) — the paper's "random normal
    perturbation with radius inversely proportional to γ" —, ``uniform`` in the ball, ``none``.
    The start is clamped to the box unless ``clamp_start=False`` (the reference,
    ``random_perturbation`` then ``_langevin_samples``, takes the first gradient at the unclamped
    start and clamps only after the first step).

    Args:
        norm: ``"l2"`` or ``"linf"``.
        eps: ε — the ℓ∞ radius under the default reading, the ℓ2 initial radius.
        steps: L, the number of Langevin steps (= samples).
        step_size: η′.
        noise: ε of the noise term ε·√(2η′)·N(0, I) (StochAT ``ep``; 1e-3 in ATENT B.1–B.3).
        gamma: see above.
        bn_mode: BatchNorm mode of the gradient forwards (``train`` in the reference).
        clamp_start: clamp x′⁰ to the box (``False``: the reference's unclamped start).
    """

    replayable = False  # its training loss needs every sample, not one batch of examples

    def __init__(
        self,
        norm: str,
        eps: float,
        *,
        steps: int = 10,
        step_size: float = 0.007,
        noise: float = 1e-3,
        gamma: float | None = None,
        gamma_reading: str = "inverse-eps",
        init: str = "sign",
        project: str = "last",
        loss: str = "ce",
        loss_kwargs: Mapping[str, float] | None = None,
        bn_mode: str = "train",
        lower: float = 0.0,
        upper: float = 1.0,
        clamp_start: bool = True,
    ) -> None:
        if norm not in ("l2", "linf"):
            raise ConfigError(f"ATENT norm must be l2 or linf, got {norm!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"ATENT steps must be an integer >= 1, got {steps!r}")
        for name, value in (("eps", eps), ("step_size", step_size), ("noise", noise)):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"ATENT {name} must be a finite number >= 0, got {value}")
        if init not in ATENT_INITS:
            raise ConfigError(f"unknown ATENT init {init!r}; valid: {', '.join(ATENT_INITS)}")
        if project not in ATENT_PROJECTS:
            raise ConfigError(f"unknown ATENT project {project!r}; valid: {', '.join(ATENT_PROJECTS)}")
        if gamma_reading not in GAMMA_READINGS:
            raise ConfigError(f"unknown gamma_reading {gamma_reading!r}; valid: {', '.join(GAMMA_READINGS)}")
        if bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if gamma is not None and not (math.isfinite(gamma) and gamma > 0):
            raise ConfigError(f"ATENT gamma must be a finite number > 0, got {gamma}")
        self.norm = norm
        self.eps = float(eps)
        self.steps = steps
        self.step_size = float(step_size)
        self.noise = float(noise)
        self.gamma_reading = gamma_reading
        self.init = init
        self.project = project
        self.bn_mode = bn_mode
        self.clamp_start = bool(clamp_start)
        self.lower, self.upper = lower, upper
        self.objective = make_objective(loss, loss_kwargs=dict(loss_kwargs or {}))
        if loss == "kl":
            raise ConfigError("the ATENT sampler ascends a label loss (ce, entm, ...), not kl")
        if norm == "l2":
            self.pull = ATENT_L2_GAMMA if gamma is None else float(gamma)
            self.radius = self.eps
        else:
            self.pull = 0.0
            if gamma_reading == "literal":
                if gamma is None:
                    raise ConfigError("gamma_reading='literal' needs gamma (the ℓ∞ radius is 1/gamma)")
                self.radius = 1.0 / gamma
            else:
                if gamma is not None and abs(1.0 / gamma - self.eps) > 0.01 * max(self.eps, 1e-12):
                    raise ConfigError(
                        f"gamma = {gamma} disagrees with 1/eps = {1.0 / max(self.eps, 1e-300):.6g} under "
                        "gamma_reading='inverse-eps'; drop gamma or use gamma_reading='literal'"
                    )
                self.radius = self.eps
        self.gamma = gamma

    # ------------------------------------------------------------------ pieces
    @property
    def dynamics(self) -> Langevin:
        """The SGLD start and steps (:class:`~entrobust.attacks.langevin.Langevin`), torch's global RNG."""
        return Langevin(
            self.threat(),
            self.step_size,
            noise=self.noise,
            pull=self.pull,
            init=self.init,
            project=self.project,
            clamp_start=self.clamp_start,
        )

    @property
    def noise_std(self) -> float:
        """Standard deviation of the per-step noise, ε·√(2η′)."""
        return self.noise * math.sqrt(2.0 * self.step_size)

    def threat(self) -> ThreatModel:
        """The ball of radius r used by the projection (and the uniform start)."""
        return ThreatModel(self.norm, self.radius, self.lower, self.upper)

    def start(self, x: Tensor) -> Tensor:
        """x′⁰ = x + δ (see the class docstring), clamped to the box unless ``clamp_start`` is off."""
        return self.dynamics.start(x)

    def step(self, x: Tensor, x_k: Tensor, grad: Tensor, last: bool) -> Tensor:
        """One Langevin step from ``x_k`` with ascent gradient ``grad`` (Alg. 1 / 2, one line 7)."""
        return self.dynamics.step(x, x_k, grad, last)

    def _input_grad(self, model: nn.Module, x_k: Tensor, y: Tensor) -> Tensor:
        """∇ₓ Σ_i loss(f(x_k)_i, y_i) in ``bn_mode`` with parameters frozen."""
        with frozen(model, "train" if self.bn_mode == "train" else "eval"), torch.enable_grad():
            xg = x_k.detach().requires_grad_(True)
            score = self.objective(model(xg), y, None, None)
            (grad,) = torch.autograd.grad(score.sum(), xg)
        return grad

    # ------------------------------------------------------------------ sampling
    def trajectory(
        self, model: nn.Module, x: Tensor, y: Tensor, *, train_forward: bool = False
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Yield ``(x′ᵏ, logits_k)`` for k = 1…L.

        With ``train_forward`` and the model already in ``bn_mode`` (ATENT's train/train), each
        sample's logits come from one forward in the model's current mode *with* parameter
        gradients — the forward the training loss needs — and the next step's input gradient is
        taken from the same forward (``retain_graph``), so L samples cost L + 1 forwards instead
        of the reference's 2L. The consumer may back-propagate ``logits_k`` before asking for the
        next sample (ATENT's memory-light mode). Otherwise ``logits_k`` is ``None`` and every
        gradient forward runs frozen in ``bn_mode``.
        """
        x = x.detach()
        net = unwrap(model, compiled=False)  # input-gradient passes bypass DDP's all-reduce
        shared = train_forward and net.training == (self.bn_mode == "train")
        dynamics = self.dynamics
        x_k = dynamics.start(x)
        grad = self._input_grad(net, x_k, y)
        for k in range(1, self.steps + 1):
            last = k == self.steps
            x_k = dynamics.step(x, x_k, grad, last).detach()
            if not shared:
                if not last:
                    grad = self._input_grad(net, x_k, y)
                yield x_k, None
                continue
            with torch.enable_grad():
                x_k.requires_grad_(True)
                logits = model(x_k).float()
                if not last:
                    score = self.objective(logits, y, None, None)
                    (grad,) = torch.autograd.grad(score.sum(), x_k, retain_graph=True)
            x_k = x_k.detach()
            yield x_k, logits

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The last sample x′ᴸ (ATENT used as an adversary, ATENT Table 6)."""
        last = x
        for sample, _ in self.trajectory(model, x, y):
            last = sample
        return last.detach()

    def __repr__(self) -> str:
        return (
            f"ATENTSampler(norm={self.norm}, radius={self.radius:.4g}, steps={self.steps}, "
            f"step_size={self.step_size:.4g}, noise={self.noise:.4g}, pull={self.pull:.4g}, "
            f"init={self.init}, project={self.project}, bn_mode={self.bn_mode}, "
            f"clamp_start={self.clamp_start})"
        )


class Replay:
    """An adversary that returns pre-computed adversarial examples (AWP reuses them)."""

    replayable = True

    def __init__(self, x_adv: Tensor | None, bn_mode: str = "eval") -> None:
        self.x_adv = x_adv
        self.bn_mode = bn_mode

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        assert self.x_adv is not None and self.x_adv.shape == x.shape
        return self.x_adv


# --------------------------------------------------------------------------- registry
Builder = Callable[[AdversaryConfig], "Adversary | None"]


def _gradient(cfg: AdversaryConfig) -> GradientAdversary:
    assert cfg.step_size is not None
    return GradientAdversary(
        ThreatModel(cfg.norm, cfg.eps),
        steps=cfg.steps,
        step_size=cfg.step_size,
        init=cfg.init,
        init_sigma=cfg.init_sigma,
        loss=cfg.loss,
        loss_kwargs=cfg.loss_kwargs,
        bn_mode=cfg.bn_mode,
        clamp_start=cfg.clamp_start,
    )


def _atent(cfg: AdversaryConfig) -> ATENTSampler:
    assert cfg.step_size is not None
    return ATENTSampler(
        cfg.norm,
        cfg.eps,
        steps=cfg.steps,
        step_size=cfg.step_size,
        noise=cfg.noise,
        gamma=cfg.gamma,
        gamma_reading=cfg.gamma_reading,
        init=cfg.init,
        project=cfg.project,
        loss=cfg.loss,
        loss_kwargs=cfg.loss_kwargs,
        bn_mode=cfg.bn_mode,
        clamp_start=cfg.clamp_start,
    )


ADVERSARIES: Registry[Builder] = Registry("adversary")
ADVERSARIES.register("none", lambda cfg: None, help="no adversary (clean training)")
ADVERSARIES.register("pgd", _gradient, help="PGD on any engine loss (PAT: ce, PAT-EntM: entm)")
ADVERSARIES.register("trades", _gradient, help="TRADES KL maximization, start x + 0.001·N(0, I)")
ADVERSARIES.register("mart", _gradient, help="MART's PGD on CE, start x + 0.001·N(0, I)")
ADVERSARIES.register("atent-l2", _atent, help="ATENT ℓ2 SGLD sampler (Alg. 1)")
ADVERSARIES.register("atent-linf", _atent, help="ATENT ℓ∞ SGLD sampler (Alg. 2)")


def build_adversary(cfg: AdversaryConfig) -> Adversary | None:
    """The adversary described by ``cfg`` (``None`` for ``kind="none"``)."""
    return ADVERSARIES.get(cfg.kind)(cfg)
