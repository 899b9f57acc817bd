"""Training objectives: pure functions of logits (STYLE rule 6), registered in :data:`OBJECTIVES`.

Every objective takes logits (and labels), returns a loss with an explicit ``reduction``
(``"mean"`` over examples — the default —, ``"sum"`` or ``"none"`` for per-example values) and
never touches the model. Four input shapes occur, recorded in :attr:`ObjectiveSpec.inputs`:

* ``"logits"``  — ``f(logits [N, C], y)``: :func:`ce`, :func:`entm`, :func:`ls`;
* ``"pair"``    — ``f(clean [N, C], adv [N, C], y)``: :func:`trades`, :func:`mart`;
* ``"members"`` — ``f(member_logits [K, N, C], y)``: :func:`adp` (an ensemble's members);
* ``"samples"`` — ``f(sample_logits [L, N, C], y)``: :func:`atent` (the SGLD samples of ATENT).

Notation: p = softmax(z), H(p) = −Σ_c p_c log p_c (nats), u_C the uniform distribution on C
classes, KL(p ‖ q) = Σ_c p_c log(p_c / q_c). H, KL and max_{i≠y} come from :mod:`entrobust.losses`,
shared with the attack losses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from entrobust.errors import ConfigError
from entrobust.losses import entropy_of_log_probs, kl_divergence, other_max
from entrobust.registry import Registry

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")

# constants read from the reference implementations (cited where used)
MART_BCE_OFFSET = 1.0001  # YisenWang/MART mart.py: log(1.0001 − p_adv,k + 1e-12)
MART_WEIGHT_OFFSET = 1.0000001  # YisenWang/MART mart.py: (1.0000001 − p_clean,y)
LOG_EPS = 1e-12  # YisenWang/MART mart.py, inside its logs
ADP_LOG_OFFSET = 1e-20  # P2333/Adaptive-Diversity-Promoting utils.py: log_offset (entropy)
ADP_DET_OFFSET = 1e-6  # P2333/Adaptive-Diversity-Promoting utils.py: det_offset (log-det jitter)


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` to per-example ``values`` ``(N,)``: mean over examples, sum, or none."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ConfigError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


# --------------------------------------------------------------------------- single-logit objectives
def ce(logits: Tensor, y: Tensor, *, reduction: str = "mean") -> Tensor:
    """Cross-entropy CE(p, y) = −log p_y  (RU eq. 2 with α = 1; the Normal model)."""
    return reduce(F.cross_entropy(logits, y, reduction="none"), reduction)


def entm(logits: Tensor, y: Tensor, *, lam: float = 2.0, reduction: str = "mean") -> Tensor:
    """Entropy maximization L_entm = CE(p, y) − λ·H(p)  (RU eq. 4; PAT-EntM eq. 5).

    λ = 2 on every dataset in RU (following ADP's entropy weight). Equivalently
    L_entm = CE + λ·KL(p ‖ u_C) − λ·log C (RU eq. 8).
    """
    logp = F.log_softmax(logits, dim=-1)
    return reduce(F.nll_loss(logp, y, reduction="none") - lam * entropy_of_log_probs(logp), reduction)


def ls(logits: Tensor, y: Tensor, *, gamma: float = 0.74, reduction: str = "mean") -> Tensor:
    """Label smoothing L_smooth = CE(p, y − γ(y − u_C))  (RU eq. 6).

    The target is (1 − γ)·onehot(y) + γ/C. RU uses γ = 0.74 (CIFAR-10, SVHN) and 0.84 (CIFAR-100),
    chosen so that the non-maximal predictions match EntM's. Equivalently
    L_smooth = (1 − γ)·CE + γ·KL(u_C ‖ p) + γ·log C (RU eq. 7).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"ls gamma must be in [0, 1], got {gamma}")
    logp = F.log_softmax(logits, dim=-1)
    nll = F.nll_loss(logp, y, reduction="none")
    uniform = -logp.mean(dim=-1)  # CE against u_C
    return reduce((1.0 - gamma) * nll + gamma * uniform, reduction)


BASES: dict[str, Callable[..., Tensor]] = {"ce": ce, "entm": entm, "ls": ls}
"""Single-logit objectives usable as the ``base`` of :func:`trades` and :func:`atent`."""


def _base(name: str) -> Callable[..., Tensor]:
    try:
        return BASES[name]
    except KeyError:
        raise ConfigError(f"unknown base objective {name!r}; valid: {', '.join(BASES)}") from None


