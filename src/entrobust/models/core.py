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


def _check_forward(
    net: nn.Module, name: str, dataset: str | None, shape: tuple[int, ...], num_classes: int
) -> None:
    """One eval-mode forward of a zero batch of ``shape`` images: a clear :class:`ConfigError`
    now instead of a shape traceback in the first training step."""
    was = {m: m.training for m in net.modules()}
    try:
        net.eval()
        with torch.no_grad():
            out = net(torch.zeros(2, *shape))
    except RuntimeError as err:
        raise ConfigError(
            f"model {name!r} cannot take {dataset} images of shape {shape}: {err}; "
            "pick an architecture for this image size or pass input_size="
        ) from None
    finally:
        for m, t in was.items():
            m.training = t
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(
            f"model {name!r} on {dataset} images {shape} gives {got}, not (N, {num_classes}) logits"
        )


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its builder and the input it was designed for."""

    builder: Builder  # builder(num_classes=..., in_channels=..., **kwargs) -> nn.Module
    input_shape: tuple[int, int, int]  # (C, H, W) the architecture expects by default
    source: str  # where the definition comes from
    description: str = ""
    defaults: dict[str, object] = field(default_factory=dict)
    #: the builder takes ``input_size=(H, W)`` (fully connected sizes depend on it); ``create_model``
    #: fills it from ``dataset`` like ``num_classes`` and ``in_channels``
    sized: bool = False


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: str, *, input_shape: tuple[int, int, int], source: str, description: str = "", sized: bool = False
) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, in_channels, **kw) -> nn.Module`` as ``name``;
    ``sized=True`` when the builder takes ``input_size`` (see :class:`ModelEntry`)."""

    def add(builder: Builder) -> Builder:
        doc = description or (builder.__doc__ or "").strip().split("\n")[0]
        MODELS.register(name, ModelEntry(builder, input_shape, source, doc, sized=sized), help=doc)
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
    ``mean``, ``std`` and — for architectures whose layer sizes depend on it (``mlp3``,
    ``smallcnn``, ...) — ``input_size``; explicit arguments win. A model built for a dataset
    whose image size differs from the architecture's registered one is checked with one forward
    pass on a zero batch. Without a dataset the model gets the identity normalization (mean 0,
    std 1). Raises :class:`~entrobust.errors.UnknownNameError` listing the valid names for an
    unknown model or dataset, :class:`ConfigError` when the architecture cannot take the
    dataset's images.
    """
    import entrobust.models  # noqa: F401  (registers the built-in architectures)

    entry = MODELS.get(name)
    image_size: tuple[int, int] | None = None
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
        image_size = (info.shape[1], info.shape[2])
        if image_size != tuple(entry.input_shape[1:]) and entry.sized and "input_size" not in kwargs:
            h, w = image_size
            kwargs["input_size"] = h if h == w else [h, w]  # recorded in the spec: checkpoints rebuild
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
    try:
        net = entry.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except ConfigError as err:
        if image_size is None or "input_size" not in kwargs:
            raise
        raise ConfigError(
            f"model {name!r} for {dataset} images {image_size[0]}×{image_size[1]}: {err}"
        ) from None
    if image_size is not None and image_size != tuple(entry.input_shape[1:]):
        _check_forward(net, name, dataset, (in_channels, *image_size), num_classes)
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
