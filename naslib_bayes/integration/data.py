"""Image data for NASLib's Trainer without NASLib's downloading loaders.

NASLib's ``Trainer`` builds its loaders with ``utils.get_train_val_loaders``, which downloads
CIFAR through torchvision. ``naslib-run`` hands it these loaders instead (see
:class:`naslib_bayes.integration.trainer.LoaderTrainer`), read from files the user names:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; no
  file needed);
* ``mnist``: the MNIST IDX files in ``--data-root`` (``train-*`` and/or ``t10k-*``,
  gzipped or not). Without the training files, the test files are split 80/20 (seeded).

Splits follow NASLib's: in search mode the training pool is split by ``train_portion`` into
the weight-training and architecture-validation loaders; in evaluation mode the whole pool
trains and the held-out test part tests. This module needs no NASLib.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from naslib_bayes.errors import UserError

DATASETS = ("digits", "mnist")


@dataclass
class ImageData:
    """Normalised images (N, C, H, W) float32 and int64 labels for a training pool and a test part."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])


def _normalise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = float(train.mean()), float(train.std()) or 1.0
    as_tensor = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return as_tensor(train), as_tensor(test)


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def load_digits(seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits, 80% training pool / 20% test (seeded)."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = bunch.images.astype(np.float64)[:, None] / 16.0
    labels = bunch.target.astype(np.int64)
    train, test = _split(len(labels), 0.2, seed)
    x_train, x_test = _normalise(images[train], images[test])
    return ImageData("digits", x_train, torch.from_numpy(labels[train]), x_test, torch.from_numpy(labels[test]), 10)


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(dims)):
        raise UserError(f"{path}: IDX file size does not match its header {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def load_mnist(root: str | Path, seed: int = 0) -> ImageData:
    """MNIST from IDX files in ``root``; without ``train-*`` files the ``t10k-*`` ones are split 80/20."""
    root = Path(root)
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            parts[part] = (_read_idx(images).astype(np.float64)[:, None] / 255.0, _read_idx(labels).astype(np.int64))
    if not parts:
        raise UserError(f"{root}: no MNIST IDX files (t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz])")
    if "train" not in parts or "test" not in parts:
        images, labels = parts.get("train") or parts["test"]
        train, test = _split(len(labels), 0.2, seed)
        parts = {"train": (images[train], labels[train]), "test": (images[test], labels[test])}
    x_train, x_test = _normalise(parts["train"][0], parts["test"][0])
    return ImageData("mnist", x_train, torch.from_numpy(parts["train"][1]), x_test, torch.from_numpy(parts["test"][1]), 10)


def load_image_data(name: str, root: str | Path | None = None, seed: int = 0) -> ImageData:
    """One of :data:`DATASETS`; ``root`` is the folder holding its files (unused for ``digits``)."""
    if name == "digits":
        return load_digits(seed)
    if name == "mnist":
        if root is None:
            raise UserError("--data-root DIR (the folder with the MNIST IDX files) is required for mnist")
        return load_mnist(root, seed)
    raise UserError(f"unknown image dataset {name!r} for one-shot search; known: {', '.join(DATASETS)}")


def _loader(images, labels, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      drop_last=False)


def search_loaders(data: ImageData, batch_size: int, train_portion: float, seed: int, data_size: int | None = None):
    """(train, valid, test) loaders as NASLib builds them in search mode.

    The first ``data_size`` images of a seeded permutation of the training pool are split
    ``train_portion`` / rest into weight-training and architecture-validation data.
    """
    n = len(data.train_labels) if not data_size else min(int(data_size), len(data.train_labels))
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data.train_labels))[:n])
    n_train = max(1, min(n - 1, int(np.floor(train_portion * n))))
    train, valid = order[:n_train], order[n_train:]
    return (
        _loader(data.train_images[train], data.train_labels[train], batch_size, True, seed),
        _loader(data.train_images[valid], data.train_labels[valid], batch_size, True, seed + 1),
        _loader(data.test_images, data.test_labels, batch_size, False, seed),
    )


def eval_loaders(data: ImageData, batch_size: int, seed: int):
    """(train, valid, test) loaders for retraining: the whole training pool, no validation, the test part."""
    return (
        _loader(data.train_images, data.train_labels, batch_size, True, seed),
        None,
        _loader(data.test_images, data.test_labels, batch_size, False, seed),
    )
