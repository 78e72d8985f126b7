"""naslib-bayes's image data as the loaders NASLib's Trainer expects, without downloads.

NASLib's ``Trainer`` builds its loaders with ``utils.get_train_val_loaders``, which downloads
CIFAR through torchvision. ``naslib-run`` hands it these loaders instead (see
:class:`naslib_bayes.integration.trainer.LoaderTrainer`), built from
:func:`naslib_bayes.data.load_dataset` (digits, MNIST, CIFAR-10/100, ImageNet16-120 from the
files the user names).

Splits follow NASLib's: the training pool (the dataset's train part, plus its validation part
when it has one) is, in search mode, split by ``search.train_portion`` into weight-training and
architecture-validation data; in evaluation mode it trains whole and the test part tests.
This module needs no NASLib.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from naslib_bayes.data import DATASET_NAMES, load_dataset
from naslib_bayes.errors import UserError

__all__ = ["DATASET_NAMES", "ImageData", "eval_loaders", "load_image_data", "search_loaders"]


@dataclass
class ImageData:
    """Normalised images (N, C, H, W) float32 and int64 labels: a training pool and a test part."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])


def load_image_data(name: str, root: str | os.PathLike | None = None, seed: int = 0) -> ImageData:
    """Dataset ``name`` (one of :data:`naslib_bayes.data.DATASET_NAMES`) from ``root``, seeded."""
    splits = load_dataset(name, root, seed=seed)
    if splits.test is None:
        raise UserError(f"dataset {name}: no test part to evaluate on")
    pool = [part for part in (splits.train, splits.val) if part is not None]
    return ImageData(
        name=splits.train.name,
        train_images=torch.cat([p.images for p in pool]),
        train_labels=torch.cat([p.labels for p in pool]),
        test_images=splits.test.images,
        test_labels=splits.test.labels,
        num_classes=splits.train.num_classes,
    )


def _loader(images, labels, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(TensorDataset(images, labels), batch_size=int(batch_size), shuffle=shuffle, generator=generator)


def search_loaders(data: ImageData, batch_size: int, train_portion: float, seed: int, data_size: int | None = None):
    """``(train, valid, test)`` loaders as NASLib builds them in search mode.

    The first ``data_size`` images (all when None) of a seeded permutation of the training pool
    are split ``train_portion`` / rest into weight-training and architecture-validation data.
    """
    total = len(data.train_labels)
    n = total if not data_size else min(int(data_size), total)
    if n < 2:
        raise UserError(f"search.data_size={data_size}: need at least 2 images to split into train and valid")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(total)[:n])
    n_train = max(1, min(n - 1, int(np.floor(float(train_portion) * n))))
    train, valid = order[:n_train], order[n_train:]
    return (
        _loader(data.train_images[train], data.train_labels[train], batch_size, True, seed),
        _loader(data.train_images[valid], data.train_labels[valid], batch_size, True, seed + 1),
        _loader(data.test_images, data.test_labels, batch_size, False, seed),
    )


def eval_loaders(data: ImageData, batch_size: int, seed: int, data_size: int | None = None):
    """``(train, valid, test)`` for retraining: the training pool (its first ``data_size`` images of a
    seeded permutation when given), no validation, the test part."""
    total = len(data.train_labels)
    rows = torch.from_numpy(np.random.default_rng(seed).permutation(total)[: int(data_size) if data_size else total])
    return (
        _loader(data.train_images[rows], data.train_labels[rows], batch_size, True, seed),
        None,
        _loader(data.test_images, data.test_labels, batch_size, False, seed),
    )
