"""Datasets: embedded (``mnist5k``, ``digits``) and file-based (MNIST, Fashion-MNIST, CIFAR-10/100,
SVHN) loaders, a verified resumable downloader, a reproducible batch iterator and CIFAR augmentation.

>>> from entrobust.data import load_dataset, BatchLoader
>>> train = load_dataset("mnist5k", "train", val_size=500)
>>> len(train)
3500
>>> x, y = next(iter(BatchLoader(train, 64, shuffle=True, seed=0)))
>>> tuple(x.shape), x.dtype
((64, 1, 28, 28), torch.float32)

See ``docs/data.md`` for formats, folder layout and downloading.
"""

from __future__ import annotations

from entrobust.data.augment import Augment, PadCropFlip, augmentation_for, pad_crop_flip
from entrobust.data.cifar import SafeUnpickler, safe_load_pickle
from entrobust.data.datasets import (
    DATASETS,
    DatasetLoader,
    MissingFileError,
    carve_validation,
    dataset_info,
    default_root,
    load_dataset,
    per_class_holdout,
)
from entrobust.data.downloader import SOURCES, RemoteFile, download, download_file
from entrobust.data.fake import make_fake_dataset
from entrobust.data.info import DATASET_INFO, DatasetInfo, default_threat
from entrobust.data.loader import BatchLoader
from entrobust.data.tensordata import TensorData

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "SOURCES",
    "Augment",
    "BatchLoader",
    "DatasetInfo",
    "DatasetLoader",
    "MissingFileError",
    "PadCropFlip",
    "RemoteFile",
    "SafeUnpickler",
    "TensorData",
    "augmentation_for",
    "carve_validation",
    "dataset_info",
    "default_root",
    "default_threat",
    "download",
    "download_file",
    "load_dataset",
    "make_fake_dataset",
    "pad_crop_flip",
    "per_class_holdout",
    "safe_load_pickle",
]
