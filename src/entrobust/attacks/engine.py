"""The projected-gradient engine: PGD written once, for every norm, loss and named variant.

One loop (Madry et al. 2018, eq. 2; Foolbox 3 ``gradient_descent_base.py`` for the shape)::

    x⁰ = start(x)                                  none / uniform in the ball / x + σ·N(0, I)
    xᵏ⁺¹ = Π_{B(x, ε) ∩ box}( xᵏ + α · s(gᵏ) )      s = sign (ℓ∞) or g/‖g‖₂ (ℓ2)

where gᵏ is the gradient of the attack objective at xᵏ (optionally accumulated with momentum,
MI-FGSM: gᵏ ← μ·gᵏ⁻¹ + ∇/‖∇‖₁, Dong et al. 2018, Alg. 1). FGSM, BIM, PGD, CW-PGD, MI-FGSM, the
RU families ``PGDp-k`` / ``CWp-k``, the TRADES KL attack and PAT-EntM's inner maximization are
all this class with different arguments (see :mod:`entrobust.attacks.gradient`).

Costs are those of the bare loop: each step is one forward and one input-gradient backward; the
step's logits are reused for success tracking, no per-step host synchronisation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from entrobust.attacks.base import Attack, ModelMode
from entrobust.attacks.losses import (
    LOSSES,
    LossFn,
    cw_loss,
    dlr_targeted_loss,
    fp32,
    kl_loss,
    resolve_loss,
)
from entrobust.attacks.threat import ThreatModel, batch_view, draw_noise
from entrobust.errors import ConfigError, UnknownNameError

INITS: tuple[str, ...] = ("none", "uniform", "gaussian")
SELECTS: tuple[str, ...] = ("last", "best")
#: loss names the engine understands besides the ``LOSSES`` registry
ENGINE_ONLY_LOSSES: tuple[str, ...] = ("kl", "dlr-t")

#: ``objective(logits, y, target, clean_logits) -> (N,)``, maximized by the engine
Objective = Callable[[Tensor, Tensor, "Tensor | None", "Tensor | None"], Tensor]
LossSpec = str | LossFn

_TINY = 1e-12
_LOSS_CALL = re.compile(r"^([a-z][a-z0-9-]*)\(([^()]*)\)$")


def loss_names() -> list[str]:
    """Every loss name the engine accepts (``entrobust list`` friendly)."""
    return [*LOSSES.names(), *ENGINE_ONLY_LOSSES]


def parse_loss(loss: str, loss_kwargs: Mapping[str, float] | None = None) -> tuple[str, dict[str, float]]:
    """Split ``"ls-ce(0.3)"`` into ``("ls-ce", {"gamma": 0.3})``; plain names pass through.

    The single positional value in parentheses is the loss's first parameter (γ for ``ls-ce``,
    λ for ``entm``, κ for ``cw``), matching the paper notation ``ls-ce(γ)`` / ``entm(λ)``.
    """
    kwargs = dict(loss_kwargs or {})
    m = _LOSS_CALL.match(loss.strip())
    if not m:
        return loss.strip(), kwargs
    name, arg = m.group(1), m.group(2).strip()
    first = {"ls-ce": "gamma", "entm": "lam", "cw": "confidence"}.get(name)
    if first is None:
        raise ConfigError(f"loss {name!r} takes no parameter in parentheses (got {loss!r})")
    try:
        kwargs[first] = float(arg)
    except ValueError:
        raise ConfigError(f"cannot read the parameter of loss {loss!r} as a number") from None
    return name, kwargs


def make_objective(
    loss: LossSpec, *, targeted: bool = False, loss_kwargs: Mapping[str, float] | None = None
) -> Objective:
    """The per-example objective the engine *maximizes*.

    Untargeted: ``loss(logits, y)``. Targeted (a ``target`` tensor is passed): the loss of the
    target is minimized, i.e. ``−loss(logits, target)``, except for the losses that have their own
    targeted form — ``cw`` → min(z_t − max_{i≠t} z_i, κ) (CW 2017, f₆ targeted) and ``dlr`` /
    ``dlr-t`` → targeted DLR (Croce & Hein 2020, eq. 7). ``kl`` is the TRADES inner loss
    KL(p(x) ‖ p(x′)) against the clean logits (Zhang et al. 2019, eq. 5) and is untargeted only.
    A callable ``f(logits, y) -> (N,)`` is used as is (negated on the target when targeted).
    Every objective sees float32 logits: bf16 / fp16 ones (autocast) are upcast first.
    Note that targeted DLR, being a ratio, drives the point off the true class toward the target
    but need not end on the target (APGD-T counts success as misclassification).

    Raises :class:`ConfigError` for an unknown name or a parameter the loss does not take.
    """
    kwargs = dict(loss_kwargs or {})
    if callable(loss):
        fn: LossFn = loss
        if kwargs:
            raise ConfigError("loss_kwargs only apply to named losses, not to a callable loss")
        return _wrap(fn, targeted)
    if not isinstance(loss, str):
        raise ConfigError(f"loss must be a name or a callable, got {type(loss).__name__}")
    name, kwargs = parse_loss(loss, kwargs)
    if name == "kl":
        if targeted:
            raise ConfigError("the kl (TRADES) loss is untargeted; drop target= or pick another loss")
        _no_kwargs(name, kwargs)

        def kl_objective(z: Tensor, y: Tensor, t: Tensor | None, clean: Tensor | None) -> Tensor:
            if clean is None:  # pragma: no cover - the engine always passes clean logits for kl
                raise RuntimeError("kl objective needs clean logits")
            return kl_loss(z, clean)

        return kl_objective
    if name in ("dlr-t", "dlr") and (targeted or name == "dlr-t"):
        _no_kwargs(name, kwargs)

        def dlr_t_objective(z: Tensor, y: Tensor, t: Tensor | None, clean: Tensor | None) -> Tensor:
            if t is None:
                raise ConfigError("the targeted DLR loss needs target=")
            return dlr_targeted_loss(z, y, t)

        return dlr_t_objective
    if name == "cw" and targeted:
        kappa = float(kwargs.pop("confidence", float("inf")))
        _no_kwargs(name, kwargs)

        def cw_t_objective(z: Tensor, y: Tensor, t: Tensor | None, clean: Tensor | None) -> Tensor:
            assert t is not None
            gap = -cw_loss(z, t, float("inf"))  # z_t − max_{i≠t} z_i
            return torch.clamp(gap, max=kappa) if kappa != float("inf") else gap

        return cw_t_objective
    try:
        fn = resolve_loss(name, **kwargs)
    except UnknownNameError:
        raise ConfigError(f"unknown attack loss {name!r}; valid: {', '.join(loss_names())}") from None
    except TypeError as exc:
        raise ConfigError(f"bad parameters {sorted(kwargs)} for loss {name!r}: {exc}") from None
    fn(torch.zeros(1, 10), torch.zeros(1, dtype=torch.long))  # dry run: bad values (γ > 1, ...) fail now
    return _wrap(fn, targeted)


def _no_kwargs(name: str, kwargs: Mapping[str, float]) -> None:
    if kwargs:
        raise ConfigError(f"loss {name!r} takes no parameters, got {sorted(kwargs)}")


def _wrap(fn: LossFn, targeted: bool) -> Objective:
    if targeted:

        def targeted_objective(z: Tensor, y: Tensor, t: Tensor | None, clean: Tensor | None) -> Tensor:
            assert t is not None
            return -fn(fp32(z), t)

        return targeted_objective

    def objective(z: Tensor, y: Tensor, t: Tensor | None, clean: Tensor | None) -> Tensor:
        return fn(fp32(z), y)

    return objective


def success_of(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Bool ``(N,)``: misclassified (untargeted) or classified as ``target`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred.eq(target) if target is not None else pred.ne(y)


def better(succ_new: Tensor, score_new: Tensor, succ_old: Tensor, score_old: Tensor) -> Tensor:
    """Per-example worst case: a success beats a failure; otherwise the higher score wins."""
    return (succ_new & ~succ_old) | ((succ_new == succ_old) & (score_new > score_old))


def eot_value_and_grad(
    model: nn.Module, x: Tensor, fn: Callable[[Tensor], Tensor], eot_iter: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Expectation over Transformation: ``(E[logits], E[fn(logits)], E[∇ₓ fn(logits)])``.

    Athalye, Carlini & Wagner, *Obfuscated Gradients Give a False Sense of Security*, ICML 2018,
    §4.3: against a randomized model f(t(x)), t ~ T, ascend ∇ₓ E_t[L(f(t(x)))] = E_t[∇ₓ L(f(t(x)))],
    estimated by averaging the gradient of ``eot_iter`` independent forwards (the official
    AutoAttack ``rand`` version uses 20: ``autopgd_base.py``, ``eot_iter``). With ``eot_iter = 1``
    this is one forward and one backward, the plain gradient. The returned logits (float32) and
    per-example values ``(N,)`` are averaged over the same draws, so success tests see the mean
    prediction rather than one lucky draw.

    ``fn`` maps logits ``(N, C)`` to a per-example objective ``(N,)``; gradients are not kept.
    """
    if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
        raise ConfigError(f"eot_iter must be an integer >= 1, got {eot_iter!r}")
    logits_sum = value_sum = grad_sum = None
    for _ in range(eot_iter):
        point = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            value = fn(logits)
            (grad,) = torch.autograd.grad(value.sum(), point)
        logits, value = fp32(logits.detach()), value.detach()
        if logits_sum is None:
            logits_sum, value_sum, grad_sum = logits, value, grad
        else:
            assert value_sum is not None and grad_sum is not None
            logits_sum, value_sum, grad_sum = logits_sum + logits, value_sum + value, grad_sum + grad
    assert logits_sum is not None and value_sum is not None and grad_sum is not None
    if eot_iter == 1:
        return logits_sum, value_sum, grad_sum
    return logits_sum / eot_iter, value_sum / eot_iter, grad_sum / eot_iter


