"""Static facts about each dataset: shape, classes and the normalization the models apply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, number of classes and per-channel normalization of a dataset.

    ``mean``/``std`` are what the model's own :class:`~entrobust.models.Normalize` layer uses;
    data stay in [0, 1] everywhere else.
    """

    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedded: bool = False  # ships inside an installed package, no files needed
    augment: bool = False  # standard augmentation (pad-4 crop + flip) applies

    @property
    def in_channels(self) -> int:
        return self.shape[0]


_MNIST = ((0.1307,), (0.3081,))
DATASET_INFO: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo("mnist5k", (1, 28, 28), 10, *_MNIST, embedded=True),
    "digits": DatasetInfo("digits", (1, 8, 8), 10, (0.3054,), (0.3818,), embedded=True),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, *_MNIST),
    "fashion-mnist": DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), augment=True
    ),
    "cifar100": DatasetInfo(
        "cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment=True
    ),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
