"""Batched, vectorised augmentation of normalised (B, C, H, W) image tensors.

Every function draws its randomness from the ``torch.Generator`` it is given, per sample, with
no Python loop over the batch, and works on the tensor's own device. Random numbers are drawn
on the generator's device and then moved, so a CPU generator also drives GPU batches.
Images are already normalised. Cutout writes zeros, i.e. the channel mean, as DeVries & Taylor
(2017) do after normalising. A crop's padding is ``pad_value`` per channel: the datasets' usual
pipelines pad the raw image with black before normalising, so :func:`default_augment` pads with
the normalised value of a black pixel (``-mean / std``). Padding with 0 there instead would frame
every shifted training image in a grey (mean-valued) border that no test image has: on MNIST,
whose background is black, a visible strip on 249 of 256 images.
"""

from __future__ import annotations

import dataclasses

import torch

from naslib_bayes.data.dataset import ImageDataset
from naslib_bayes.data.loaders import canonical_name
from naslib_bayes.errors import UserError


def _randint(high: int, count: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``count`` integers uniform in ``0 .. high - 1``, int64 (count,) on ``device``."""
    return torch.randint(high, (count,), generator=generator, device=generator.device).to(device)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator,
                fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pad by ``padding`` on every side, then crop back to (H, W) at a random offset per sample.

    Args:
        images: (B, C, H, W).
        fill: (C,) value of the padding per channel; None pads with zeros.
    Returns:
        (B, C, H, W); with ``padding`` 0 the input itself.
    """
    if padding == 0:
        return images
    batch, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    if fill is not None:  # written around the image, so its own pixels are copied exactly
        border = torch.ones_like(padded[:1, :1], dtype=torch.bool)
        border[..., padding:padding + height, padding:padding + width] = False
        padded = torch.where(border, fill.to(padded).view(1, channels, 1, 1), padded)
    top = _randint(2 * padding + 1, batch, generator, images.device)
    left = _randint(2 * padding + 1, batch, generator, images.device)
    rows = top[:, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = left[:, None] + torch.arange(width, device=images.device)  # (B, W)
    sample = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 broadcast to (B, H, W) and move the channel dim last.
    cropped = padded.permute(0, 2, 3, 1)[sample, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return cropped.permute(0, 3, 1, 2).contiguous()


def random_flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each (B, C, H, W) image left-right with probability ``p``; returns (B, C, H, W)."""
    draws = torch.rand(images.shape[0], generator=generator, device=generator.device).to(images.device)
    flip = (draws < p).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per sample, centred anywhere in the image.

    Squares that reach past the border are clipped (so they may zero fewer pixels), as in
    DeVries & Taylor (2017). Args: images (B, C, H, W). Returns (B, C, H, W).
    """
    if size == 0:
        return images
    batch, _, height, width = images.shape
    top = _randint(height, batch, generator, images.device) - size // 2
    left = _randint(width, batch, generator, images.device) - size // 2
    rows = torch.arange(height, device=images.device)[None, :] - top[:, None]  # (B, H)
    cols = torch.arange(width, device=images.device)[None, :] - left[:, None]  # (B, W)
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return images.masked_fill(inside[:, None], 0.0)


@dataclasses.dataclass(frozen=True)
class Augment:
    """A crop / flip / cutout pipeline, callable as ``augment(images, generator)``.

    Attributes:
        crop_padding: padding for :func:`random_crop` (0: no crop).
        flip: mirror left-right with probability 1/2.
        cutout: side of the :func:`cutout` square (0: none).
        pad_value: the crop's padding per channel in normalised units (None: 0, the channel
            mean); :func:`default_augment` sets it to black.
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    pad_value: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for field in ("crop_padding", "cutout"):
            if int(getattr(self, field)) < 0:
                raise UserError(f"augmentation {field}={getattr(self, field)} must be >= 0")

    @property
    def is_identity(self) -> bool:
        return self.crop_padding == 0 and not self.flip and self.cutout == 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply crop, then flip, then cutout to (B, C, H, W) images."""
        fill = None if self.pad_value is None else images.new_tensor(self.pad_value)
        images = random_crop(images, self.crop_padding, generator, fill)
        if self.flip:
            images = random_flip(images, generator)
        return cutout(images, self.cutout, generator)


# Standard choices: CIFAR pads 4 of 32 pixels; ImageNet16 pads 2 of 16, as in NAS-Bench-201.
# Digits are not mirror-symmetric (a flipped 2 is no 2), so no flip for MNIST or digits; the
# 8x8 digits are too small to crop without losing strokes.
_DEFAULTS = {
    "digits": Augment(),
    "mnist": Augment(crop_padding=2),
    "cifar10": Augment(crop_padding=4, flip=True),
    "cifar100": Augment(crop_padding=4, flip=True),
    "ImageNet16-120": Augment(crop_padding=2, flip=True),
}


def default_augment(name: str, train: ImageDataset) -> Augment:
    """The usual training augmentation for dataset ``name`` (any alias :func:`load_dataset` takes).

    ``train`` is the split it augments: its normalisation gives the value of a black pixel, which
    the crop pads with (as the usual pipelines pad raw images before normalising).
    """
    black = tuple(-mean / std for mean, std in zip(train.mean, train.std))
    return dataclasses.replace(_DEFAULTS[canonical_name(name)], pad_value=black)
