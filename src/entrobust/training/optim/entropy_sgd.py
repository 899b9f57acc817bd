"""Entropy-SGD (Chaudhari et al. 2017, Alg. 1) and its 2nd-order variant (Kanai et al., App. D).

Entropy-SGD minimizes the *local entropy* −F(w) = −log ∫ exp(−f(w′) − γ/2‖w − w′‖²) dw′, whose
gradient is γ(w − ⟨w′⟩) with ⟨w′⟩ the mean of the Gibbs distribution around w. Each outer step

1. runs ``L`` inner SGLD steps on a copy w′ (started at w), each on a **fresh minibatch** drawn by
   the closure (for adversarial training the closure also crafts the adversarial examples at the
   current inner weights w′, Kanai et al. §4):
   ``w′ ← w′ − η′·[∇f(w′) + wd·w′ − γ_t (w − w′)] + ε_E·√(2η′)·N(0, I)``,
   with optional (Nesterov) momentum on ∇f, reset every outer step, as in the Lua code;
2. tracks the exponential average ``μ ← α·μ + (1 − α)·w′`` (μ starts at w; α = 0.75);
3. takes the outer step ``w ← w − η·(w − μ)``.

Reading of the outer step. The paper's Alg. 1 writes ``w ← w − η·γ(w − μ)``; the Lua code that
Kanai et al. build on (``ucla-vision/entropy-sgd``, ``entropyoptim.lua``: ``dfdx = xc − lmx``,
``x ← xc − clr·dfdx``) takes the plain step ``w ← w − η(w − μ)``. Kanai's hyperparameters
(η = 0.1, γ = 0.03) only make sense for the plain step (η·γ = 0.003 would barely move), and the
2nd-order update of App. D, ``w ← w − ηγ·(w − μ)/(γ − γ²σ²)``, reduces to it when σ² → 0. So
``outer="plain"`` is the default and ``outer="scaled"`` gives the paper's η·γ(w − μ).

Other facts taken from the reference code (read, not copied):

* noise std ε_E·√(2η′): the Lua code adds ``noise/√(0.5·η′)·N`` to the gradient, then scales by η′;
* scoping γ_t = γ·(1 + scoping)^t with t the number of completed outer steps (the Lua code advances
  t; the python port never does — ours really advances it). Lua default scoping = 1e-3;
* inner learning rate η′ = 0.1 ("lclr"), α = 0.75 ("beta1"), ε_E = 1e-4, γ = 0.03 (train.lua);
* the Lua/python code also evaluates the loss once at w before the inner loop and discards its
  gradient; we skip that wasted evaluation, so one outer step costs exactly ``L`` closure calls;
* the python port adds Nesterov momentum to the outer step; here outer momentum is an option
  (``outer_momentum``, ``outer_nesterov``), off by default like the Lua code.

The PyTorch port (``ucla-vision/entropy-sgd`` python/optim.py ``EntropySGD.step``, commit
61329f9) differs from the Lua code in four ways, each an option here, all four set by the
``kanai/*-port`` presets: γ constant (``g1 = 0``: ``scoping=0``), Nesterov momentum 0.9 on the
outer direction (``outer_momentum=0.9, outer_nesterov=True``), weight decay also on the outer
direction, before its momentum (``outer_weight_decay=wd``), and weight decay added to the inner
gradient *before* the inner momentum (``decay_before_momentum=True``; the Lua code adds it after).
One difference is not reproduced: the port's outer momentum buffer starts as the gradient of its
discarded first closure call, ours as the first outer direction (torch.optim.SGD's rule); it
affects the first outer step only.

The closure must compute the loss at the model's *current* parameters, call ``backward`` and
return the loss. The optimizer clears ``.grad`` before every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from entrobust.errors import ConfigError

__all__ = ["EntropySGD", "EntropySGD2"]

Closure = Callable[[], Any]


def _check(
    name: str, value: float, *, low: float = 0.0, strict: bool = False, high: float | None = None
) -> None:
    ok = value > low if strict else value >= low
    if high is not None:
        ok = ok and value < high
    if not ok or isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        bound = f"> {low}" if strict else f">= {low}"
        if high is not None:
            bound += f" and < {high}"
        raise ConfigError(f"{name} must be {bound}, got {value!r}")


class EntropySGD(Optimizer):
    """Entropy-SGD optimizer: ``L`` inner SGLD steps on fresh minibatches, then an outer step.

    Args:
        params: parameters or parameter groups.
        lr: outer learning rate η (the trainer's schedule changes it).
        L: inner SGLD steps per outer step = closure calls (= minibatches) per :meth:`step`.
        gamma: scope γ (coupling of w′ to w). Kanai et al. App. E: 0.03.
        scoping: γ grows as γ·(1 + scoping)^t over outer steps t (Lua default 1e-3; 0 = fixed).
        noise: ε_E; the SGLD noise std is ε_E·√(2η′). Kanai et al.: 1e-4.
        inner_lr: SGLD step η′ (Kanai et al.: 0.1).
        alpha: EMA weight on the old mean, μ ← α·μ + (1 − α)·w′ (Lua "beta1" 0.75).
        momentum, dampening, nesterov: momentum on the inner gradient, reset every outer step.
        weight_decay: L2 coefficient added to the inner gradient (wd·w′, as the Lua code).
        outer: ``"plain"`` (w − η(w − μ), Lua code, default) or ``"scaled"`` (w − ηγ(w − μ), paper).
        outer_momentum, outer_nesterov: optional momentum on the outer direction (python port).
        outer_weight_decay: wd·w added to the outer direction before its momentum (python port,
            which uses its one ``weight_decay`` for both steps); 0 = none (Lua code).
        decay_before_momentum: add wd·w′ to the inner gradient before the inner momentum
            (python port) instead of after it (Lua code, default).

    Raises :class:`~entrobust.errors.ConfigError` for an invalid hyperparameter.
    """

    #: minibatches one :meth:`step` consumes (read by the trainer)
    closure_calls: int

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        *,
        L: int = 20,
        gamma: float = 0.03,
        scoping: float = 1e-3,
        noise: float = 1e-4,
        inner_lr: float = 0.1,
        alpha: float = 0.75,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        outer: str = "plain",
        outer_momentum: float = 0.0,
        outer_nesterov: bool = False,
        outer_weight_decay: float = 0.0,
        decay_before_momentum: bool = False,
    ) -> None:
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ConfigError(f"L (inner SGLD steps) must be an integer >= 1, got {L!r}")
        _check("lr", lr)
        _check("gamma", gamma)
        _check("scoping", scoping)
        _check("noise", noise)
        _check("inner_lr", inner_lr, strict=True)
        _check("alpha", alpha, high=1.0)
        _check("momentum", momentum)
        _check("dampening", dampening)
        _check("weight_decay", weight_decay)
        _check("outer_momentum", outer_momentum)
        _check("outer_weight_decay", outer_weight_decay)
        if not isinstance(decay_before_momentum, bool):
            raise ConfigError(f"decay_before_momentum must be true or false, got {decay_before_momentum!r}")
        if outer not in ("plain", "scaled"):
            raise ConfigError(f"outer must be 'plain' or 'scaled', got {outer!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("nesterov momentum needs momentum > 0 and dampening = 0")
        if outer_nesterov and outer_momentum <= 0:
            raise ConfigError("outer_nesterov needs outer_momentum > 0")
        defaults = dict(
            lr=lr,
            L=L,
            gamma=gamma,
            scoping=scoping,
            noise=noise,
            inner_lr=inner_lr,
            alpha=alpha,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            outer=outer,
            outer_momentum=outer_momentum,
            outer_nesterov=outer_nesterov,
            outer_weight_decay=outer_weight_decay,
            decay_before_momentum=decay_before_momentum,
        )
        super().__init__(params, defaults)
        if len({g["L"] for g in self.param_groups}) != 1:
            raise ConfigError("all parameter groups of EntropySGD must share the same L")
        self.closure_calls = L

    # ------------------------------------------------------------------ state
    def outer_steps(self) -> int:
        """Completed outer steps t (drives the scoping schedule)."""
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st:
                    return int(st["step"])
        return 0

    def current_gamma(self, group: dict[str, Any] | None = None) -> float:
        """γ_t = γ·(1 + scoping)^t for the next outer step."""
        group = self.param_groups[0] if group is None else group
        return float(group["gamma"]) * (1.0 + float(group["scoping"])) ** self.outer_steps()

    # ------------------------------------------------------------------- step
    def _second_moment(self) -> bool:
        return False

    def _outer_direction(
        self, group: dict[str, Any], anchor: Tensor, mu: Tensor, xi: Tensor | None, gamma: float
    ) -> Tensor:
        direction = anchor - mu
        if group["outer"] == "scaled":
            direction.mul_(gamma)
        return direction

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        """One outer step: ``L`` closure calls (each a fresh minibatch), then the outer update.

        Returns the mean of the inner losses (a 0-dim tensor).
        """
        if closure is None:
            raise ConfigError(
                f"{type(self).__name__}.step needs a closure that draws a minibatch and calls backward"
            )
        L = int(self.param_groups[0]["L"])
        self.closure_calls = L
        t = self.outer_steps()
        second = self._second_moment()
        # snapshot: anchor w, running mean mu (and second moment xi), inner momentum buffers
        work: list[
            tuple[dict[str, Any], float, list[tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]]]
        ] = []
        for group in self.param_groups:
            gamma_t = float(group["gamma"]) * (1.0 + float(group["scoping"])) ** t
            items = []
            for p in group["params"]:
                anchor = p.detach().clone()
                mu = p.detach().clone()
                xi = p.detach() * p.detach() if second else None
                buf = torch.zeros_like(p) if group["momentum"] > 0 else None
                items.append((p, anchor, mu, xi, buf))
            work.append((group, gamma_t, items))

        total = 0.0
        for _ in range(L):
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad = None
            with torch.enable_grad():
                loss = closure()
            if loss is not None:
                total += float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
            for group, gamma_t, items in work:
                lr_in, wd, m = group["inner_lr"], group["weight_decay"], group["momentum"]
                damp, nest, alpha = group["dampening"], group["nesterov"], group["alpha"]
                decay_first = group.get("decay_before_momentum", False)
                noise_std = group["noise"] * math.sqrt(2.0 * lr_in)
                for p, anchor, mu, xi, buf in items:
                    if p.grad is None:
                        continue
                    d_p = p.grad.detach().clone()
                    if wd != 0 and decay_first:
                        d_p.add_(p, alpha=wd)
                    if buf is not None:
                        buf.mul_(m).add_(d_p, alpha=1.0 - damp)
                        d_p = d_p.add(buf, alpha=m) if nest else buf.clone()
                    if wd != 0 and not decay_first:
                        d_p.add_(p, alpha=wd)
                    if gamma_t != 0:
                        d_p.add_(p - anchor, alpha=gamma_t)  # −γ(w − w′)
                    p.add_(d_p, alpha=-lr_in)
                    if noise_std > 0:
                        p.add_(torch.randn_like(p), alpha=noise_std)
                    mu.mul_(alpha).add_(p, alpha=1.0 - alpha)
                    if xi is not None:
                        xi.mul_(alpha).addcmul_(p, p, value=1.0 - alpha)

        for group, gamma_t, items in work:
            om, onest = group["outer_momentum"], group["outer_nesterov"]
            owd = group.get("outer_weight_decay", 0.0)
            for p, anchor, mu, xi, _ in items:
                p.copy_(anchor)
                direction = self._outer_direction(group, anchor, mu, xi, gamma_t)
                if owd:
                    direction.add_(anchor, alpha=owd)
                state = self.state[p]
                if om > 0:
                    obuf = state.get("outer_buffer")
                    if obuf is None:
                        obuf = state["outer_buffer"] = direction.clone()
                    else:
                        obuf.mul_(om).add_(direction)
                    direction = direction.add(obuf, alpha=om) if onest else obuf.clone()
                p.add_(direction, alpha=-group["lr"])
                state["step"] = torch.tensor(float(t + 1))
                p.grad = None
        return torch.tensor(total / L)


class EntropySGD2(EntropySGD):
    """2nd-order Entropy-SGD (Kanai et al., App. D, Alg. 1): a diagonal Newton step on −F.

    The Hessian of the local entropy is γI − γ²Σ, with Σ the covariance of the Gibbs distribution
    of w′. Estimating only its diagonal σ² with the SGLD samples (ξ ← α·ξ + (1 − α)·w′⊙w′,
    σ² = ξ − μ²) gives the update ``w ← w − ηγ·(w − μ)/(γ − γ²σ²) = w − η(w − μ)/(1 − γσ²)``.
    When σ² → 0 it is exactly the plain Entropy-SGD step.

    Where γσ² approaches 1 the Newton step would blow up (the diagonal approximation stops being
    positive definite); the per-coordinate scale 1/(1 − γσ²) is clamped to ``max_scale``
    (default 10) — our safeguard, not in the paper. ``outer="scaled"`` multiplies by γ as in
    :class:`EntropySGD`. All other arguments are those of :class:`EntropySGD`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        *,
        max_scale: float = 10.0,
        **kwargs: Any,
    ) -> None:
        _check("max_scale", max_scale, low=1.0)
        super().__init__(params, lr, **kwargs)
        for group in self.param_groups:
            group.setdefault("max_scale", max_scale)
        self.defaults["max_scale"] = max_scale

    def _second_moment(self) -> bool:
        return True

    def _outer_direction(
        self, group: dict[str, Any], anchor: Tensor, mu: Tensor, xi: Tensor | None, gamma: float
    ) -> Tensor:
        assert xi is not None
        var = (xi - mu * mu).clamp_(min=0.0)
        min_denominator = 1.0 / float(group["max_scale"])
        denom = (1.0 - gamma * var).clamp_(min=min_denominator)
        direction = (anchor - mu) / denom
        if group["outer"] == "scaled":
            direction.mul_(gamma)
        return direction
