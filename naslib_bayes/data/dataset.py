"""In-memory image datasets: normalised tensors, their splits, and seeded splitting helpers."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import whole_number

Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of an image dataset, held in memory.

    Attributes:
        images: float32 (N, C, H, W), per channel ``(pixel / max_value - mean) / std``; so a
            value of 0 is the channel mean.
        labels: int64 (N,), in ``0 .. num_classes - 1``.
        num_classes: number of classes of the whole dataset (not only those present here).
        name: canonical dataset name, e.g. ``"mnist"``.
        mean, std: the per-channel statistics (length C) used for normalisation, on the
            [0, 1] pixel scale.
        indices: int64 (N,), the row of each image in the pool it was drawn from (the
            training files for train/val, the test files for test; the one pool when a single
            pool was split). Lets callers check splits for overlap and trace images back.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    indices: torch.Tensor

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dim() != 4 or self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or self.labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64 ({n},), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.indices.shape != (n,):
            raise ValueError(f"indices must have shape ({n},), got {tuple(self.indices.shape)}")
        if not len(self.mean) == len(self.std) == self.images.shape[1]:
            raise ValueError("mean and std need one value per channel")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def to(self, device: torch.device | str) -> ImageDataset:
        """A copy with images, labels and indices on ``device``."""
        return dataclasses.replace(
            self, images=self.images.to(device), labels=self.labels.to(device), indices=self.indices.to(device)
        )

    def unnormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised (B, C, H, W) images back to the [0, 1] pixel scale."""
        mean = images.new_tensor(self.mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).view(1, -1, 1, 1)
        return images * std + mean


@dataclasses.dataclass(frozen=True, eq=False)
class DataSplits:
    """The train split of a dataset, plus the validation and test splits when there are any."""

    train: ImageDataset
    val: ImageDataset | None = None
    test: ImageDataset | None = None

    def parts(self) -> dict[str, ImageDataset]:
        """The splits that are present, by name (``train``, ``val``, ``test``)."""
        return {key: part for key, part in (("train", self.train), ("val", self.val), ("test", self.test))
                if part is not None}

    def to(self, device: torch.device | str) -> DataSplits:
        """A copy with every split on ``device``."""
        return DataSplits(**{key: part.to(device) for key, part in self.parts().items()})

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for result logs: name, classes, image shape, split sizes, stats."""
        return {
            "dataset": self.train.name,
            "num_classes": self.train.num_classes,
            "image_shape": list(self.train.image_shape),
            "sizes": {key: len(part) for key, part in self.parts().items()},
            "mean": list(self.train.mean),
            "std": list(self.train.std),
        }


class RawPart(NamedTuple):
    """Unnormalised images of one split, as read from disk.

    ``pixels`` is (N, C, H, W) of any numeric dtype on the file's scale (0..255, or 0..16 for
    scikit-learn's digits); ``labels`` is (N,) int64; ``indices`` (N,) int64 rows in the pool.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    @staticmethod
    def whole(pixels: torch.Tensor, labels: torch.Tensor) -> RawPart:
        """A pool of images whose indices are simply 0..N-1."""
        return RawPart(pixels, labels.to(torch.int64), torch.arange(len(labels)))

    def select(self, rows: torch.Tensor) -> RawPart:
        return RawPart(self.pixels[rows], self.labels[rows], self.indices[rows])


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: split draws never touch the global RNG. A seed that
    is not a whole number is refused in one line (int() ran seed 1.5 as seed 1)."""
    return torch.Generator().manual_seed(whole_number("seed", seed))


def partition(
    n: int, sizes: Sequence[int], generator: torch.Generator, what: str = "split sizes"
) -> list[torch.Tensor]:
    """Disjoint random index sets of the given sizes drawn from ``range(n)``.

    Parts are consecutive slices of one permutation, so a part's content depends only on the
    seed and the sizes of the parts before it. Each part is returned sorted, int64 (size,).
    ``what`` names the user's setting in the error raised when the sizes do not fit.
    """
    if any(size < 0 for size in sizes) or sum(sizes) > n:
        raise UserError(f"{what}: sizes {list(sizes)} do not fit in {n} images")
    order = torch.randperm(n, generator=generator)
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    return [order[start:stop].sort().values for start, stop in zip(bounds[:-1], bounds[1:])]


def carve_validation(train: RawPart, val_size: int, generator: torch.Generator) -> tuple[RawPart, RawPart | None]:
    """Split ``val_size`` random images off ``train``: (rest of train, val or None when 0)."""
    val_size = whole_number("val_size", val_size)  # 2.5 was a TypeError from slicing
    if not 0 <= val_size < len(train.labels):
        raise UserError(f"val_size={val_size} must be in 0 .. {len(train.labels) - 1} (training images available)")
    if val_size == 0:
        return train, None
    val_rows, train_rows = partition(len(train.labels), [val_size, len(train.labels) - val_size], generator)
    return train.select(train_rows), train.select(val_rows)


def channel_stats(images: torch.Tensor) -> Stats:
    """Per-channel mean and (population) std of (N, C, H, W) images, accumulated in float64."""
    count = images.numel() // images.shape[1]
    total = images.sum(dim=(0, 2, 3), dtype=torch.float64)
    squares = images.square().sum(dim=(0, 2, 3), dtype=torch.float64)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    # A constant channel would divide by zero; leave it unscaled instead.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


def _check_stats(stats: Sequence[Sequence[float]], channels: int) -> Stats:
    try:
        mean, std = (tuple(float(v) for v in values) for values in stats)
    except (TypeError, ValueError):
        raise UserError(f"stats={stats!r} must be (mean, std), each a sequence of {channels} numbers") from None
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UserError(f"stats={stats!r} must give {channels} means and {channels} positive stds")
    if not all(math.isfinite(value) for value in mean + std):  # NaN slips past "<= 0" and blanks a channel
        raise UserError(f"stats={stats!r} must be finite numbers")
    return mean, std


def build_splits(
    name: str,
    parts: dict[str, RawPart | None],
    num_classes: int,
    max_value: float,
    stats: Sequence[Sequence[float]] | None = None,
) -> DataSplits:
    """Scale raw splits to [0, 1] and normalise them all with one set of channel statistics.

    Args:
        parts: ``train`` (required), ``val`` and ``test`` (None or absent when not wanted).
        max_value: pixel value that maps to 1.0 (255 for 8-bit images).
        stats: fixed ``(mean, std)`` per channel on the [0, 1] scale; None computes them from
            the train part only, so nothing about val/test leaks into the inputs.
    """
    scaled = {key: part for key, part in parts.items() if part is not None}
    # copy=True: the in-place ops below must never write into the caller's tensors.
    images = {key: part.pixels.to(torch.float32, copy=True).div_(max_value) for key, part in scaled.items()}
    channels = images["train"].shape[1]
    mean, std = channel_stats(images["train"]) if stats is None else _check_stats(stats, channels)
    shift = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    scale = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    datasets = {
        key: ImageDataset(
            images=images[key].sub_(shift).div_(scale),
            labels=part.labels.to(torch.int64),
            num_classes=num_classes,
            name=name,
            mean=mean,
            std=std,
            indices=part.indices.to(torch.int64),
        )
        for key, part in scaled.items()
    }
    return DataSplits(**datasets)
