"""Ensembles whose prediction is the mean of member probabilities (ADP, Pang et al. 2019).

RU (Ju et al. 2020, §4) trains ADP with K = 3 members and evaluates the ensemble through its
averaged probability output. :class:`Ensemble` returns the *log* of that mean, so
``softmax(output)`` is exactly the mean probability and cross-entropy, attacks and every
logit-based tool work on the ensemble unchanged; ``member_logits`` gives the per-member logits
the ADP regularizer needs (``P2333/Adaptive-Diversity-Promoting``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.models.core import MODELS, NormalizedModel, register_model

__all__ = ["Ensemble", "ensemble_member_logits"]


class Ensemble(nn.Module):
    """Average of K classifiers in probability space.

    ``forward(x) = log((1/K) Σ_k softmax(f_k(x)))``, shape ``[N, C]``. Members are applied to
    the input as given: build it from bare networks and wrap the whole ensemble in one
    normalization (what ``create_model("ensemble", ...)`` does), or from members that each
    normalize their own input (e.g. :class:`NormalizedModel` s) and do not wrap it again —
    either way every member sees its input normalized exactly once.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ConfigError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.num_classes: int | None = None
        counts = {getattr(m, "num_classes", None) for m in members}
        if len(counts) == 1:
            self.num_classes = counts.pop()

    def __len__(self) -> int:
        return len(self.members)

    def member_logits(self, x: Tensor) -> Tensor:
        """Logits of every member, shape ``[K, N, C]``."""
        return torch.stack([m(x) for m in self.members])

    @staticmethod
    def combine(member_logits: Tensor) -> Tensor:
        """``[K, N, C]`` member logits → ``[N, C]`` log mean probability (stable logsumexp).

        Lets a training step reuse one ``member_logits`` call for both the ensemble output and
        the ADP regularizer.
        """
        k = member_logits.shape[0]
        log_probs = torch.log_softmax(member_logits, dim=-1)
        return torch.logsumexp(log_probs, dim=0) - math.log(k)

    def forward(self, x: Tensor, members: bool = False) -> Tensor:
        """Ensemble logits ``[N, C]``; with ``members=True`` the member logits ``[K, N, C]`` (so a
        ``DistributedDataParallel`` wrapper, which only sees ``forward``, can serve ADP)."""
        member_logits = self.member_logits(x)
        return member_logits if members else self.combine(member_logits)


def ensemble_member_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Member logits ``[K, N, C]`` of an :class:`Ensemble`, also when wrapped in a
    :class:`NormalizedModel` (then ``x`` in [0, 1] is normalized once, before the members).

    Raises :class:`ConfigError` when ``model`` holds no ensemble (ADP needs one). A data-parallel
    wrapper is called through its ``forward`` so gradients are synchronised.
    """
    from entrobust.distributed import unwrap

    inner = unwrap(model)
    if inner is not model and (
        isinstance(inner, Ensemble)
        or (isinstance(inner, NormalizedModel) and isinstance(inner.net, Ensemble))
    ):
        out: Tensor = model(x, members=True)
        return out
    if isinstance(model, Ensemble):
        return model.member_logits(x)
    if isinstance(model, NormalizedModel) and isinstance(model.net, Ensemble):
        return model.net.member_logits(model.normalize(x))
    raise ConfigError(
        f"expected an Ensemble (e.g. create_model('ensemble', ...)), got {type(model).__name__}"
    )


@register_model(
    "ensemble",
    input_shape=(1, 28, 28),
    source="ADP (Pang et al. 2019); RU §4 (K = 3)",
    sized=True,
)
def ensemble(
    num_classes: int,
    in_channels: int,
    *,
    member: str = "cnn4",
    k: int = 3,
    member_kwargs: dict[str, object] | None = None,
    input_size: object = None,
) -> nn.Module:
    """K members of one registered architecture averaged in probability space (ADP);
    ``input_size`` goes to members that take it (unless ``member_kwargs`` sets it)."""
    if member == "ensemble":
        raise ConfigError("an ensemble member cannot itself be an ensemble")
    if k < 1:
        raise ConfigError(f"ensemble size k must be >= 1, got {k}")
    entry = MODELS.get(member)
    kw = dict(member_kwargs or {})
    if input_size is not None and entry.sized:
        kw.setdefault("input_size", input_size)
    return Ensemble([entry.builder(num_classes=num_classes, in_channels=in_channels, **kw) for _ in range(k)])
