"""NAS-Bench-201 primitives, built by name through :func:`make_op`.

Every primitive maps a tensor of shape (B, C, H, W) to (B, C, ceil(H / stride), ceil(W / stride)):
cells keep their channel count, and a one-shot supernet can mix the outputs of all five ops
on one edge. The convolutions follow the benchmark's pre-activation order ReLU -> Conv -> BN.
"""

from __future__ import annotations

import torch
from torch import nn

from naslib_bayes.errors import UserError


class Zero(nn.Module):
    """The ``none`` op: zeros shaped like the input subsampled by ``stride``.

    Shape: (B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # mul(0) rather than zeros_like keeps the result in the autograd graph, so a supernet
        # that mixes this op with others still sees a tensor derived from its input.
        return x.mul(0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d; (B, C_in, H, W) -> (B, C_out, H', W').

    H' = floor((H + 2 * padding - kernel_size) / stride) + 1, and likewise W'.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__(
            # Not in place: the op's input is a cell node that other edges read too.
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )


class FactorizedReduce(nn.Module):
    """``skip_connect`` with stride 2: (B, C_in, H, W) -> (B, C_out, ceil(H / 2), ceil(W / 2)).

    A plain identity cannot halve the resolution, so (as in DARTS-style spaces) two 1x1 convs
    of stride 2 read the even and the odd pixel grid and their outputs are concatenated along
    channels, followed by BN. ``C_out`` must be even.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        if C_out % 2:
            raise UserError(f"a strided skip_connect needs an even channel count, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        even = self.conv_even(x)
        # Shift by one pixel; pad right/bottom so odd sizes give the same output size as `even`.
        odd = self.conv_odd(nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)))
        return self.bn(torch.cat([even, odd], dim=1))


def _none(C, stride, affine, track):
    return Zero(stride)


def _skip(C, stride, affine, track):
    if stride == 1:
        return nn.Identity()
    if stride == 2:
        return FactorizedReduce(C, C, affine, track)
    raise UserError(f"skip_connect supports stride 1 or 2, got {stride}")


def _conv1x1(C, stride, affine, track):
    return ReLUConvBN(C, C, 1, stride, 0, affine, track)


def _conv3x3(C, stride, affine, track):
    return ReLUConvBN(C, C, 3, stride, 1, affine, track)


def _avg_pool(C, stride, affine, track):
    # count_include_pad=False: border pixels average over the real neighbours only.
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


_FACTORIES = {
    "none": _none,
    "skip_connect": _skip,
    "nor_conv_1x1": _conv1x1,
    "nor_conv_3x3": _conv3x3,
    "avg_pool_3x3": _avg_pool,
}

#: Names :func:`make_op` accepts, in the benchmark's op order.
OP_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def make_op(
    name: str, C: int, stride: int = 1, affine: bool = True, track_running_stats: bool = True
) -> nn.Module:
    """Build the primitive ``name`` on ``C`` channels: (B, C, H, W) -> (B, C, H/stride, W/stride).

    ``affine`` and ``track_running_stats`` configure the BatchNorm of the ops that have one
    (one-shot supernets use ``affine=False`` so that the architecture weights, not BN scales,
    carry the op's importance). Unknown names raise :class:`UserError`.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UserError(f"unknown NAS-Bench-201 op {name!r}; known: {', '.join(OP_NAMES)}")
    if stride < 1:
        raise UserError(f"op stride must be >= 1, got {stride}")
    return factory(C, stride, affine, track_running_stats)
