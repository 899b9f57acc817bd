"""Named gradient attacks built on the projected-gradient engine, plus ATENT and adaptive LS.

Registered names (``entrobust list attacks``):

=============  ===============================================================================
``fgsm``       Goodfellow et al. 2015: one step of size ε, no random start (ℓ2: fast gradient).
``bim``        Kurakin et al. 2017 (basic iterative method): 10 steps of ε/10, no random start.
``pgd``        Madry et al. 2018: uniform start, 40 steps of 2.5·ε/40.
``cw-pgd``     PGD on the CW margin loss with κ = 50 (as ``zjfheart/Friendly-Adversarial-Training``
               ``attack_generator.py``, which RU cites for its CW attack).
``mim``        Dong et al. 2018 (MI-FGSM): μ = 1.0, 10 steps of ε/10, no random start.
``entm-pgd``   PGD on CE − λ·H (RU eq. 5), the inner maximization of PAT-EntM.
``trades-kl``  PGD on KL(p(x) ‖ p(x′)) (TRADES ``trades.py``: start x + 0.001·N(0, I)).
``adaptive-ls`` RU §5.2: PGD on CE with labels smoothed by γ ∈ {0, 0.1, …, 1}, worst γ per example.
``atent``      Jagatap et al. 2021 (Table 6): the ATENT SGLD sampler used as an attack.
=============  ===============================================================================

and the RU families ``FGSM_k``, ``PGDp-k``, ``CWp-k`` (ε = k/255, see :func:`ru_pgd`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.attacks.base import Attack, ModelMode
from entrobust.attacks.engine import (
    LossSpec,
    ProjectedGradient,
    better,
    make_objective,
    noise_like,
    success_of,
)
from entrobust.attacks.langevin import Langevin
from entrobust.attacks.registry import ATTACKS, AttackFactory, register_pattern
from entrobust.attacks.threat import ThreatModel, batch_view
from entrobust.errors import ConfigError

ENGINE_OPTIONS: frozenset[str] = frozenset(inspect.signature(ProjectedGradient.__init__).parameters) - {
    "self",
    "threat",
}

Default = Any  # a value, or a callable of the resolved options (e.g. rel_step = f(steps))


def check_options(name: str, kwargs: Mapping[str, object], valid: frozenset[str] | set[str]) -> None:
    """Raise :class:`ConfigError` naming unknown keyword options of attack ``name``."""
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        valid_list = ", ".join(sorted(valid))
        raise ConfigError(f"unknown option(s) {unknown} for attack {name!r}; valid: {valid_list}")


def options_of(cls: type) -> set[str]:
    """Keyword options of an attack class's constructor (everything but ``threat``)."""
    return set(inspect.signature(cls).parameters) - {"self", "threat"}


def engine_factory(name: str, defaults: Mapping[str, Default], *, fixed: Sequence[str] = ()) -> AttackFactory:
    """A registry factory ``f(threat, **kw) -> ProjectedGradient`` with ``defaults``.

    A default may be a callable of the options resolved so far (for step sizes that depend on
    ``steps``); an explicit ``step_size`` drops the default ``rel_step``. Options in ``fixed``
    define the attack and cannot be overridden.
    """

    def factory(threat: ThreatModel, **kwargs: Any) -> Attack:
        check_options(name, kwargs, ENGINE_OPTIONS)
        clash = sorted(set(kwargs) & set(fixed))
        if clash:
            raise ConfigError(f"attack {name!r} fixes {clash}; use 'pgd' to change them")
        opts: dict[str, Any] = {}
        for key, value in defaults.items():
            if key in kwargs:
                continue
            if key == "rel_step" and "step_size" in kwargs:
                continue
            opts[key] = value({**opts, **kwargs}) if callable(value) else value
        opts.update(kwargs)
        attack = ProjectedGradient(threat, **opts)
        attack.name = name
        return attack

    factory.__name__ = name.replace("-", "_")
    return factory


def _steps(opts: Mapping[str, Any]) -> int:
    steps = opts.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