# --------------------------------------------------------------------------- pair objectives
def trades(
    clean_logits: Tensor,
    adv_logits: Tensor,
    y: Tensor,
    *,
    beta: float = 6.0,
    base: str = "ce",
    reduction: str = "mean",
    **base_kwargs: float,
) -> Tensor:
    """TRADES: base(p_clean, y) + β·KL(p_clean ‖ p_adv)  (Zhang et al. 2019; RU eq. 3).

    The KL term is summed over classes and averaged over the batch — PyTorch's ``"batchmean"``,
    as ``yaodongyu/TRADES`` trades.py does (``KLDivLoss(size_average=False) / batch_size``); never
    KLDivLoss's ``"mean"``, which also divides by C. The clean prediction is *not* detached.
    β = 6 is TRADES' CIFAR default, RU uses β = 3, MNIST β = 1. ``base="entm"`` (with ``lam``)
    gives TRADES-EntM (RU App. E), ``base="ls"`` (with ``gamma``) TRADES with label smoothing.
    """
    fn = _base(base)
    per_example = fn(clean_logits, y, reduction="none", **base_kwargs)
    return reduce(per_example + beta * kl_divergence(clean_logits, adv_logits), reduction)


def mart(
    clean_logits: Tensor, adv_logits: Tensor, y: Tensor, *, beta: float = 6.0, reduction: str = "mean"
) -> Tensor:
    """MART (Wang et al. 2020): BCE(p_adv, y) + β·KL(p_clean ‖ p_adv)·(1 − p_clean,y).

    BCE = CE(p_adv, y) − log(1.0001 − max_{k≠y} p_adv,k); the KL is summed over classes and
    weighted per example by the clean misclassification confidence. Constants as in
    ``YisenWang/MART`` mart.py: 1.0001, the 1e-12 inside the logs, and 1.0000001 in the weight.
    β = 6 (WRN) or 5 (ResNet-18). Neither prediction is detached.
    """
    p_adv = F.softmax(adv_logits, dim=-1)
    p_clean = F.softmax(clean_logits, dim=-1)
    other = other_max(p_adv, y)
    bce = F.cross_entropy(adv_logits, y, reduction="none") - torch.log(MART_BCE_OFFSET - other + LOG_EPS)
    kl = (torch.xlogy(p_clean, p_clean) - p_clean * torch.log(p_adv + LOG_EPS)).sum(dim=-1)
    p_true = p_clean.gather(-1, y[:, None]).squeeze(-1)
    return reduce(bce + beta * kl * (MART_WEIGHT_OFFSET - p_true), reduction)


