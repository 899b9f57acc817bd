"""A fast, exactly reproducible mini-batch iterator over an in-memory :class:`TensorData`.

Batches are built by indexing the whole tensor with an index tensor (no per-example Python
loop, no worker processes). The example order of epoch ``e`` and the augmentation of batch ``b``
are pure functions of ``(seed, e)`` and ``(seed, e, rank, b)``, so a run resumed at any epoch —
or any batch, with ``set_epoch(e, start_batch=b)`` — sees exactly the batches it would have seen.

On CUDA, batches are gathered into page-locked (pinned) host buffers so the host-to-device copy
is asynchronous, and can be handed over in channels-last (NHWC) memory format; neither changes a
value, so the exact reproducibility holds with or without them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from entrobust.data.augment import Augment
from entrobust.data.tensordata import TensorData
from entrobust.errors import ConfigError

__all__ = ["BatchLoader", "derive_seed"]

_ORDER, _AUGMENT = 0, 1


def _gather_pinned(src: Tensor, idx: Tensor) -> Tensor:
    """``src[idx]`` written into a fresh pinned buffer (PyTorch's caching host allocator reuses
    these blocks once their asynchronous copies have finished, so this stays cheap)."""
    out = torch.empty((idx.numel(), *src.shape[1:]), dtype=src.dtype, pin_memory=True)
    return torch.index_select(src, 0, idx, out=out)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys with :class:`numpy.random.SeedSequence`."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class BatchLoader:
    """Iterate ``(x, y)`` batches: ``x`` float32 in [0, 1] on ``device``, ``y`` int64 on ``device``.

    Args:
        data: the split to iterate (uint8 or float32 images).
        batch_size: examples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: visit examples in a fresh random order each epoch (seeded by ``(seed, epoch)``).
        seed: base seed (>= 0) of the order and of the augmentation.
        augment: optional batched transform ``augment(x, generator)`` applied to float images, e.g.
            :func:`~entrobust.data.pad_crop_flip`; its generator is seeded per batch.
        drop_last: drop the final short batch (and, when sharded, the ragged tail of the order).
        device: where batches go (default: the data's device). Images travel as uint8 and are
            converted on the device, four times less traffic than float32.
        num_replicas, rank: shard the epoch's order across data-parallel ranks, as
            ``torch.utils.data.DistributedSampler`` does: the order is padded by repeating its
            head (or truncated when ``drop_last``) to a multiple of ``num_replicas`` and rank
            ``r`` takes every ``num_replicas``-th index starting at ``r``.
        pin_memory: gather each batch into pinned host memory so ``.to(device,
            non_blocking=True)`` really overlaps with compute. ``None`` (default): on whenever
            the data is on the CPU and ``device`` is CUDA. Pinning needs CUDA; for any other
            target it is a no-op. (Indexing a pinned tensor returns pageable memory, so pinning
            the whole split with :meth:`TensorData.pin_memory` would not make batches pinned:
            the batch itself is gathered into a pinned buffer.)
        channels_last: hand out float image batches in NHWC memory format (after augmentation),
            matching a model prepared with ``accel.prepare_model(channels_last=True)``; the
            values are unchanged.

    Call :meth:`set_epoch` before each epoch; without it every epoch repeats epoch 0's order.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        augment: Augment | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        pin_memory: bool | None = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}"
            )
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else data.x.device
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0
        self.channels_last = bool(channels_last)
        #: whether batches really are gathered into pinned memory (needs CUDA, CPU data, CUDA target)
        self.pin_memory = (
            pin_memory is not False
            and self.device.type == "cuda"
            and data.x.device.type == "cpu"
            and torch.cuda.is_available()
        )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select epoch ``epoch``'s order; skip its first ``start_batch`` batches (mid-epoch resume)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start_batch <= len(self):
            raise ConfigError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def num_examples(self) -> int:
        """Examples this rank visits per epoch (before ``drop_last`` of the short batch)."""
        n, r = len(self.data), self.num_replicas
        if r == 1:
            return n
        return n // r if self.drop_last else math.ceil(n / r)

    def __len__(self) -> int:
        m = self.num_examples
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def indices(self) -> Tensor:
        """This rank's example indices for the current epoch, in visiting order."""
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _ORDER))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        r = self.num_replicas
        if r > 1:
            total = r * self.num_examples
            if total > n:
                order = order.repeat(math.ceil(total / n))[:total] if n else order
            order = order[:total][self.rank :: r]
        return order

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.indices()
        x_all, y_all = self.data.x, self.data.y
        bs, dev = self.batch_size, self.device
        for b in range(self.start_batch, len(self)):
            idx = order[b * bs : (b + 1) * bs].to(x_all.device)
            if self.pin_memory:
                xb, yb = _gather_pinned(x_all, idx), _gather_pinned(y_all, idx)
            else:
                xb, yb = x_all[idx], y_all[idx]
            xb = xb.to(dev, non_blocking=True)
            xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
            yb = yb.to(dev, non_blocking=True)
            if self.augment is not None:
                g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _AUGMENT, self.rank, b))
                xb = self.augment(xb, g)
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    def __repr__(self) -> str:
        return (
            f"BatchLoader({self.data.name!r}, n={len(self.data)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch}, augment={self.augment!r}, "
            f"pin_memory={self.pin_memory}, channels_last={self.channels_last})"
        )
