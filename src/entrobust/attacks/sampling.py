"""Gradient-free attacks: random search in the ε-ball, noise baselines and black-box transfer.

``random-search`` is the obfuscation check of RU App. C.1 (10,000 random samples per image):
if random points of the ball fool a model that PGD could not fool, its gradients are masked.
``noise`` is the usual random-noise baseline; ``transfer`` crafts adversarial examples on a
surrogate model and hands them to the target (RU §5.1 black-box setting, Papernot et al. 2017).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.attacks.base import Attack, LowPrecisionForward, ModelMode
from entrobust.attacks.engine import LossSpec, better, make_objective, success_of
from entrobust.attacks.gradient import check_options, options_of
from entrobust.attacks.registry import ATTACKS, build_attack
from entrobust.attacks.threat import ThreatModel, flat_norm
from entrobust.errors import ConfigError

NOISE_KINDS: tuple[str, ...] = ("gaussian", "uniform")


def _count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _unit_norm(g: Tensor) -> Tensor:
    n = flat_norm(g, "l2").clamp_min(1e-12)
    return g / n.view(-1, *([1] * (g.dim() - 1)))


class SampleSearch(Attack):
    """Shared loop of the sampling attacks: try ``n`` perturbations per example, in chunks.

    Every example is tried with the same sequence of perturbation patterns (scaled by its own ε),
    so a seeded search gives the same result for an example alone or inside a batch. Per example
    the first sample that fools the model is kept; failing that, the sample with the highest loss.
    Examples already fooled leave the search. Evaluation runs under ``no_grad`` in forwards of at
    most ``max_batch`` images. ``first_success`` reports the number of samples tried (1-based).
    """

    def __init__(
        self,
        threat: ThreatModel,
        *,
        n: int,
        chunk: int = 100,
        max_batch: int = 4096,
        loss: LossSpec = "ce",
        model_mode: ModelMode = "eval",
        seed: int | None = None,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        _count("n", n)
        _count("chunk", chunk)
        _count("max_batch", max_batch)
        self.n = n
        self.chunk = chunk
        self.max_batch = max_batch
        if isinstance(loss, str) and loss.strip() == "kl":
            raise ConfigError(f"{self.name} cannot use the kl loss; pick ce, cw, dlr, ...")
        self.loss = loss
        make_objective(loss)  # validate now

    def perturbations(self, m: int, x: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        """``m`` perturbations for every example: shape ``(N, m, ...)``, inside each ε-ball."""
        raise NotImplementedError

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        objective = make_objective(self.loss, targeted=target is not None)
        gen = self.generator()
        eps_all = self.threat.eps_for(x)
        best_x = x.clone()
        best_succ = torch.zeros_like(y, dtype=torch.bool)
        best_score = torch.full(y.shape, -math.inf, device=x.device, dtype=x.dtype)
        first = torch.full_like(y, -1)
        drawn = 0
        with torch.no_grad():
            while drawn < self.n:
                m = min(self.chunk, self.n - drawn)
                index = (~best_succ).nonzero().squeeze(1)
                if index.numel() == 0:
                    break
                xs, eps = x[index], eps_all[index]
                delta = self.perturbations(m, xs, eps, gen)  # (k, m, ...)
                cand = (xs[:, None] + delta).clamp(self.threat.lower, self.threat.upper)
                flat = cand.flatten(0, 1)
                ys = y[index].repeat_interleave(m)
                ts = target[index].repeat_interleave(m) if target is not None else None
                scores, succs = [], []
                for s in range(0, flat.shape[0], self.max_batch):
                    logits = model(flat[s : s + self.max_batch])
                    sl = slice(s, s + self.max_batch)
                    scores.append(objective(logits, ys[sl], ts[sl] if ts is not None else None, None))
                    succs.append(success_of(logits, ys[sl], ts[sl] if ts is not None else None))
                score = torch.cat(scores).view(-1, m).to(x.dtype)
                succ = torch.cat(succs).view(-1, m)
                any_succ = succ.any(dim=1)
                # first fooling sample, otherwise the highest-scoring one
                pick = torch.where(any_succ, succ.to(torch.int8).argmax(dim=1), score.argmax(dim=1))
                rows = torch.arange(index.numel(), device=x.device)
                pick_score = score[rows, pick]
                take = better(any_succ, pick_score, best_succ[index], best_score[index])
                best_x[index] = torch.where(
                    take.view(-1, *([1] * (x.dim() - 1))), cand[rows, pick], best_x[index]
                )
                best_score[index] = torch.where(take, pick_score, best_score[index])
                first[index] = torch.where(any_succ, drawn + pick + 1, first[index])
                best_succ[index] = best_succ[index] | any_succ
                drawn += m
        return best_x, first


def _scale(unit: Tensor, eps: Tensor) -> Tensor:
    """``unit`` ``(m, ...)`` times each example's ε ``(k, 1, ...)`` → ``(k, m, ...)``."""
    return unit[None] * eps[:, None]