def mix(clean_loss: Tensor, adv_loss: Tensor, alpha: float) -> Tensor:
    """mix(α) = α·clean + (1 − α)·adversarial  (RU eq. 2 / eq. 5; PAT α = 0.5, Madry AT α = 0)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"mix alpha must be in [0, 1], got {alpha}")
    return alpha * clean_loss + (1.0 - alpha) * adv_loss


# --------------------------------------------------------------------------- ensembles (ADP)
def adp_log_det(member_logits: Tensor, y: Tensor) -> Tensor:
    """Ensemble diversity log det(M̃ M̃ᵀ + 1e-6·I_K) per example ``(N,)`` (Pang et al. 2019).

    M̃ ``[N, K, C−1]`` holds each member's probabilities with the *true-class* entry removed,
    each row L2-normalized (``P2333/Adaptive-Diversity-Promoting`` utils.py ``log_det``; the
    normalizer is floored at 1e-20 so an all-underflowed row gives a finite value).
    """
    k, n, c = member_logits.shape
    probs = F.softmax(member_logits, dim=-1).permute(1, 0, 2)  # [N, K, C]
    keep = ~F.one_hot(y, c).bool()  # [N, C]
    non_max = probs[keep[:, None, :].expand(n, k, c)].view(n, k, c - 1)
    non_max = non_max / non_max.norm(dim=-1, keepdim=True).clamp_min(ADP_LOG_OFFSET)
    gram = non_max @ non_max.transpose(1, 2)
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    return torch.logdet(gram + ADP_DET_OFFSET * eye)


def adp(
    member_logits: Tensor,
    y: Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 0.5,
    clip: float = 1e-7,
    reduction: str = "mean",
) -> Tensor:
    """ADP: Σ_k CE(p_k, y) − α·H(mean_k p_k) − β·log det(M̃ M̃ᵀ + 1e-6·I_K)  (Pang et al. 2019).

    ``member_logits`` ``[K, N, C]`` are the members' logits (:meth:`Ensemble.member_logits`).
    The ensemble entropy uses the reference's log offset 1e-20 (``log(p̄ + 1e-20)``).

    Member CE as the reference: ``P2333/Adaptive-Diversity-Promoting`` utils.py
    ``Loss_withEE_DPP`` sums ``keras.losses.categorical_crossentropy(y_t[i], y_p[i])`` over the
    members, and Keras' (2.x, TensorFlow backend ``categorical_crossentropy``, from_logits False)
    clips the probabilities to [ε, 1 − ε] with ε = ``K.epsilon()`` = 1e-7 before the log:
    CE_k = −log clip(p_k,y, ``clip``, 1 − ``clip``). The clip bounds every member's CE at
    −log 1e-7 ≈ 16.1 and zeroes its gradient outside the interval (0.5–20 % loss difference with
    confident members, issue 14). ``clip = 0`` is the exact log-softmax CE.
    α = 2, β = 0.5, K = 3 in RU (the "recommended parameters").
    """
    if member_logits.dim() != 3:
        raise ConfigError(f"adp needs member logits of shape [K, N, C], got {tuple(member_logits.shape)}")
    if not 0.0 <= clip < 0.5:
        raise ConfigError(f"adp clip must be in [0, 0.5), got {clip}")
    k, n, _ = member_logits.shape
    if clip > 0:
        probs = F.softmax(member_logits, dim=-1)
        p_y = probs.gather(-1, y.view(1, n, 1).expand(k, n, 1)).squeeze(-1)  # [K, N]
        ce_sum = -torch.log(p_y.clamp(clip, 1.0 - clip)).sum(0)
    else:
        ce_sum = (
            F.cross_entropy(member_logits.reshape(k * n, -1), y.repeat(k), reduction="none").view(k, n).sum(0)
        )
    p_mean = F.softmax(member_logits, dim=-1).mean(dim=0)
    ens_entropy = -(p_mean * torch.log(p_mean + ADP_LOG_OFFSET)).sum(dim=-1)
    return reduce(ce_sum - alpha * ens_entropy - beta * adp_log_det(member_logits, y), reduction)


# --------------------------------------------------------------------------- ATENT
ATENT_EMAS: tuple[str, ...] = ("stochat", "classic")


def atent_weights(num_samples: int, alpha: float = 0.9, ema: str = "stochat") -> list[float]:
    """Weights c_1..c_L with EMA(ℓ_1..ℓ_L) = Σ_k c_k·ℓ_k.

    ``"stochat"`` (default): μ ← (1 − α)·μ + α·ℓ_k from μ = 0 — ATENT Alg. 1/2 line 9 and
    ``GauriJagatap/StochAT`` notebooks/cifar10_exps_linf.py (``loss = (1-alpha)*loss +
    alpha*loss_fn(...)``, α = 0.9): c_k = α(1 − α)^{L−k}, the newest sample dominates.
    ``"classic"``: μ ← α·μ + (1 − α)·ℓ_k from μ = 0: c_k = (1 − α)·α^{L−k}.
    """
    if num_samples < 1:
        raise ConfigError(f"atent needs at least one sample, got {num_samples}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"atent alpha must be in [0, 1], got {alpha}")
    if ema == "stochat":
        new, old = alpha, 1.0 - alpha
    elif ema == "classic":
        new, old = 1.0 - alpha, alpha
    else:
        raise ConfigError(f"unknown atent ema {ema!r}; valid: {', '.join(ATENT_EMAS)}")
    return [new * old ** (num_samples - 1 - i) for i in range(num_samples)]


def atent(
    sample_logits: Tensor | Sequence[Tensor],
    y: Tensor,
    *,
    alpha: float = 0.9,
    ema: str = "stochat",
    base: str = "ce",
    reduction: str = "mean",
    **base_kwargs: float,
) -> Tensor:
    """ATENT loss: EMA over the L SGLD sample losses, μ ← (1 − α)·μ + α·base(p(x′_k), y).

    ``sample_logits`` ``[L, N, C]`` (or a sequence of ``[N, C]``), oldest first. See
    :func:`atent_weights` for the two EMA conventions; the default follows ATENT Alg. 1–2 and
    ``GauriJagatap/StochAT`` (α = 0.9). The per-example EMA is reduced over the batch, so with
    ``reduction="mean"`` this equals the reference's EMA of batch-mean losses.
    """
    logits = torch.stack(list(sample_logits)) if not isinstance(sample_logits, Tensor) else sample_logits
    if logits.dim() != 3:
        raise ConfigError(f"atent needs sample logits of shape [L, N, C], got {tuple(logits.shape)}")
    fn = _base(base)
    weights = atent_weights(logits.shape[0], alpha, ema)
    total = sum(w * fn(z, y, reduction="none", **base_kwargs) for w, z in zip(weights, logits, strict=True))
    assert isinstance(total, Tensor)
    return reduce(total, reduction)


# --------------------------------------------------------------------------- registry
Inputs = Literal["logits", "pair", "members", "samples"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: the function, what it consumes and its hyperparameters.

    ``params`` maps each keyword to its type (``float`` or ``str``) and default; ``bases`` says
    that the parameters of a ``base`` objective (``lam`` for entm, ``gamma`` for ls) are accepted
    too. :meth:`check_params` validates a parameter dict and names the offending key.
    """

    fn: Callable[..., Tensor]
    inputs: Inputs
    params: dict[str, tuple[type, object]] = field(default_factory=dict)
    bases: bool = False
    source: str = ""

    def allowed(self, params: dict[str, object]) -> dict[str, tuple[type, object]]:
        """The keywords valid for ``params`` (adds the chosen base's keywords)."""
        allowed = dict(self.params)
        if self.bases:
            base = params.get("base", self.params["base"][1])
            if isinstance(base, str) and base in BASES:
                allowed.update(OBJECTIVES.get(base).params)
        return allowed

    def check_params(self, params: dict[str, object], where: str = "params") -> None:
        """Raise :class:`ConfigError` for an unknown key or a value of the wrong type."""
        allowed = self.allowed(params)
        for key, value in params.items():
            if key not in allowed:
                valid = ", ".join(sorted(allowed)) or "(none)"
                raise ConfigError(f"unknown key {where}.{key}; valid: {valid}")
            kind = allowed[key][0]
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"{where}.{key} must be a finite number, got {value!r}")
            elif not isinstance(value, kind):
                raise ConfigError(f"{where}.{key} must be a {kind.__name__}, got {value!r}")
        if self.bases:
            _base(str(params.get("base", self.params["base"][1])))
        if "ema" in params and params["ema"] not in ATENT_EMAS:
            raise ConfigError(f"{where}.ema must be one of {', '.join(ATENT_EMAS)}, got {params['ema']!r}")


