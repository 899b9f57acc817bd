"""BatchLoader: coverage, exact reproducibility per (seed, epoch), resume, sharding; augmentation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrobust.data import BatchLoader, PadCropFlip, TensorData, augmentation_for, pad_crop_flip
from entrobust.errors import ConfigError

torch.set_num_threads(1)


def _data(n: int = 103, c: int = 3, h: int = 8, w: int = 8) -> TensorData:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return TensorData(x, y, "toy", num_classes=10)


def _ids(data: TensorData, x: torch.Tensor) -> list[int]:
    """Recover example indices from unaugmented float batches (every toy image is distinct)."""
    flat = data.to_float().x.flatten(1)
    return [int(torch.nonzero((flat == row).all(1))[0]) for row in x.flatten(1)]


def _batches(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batches_cover_every_example_once() -> None:
    data = _data()
    loader = BatchLoader(data, 16, shuffle=True, seed=1)
    batches = _batches(loader)
    assert len(batches) == len(loader) == 7
    assert [len(y) for _, y in batches] == [16] * 6 + [7]
    x0, y0 = batches[0]
    assert x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert 0.0 <= float(x0.min()) and float(x0.max()) <= 1.0
    ids = [i for x, _ in batches for i in _ids(data, x)]
    assert sorted(ids) == list(range(len(data)))
    assert ids != list(range(len(data)))  # shuffled
    # labels travel with their images
    assert torch.equal(torch.cat([y for _, y in batches]), data.y[ids])


def test_no_shuffle_and_drop_last() -> None:
    data = _data()
    loader = BatchLoader(data, 16, drop_last=True)
    batches = _batches(loader)
    assert len(loader) == len(batches) == 6
    assert _ids(data, torch.cat([x for x, _ in batches])) == list(range(96))


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    data = _data()
    a = BatchLoader(data, 10, shuffle=True, seed=7)
    b = BatchLoader(data, 10, shuffle=True, seed=7)
    first = _batches(a)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, _batches(b), strict=True))
    a.set_epoch(1)
    second = _batches(a)
    assert not torch.equal(first[0][1], second[0][1]) or not torch.equal(first[0][0], second[0][0])
    a.set_epoch(0)  # going back reproduces epoch 0 exactly
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, _batches(a), strict=True))
    other = BatchLoader(data, 10, shuffle=True, seed=8)
    assert not torch.equal(_batches(other)[0][0], first[0][0])


def test_augmentation_is_deterministic_and_resumable() -> None:
    data = _data()
    aug = pad_crop_flip()

    def run(epoch: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = BatchLoader(data, 20, shuffle=True, seed=3, augment=aug)
        loader.set_epoch(epoch, start_batch=start)
        return _batches(loader)

    e2 = run(2)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(e2, run(2), strict=True))
    assert not torch.equal(e2[0][0], run(3)[0][0])
    # resuming mid-epoch yields exactly the remaining batches of the uninterrupted epoch
    tail = run(2, start=3)
    assert len(tail) == len(e2) - 3
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(e2[3:], tail, strict=True))
    # augmentation actually changes images
    plain = BatchLoader(data, 20, shuffle=True, seed=3)
    plain.set_epoch(2)
    assert not torch.equal(_batches(plain)[0][0], e2[0][0])


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), replicas=st.integers(1, 4), drop_last=st.booleans(), seed=st.integers(0, 1000))
def test_sharding_partitions_the_epoch(n: int, replicas: int, drop_last: bool, seed: int) -> None:
    data = TensorData(torch.zeros(n, 1, 1, 1, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), "s")
    shards = [
        BatchLoader(
            data, 3, shuffle=True, seed=seed, drop_last=drop_last, num_replicas=replicas, rank=r
        ).indices()
        for r in range(replicas)
    ]
    sizes = {len(s) for s in shards}
    assert len(sizes) == 1  # ranks stay in lock-step
    allidx = torch.cat(shards).tolist()
    if drop_last:
        assert len(set(allidx)) == len(allidx) == (n // replicas) * replicas
    else:
        assert set(allidx) == set(range(n)) and len(allidx) == -(-n // replicas) * replicas


def test_loader_argument_validation() -> None:
    data = _data(5)
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(data, 0)
    with pytest.raises(ConfigError, match="seed"):
        BatchLoader(data, 2, seed=-1)
    with pytest.raises(ConfigError, match="rank"):
        BatchLoader(data, 2, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match="start_batch"):
        BatchLoader(data, 2).set_epoch(0, start_batch=4)


def test_float_data_passes_through() -> None:
    data = _data(12).to_float()
    x, _ = next(iter(BatchLoader(data, 12)))
    assert torch.equal(x, data.x)


# --------------------------------------------------------------------------- augmentation


def test_pad_crop_flip_outputs_a_shifted_possibly_flipped_crop() -> None:
    x = torch.rand(64, 3, 6, 7)
    out = pad_crop_flip(pad=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen_offsets, seen_flips = set(), set()
    for k in range(len(x)):
        matches = [
            (i, j, f)
            for i in range(5)
            for j in range(5)
            for f in (False, True)
            if torch.equal(out[k], (lambda c: c.flip(-1) if f else c)(padded[k, :, i : i + 6, j : j + 7]))
        ]
        assert matches, f"example {k} is not a crop of the padded image"
        seen_offsets.add(matches[0][:2])
        seen_flips.add(matches[0][2])
    assert len(seen_offsets) > 5 and seen_flips == {False, True}


def test_pad_crop_flip_same_generator_same_output_and_uint8() -> None:
    x = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    aug = PadCropFlip(4, True)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(PadCropFlip(0, False)(x, torch.Generator()), x)
    with pytest.raises(ConfigError, match="pad"):
        pad_crop_flip(pad=-1)


def test_augmentation_for_datasets() -> None:
    assert isinstance(augmentation_for("cifar10"), PadCropFlip)
    assert isinstance(augmentation_for("cifar100"), PadCropFlip)
    for name in ("mnist5k", "digits", "mnist", "fashion-mnist", "svhn"):
        assert augmentation_for(name) is None
    # translate: random shifts without flip where the dataset has no standard augmentation
    assert augmentation_for("mnist5k", translate=2) == PadCropFlip(2, flip=False)
    assert augmentation_for("cifar10", translate=2) == PadCropFlip(4, flip=True)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="translate"):
            augmentation_for("mnist5k", translate=bad)  # type: ignore[arg-type]


def test_translate_shifts_digits_without_flip_and_is_seeded() -> None:
    """MNIST translation (``TrainConfig.translate``): same shape, values in [0, 1], only shifts."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 10:16] = torch.rand(64, 1, 12, 6, generator=g)  # an asymmetric "digit" with a margin
    aug = augmentation_for("mnist5k", translate=2)
    assert aug is not None
    out = aug(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, aug(x, torch.Generator().manual_seed(2)))
    shifts = set()
    for k in range(len(x)):
        found = [
            (di, dj)
            for di in range(-2, 3)
            for dj in range(-2, 3)
            if torch.equal(out[k], torch.roll(x[k], shifts=(di, dj), dims=(-2, -1)))
        ]
        assert len(found) == 1, f"example {k} is not a translation of its digit by <= 2 pixels"
        shifts.add(found[0])
    assert (0, 0) in shifts and len(shifts) > 10  # most of the 25 shifts occur, incl. none
