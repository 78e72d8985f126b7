"""Mini-batches straight from in-memory tensors (no DataLoader: there is nothing to load)."""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from naslib_bayes.data.dataset import ImageDataset
from naslib_bayes.errors import UserError

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def batches(
    dataset: ImageDataset,
    batch_size: int,
    generator: torch.Generator | None,
    shuffle: bool = True,
    drop_last: bool = False,
    augment: AugmentFn | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)``: x float32 (B, C, H, W), y int64 (B,), on the dataset's device.

    One pass over ``dataset``. ``shuffle`` draws the order from ``generator``; ``augment``
    (e.g. an :class:`~naslib_bayes.data.augment.Augment`) is applied to each batch with the
    same generator, so a seeded generator makes the whole epoch reproducible. ``generator``
    may be None only when neither shuffling nor augmentation is asked for.
    """
    if int(batch_size) < 1:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    if generator is None and (shuffle or augment is not None):
        raise ValueError("batches() needs a torch.Generator to shuffle or augment")
    count = len(dataset)
    device = dataset.images.device
    if shuffle:
        order = torch.randperm(count, generator=generator, device=generator.device).to(device)
    else:
        order = torch.arange(count, device=device)
    stop = count - count % batch_size if drop_last else count
    for start in range(0, stop, batch_size):
        rows = order[start : start + batch_size]
        x, y = dataset.images[rows], dataset.labels[rows]
        yield (augment(x, generator) if augment is not None else x), y
