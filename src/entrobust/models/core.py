"""Model registry, the in-model :class:`Normalize` layer and :func:`create_model`.

Every built-in model takes images in [0, 1] and normalizes them itself, so attacks and ε always
live in pixel space (SPEC §2). Any ``nn.Module`` mapping [0, 1] images to logits works wherever a
built-in model does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from entrobust.errors import ConfigError
from entrobust.registry import Registry


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics stored as buffers (saved with weights)."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ConfigError(f"normalization mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ConfigError(f"normalization std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedModel(nn.Module):
    """``net(normalize(x))``: a network preceded by its input normalization.

    ``spec`` records how the model was built so checkpoints can rebuild and check it.
    """

    def __init__(self, net: nn.Module, normalize: Normalize, spec: dict[str, object] | None = None):
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.spec: dict[str, object] = dict(spec or {})

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        out: Tensor = self.net(self.normalize(x), **kwargs)
        return out


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its builder and the input it was designed for."""

    builder: Builder  # builder(num_classes=..., in_channels=..., **kwargs) -> nn.Module
    input_shape: tuple[int, int, int]  # (C, H, W) the architecture expects by default
    source: str  # where the definition comes from
    description: str = ""
    defaults: dict[str, object] = field(default_factory=dict)


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: str, *, input_shape: tuple[int, int, int], source: str, description: str = ""
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, in_channels, **kw) -> nn.Module`` as ``name``."""

    def add(builder: Builder) -> Builder:
        doc = description or (builder.__doc__ or "").strip().split("\n")[0]
        MODELS.register(name, ModelEntry(builder, input_shape, source, doc), help=doc)
        return builder

    return add


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    dataset: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: object,
) -> NormalizedModel:
    """Build registered model ``name`` with its normalization layer inside.

    ``dataset`` (e.g. ``"mnist5k"``) supplies defaults for ``num_classes``, ``in_channels``,
    ``mean`` and ``std``; explicit arguments win. Without a dataset the model gets the identity
    normalization (mean 0, std 1). Raises :class:`~entrobust.errors.UnknownNameError` listing
    the valid names for an unknown model or dataset.
    """
    import entrobust.models  # noqa: F401  (registers the built-in architectures)

    entry = MODELS.get(name)
    if dataset is not None:
        from entrobust.data.info import DATASET_INFO

        if dataset not in DATASET_INFO:
            from entrobust.errors import UnknownNameError

            valid = ", ".join(sorted(DATASET_INFO))
            raise UnknownNameError(f"unknown dataset {dataset!r}; valid: {valid}")
        info = DATASET_INFO[dataset]
        num_classes = info.num_classes if num_classes is None else num_classes
        in_channels = info.in_channels if in_channels is None else in_channels
        mean = info.mean if mean is None else mean
        std = info.std if std is None else std
    num_classes = 10 if num_classes is None else num_classes
    in_channels = entry.input_shape[0] if in_channels is None else in_channels
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    mean = (0.0,) * in_channels if mean is None else tuple(mean)
    std = (1.0,) * in_channels if std is None else tuple(std)
    if len(mean) != in_channels:
        raise ConfigError(
            f"normalization has {len(mean)} channels but model {name!r} has {in_channels} inputs"
        )
    net = entry.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    spec: dict[str, object] = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "dataset": dataset,
        "mean": list(mean),
        "std": list(std),
        "kwargs": dict(kwargs),
    }
    return NormalizedModel(net, Normalize(mean, std), spec)