def mean_logits(model: nn.Module, x: Tensor, draws: int = 1) -> Tensor:
    """float32 logits averaged over ``draws`` forwards (one forward when ``draws = 1``), no grad."""
    with torch.no_grad():
        total = fp32(model(x))
        for _ in range(draws - 1):
            total = total + fp32(model(x))
    return total / draws if draws > 1 else total


def accuracy_over_draws(model: nn.Module, x: Tensor, y: Tensor, draws: int = 20) -> Tensor:
    """Per example, the fraction of ``draws`` independent forwards that classify ``x`` as ``y``.

    How to score a randomized model (Athalye et al. 2018 §4.3 report accuracy over the
    randomness): its robust accuracy at ``x_adv`` is ``accuracy_over_draws(...).mean()``, the
    expected accuracy; one forward reads a single draw, which a lucky draw can flatter. For a
    deterministic model every value is 0 or 1 and equals the one-forward answer.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"draws must be an integer >= 1, got {draws!r}")
    with torch.no_grad():
        hits = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
        for _ in range(draws):
            hits += model(x).argmax(1).eq(y).float()
    return hits / draws


def is_stochastic(model: nn.Module, x: Tensor, *, repeats: int = 2, atol: float = 1e-6) -> bool:
    """True when the same input gives different logits across forwards (a randomized model).

    Compares ``repeats`` forwards of ``x`` (in the model's current mode) to the first one, with an
    absolute-and-relative tolerance ``atol`` so float reassociation in a deterministic model is
    not mistaken for randomness (AutoAttack ``checks.py: check_randomized``).
    """
    with torch.no_grad():
        first = fp32(model(x))
        for _ in range(max(1, repeats - 1)):
            again = fp32(model(x))
            if not torch.allclose(first, again, rtol=atol, atol=atol):
                return True
    return False


def noise_like(x: Tensor, kind: str, generator: torch.Generator | None, shared: bool) -> Tensor:
    """Standard noise shaped like ``x`` (``randn`` or ``rand``), drawn on the CPU generator.

    ``shared`` draws one pattern for the whole batch, so a seeded attack treats example i the
    same alone or inside a batch (AdverTorch ``test_attacks_running.py`` batch-consistency check).
    """
    if not shared:  # per-example noise follows the data-parallel global batch
        return draw_noise(kind, tuple(x.shape), generator, x, shared=False)
    return draw_noise(kind, (1, *x.shape[1:]), generator, x, shared=True).expand_as(x)


class ProjectedGradient(Attack):
    """Projected gradient ascent on a loss inside the threat model — the engine of SPEC §3.

    Sources: Madry et al. 2018 (PGD, eq. 2; the 2.5·ε/steps step rule of MadryLab's
    ``robustness`` library), Goodfellow et al. 2015 (FGSM = 1 step of size ε), Kurakin et al.
    2017 (BIM), Dong et al. 2018 (MI-FGSM momentum, Alg. 1), Zhang et al. 2019
    (``yodongyu/TRADES/trades.py``: KL objective summed over the batch, start x + 0.001·N(0, I)).

    Args:
        threat: norm and ε; ℓ∞ steps use sign(g), ℓ2 steps g/‖g‖₂ (``threat.steepest_step``).
        steps: number of gradient steps (≥ 1).
        step_size: absolute step α in pixel units of [0, 1] images; or
        rel_step: α = rel_step · ε (per example for a per-example ε). Default 2.5/steps (Madry).
        min_step: lower bound on α (RU Fig. 2 uses max(1/510, 2ε/k)).
        init: ``none`` (x), ``uniform`` (uniform in the ε-ball) or ``gaussian`` (x + σ·N(0, I)).
        sigma: standard deviation of the gaussian start.
        clamp_start: clamp the random start to the [0, 1] box (default). ``False`` takes the first
            gradient at the unclamped start, as the TRADES / MART scripts do
            (:meth:`ThreatModel.random_start`); later iterates are always clamped.
        restarts: independent runs; later runs attack only examples not yet fooled, and the
            per-example worst case is kept (success first, then the higher objective).
        loss: ``ce``, ``cw`` (κ via ``loss_kwargs={"confidence": κ}`` or ``"cw(50)"``), ``dlr``,
            ``dlr-t``, ``ls-ce(γ)``, ``entm(λ)``, ``kl`` or a callable ``f(logits, y) -> (N,)``.
        loss_kwargs: parameters of a named loss.
        targeted: require ``target=`` at call time; the target's loss is minimized (or the
            targeted form of ``cw`` / ``dlr`` maximized). Passing ``target=`` also switches on
            targeted mode for an attack built untargeted.
        early_stop: freeze an example at the first iterate that fools the model (per example,
            so batch results equal unbatched ones).
        momentum: μ of MI-FGSM (0 = plain PGD).
        select: ``last`` returns the final iterate (standard PGD); ``best`` the iterate with the
            highest objective among the fooling ones (one extra forward at the end).
        model_mode: ``eval`` (default) or ``train`` (BatchNorm batch statistics).
        seed: seeds random starts; a seeded attack is deterministic and batch-consistent.
        shared_noise: one random-start pattern for the whole batch (default: when seeded).
        eot_iter: Expectation over Transformation for randomized models (Athalye et al. 2018
            §4.3): each step's gradient, loss and logits are averaged over this many forwards
            (:func:`eot_value_and_grad`; default 1 = plain gradient).

    ``_search`` returns ``(x_adv, first)`` with the first iteration at which each example was
    fooled (0 = at the start point; iterations count on across restarts).

    Example:
        >>> from entrobust.attacks import ThreatModel
        >>> pgd = ProjectedGradient(ThreatModel("linf", 8 / 255), steps=10, rel_step=0.25)
        >>> x_adv = pgd(model, x, y)  # doctest: +SKIP
    """

    name = "projected-gradient"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        steps: int = 10,
        step_size: float | None = None,
        rel_step: float | None = None,
        min_step: float = 0.0,
        init: str = "uniform",
        sigma: float = 0.001,
        restarts: int = 1,
        loss: LossSpec = "ce",
        loss_kwargs: Mapping[str, float] | None = None,
        targeted: bool = False,
        early_stop: bool = False,
        momentum: float = 0.0,
        select: Literal["last", "best"] = "last",
        model_mode: ModelMode = "eval",
        seed: int | None = None,
        shared_noise: bool | None = None,
        eot_iter: int = 1,
        clamp_start: bool = True,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        self.clamp_start = bool(clamp_start)
        if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
            raise ConfigError(f"eot_iter must be an integer >= 1, got {eot_iter!r}")
        self.eot_iter = eot_iter
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if step_size is not None and rel_step is not None:
            raise ConfigError("give either step_size (absolute) or rel_step (× ε), not both")
        if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
            raise ConfigError(f"step_size must be > 0, got {step_size}")
        if rel_step is not None and not (math.isfinite(rel_step) and rel_step > 0):
            raise ConfigError(f"rel_step must be > 0, got {rel_step}")
        if not (math.isfinite(min_step) and min_step >= 0):
            raise ConfigError(f"min_step must be >= 0, got {min_step}")
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ConfigError(f"restarts must be an integer >= 1, got {restarts!r}")
        if not (math.isfinite(momentum) and momentum >= 0):
            raise ConfigError(f"momentum must be >= 0, got {momentum}")
        if select not in SELECTS:
            raise ConfigError(f"unknown select {select!r}; valid: {', '.join(SELECTS)}")
        self.steps = steps
        self.step_size = step_size
        self.rel_step = rel_step if (rel_step is not None or step_size is not None) else 2.5 / steps
        self.min_step = float(min_step)
        self.init = init
        self.sigma = float(sigma)
        self.restarts = restarts
        self.loss = loss
        self.loss_kwargs = dict(loss_kwargs or {})
        self.targeted = bool(targeted)
        self.early_stop = bool(early_stop)
        self.momentum = float(momentum)
        self.select = select
        self.shared_noise = shared_noise
        self.uses_clean = isinstance(loss, str) and parse_loss(loss)[0] == "kl"
        # build both objectives now so a bad loss fails at construction, not mid-evaluation
        if self.uses_clean and self.targeted:
            raise ConfigError("the kl (TRADES) loss is untargeted; it cannot be used with targeted=True")
        kw = self.loss_kwargs
        self._objectives = {
            False: None if targeted else make_objective(loss, targeted=False, loss_kwargs=kw),
            True: None if self.uses_clean else make_objective(loss, targeted=True, loss_kwargs=kw),
        }
        self.final_iteration = steps * restarts if restarts > 1 else steps

    # ------------------------------------------------------------------ pieces
    def objective(self, targeted: bool) -> Objective:
        """The maximized per-example objective for (un)targeted use."""
        obj = self._objectives[targeted]
        if obj is None:
            if targeted:
                raise ConfigError(f"loss {self.loss!r} cannot be used with target=")
            raise ConfigError(f"{self.name} is targeted: pass target=")
        return obj

    def step_sizes(self, threat: ThreatModel, x: Tensor) -> Tensor:
        """α per example, shape ``(N, 1, ..., 1)``."""
        if self.step_size is not None:
            alpha = torch.full_like(threat.eps_for(x), self.step_size)
        else:
            assert self.rel_step is not None
            alpha = threat.eps_for(x) * self.rel_step
        return alpha.clamp_min(self.min_step) if self.min_step > 0 else alpha

    def start(self, threat: ThreatModel, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """The start point x⁰ (inside the ε-ball; inside the box unless ``clamp_start=False``)."""
        shared = self.shared_noise if self.shared_noise is not None else self.seed is not None
        return threat.random_start(x, self.init, self.sigma, generator, shared=shared, clamp=self.clamp_start)

    def direction(
        self, grad: Tensor, threat: ThreatModel, velocity: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Unit ascent direction from the gradient; MI-FGSM accumulates ∇/‖∇‖₁ first."""
        if velocity is None:
            return threat.steepest_step(grad), None
        l1 = grad.flatten(1).abs().sum(dim=1)
        velocity = self.momentum * velocity + grad / (batch_view(l1, grad) + _TINY)
        return threat.steepest_step(velocity), velocity

    # ------------------------------------------------------------------ search
    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        objective = self.objective(target is not None)
        generator = self.generator()
        if self.restarts == 1:
            x_adv, first, _, _ = self.run(model, x, y, target, self.threat, objective, generator, offset=0)
            return x_adv, first
        best_x, first = x, torch.full_like(y, -1)
        best_succ = best_score = None
        for r in range(self.restarts):
            if r == 0:
                x_r, first, best_succ, best_score = self.run(
                    model, x, y, target, self.threat, objective, generator, offset=0, final=True
                )
                assert best_succ is not None and best_score is not None
                best_x = x_r
                continue
            assert best_succ is not None and best_score is not None
            index = (~best_succ).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            ts = target[index] if target is not None else None
            x_r, first_r, succ_r, score_r = self.run(
                model,
                x[index],
                y[index],
                ts,
                self.threat.subset(index),
                objective,
                generator,
                offset=r * self.steps,
                final=True,
            )
            assert succ_r is not None and score_r is not None
            take = better(succ_r, score_r, best_succ[index], best_score[index])
            best_x[index] = torch.where(batch_view(take, x_r), x_r, best_x[index])
            best_score[index] = torch.where(take, score_r, best_score[index])
            best_succ[index] = best_succ[index] | succ_r
            first[index] = torch.where(first[index] < 0, first_r, first[index])
        return best_x, first

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        threat: ThreatModel,
        objective: Objective,
        generator: torch.Generator | None,
        *,
        offset: int = 0,
        final: bool = False,
        x_start: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """One run of the loop on ``x`` (inside the base's frozen / grad-enabled context).

        Returns ``(x_adv, first, success, score)``; ``success`` / ``score`` (objective at the
        returned point) are computed only when ``final`` or ``select="best"`` (one extra forward).
        ``first`` counts iterations from ``offset``. Other attacks (APGD, ...) may call this.
        """
        alpha = self.step_sizes(threat, x)
        clean = None
        if self.uses_clean:
            with torch.no_grad():
                clean = model(x).detach()
        x_adv = (self.start(threat, x, generator) if x_start is None else x_start).detach()
        first = torch.full_like(y, -1)
        done = torch.zeros_like(y, dtype=torch.bool) if self.early_stop else None
        velocity = torch.zeros_like(x) if self.momentum > 0 else None
        keep_best = self.select == "best"
        best_x = best_succ = best_score = None
        for k in range(self.steps):
            logits, score, grad = eot_value_and_grad(
                model, x_adv, lambda z: objective(z, y, target, clean), self.eot_iter
            )
            with torch.no_grad():
                x_adv = x_adv.detach()
                succ = success_of(logits, y, target)
                first.masked_fill_(succ & first.lt(0), offset + k)
                if keep_best:
                    score = score.detach()
                    if best_x is None:
                        best_x, best_succ, best_score = x_adv, succ, score
                    else:
                        assert best_succ is not None and best_score is not None
                        take = better(succ, score, best_succ, best_score)
                        best_x = torch.where(batch_view(take, x_adv), x_adv, best_x)
                        best_succ, best_score = best_succ | succ, torch.where(take, score, best_score)
                d, velocity = self.direction(grad, threat, velocity)
                x_new = threat.project(x_adv + alpha * d, x)
                if done is not None:
                    done |= succ
                    x_new = torch.where(batch_view(done, x_new), x_adv, x_new)
                x_adv = x_new
        if not (final or keep_best):
            return x_adv, first, None, None
        with torch.no_grad():
            logits = mean_logits(model, x_adv, self.eot_iter)
            score = objective(logits, y, target, clean).detach()
            succ = success_of(logits, y, target)
            first.masked_fill_(succ & first.lt(0), offset + self.steps)
            if keep_best and best_x is not None:
                assert best_succ is not None and best_score is not None
                take = better(succ, score, best_succ, best_score)
                x_adv = torch.where(batch_view(take, x_adv), x_adv, best_x)
                succ, score = best_succ | succ, torch.where(take, score, best_score)
        return x_adv, first, succ, score

    def __repr__(self) -> str:
        step = f"step_size={self.step_size}" if self.step_size is not None else f"rel_step={self.rel_step}"
        return (
            f"{type(self).__name__}(name={self.name}, norm={self.threat.norm}, steps={self.steps}, {step}, "
            f"init={self.init}, restarts={self.restarts}, loss={self.loss!r})"
        )
