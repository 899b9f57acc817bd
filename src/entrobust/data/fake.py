"""Writers for the official on-disk formats, and tiny fake datasets built with them.

Tests (ours and anyone's who needs "a CIFAR-10 on disk" without the 170 MB download) use these
to produce files that the real loaders read through exactly the same code path as the genuine
files. The writers follow the format descriptions cited in :mod:`entrobust.data.idx`,
:mod:`entrobust.data.cifar` and :mod:`entrobust.data.svhn`.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from entrobust.errors import ConfigError

__all__ = ["make_fake_dataset", "write_cifar", "write_cifar_batch", "write_idx", "write_svhn_mat"]

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8 or int8) as an IDX file; gzip it when ``path`` ends in ``.gz``."""
    path = Path(path)
    arr = np.ascontiguousarray(array)
    if arr.dtype not in _IDX_CODES:
        raise ConfigError(f"write_idx supports uint8/int8 arrays, got {arr.dtype}")
    header = bytes([0, 0, _IDX_CODES[arr.dtype], arr.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in arr.shape
    )
    payload = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _batch_bytes(images: np.ndarray, labels: np.ndarray, label_key: str, batch_label: str) -> bytes:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        raise ConfigError(f"CIFAR images must be uint8 N×3×32×32, got {images.dtype} {images.shape}")
    # Python-2 pickles load with bytes keys under encoding="bytes"; mimic that.
    d = {
        b"batch_label": batch_label.encode(),
        label_key.encode(): [int(v) for v in labels],
        b"data": images.reshape(len(images), 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(d, protocol=2)


def write_cifar_batch(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    label_key: str = "labels",
    batch_label: str = "batch",
) -> Path:
    """Write one CIFAR python batch (pickled dict with ``data`` N×3072 and ``labels``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_batch_bytes(images, labels, label_key, batch_label))
    return path


def write_cifar(
    directory: str | Path,
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    archive: bool = True,
) -> Path:
    """Write CIFAR-10 (5 train batches) or CIFAR-100 (``train``/``test``) into ``directory``.

    With ``archive`` a ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` is written, else
    the extracted ``cifar-10-batches-py`` / ``cifar-100-python`` folder. Returns what was written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        folder, key = "cifar-10-batches-py", "labels"
        chunks = np.array_split(np.arange(len(train[1])), 5)
        files = {f"data_batch_{i + 1}": (train[0][c], train[1][c]) for i, c in enumerate(chunks)}
        files["test_batch"] = test
    elif name == "cifar100":
        folder, key = "cifar-100-python", "fine_labels"
        files = {"train": train, "test": test}
    else:
        raise ConfigError(f"write_cifar: name must be cifar10 or cifar100, got {name!r}")
    blobs = {fn: _batch_bytes(x, y, key, fn) for fn, (x, y) in files.items()}
    if not archive:
        for fn, blob in blobs.items():
            (directory / folder).mkdir(exist_ok=True)
            (directory / folder / fn).write_bytes(blob)
        return directory / folder
    out = directory / f"{folder.replace('-batches-py', '-python')}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for fn, blob in blobs.items():
            info = tarfile.TarInfo(f"{folder}/{fn}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


def write_svhn_mat(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write an SVHN format-2 ``.mat``: ``X`` 32×32×3×N uint8, ``y`` N×1 with 10 for digit 0."""
    import scipy.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.asarray(labels, dtype=np.uint8).reshape(-1, 1).copy()
    y[y == 0] = 10
    scipy.io.savemat(str(path), {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": y})
    return path


def make_fake_dataset(
    name: str,
    root: str | Path,
    n_train: int = 50,
    n_test: int = 20,
    *,
    seed: int = 0,
    compressed: bool = True,
) -> Path:
    """Random images with balanced labels in the official format of ``name``, under ``root/<name>``.

    ``compressed`` selects ``.gz`` IDX files / the CIFAR ``.tar.gz`` (else raw IDX / the extracted
    folder). Returns ``root/<name>``; ``load_dataset(name, root=root)`` then reads it.
    """
    from entrobust.data.info import DATASET_INFO

    if name not in DATASET_INFO or DATASET_INFO[name].embedded:
        raise ConfigError(f"make_fake_dataset: {name!r} is not a file-based dataset")
    info = DATASET_INFO[name]
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.integers(0, 256, size=(n, *info.shape), dtype=np.uint8)
        y = (np.arange(n) % info.num_classes).astype(np.int64)
        return x, rng.permutation(y)

    target = Path(root) / name
    train, test = split(n_train), split(n_test)
    if name in ("mnist", "fashion-mnist"):
        gz = ".gz" if compressed else ""
        for prefix, (x, y) in (("train", train), ("t10k", test)):
            write_idx(target / f"{prefix}-images-idx3-ubyte{gz}", x[:, 0])
            write_idx(target / f"{prefix}-labels-idx1-ubyte{gz}", y.astype(np.uint8))
    elif name in ("cifar10", "cifar100"):
        write_cifar(target, name, train, test, archive=compressed)
    elif name == "svhn":
        write_svhn_mat(target / "train_32x32.mat", *train)
        write_svhn_mat(target / "test_32x32.mat", *test)
    else:  # pragma: no cover - every file-based dataset is handled above
        raise ConfigError(f"make_fake_dataset: no writer for {name!r}")
    return target
