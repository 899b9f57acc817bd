"""Batched, seeded data augmentation: the standard CIFAR random crop + horizontal flip.

The recipe — zero-pad 4 pixels on each side, take a random 32×32 crop, flip horizontally with
probability 1/2 — is the one used by the papers' CIFAR experiments (e.g. TRADES
`yaodongyu/TRADES/train_trades_cifar10.py`: ``RandomCrop(32, padding=4)`` +
``RandomHorizontalFlip()``). Here it runs on a whole batch at once, with every random draw taken
from an explicit :class:`torch.Generator`, so the same generator state gives the same batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from entrobust.errors import ConfigError

__all__ = ["Augment", "PadCropFlip", "augmentation_for", "pad_crop_flip"]

Augment = Callable[[Tensor, torch.Generator], Tensor]
"""``augment(x, generator) -> x'``: a batched N×C×H×W transform drawing randomness from ``generator``."""


@dataclass(frozen=True)
class PadCropFlip:
    """Random crop after ``pad``-pixel zero padding, then a horizontal flip with probability 1/2.

    Offsets are uniform in ``{0, …, 2·pad}`` per example and axis (as torchvision's
    ``RandomCrop(size, padding=pad)``). Random numbers are drawn on the generator's device (CPU)
    and the gather runs on ``x``'s device, so results do not depend on where ``x`` lives.
    """

    pad: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ConfigError(f"pad must be >= 0, got {self.pad}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.ndim != 4:
            raise ConfigError(f"augmentation expects an N×C×H×W batch, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        p = self.pad
        top = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        if p == 0 and not self.flip:
            return x
        dev = x.device
        top, left, flips = top.to(dev), left.to(dev), flips.to(dev)
        padded = F.pad(x, (p, p, p, p)) if p else x
        ar_h = torch.arange(h, device=dev)
        ar_w = torch.arange(w, device=dev)
        rows = top[:, None] + ar_h[None, :]  # N×H
        cols = left[:, None] + torch.where(flips[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])  # N×W
        bi = torch.arange(n, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def pad_crop_flip(pad: int = 4, flip: bool = True) -> PadCropFlip:
    """The CIFAR augmentation (pad-``pad`` random crop + optional horizontal flip)."""
    return PadCropFlip(pad, flip)


def check_translate(translate: object) -> None:
    """Refuse a ``translate`` (pixels of random shift) that is not a whole number >= 0."""
    if isinstance(translate, bool) or not isinstance(translate, int) or translate < 0:
        raise ConfigError(f"translate must be >= 0 (a whole number of pixels), got {translate!r}")


def augmentation_for(name: str, translate: int = 0) -> Augment | None:
    """Training augmentation for dataset ``name``.

    The dataset's standard augmentation (:func:`pad_crop_flip`) where it has one; otherwise, with
    ``translate > 0``, random translations by up to ``translate`` pixels (zero padding + random
    crop, no flip: ``PadCropFlip(translate, flip=False)`` — for MNIST the background is 0, so the
    padding adds no new intensity); else ``None``.
    """
    from entrobust.data.datasets import dataset_info

    check_translate(translate)
    if dataset_info(name).augment:
        return pad_crop_flip()
    return PadCropFlip(translate, flip=False) if translate else None
