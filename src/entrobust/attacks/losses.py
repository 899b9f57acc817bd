"""Per-example attack losses on logits; every attack *maximizes* its loss.

Each function maps ``(logits (N, C), y (N,))`` to a per-example loss ``(N,)``; targeted variants
take the target class as ``y`` and are maximized too (they already carry the right sign).
``LOSSES`` maps the names used in configs (``ce``, ``cw``, ``dlr``, ...) to factories.
bf16 / fp16 logits (a forward under autocast) are upcast to float32 first (:func:`fp32`), so
every loss is float32 whatever precision the model ran in. The shared probability maths (entropy,
KL, margins) lives in :mod:`entrobust.losses`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from entrobust.errors import ConfigError
from entrobust.losses import entropy_of_log_probs, fp32, kl_divergence, other_max
from entrobust.registry import Registry

LossFn = Callable[[Tensor, Tensor], Tensor]


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy −log softmax(z)_y."""
    return F.cross_entropy(fp32(logits), y, reduction="none")


def cw_loss(logits: Tensor, y: Tensor, confidence: float = 0.0) -> Tensor:
    """Carlini–Wagner margin, maximized: min(max_{i≠y} z_i − z_y, κ)  (CW 2017, eq. for f₆).

    Maximizing it pushes the best other logit above the true one; κ caps the gain once the
    example is misclassified by κ. With ``confidence = inf`` it is the plain margin.
    """
    logits = fp32(logits)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    gap = other_max(logits, y) - z_y
    return torch.clamp(gap, max=confidence) if confidence != float("inf") else gap


def require_classes(logits: Tensor, k: int, what: str) -> None:
    """Raise a clear error when a loss needs at least ``k`` classes."""
    if logits.shape[1] < k:
        raise ConfigError(f"{what} needs at least {k} classes, the model has {logits.shape[1]}")


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020, eq. 6), maximized:
    −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12), π = logits sorted decreasingly.

    Needs ≥ 3 classes (the official code, ``fra31/auto-attack``, uses the 3rd largest).
    """
    require_classes(logits, 3, "the DLR loss")
    logits = fp32(logits)
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - other_max(logits, y)) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7), maximized:
    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12). Needs ≥ 4 classes."""
    require_classes(logits, 4, "the targeted DLR loss")
    logits = fp32(logits)
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


def ls_ce_loss(logits: Tensor, y: Tensor, gamma: float) -> Tensor:
    """CE against labels smoothed with γ: target = y − γ(y − u_C) = (1−γ)·onehot + γ/C
    (the adaptive attack against label smoothing, RU §5.2)."""
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"ls-ce gamma must be in [0, 1], got {gamma}")
    logits = fp32(logits)
    c = logits.shape[1]
    soft = (1 - gamma) * F.one_hot(y, c).to(logits.dtype) + gamma / c
    return -(soft * F.log_softmax(logits, dim=1)).sum(dim=1)


def entm_loss(logits: Tensor, y: Tensor, lam: float = 2.0) -> Tensor:
    """L_entm = CE − λ·H(softmax(z))  (RU eq. 5), the inner objective of PAT-EntM."""
    logp = F.log_softmax(fp32(logits), dim=1)
    return F.nll_loss(logp, y, reduction="none") - lam * entropy_of_log_probs(logp)


def kl_loss(logits: Tensor, clean_logits: Tensor) -> Tensor:
    """KL(softmax(clean) ‖ softmax(adv)) per example (TRADES inner loss; the attack sums it)."""
    return kl_divergence(fp32(clean_logits), fp32(logits))


LOSSES: Registry[Callable[..., LossFn]] = Registry("attack loss")
LOSSES.register("ce", lambda: ce_loss, help="cross-entropy")
LOSSES.register(
    "cw", lambda confidence=float("inf"): lambda z, y: cw_loss(z, y, confidence), help="CW margin (κ)"
)
LOSSES.register("dlr", lambda: dlr_loss, help="difference of logits ratio")
LOSSES.register("ls-ce", lambda gamma=0.5: lambda z, y: ls_ce_loss(z, y, gamma), help="label-smoothed CE")
LOSSES.register("entm", lambda lam=2.0: lambda z, y: entm_loss(z, y, lam), help="CE − λ·entropy")


def resolve_loss(loss: str | LossFn, **kwargs: float) -> LossFn:
    """A per-example loss from a name (``"ce"``, ``"cw"``, ``"dlr"``, ``"ls-ce"``, ``"entm"``) or a
    callable ``f(logits, y) -> (N,)`` (returned as is). ``kl`` and targeted DLR need extra inputs
    and are handled by the engine."""
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise ConfigError(f"loss must be a name or a callable, got {type(loss).__name__}")
    return LOSSES.get(loss)(**kwargs)
