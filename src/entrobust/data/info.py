"""Static facts about each dataset: shape, classes, the normalization the models apply and the
default threat model its robustness is measured under."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, number of classes and per-channel normalization of a dataset.

    ``mean``/``std`` are what the model's own :class:`~entrobust.models.Normalize` layer uses;
    data stay in [0, 1] everywhere else. ``eps`` is the dataset's usual ℓ∞ radius in pixel units of
    [0, 1] images (:meth:`default_threat`): 0.3 on 28×28 MNIST-like digits (Madry et al. 2018),
    8/255 on colour images, and 0.1 on the 8×8 ``digits``, whose 17 grey levels are 1/16 apart
    (0.3 would move a pixel by almost five levels and leave nothing to measure).
    """

    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedded: bool = False  # ships inside an installed package, no files needed
    augment: bool = False  # standard augmentation (pad-4 crop + flip) applies
    eps: float = 8 / 255  # the usual ℓ∞ radius (see the class docstring)

    @property
    def in_channels(self) -> int:
        return self.shape[0]

    def default_threat(self) -> tuple[str, float]:
        """``(norm, ε)`` robustness is measured under when nothing else is given: ℓ∞ ``eps``."""
        return "linf", self.eps


_MNIST = ((0.1307,), (0.3081,))
DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, *_MNIST, embedded=True, eps=0.3),
    "digits": DatasetInfo("digits", (1, 8, 8), 10, (0.3054,), (0.3818,), embedded=True, eps=0.1),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, *_MNIST, eps=0.3),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), eps=0.3),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), augment=True
    ),
    "cifar100": DatasetInfo(
        "cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment=True
    ),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


def default_threat(dataset: str | None) -> tuple[str, float]:
    """``(norm, ε)`` of :meth:`DatasetInfo.default_threat` for a dataset name; a name is matched
    exactly, else by the longest known name it starts with (``"mnist5k-small"`` → ``mnist5k``);
    an unknown or missing name gets ℓ∞ 8/255."""
    name = (dataset or "").lower()
    info = DATASET_INFO.get(name)
    if info is None:
        known = sorted((k for k in DATASET_INFO if name.startswith(k)), key=len)
        info = DATASET_INFO[known[-1]] if known else None
    return info.default_threat() if info is not None else ("linf", 8 / 255)
