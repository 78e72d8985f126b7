"""Real image datasets as normalised in-memory tensors, seeded splits and batched augmentation.

Typical use::

    splits = load_dataset("mnist", root="path/to/mnist", seed=0)   # DataSplits
    gen = torch.Generator().manual_seed(0)
    for x, y in batches(splits.train, 128, gen, augment=default_augment("mnist", splits.train)):
        ...
"""

from naslib_bayes.data.augment import Augment, cutout, default_augment, random_crop, random_flip
from naslib_bayes.data.batching import batches
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
    "Augment",
    "DATASET_NAMES",
    "DataSplits",
    "ImageDataset",
    "batches",
    "canonical_name",
    "cutout",
    "default_augment",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_imagenet16",
    "load_mnist",
    "random_crop",
    "random_flip",
]
