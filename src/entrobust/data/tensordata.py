"""An in-memory dataset split: images ``x`` (N×C×H×W) and integer labels ``y``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from entrobust.errors import DataError

__all__ = ["TensorData", "check_labels"]


def check_labels(y: Tensor, num_classes: int | None, source: str) -> None:
    """Raise :class:`DataError` naming ``source`` unless every label is in ``[0, num_classes)``."""
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        bad = y[(y < 0) | (y >= (num_classes if num_classes is not None else hi + 1))]
        raise DataError(
            f"{source}: labels must be in {bound}, found {bad.unique()[:10].tolist()} "
            f"({bad.numel()} of {y.numel()} out of range)"
        )


@dataclass
class TensorData:
    """One split of a dataset held in memory.

    ``x`` is N×C×H×W, either ``uint8`` (0..255, the compact form every loader returns for
    8-bit sources) or ``float32`` in [0, 1]; ``y`` is ``int64`` of length N. ``name`` names the
    source (``"cifar10/train"``, a file path, ...) and appears in every error message.
    ``num_classes``, when given, bounds the labels. Construction validates everything and raises
    :class:`~entrobust.errors.DataError` on a mismatch.
    """

    x: Tensor
    y: Tensor
    name: str
    num_classes: int | None = None
    _pinned: TensorData | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        src = self.name or "dataset"
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise DataError(f"{src}: x and y must be torch tensors")
        if self.x.ndim != 4:
            raise DataError(f"{src}: images must be N×C×H×W, got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1:
            raise DataError(f"{src}: labels must be a 1-D tensor, got shape {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{src}: {self.x.shape[0]} images but {self.y.shape[0]} labels")
        if self.x.dtype == torch.float32:
            if self.x.numel() and (float(self.x.min()) < 0.0 or float(self.x.max()) > 1.0):
                raise DataError(
                    f"{src}: float images must lie in [0, 1], got range "
                    f"[{float(self.x.min()):.4g}, {float(self.x.max()):.4g}]"
                )
        elif self.x.dtype != torch.uint8:
            raise DataError(f"{src}: images must be uint8 or float32, got {self.x.dtype}")
        if self.y.dtype != torch.int64:
            raise DataError(f"{src}: labels must be int64, got {self.y.dtype}")
        if self.num_classes is not None and self.num_classes < 1:
            raise DataError(f"{src}: num_classes must be >= 1, got {self.num_classes}")
        check_labels(self.y, self.num_classes, src)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: slice | Tensor | list[int] | range) -> TensorData:
        """The examples selected by a slice, a boolean mask, or a sequence/tensor of indices (order kept)."""
        if isinstance(index, slice):
            return TensorData(self.x[index], self.y[index], self.name, self.num_classes)
        if isinstance(index, Tensor) and index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise DataError(
                    f"{self.name}: boolean mask of shape {tuple(index.shape)} for {len(self)} examples"
                )
            index = torch.nonzero(index).flatten()
        idx = torch.as_tensor(index if not isinstance(index, range) else list(index), dtype=torch.long)
        if idx.ndim != 1:
            raise DataError(f"{self.name}: subset indices must be 1-D, got shape {tuple(idx.shape)}")
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise DataError(f"{self.name}: subset index out of range for {len(self)} examples")
        return TensorData(self.x[idx], self.y[idx], self.name, self.num_classes)

    def to_float(self) -> TensorData:
        """The same split with ``x`` as float32 in [0, 1] (``uint8`` is divided by 255)."""
        if self.x.dtype == torch.float32:
            return self
        return TensorData(self.x.float().div_(255.0), self.y, self.name, self.num_classes)

    def pin_memory(self) -> TensorData:
        """This split with ``x`` and ``y`` in page-locked (pinned) host memory, made once and cached.

        Copies from pinned memory to a CUDA device with ``non_blocking=True`` are asynchronous
        (they overlap with compute); from ordinary pageable memory they are not. Pinning needs
        CUDA: without it (CPU-only or Apple MPS machines), or when the tensors are not on the CPU,
        this returns ``self`` unchanged.
        """
        if self.x.device.type != "cpu" or not torch.cuda.is_available():
            return self
        if self.x.is_pinned() and self.y.is_pinned():
            return self
        if self._pinned is None:
            self._pinned = TensorData(self.x.pin_memory(), self.y.pin_memory(), self.name, self.num_classes)
        return self._pinned

    def class_counts(self) -> Tensor:
        """Number of examples of each class (length ``num_classes`` or ``max label + 1``)."""
        k = self.num_classes if self.num_classes is not None else int(self.y.max()) + 1 if len(self) else 0
        return torch.bincount(self.y, minlength=k)

    def __repr__(self) -> str:
        return (
            f"TensorData(name={self.name!r}, n={len(self)}, shape={self.shape}, "
            f"dtype={self.x.dtype}, num_classes={self.num_classes})"
        )