ATTACKS.register(
    "fgsm",
    engine_factory("fgsm", {"steps": 1, "rel_step": 1.0, "init": "none"}, fixed=("steps",)),
    help="FGSM (Goodfellow et al. 2015): one sign (ℓ∞) / normalized (ℓ2) step of size ε",
)
ATTACKS.register(
    "bim",
    engine_factory("bim", {"steps": 10, "rel_step": lambda o: 1.0 / _steps(o), "init": "none"}),
    help="BIM (Kurakin et al. 2017): iterative FGSM, 10 steps of ε/10, no random start",
)
ATTACKS.register(
    "pgd",
    engine_factory("pgd", {"steps": 40, "rel_step": lambda o: 2.5 / _steps(o), "init": "uniform"}),
    help="PGD (Madry et al. 2018): uniform start, 40 steps of 2.5·ε/40",
)
ATTACKS.register(
    "cw-pgd",
    engine_factory(
        "cw-pgd",
        {
            "steps": 40,
            "rel_step": lambda o: 2.5 / _steps(o),
            "init": "uniform",
            "loss": "cw",
            "loss_kwargs": {"confidence": 50.0},
        },
    ),
    help="PGD on the CW margin loss min(max_{i≠y} z_i − z_y, κ), κ = 50 (FAT attack_generator.py)",
)
ATTACKS.register(
    "mim",
    engine_factory(
        "mim", {"steps": 10, "rel_step": lambda o: 1.0 / _steps(o), "init": "none", "momentum": 1.0}
    ),
    help="MI-FGSM (Dong et al. 2018): momentum μ = 1.0, 10 steps of ε/10",
)
ATTACKS.register(
    "entm-pgd",
    engine_factory(
        "entm-pgd",
        {"steps": 10, "rel_step": lambda o: 2.5 / _steps(o), "init": "uniform", "loss": "entm"},
    ),
    help="PGD on CE − λ·entropy (RU eq. 5), PAT-EntM's inner maximization",
)
ATTACKS.register(
    "trades-kl",
    engine_factory(
        "trades-kl",
        {"steps": 10, "rel_step": 0.007 / 0.031, "init": "gaussian", "sigma": 0.001, "loss": "kl"},
    ),
    help="TRADES inner attack: KL(p(x)‖p(x')) summed over the batch, start x + 0.001·N(0, I)",
)


# ---------------------------------------------------------------------------- RU name families
def ru_pgd(threat: ThreatModel, **kwargs: Any) -> Attack:
    """RU ``PGDp-k`` (Ju et al. 2020, §5.1): p steps of ε/10 ("step size k/2550"), Gaussian start
    x + N(0, 0.005) — 0.005 read as the standard deviation σ, as SPEC §Conventions states — and 5
    restarts keeping the worst restart per example."""
    return engine_factory(
        "PGD",
        {"steps": 10, "rel_step": 0.1, "init": "gaussian", "sigma": 0.005, "restarts": 5},
    )(threat, **kwargs)


def ru_cw(threat: ThreatModel, **kwargs: Any) -> Attack:
    """RU ``CWp-k``: :func:`ru_pgd` with the CW margin loss, κ = 50 (FAT ``cwloss``)."""
    kwargs.setdefault("loss", "cw")
    kwargs.setdefault("loss_kwargs", {"confidence": 50.0})
    return ru_pgd(threat, **kwargs)


def _eps_k(text: str) -> float:
    return float(text) / 255.0


@register_pattern(r"FGSM_(\d+(?:\.\d+)?)", example="FGSM_8", help="FGSM with ε = k/255 (RU notation)")
def _fgsm_family(m: Any) -> tuple[ThreatModel, AttackFactory, dict[str, object]]:
    def build(threat: ThreatModel, **kw: Any) -> Attack:
        attack = ATTACKS.get("fgsm")(threat, **kw)
        attack.name = m.group(0)
        return attack

    return ThreatModel("linf", _eps_k(m.group(1))), build, {}


