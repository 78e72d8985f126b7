"""Dataset encoder phi: two stacked Set Transformer blocks over images grouped by class.

Following TNAS (after MetaD2A), a dataset is a set of classes and a class is a set of image
features. The first block pools the samples of each class into a class summary; the second
pools the class summaries into one dataset vector. Each block is a self-attention block (SAB,
permutation-equivariant) followed by attention pooling with a learned query (PMA,
permutation-invariant), so phi does not depend on the order of samples within a class nor on the
order of classes (Lee et al., 2019, "Set Transformer").

Images reach phi through a fixed feature extractor (:class:`RandomConvFeatures`,
:class:`PixelFeatures`, or any module the user supplies), named in results so that runs say what
phi saw.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from naslib_bayes.errors import UserError
from naslib_bayes.predictors.seeding import reset_parameters_


class MAB(nn.Module):
    """Multihead attention block: ``H = LN(Q + Att(Q, K, K))``, output ``LN(H + rFF(H))``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``query`` (b, q, dim), ``keys`` (b, k, dim) -> (b, q, dim)."""
        h = self.norm1(query + self.attention(query, keys, keys, need_weights=False)[0])
        return self.norm2(h + self.ff(h))


class PMA(nn.Module):
    """Pooling by multihead attention with one learned query: (b, n, dim) -> (b, dim)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.pre = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.mab = MAB(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab(self.query.expand(x.size(0), -1, -1), self.pre(x)).squeeze(1)


class SetBlock(nn.Module):
    """Project, self-attend (SAB), pool (PMA): a set (b, n, in_dim) -> (b, dim)."""

    def __init__(self, in_dim: int, dim: int, heads: int):
        super().__init__()
        self.project = nn.Linear(in_dim, dim)
        self.sab = MAB(dim, heads)
        self.pool = PMA(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x)
        return self.pool(self.sab(h, h))


class DatasetEncoder(nn.Module):
    """phi: class-grouped features (n_classes, n_per_class, in_dim) -> (out_dim,).

    Args:
        in_dim: feature size of one sample (the feature extractor's output).
        dim: width of both Set Transformer blocks.
        out_dim: size of the dataset encoding.
        heads: attention heads (``dim`` must be divisible by it).
        generator: draws the initial weights (local randomness only).
    """

    def __init__(self, in_dim: int, dim: int = 32, out_dim: int = 8, heads: int = 4,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.in_dim, self.dim, self.out_dim = in_dim, dim, out_dim
        self.intra_class = SetBlock(in_dim, dim, heads)
        self.inter_class = SetBlock(dim, dim, heads)
        self.head = nn.Linear(dim, out_dim)
        if generator is not None:
            reset_parameters_(self, generator)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` (n_classes, n_per_class, in_dim) -> (out_dim,)."""
        class_summaries = self.intra_class(features)  # (n_classes, dim)
        return self.head(self.inter_class(class_summaries.unsqueeze(0))).squeeze(0)


# ---- fixed feature extractors -------------------------------------------------------------
def _as_float_images(images: torch.Tensor) -> torch.Tensor:
    """(n, h, w) or (n, c, h, w), uint8 or float -> float (n, c, h, w) in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


class PixelFeatures(nn.Module):
    """Resized raw pixels: grey levels at ``size`` x ``size``, flattened -> (n, size * size)."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size
        self.out_dim = size * size
        self.name = f"pixels-{size}x{size}"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grey = _as_float_images(images).mean(dim=1, keepdim=True)
        return F.interpolate(grey, size=(self.size, self.size), mode="area").flatten(1)


class RandomConvFeatures(nn.Module):
    """A seeded random conv net, never trained: (n, c, h, w) images -> (n, 2 * channels[-1]).

    Images are resized to 32 x 32 and given 3 channels (grey images are repeated), so one
    extractor serves MNIST, digits and CIFAR alike. Each conv layer is followed by ReLU; the
    output pools each final channel by its mean and its standard deviation over positions.
    Random convolutional features are a cheap, data-free description of image statistics.
    """

    def __init__(self, seed: int = 0, channels: tuple[int, ...] = (16, 32)):
        super().__init__()
        layers, width = [], 3
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.ReLU()]
            width = out
        self.net = nn.Sequential(*layers)
        reset_parameters_(self, torch.Generator().manual_seed(seed))
        self.requires_grad_(False)
        self.out_dim = 2 * width
        self.name = f"random-conv(seed={seed},channels={list(channels)})"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_float_images(images)
        x = x.expand(-1, 3, -1, -1) if x.size(1) == 1 else x[:, :3]
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        h = self.net((x - 0.5) / 0.25).flatten(2)  # (n, channels, positions)
        return torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)


def class_sets(images: torch.Tensor, labels: torch.Tensor, per_class: int,
               generator: torch.Generator, max_classes: int | None = None) -> torch.Tensor:
    """Sample ``per_class`` images of each class: -> (n_classes, per_class, *image_shape).

    Classes with fewer images are sampled with replacement. With ``max_classes``, a random
    subset of that many classes is kept (large label sets such as ImageNet16-120).
    """
    classes = torch.unique(labels)
    if max_classes is not None and classes.numel() > max_classes:
        classes = classes[torch.randperm(classes.numel(), generator=generator)[:max_classes]].sort().values
    groups = []
    for c in classes:
        members = (labels == c).nonzero().squeeze(1)
        if members.numel() >= per_class:
            pick = members[torch.randperm(members.numel(), generator=generator)[:per_class]]
        else:
            pick = members[torch.randint(members.numel(), (per_class,), generator=generator)]
        groups.append(images[pick])
    return torch.stack(groups)


def encode_dataset(encoder: DatasetEncoder, extractor: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """phi of class-grouped images (n_classes, per_class, ...) through ``extractor`` -> (out_dim,)."""
    n_classes, per_class = images.shape[:2]
    features = extractor(images.flatten(0, 1))
    expected = (n_classes * per_class, encoder.in_dim)
    # checked, not reshaped: a transposed or flattened output would reshape into scrambled features
    if tuple(features.shape) != expected:
        name = getattr(extractor, "name", type(extractor).__name__)
        raise UserError(f"feature extractor {name!r} returned features of shape {tuple(features.shape)} for "
                        f"{expected[0]} images; expected {expected} (images, out_dim)")
    return encoder(features.reshape(n_classes, per_class, -1).to(encoder.head.weight.dtype))
