"""Candidate operations of the DARTS space (Liu, Simonyan, Yang; ICLR 2019).

Eight primitives, ``none`` first: zero, 3x3 max and average pooling, identity (a factorized
reduction when the edge halves the resolution), separable convolutions 3x3 / 5x5 (two stacked
ReLU-depthwise-pointwise-BN blocks) and dilated separable convolutions 3x3 / 5x5 (one block,
dilation 2). In the search network BatchNorm has no affine parameters and pooling is followed
by a non-affine BatchNorm, as in DARTS.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PRIMITIVES: tuple[str, ...] = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)
#: The non-zero primitives (one switch or architecture weight each besides ``none``).
NONZERO_PRIMITIVES: tuple[str, ...] = PRIMITIVES[1:]
PARAMETER_FREE: frozenset[str] = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution, BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) convolution, pointwise convolution, BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable blocks; only the first one strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output's shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convolutions, one shifted by a pixel, whose
    outputs are concatenated (works for odd sizes too: the shifted path is zero-padded)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


class PoolBN(nn.Sequential):
    """Pooling followed by a BatchNorm (the search network's pooling ops)."""

    def __init__(self, pool: nn.Module, channels: int, affine: bool):
        super().__init__(pool, nn.BatchNorm2d(channels, affine=affine))


def make_op(name: str, channels: int, stride: int, affine: bool = True, pool_bn: bool = False) -> nn.Module:
    """Build primitive ``name`` mapping ``channels`` to ``channels`` with the given stride.

    Args:
        pool_bn: follow pooling with a BatchNorm (True in the search network).
    """
    c = channels
    if name == "none":
        return Zero(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = (nn.MaxPool2d(3, stride=stride, padding=1) if name == "max_pool_3x3"
                else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False))
        return PoolBN(pool, c, affine=False) if pool_bn else pool
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2, affine)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2, affine)
    raise ValueError(f"unknown DARTS primitive {name!r}; known: {', '.join(PRIMITIVES)}")