@register_pattern(
    r"PGD(\d+)-(\d+(?:\.\d+)?)",
    example="PGD20-8",
    help="p-step PGD, ε = k/255, step ε/10, start x + N(0, σ=0.005), 5 restarts (RU notation)",
)
def _pgd_family(m: Any) -> tuple[ThreatModel, AttackFactory, dict[str, object]]:
    def build(threat: ThreatModel, **kw: Any) -> Attack:
        attack = ru_pgd(threat, **kw)
        attack.name = m.group(0)
        return attack

    return ThreatModel("linf", _eps_k(m.group(2))), build, {"steps": int(m.group(1))}


@register_pattern(
    r"CW(\d+)-(\d+(?:\.\d+)?)",
    example="CW20-8",
    help="PGDp-k with the CW margin loss, κ = 50 (RU notation)",
)
def _cw_family(m: Any) -> tuple[ThreatModel, AttackFactory, dict[str, object]]:
    def build(threat: ThreatModel, **kw: Any) -> Attack:
        attack = ru_cw(threat, **kw)
        attack.name = m.group(0)
        return attack

    return ThreatModel("linf", _eps_k(m.group(2))), build, {"steps": int(m.group(1))}


# ------------------------------------------------------------------------------- adaptive LS
#: RU §5.2: "the best parameter γ ... from [0, 1] at an interval of 0.1"
LS_GAMMAS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class AdaptiveLS(Attack):
    """The adaptive attack against label smoothing / EntM of RU §5.2 ("Adaptive Attacks").

    Runs PGD with the label-smoothed CE loss L = −Σ_c ỹ_c log p_c, ỹ = (1 − γ)·onehot(y) + γ/C
    (RU eq. 6 as the attack objective L_atk of eq. 1) for every γ in ``gammas`` (default
    {0, 0.1, …, 1.0}); each γ attacks only the examples every earlier γ failed on, and the per-
    example worst case is kept (a fooling point first, otherwise the lowest margin z_y − max z_i).

    Args:
        threat: norm and ε.
        gammas: smoothing values to try, each in [0, 1].
        steps: PGD steps per γ (RU Fig. 2 varies 8…256).
        step_size / rel_step: PGD step; default α = max(1/510, 2ε/steps) as in RU Fig. 2.
        init, sigma, restarts: as in :class:`~entrobust.attacks.engine.ProjectedGradient`.

    Example:
        >>> ls = build_attack("adaptive-ls", ThreatModel("linf", 8 / 255), steps=100)  # doctest: +SKIP
    """

    name = "adaptive-ls"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        gammas: Sequence[float] = LS_GAMMAS,
        steps: int = 40,
        step_size: float | None = None,
        rel_step: float | None = None,
        init: str = "uniform",
        sigma: float = 0.001,
        restarts: int = 1,
        early_stop: bool = False,
        model_mode: ModelMode = "eval",
        seed: int | None = None,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        gammas = tuple(float(g) for g in gammas)
        if not gammas or any(not 0.0 <= g <= 1.0 for g in gammas):
            raise ConfigError(f"gammas must be a non-empty list of values in [0, 1], got {list(gammas)}")
        if step_size is None and rel_step is None:
            rel_step, min_step = 2.0 / max(int(steps), 1), 1.0 / 510
        else:
            min_step = 0.0
        self.gammas = gammas
        #: engine options shared by every γ (the threat is set per call: a subset may remain)
        self.options: dict[str, Any] = {
            "steps": steps,
            "step_size": step_size,
            "rel_step": rel_step,
            "min_step": min_step,
            "init": init,
            "sigma": sigma,
            "restarts": restarts,
            "early_stop": early_stop,
            "model_mode": model_mode,
            "seed": seed,
        }
        self.pgd(threat, 0.0)  # validate the options now

    def pgd(self, threat: ThreatModel, gamma: float) -> ProjectedGradient:
        """The PGD attack on ls-ce(γ) used for one γ."""
        return ProjectedGradient(threat, loss="ls-ce", loss_kwargs={"gamma": gamma}, **self.options)

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        if target is not None:
            raise ConfigError("adaptive-ls is untargeted")
        best_x = x.clone()
        best_succ = torch.zeros_like(y, dtype=torch.bool)
        best_score = torch.full(y.shape, -math.inf, device=x.device, dtype=x.dtype)
        first = torch.full_like(y, -1)
        for i, gamma in enumerate(self.gammas):
            index = (~best_succ).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            attack = self.pgd(self.threat.subset(index), gamma)
            res = attack(model, x[index], y[index], return_info=True)
            score = -res.margin
            take = better(res.success, score, best_succ[index], best_score[index])
            best_x[index] = torch.where(batch_view(take, x[index]), res.x_adv, best_x[index])
            best_score[index] = torch.where(take, score, best_score[index])
            newly = res.success & ~best_succ[index]
            offset = i * (attack.steps * attack.restarts)
            first[index] = torch.where(newly, res.first_success + offset, first[index])
            best_succ[index] = best_succ[index] | res.success
        return best_x, first