class RandomSearch(SampleSearch):
    """``random-search``: RU App. C.1 — N random points of the ε-ball per image.

    Samples are drawn uniformly inside the ε-ball or on its "vertices" (ℓ∞: the corners x ± ε,
    a random sign per pixel; ℓ2: the sphere of radius ε), each with probability 1/2
    (``vertex_fraction``), then clamped to the box. Per example the first fooling sample is kept,
    else the one with the highest loss (CE by default). The paper used N = 10,000 on 1,000
    CIFAR-10 test images.

    Args:
        threat: ℓ∞ or ℓ2 threat model.
        n: samples per example (default 10,000).
        chunk: samples drawn and evaluated per round; max_batch: images per forward.
        vertex_fraction: probability that a sample lies on the vertices / sphere.
        loss: score for the non-fooling fallback.
        seed: fixes the sample sequence (results are then deterministic and batch-consistent).

    Example:
        >>> rs = build_attack("random-search", ThreatModel("linf", 8 / 255), seed=0)  # doctest: +SKIP
    """

    name = "random-search"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        n: int = 10_000,
        chunk: int = 100,
        max_batch: int = 4096,
        vertex_fraction: float = 0.5,
        loss: LossSpec = "ce",
        model_mode: ModelMode = "eval",
        seed: int | None = None,
    ) -> None:
        super().__init__(
            threat, n=n, chunk=chunk, max_batch=max_batch, loss=loss, model_mode=model_mode, seed=seed
        )
        if not 0.0 <= vertex_fraction <= 1.0:
            raise ConfigError(f"vertex_fraction must be in [0, 1], got {vertex_fraction}")
        self.vertex_fraction = float(vertex_fraction)

    def perturbations(self, m: int, x: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        shape = (m, *x.shape[1:])
        opts: dict[str, Any] = {"generator": generator, "device": "cpu", "dtype": x.dtype}
        vertex = torch.rand(m, **opts) < self.vertex_fraction
        view = (-1, *([1] * (len(shape) - 1)))
        if self.threat.norm == "linf":
            u = torch.rand(shape, **opts) * 2 - 1
            unit = torch.where(vertex.view(view), u.sign(), u)
        else:
            g = _unit_norm(torch.randn(shape, **opts))
            r = torch.rand(m, **opts).pow(1.0 / x[0].numel())
            unit = g * torch.where(vertex, torch.ones_like(r), r).view(view)
        return _scale(unit.to(x.device), eps)


class Noise(SampleSearch):
    """``noise``: random-noise baseline — ``n`` noisy copies per example, the worst one kept.

    ``kind="gaussian"``: x + σ·N(0, I) clipped to the ε-ball, σ = ``sigma`` (absolute) or, by
    default, ε for ℓ∞ and ε/√d for ℓ2 (so the expected norm is about ε). ``kind="uniform"``:
    uniform in the ε-ball. A model that noise fools but PGD does not is masking its gradients.

    Example:
        >>> noise = build_attack("noise", ThreatModel("linf", 0.3), kind="uniform", n=10)  # doctest: +SKIP
    """

    name = "noise"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        kind: str = "gaussian",
        n: int = 1,
        sigma: float | None = None,
        chunk: int = 100,
        max_batch: int = 4096,
        loss: LossSpec = "ce",
        model_mode: ModelMode = "eval",
        seed: int | None = None,
    ) -> None:
        super().__init__(
            threat, n=n, chunk=chunk, max_batch=max_batch, loss=loss, model_mode=model_mode, seed=seed
        )
        if kind not in NOISE_KINDS:
            raise ConfigError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
        if sigma is not None and not (math.isfinite(sigma) and sigma >= 0):
            raise ConfigError(f"sigma must be >= 0, got {sigma}")
        self.kind = kind
        self.sigma = sigma

    def perturbations(self, m: int, x: Tensor, eps: Tensor, generator: torch.Generator | None) -> Tensor:
        shape = (m, *x.shape[1:])
        opts: dict[str, Any] = {"generator": generator, "device": "cpu", "dtype": x.dtype}
        d = x[0].numel()
        if self.kind == "uniform":
            view = (-1, *([1] * (len(shape) - 1)))
            if self.threat.norm == "linf":
                unit = torch.rand(shape, **opts) * 2 - 1
            else:
                unit = _unit_norm(torch.randn(shape, **opts)) * torch.rand(m, **opts).pow(1.0 / d).view(view)
            return _scale(unit.to(x.device), eps)
        g = torch.randn(shape, **opts).to(x.device)[None]  # (1, m, ...)
        if self.sigma is not None:
            delta = g * self.sigma
        else:
            delta = g * (eps if self.threat.norm == "linf" else eps / math.sqrt(d))[:, None]
        delta = delta.expand(eps.shape[0], *delta.shape[1:])
        e = eps[:, None]  # (k, 1, 1, ...)
        if self.threat.norm == "linf":
            return torch.maximum(torch.minimum(delta, e), -e)
        norms = delta.flatten(2).norm(dim=2).view(*delta.shape[:2], *([1] * (delta.dim() - 2)))
        return delta * torch.clamp(e / (norms + 1e-12), max=1.0)