OBJECTIVES: Registry[ObjectiveSpec] = Registry("objective")
OBJECTIVES.register(
    "ce", ObjectiveSpec(ce, "logits", source="RU eq. 2"), help="cross-entropy (Normal / Madry AT)"
)
OBJECTIVES.register(
    "entm",
    ObjectiveSpec(entm, "logits", {"lam": (float, 2.0)}, source="RU eq. 4-5"),
    help="entropy maximization CE − λ·H(p)",
)
OBJECTIVES.register(
    "ls",
    ObjectiveSpec(ls, "logits", {"gamma": (float, 0.74)}, source="RU eq. 6"),
    help="label smoothing CE(p, y − γ(y − u_C))",
)
OBJECTIVES.register(
    "trades",
    ObjectiveSpec(
        trades, "pair", {"beta": (float, 6.0), "base": (str, "ce")}, bases=True, source="yaodongyu/TRADES"
    ),
    help="base(clean) + β·KL(p_clean ‖ p_adv), batchmean",
)
OBJECTIVES.register(
    "mart",
    ObjectiveSpec(mart, "pair", {"beta": (float, 6.0)}, source="YisenWang/MART mart.py"),
    help="BCE(adv) + β·KL(p_clean ‖ p_adv)·(1 − p_clean,y)",
)
OBJECTIVES.register(
    "adp",
    ObjectiveSpec(
        adp,
        "members",
        {"alpha": (float, 2.0), "beta": (float, 0.5), "clip": (float, 1e-7)},
        source="P2333/Adaptive-Diversity-Promoting",
    ),
    help="ensemble CE − α·H(mean p) − β·log det (ADP)",
)
OBJECTIVES.register(
    "atent",
    ObjectiveSpec(
        atent,
        "samples",
        {"ema": (str, "stochat"), "base": (str, "ce")},
        bases=True,
        source="ATENT Alg. 1-2; GauriJagatap/StochAT",
    ),
    help="EMA of the SGLD sample losses (ATENT)",
)
