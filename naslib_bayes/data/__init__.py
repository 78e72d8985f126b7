"""Real image datasets as normalised in-memory tensors with seeded splits.

Typical use::

    splits = load_dataset("mnist", root="path/to/mnist", seed=0)   # DataSplits
"""

from naslib_bayes.data.dataset import DataSplits, ImageDataset
from naslib_bayes.data.loaders import (
    DATASET_NAMES,
    canonical_name,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_imagenet16,
    load_mnist,
)

__all__ = [
    "DATASET_NAMES",
    "DataSplits",
    "ImageDataset",
    "canonical_name",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_imagenet16",
    "load_mnist",
]
