"""The networks shipped for compression: LeNet-5, LeNet-300-100 and a VGG-style CIFAR net.

All are plain ``nn.Sequential`` chains of supported modules, built for a given input shape
(channels, height, width) and number of classes:

* :func:`lenet5` — the 20-50-800-500 LeNet-5 of the compression literature: conv 5x5 (20),
  max-pool 2, conv 5x5 (50), max-pool 2, linear 800 -> 500, linear 500 -> classes, with ReLU.
  On 28x28 inputs the convolutions are unpadded (the flattened map is 50 x 4 x 4 = 800);
  inputs smaller than 28 pixels get padding 2 so that the two pooling stages still fit
  (8x8 digits: 50 x 2 x 2 = 200 features into the 500 units).
* :func:`lenet300` — the 784-300-100 multi-layer perceptron (Flatten, 300, 100, classes).
* :func:`vgg` — a VGG-11-style net with BatchNorm: 3x3 convolutions 64, M, 128, M, 256, 256, M,
  512, 512, M, 512, 512, M (M = max-pool 2, skipped once the map is 1 pixel wide), then
  linear 512 -> 512, ReLU, Dropout 0.5 (as in the usual CIFAR VGG variants), linear -> classes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch.nn as nn

from naslib_bayes.errors import UserError


def lenet5(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    channels, height, width = _shape(input_shape)
    padding = 0 if min(height, width) >= 28 else 2
    size = lambda n: ((n + 2 * padding - 4) // 2 + 2 * padding - 4) // 2  # noqa: E731
    h, w = size(height), size(width)
    if h < 1 or w < 1:  # padded below 28 pixels: a side of 4 keeps one pixel through both poolings
        raise UserError(f"lenet5 needs inputs of at least 4x4 pixels, got {height}x{width}")
    return nn.Sequential(
        nn.Conv2d(channels, 20, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * h * w, 500), nn.ReLU(),
        nn.Linear(500, num_classes),
    )


def lenet300(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10) -> nn.Sequential:
    channels, height, width = _shape(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


VGG_CONFIG: tuple = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg(input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
        config: Sequence = VGG_CONFIG, hidden: int = 512) -> nn.Sequential:
    channels, height, width = _shape(input_shape)
    layers: list[nn.Module] = []
    c = channels
    for item in config:
        if item == "M":
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            continue
        layers += [nn.Conv2d(c, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item)), nn.ReLU()]
        c = int(item)
    layers += [nn.Flatten(), nn.Linear(c * height * width, hidden), nn.ReLU(), nn.Dropout(0.5),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Sequential]] = {"lenet5": lenet5, "lenet300": lenet300, "vgg": vgg}


def build_model(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Sequential:
    """One of :data:`MODELS` by name, for inputs of ``input_shape`` (C, H, W)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
    return factory(input_shape, num_classes)


def _shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise UserError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    return tuple(int(s) for s in input_shape)  # type: ignore[return-value]
