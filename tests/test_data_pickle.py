"""The CIFAR reader's unpickler refuses code-running pickles before any code runs."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from entrobust.data import SafeUnpickler, load_dataset, safe_load_pickle
from entrobust.errors import DataError


class _Exploit:
    """Unpickling this calls ``builtins.exec`` on code that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _SystemExploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def _malicious_batch(marker: Path, exploit: type = _Exploit) -> bytes:
    return pickle.dumps(
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"batch_label": exploit(marker)}, protocol=2
    )


def test_plain_pickle_really_would_run_the_code(tmp_path: Path) -> None:
    """Guard for the tests below: the payload is live under the ordinary unpickler."""
    marker = tmp_path / "ran"
    pickle.loads(_malicious_batch(marker))
    assert marker.exists()


@pytest.mark.parametrize(
    ("exploit", "global_name"),
    [(_Exploit, r"(__builtin__|builtins)\.exec"), (_SystemExploit, r"(posix|os|nt)\.system")],
)
def test_safe_unpickler_refuses(tmp_path: Path, exploit: type, global_name: str) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(
        DataError, match=rf"evil.pkl: unsafe pickle refused: refusing to load global .*{global_name}"
    ):
        safe_load_pickle(io.BytesIO(_malicious_batch(marker, exploit)), "evil.pkl")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        SafeUnpickler(io.BytesIO(_malicious_batch(marker, exploit))).load()
    assert not marker.exists()


def test_malicious_cifar_batch_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    d = tmp_path / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    (d / "test_batch").write_bytes(_malicious_batch(marker))
    with pytest.raises(DataError, match=r"test_batch: unsafe pickle refused.*(__builtin__|builtins)\.exec"):
        load_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()


def test_malicious_member_inside_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "cifar100").mkdir()
    blob = _malicious_batch(marker)
    with tarfile.open(tmp_path / "cifar100" / "cifar-100-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-100-python/test")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(
        DataError, match=r"cifar-100-python\.tar\.gz:cifar-100-python/test: unsafe pickle refused"
    ):
        load_dataset("cifar100", "test", root=tmp_path)
    assert not marker.exists()


def test_other_numpy_globals_are_refused() -> None:
    # numpy.load could read further (possibly pickled) files: only array reconstruction is allowed
    payload = b"cnumpy\nload\n(S'x.npy'\ntR."
    with pytest.raises(DataError, match=r"refusing to load global numpy\.load"):
        safe_load_pickle(io.BytesIO(payload), "p")


def test_safe_unpickler_still_reads_arrays() -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 4, 5):
        out = safe_load_pickle(
            io.BytesIO(pickle.dumps({b"data": arr, "k": [1, 2.5, "s"]}, protocol=protocol)), "p"
        )
        assert np.array_equal(out[b"data"], arr) and out["k"] == [1, 2.5, "s"]
