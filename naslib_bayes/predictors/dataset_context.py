"""Dataset contexts from images (``--dataset-encoder images``): samplers, extractors, phi.

A dataset is described by ``images_per_class`` images of each of up to ``max_classes``
classes, passed through a fixed feature extractor and the Set Transformer phi of the surrogate.
Images come from :func:`naslib_bayes.data.load_dataset` (its training split) under
``image_root``; each sample is drawn from a caller's generator, so meta-training sees a fresh
sample per task and BO a seeded one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from naslib_bayes.errors import UserError, cause
from naslib_bayes.predictors.encoders.set_transformer import (
    PixelFeatures, RandomConvFeatures, class_sets, encode_dataset)


def build_feature_extractor(name: str) -> nn.Module:
    """A fixed extractor: ``random-conv``, ``pixels`` or ``package.module:factory``.

    A factory must return a module mapping (n, c, h, w) images in [0, 1] to (n, d) features and
    carrying ``out_dim`` (d); its weights are stored with the surrogate.
    """
    if name == "random-conv":
        return RandomConvFeatures(seed=0)
    if name == "pixels":
        return PixelFeatures(8)
    module_name, sep, attr = name.partition(":")
    if not (module_name and sep and attr):
        raise UserError(f"feature extractor {name!r}: expected 'random-conv', 'pixels' or 'module:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # importing runs the user's module: a SyntaxError in it, say, as much as a missing one
        raise UserError(f"feature extractor {name!r}: cannot import it ({cause(exc)})") from None
    if not callable(factory):
        raise UserError(f"feature extractor {name!r}: {attr} is a {type(factory).__name__}, not callable; "
                        "name a function returning the extractor")
    try:
        extractor = factory()
    except Exception as exc:  # the user's code: its own error, in one line naming where it came from
        raise UserError(f"feature extractor {name!r}: its factory raised ({cause(exc)})") from None
    if not isinstance(extractor, nn.Module) or not isinstance(getattr(extractor, "out_dim", None), int):
        raise UserError(f"feature extractor {name!r}: the factory must return an nn.Module with an int 'out_dim'")
    extractor.name = getattr(extractor, "name", name)
    return extractor.requires_grad_(False).eval()


def dataset_images(name: str, image_root) -> tuple[torch.Tensor, torch.Tensor]:
    """Training images of ``name`` on the [0, 1] scale, (n, c, h, w), and labels (n,)."""
    try:
        from naslib_bayes.data import load_dataset
    except ImportError:
        raise UserError("--dataset-encoder images needs naslib_bayes.data (the image loaders)") from None
    if image_root is None and name != "digits":
        raise UserError("--dataset-encoder images needs --image-root, the folder holding the datasets' images")
    root = None if image_root is None else Path(image_root) / name if (Path(image_root) / name).is_dir() else image_root
    train = load_dataset(name, root=root, seed=0).train
    return train.unnormalize(train.images).clamp(0.0, 1.0), train.labels


def image_sampler(name: str, image_root, per_class: int = 20,
                  max_classes: int | None = 20) -> Callable[[torch.Generator], torch.Tensor]:
    """A function drawing class-grouped images (n_classes, per_class, c, h, w) of ``name``."""
    images, labels = dataset_images(name, image_root)
    return lambda generator: class_sets(images, labels, per_class, generator, max_classes)


def image_context(surrogate, images: torch.Tensor) -> torch.Tensor:
    """phi of class-grouped images through the surrogate's extractor and Set Transformer, (c,)."""
    return encode_dataset(surrogate.dataset_encoder, surrogate.feature_extractor, images)


@torch.no_grad()
def target_image_context(surrogate, dataset: str, image_root, generator: torch.Generator,
                         samples: int = 4) -> torch.Tensor:
    """The target's phi, averaged over a few seeded image samples, (c,) float64."""
    config = surrogate.config
    draw = image_sampler(dataset, image_root, config.images_per_class, config.max_classes)
    return torch.stack([image_context(surrogate, draw(generator)) for _ in range(samples)]).mean(0).double()