def _adaptive_ls(threat: ThreatModel, **kwargs: Any) -> Attack:
    """RU §5.2 adaptive attack: PGD with label-smoothed CE, γ ∈ {0, 0.1, …, 1}, worst per example."""
    check_options("adaptive-ls", kwargs, options_of(AdaptiveLS))
    return AdaptiveLS(threat, **kwargs)


ATTACKS.register("adaptive-ls", _adaptive_ls)


# ------------------------------------------------------------------------------------ ATENT
class ATENT(Attack):
    """The ATENT SGLD sampler used as an attack (Jagatap et al. 2021, §B.3 and Table 6).

    Follows ``GauriJagatap/StochAT`` ``adversarial/functional.py`` (``_langevin_samples``) and
    ``notebooks/ATENT_as_attack.ipynb``:

    * ℓ∞ (Alg. 2 / eq. 11): start x + ε·sign(N(0, I)); each step
      x′ ← x′ + α·sign(∇L) + ε_n·√(2α)·N(0, I), clamped to the box; projection onto the ε-ball only
      at the last step (``project="last"``, the CIFAR code) or at every step (``"every"``, MNIST);
    * ℓ2 (Alg. 1 / eq. 8): start x + ε·g/‖g‖₂ (N(0, I) projected onto the ball); each step
      x′ ← x′ + α·∇L/‖∇L‖₂ + γ·(x − x′) + ε_n·√(2α)·N(0, I) — the pull-back γ replaces the
      projection, which the attack applies at the end.

    The start and steps are :class:`~entrobust.attacks.langevin.Langevin`, the dynamics the
    training sampler (:class:`~entrobust.training.adversaries.ATENTSampler`) uses too, here with
    the attack's seeded noise source and a per-example step α.

    The reference returns the last sample; ``keep="best"`` (default, as asked of an attack)
    returns per example the visited (projected) sample that fools the model, else the one with
    the highest loss. ATENT-20 uses the PGD-20 configuration (20 steps; step 0.003 at ε = 0.031,
    i.e. ``rel_step`` ≈ 0.1, the default).

    Args:
        threat: norm and ε.
        steps: Langevin steps L.
        step_size / rel_step: α (absolute, or × ε; default 0.1·ε).
        noise: ε_n, the noise scale (reference: 1e-3); noise std is ε_n·√(2α).
        gamma: ℓ2 pull-back strength γ (reference default 1e-3; 0.05 in ℓ2 training).
        project: ``last`` or ``every`` (ℓ∞ projection schedule).
        keep: ``best`` or ``last``.
        loss: any engine loss (default ``ce``).

    Example:
        >>> atent = build_attack("atent", ThreatModel("linf", 8 / 255), steps=20)  # doctest: +SKIP
    """

    name = "atent"

    def __init__(
        self,
        threat: ThreatModel,
        *,
        steps: int = 20,
        step_size: float | None = None,
        rel_step: float | None = None,
        noise: float = 1e-3,
        gamma: float = 1e-3,
        project: str = "last",
        keep: str = "best",
        loss: LossSpec = "ce",
        model_mode: ModelMode = "eval",
        seed: int | None = None,
        shared_noise: bool | None = None,
    ) -> None:
        super().__init__(threat, model_mode=model_mode, seed=seed)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if step_size is not None and rel_step is not None:
            raise ConfigError("give either step_size or rel_step, not both")
        for label, value in (("step_size", step_size), ("rel_step", rel_step)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{label} must be > 0, got {value}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ConfigError(f"noise must be >= 0, got {noise}")
        if not (math.isfinite(gamma) and 0 <= gamma <= 1):
            raise ConfigError(f"gamma must be in [0, 1], got {gamma}")
        if project not in ("last", "every"):
            raise ConfigError(f"project must be 'last' or 'every', got {project!r}")
        if keep not in ("best", "last"):
            raise ConfigError(f"keep must be 'best' or 'last', got {keep!r}")
        self.steps = steps
        self.step_size = step_size
        self.rel_step = rel_step if (rel_step is not None or step_size is not None) else 0.1
        self.noise = float(noise)
        self.gamma = float(gamma)
        self.project = project
        self.keep = keep
        self.loss = loss
        self.shared_noise = shared_noise
        self._objective = make_objective(loss)
        self.final_iteration = steps

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        if target is not None:
            raise ConfigError("atent is untargeted")
        threat = self.threat
        gen = self.generator()
        shared = self.shared_noise if self.shared_noise is not None else self.seed is not None
        eps = threat.eps_for(x)
        if self.step_size is not None:
            alpha = torch.full_like(eps, self.step_size)
        else:
            alpha = eps * float(self.rel_step or 0.1)
        feasible_iterates = threat.norm == "linf" and self.project == "every"
        dynamics = Langevin(  # ℓ2: the pull-back replaces the projection, applied at the end
            threat,
            alpha,
            noise=self.noise,
            pull=self.gamma if threat.norm == "l2" else 0.0,
            init="sign" if threat.norm == "linf" else "surface",
            project=self.project if threat.norm == "linf" else "none",
        )

        def draw(like: Tensor) -> Tensor:
            return noise_like(like, "normal", gen, shared)

        x_adv = dynamics.start(x, draw)
        if feasible_iterates:
            x_adv = threat.project(x_adv, x)
        best_x = threat.project(x_adv, x)
        best_succ = torch.zeros_like(y, dtype=torch.bool)
        best_score = torch.full(y.shape, -math.inf, device=x.device, dtype=x.dtype)
        first = torch.full_like(y, -1)

        def consider(candidate: Tensor, logits: Tensor, k: int) -> None:
            nonlocal best_x, best_succ, best_score
            score = self._objective(logits, y, None, None).detach()
            succ = success_of(logits, y, None)
            first.masked_fill_(succ & first.lt(0), k)
            take = better(succ, score, best_succ, best_score)
            best_x = torch.where(batch_view(take, candidate), candidate, best_x)
            best_succ, best_score = best_succ | succ, torch.where(take, score, best_score)

        for k in range(self.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            score = self._objective(logits, y, None, None)
            (grad,) = torch.autograd.grad(score.sum(), x_adv)
            with torch.no_grad():
                x_adv = x_adv.detach()
                if self.keep == "best":
                    if feasible_iterates:
                        consider(x_adv, logits.detach(), k)
                    else:
                        projected = threat.project(x_adv, x)
                        consider(projected, model(projected), k)
                x_adv = dynamics.step(x, x_adv, grad, k == self.steps - 1, draw)
        with torch.no_grad():
            final = threat.project(x_adv, x)
            if self.keep == "last":
                return final, first
            consider(final, model(final), self.steps)
        return best_x, first


def _atent(threat: ThreatModel, **kwargs: Any) -> Attack:
    """ATENT SGLD sampler as an attack (Jagatap et al. 2021, Table 6; StochAT functional.py)."""
    check_options("atent", kwargs, options_of(ATENT))
    return ATENT(threat, **kwargs)


ATTACKS.register("atent", _atent)