class Transfer(Attack):
    """``transfer``: black-box transfer attack (Papernot et al. 2017; RU §5.1 "Black-Box").

    Crafts adversarial examples on ``surrogate`` with ``attack`` (a registered name or an
    :class:`Attack`) and returns them for evaluation on the target model, which is never queried
    during the search. The surrogate gets the same safety guarantees as any attacked model (the
    inner attack's call runs it frozen, in its own mode, restored afterwards).

    Args:
        threat: the threat model (the inner attack is built with it).
        surrogate: the model to craft on (RU: a Normal model for defenses without AT, a PAT model
            for defenses with AT).
        attack: attack name or instance (default ``pgd``); ``**kwargs`` go to its factory.

    Example:
        >>> tr = build_attack("transfer", ThreatModel("linf", 8 / 255), surrogate=proxy,
        ...                   attack="PGD10-8")  # doctest: +SKIP
    """

    name = "transfer"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        surrogate: nn.Module,
        attack: str | Attack = "pgd",
        model_mode: ModelMode = "eval",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if not isinstance(surrogate, nn.Module):
            raise ConfigError("transfer needs surrogate=<nn.Module> to craft the adversarial examples on")
        if isinstance(attack, Attack):
            if kwargs:
                raise ConfigError(f"options {sorted(kwargs)} only apply when attack is given by name")
        elif isinstance(attack, str):
            if attack == "transfer":
                raise ConfigError("transfer cannot wrap itself")
            if seed is not None and "seed" not in kwargs:
                kwargs["seed"] = seed
            build_attack(attack, threat, **kwargs)  # validate the name and options now
        else:
            raise ConfigError(f"attack must be a name or an Attack, got {type(attack).__name__}")
        self.attack = attack
        self.options = kwargs
        self.surrogate = surrogate

    def inner(self) -> Attack:
        """The attack run on the surrogate; a named one is built for this call's threat model
        (a caller may have replaced ``threat`` by a per-example subset)."""
        if isinstance(self.attack, Attack):
            return self.attack
        return build_attack(self.attack, self.threat, **self.options)

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        surrogate = self.surrogate
        if isinstance(model, LowPrecisionForward):  # called under autocast: the surrogate too
            surrogate = LowPrecisionForward(surrogate, model.device_type, model.dtype)
        return self.inner()(surrogate, x, y, target=target)


def _random_search(threat: ThreatModel, **kwargs: Any) -> Attack:
    """Random search in the ε-ball and on its vertices (RU App. C.1), N = 10,000 samples."""
    check_options("random-search", kwargs, options_of(RandomSearch))
    return RandomSearch(threat, **kwargs)


def _noise(threat: ThreatModel, **kwargs: Any) -> Attack:
    """Gaussian / uniform random-noise baseline (worst of n draws)."""
    check_options("noise", kwargs, options_of(Noise))
    return Noise(threat, **kwargs)


def _transfer(threat: ThreatModel, surrogate: nn.Module | None = None, **kwargs: Any) -> Attack:
    """Black-box transfer: craft on surrogate= with attack= (default pgd), evaluate on the target."""
    if surrogate is None:
        raise ConfigError("attack 'transfer' needs surrogate=<nn.Module>")
    return Transfer(threat, surrogate=surrogate, **kwargs)


ATTACKS.register("random-search", _random_search)
ATTACKS.register("noise", _noise)
ATTACKS.register("transfer", _transfer)
