"""Reader for SVHN "format 2" cropped digits (``train_32x32.mat``, ``test_32x32.mat``).

Format (http://ufldl.stanford.edu/housenumbers/, "Format 2"): a MATLAB file with ``X`` of shape
32×32×3×N (uint8, height × width × RGB × example) and ``y`` of shape N×1 holding 1..10, where
10 stands for the digit 0. We return N×3×32×32 uint8 images and labels 0..9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from entrobust.errors import DataError

__all__ = ["read_svhn_mat"]


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×3×32×32 uint8) and labels (0..9, label 10 mapped to 0) of one ``.mat`` file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except (ValueError, TypeError, OSError, EOFError, KeyError, IndexError, NotImplementedError) as exc:
        raise DataError(f"{path}: truncated or corrupt .mat file ({type(exc).__name__}: {exc})") from None
    for key in ("X", "y"):
        if key not in mat:
            raise DataError(f"{path}: missing variable {key!r} (not an SVHN format-2 file?)")
    x, y = mat["X"], np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: 'X' must have shape 32×32×3×N, got {x.shape}")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or x.min() < 0 or x.max() > 255:
            raise DataError(f"{path}: 'X' must hold 8-bit pixel values, got dtype {x.dtype}")
        x = x.astype(np.uint8)
    y = y.reshape(-1)
    if y.shape[0] != x.shape[3]:
        raise DataError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 1 or y.max() > 10 or not np.all(np.equal(np.mod(y, 1), 0))):
        bad = np.unique(y[(y < 1) | (y > 10) | (np.mod(y, 1) != 0)])[:10]
        raise DataError(f"{path}: labels must be integers in 1..10 (10 = digit 0), found {bad.tolist()}")
    labels = y.astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels
