"""The probability maths shared by attack losses and training objectives, in one place.

Pure functions of logits ``[..., C]`` (classes on the last axis) and labels; each returns one
value per example and keeps the precision it is given — callers that may hold bf16 / fp16 logits
upcast first with :func:`fp32` (every attack loss does). Notation: p = softmax(z),
H(p) = −Σ_c p_c log p_c (nats), KL(p ‖ q) = Σ_c p_c log(p_c / q_c).

Used by :mod:`entrobust.attacks.losses` / :mod:`entrobust.attacks.base` (attack losses, margins,
entropies of results) and :mod:`entrobust.training.objectives` (EntM, TRADES, MART).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["entropy", "entropy_of_log_probs", "fp32", "kl_divergence", "margin", "other_max"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


def fp32(logits: Tensor) -> Tensor:
    """``logits`` as float32 when they are bf16 / fp16 (e.g. from a forward under autocast);
    any other dtype is returned as is (float32 and float64 unchanged, no copy).

    Every attack loss, margin and success score reads its logits through this: bf16 keeps only
    8 mantissa bits, too few for a loss whose gradient sign or comparison decides the attack step.
    """
    return logits.float() if logits.dtype in _LOW_PRECISION else logits


def entropy_of_log_probs(logp: Tensor) -> Tensor:
    """H(p) = −Σ_c p_c log p_c from log-probabilities ``logp`` ``[..., C]`` → ``[...]``."""
    return -(logp.exp() * logp).sum(dim=-1)


def entropy(logits: Tensor) -> Tensor:
    """Shannon entropy H(softmax(z)) in nats per example, ``[N, C] -> (N,)`` (stable)."""
    return entropy_of_log_probs(F.log_softmax(logits, dim=-1))


def kl_divergence(clean_logits: Tensor, adv_logits: Tensor) -> Tensor:
    """KL(p_clean ‖ p_adv) summed over classes, per example ``(N,)``.

    Gradients flow into *both* arguments: TRADES does not detach the clean prediction
    (``yaodongyu/TRADES`` trades.py, ``KLDivLoss(log_softmax(adv), softmax(clean))``).
    """
    p_clean = F.softmax(clean_logits, dim=-1)
    return (p_clean * (F.log_softmax(clean_logits, dim=-1) - F.log_softmax(adv_logits, dim=-1))).sum(dim=-1)


def other_max(scores: Tensor, y: Tensor) -> Tensor:
    """max_{i≠y} s_i per example — masking with −inf, so it is right when every other score is
    negative. ``scores`` are logits or probabilities ``[N, C]``."""
    mask = F.one_hot(y, scores.shape[-1]).bool()
    return scores.masked_fill(mask, float("-inf")).amax(dim=-1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Decision margin z_y − max_{i≠y} z_i per example (> 0 iff ``y`` is predicted)."""
    return logits.gather(-1, y[:, None]).squeeze(-1) - other_max(logits, y)
