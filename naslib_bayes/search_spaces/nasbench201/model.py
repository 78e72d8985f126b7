"""A trainable NAS-Bench-201 network: one cell repeated in the benchmark's macro skeleton.

Skeleton (C channels in the first stage, N cells per stage)::

    stem: Conv3x3(in_channels -> C, no bias) + BN
    N cells at C    -> ResNet block (C -> 2C, stride 2)
    N cells at 2C   -> ResNet block (2C -> 4C, stride 2)
    N cells at 4C   -> BN + ReLU -> global average pool -> Linear(4C -> num_classes)

With C=16 and N=5 this is the network whose results NAS-Bench-201 tabulates; any input size
and channel count work (28x28 MNIST, 8x8 digits, 32x32 CIFAR, 16x16 ImageNet16).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.counting import count_flops, count_parameters
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.ops import ReLUConvBN, make_op

__all__ = ["Cell", "ResNetBasicBlock", "NB201Network", "count_parameters", "count_flops", "model_cost"]


class Cell(nn.Module):
    """One NAS-Bench-201 cell on C channels: (B, C, H, W) -> (B, C, H, W).

    Node 0 is the input; node j (1..3) is the sum over its incoming edges i -> j of
    ``op(node i)``; node 3 is the output. ``none`` edges are not computed (they add zeros);
    a node whose incoming edges are all ``none`` is a zero tensor. Ops reading such a zero node
    are still computed, as in the benchmark's network: a conv's BatchNorm then outputs its
    learned shift, which is not zero once trained.

    Args:
        cell: op-index tuple (see :mod:`naslib_bayes.search_spaces.nasbench201.cell`) or
            benchmark string.
        C: channel count.
        affine, track_running_stats: forwarded to the BatchNorms of the convolutions.
    """

    def __init__(self, cell: str | Sequence[int], C: int, affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.cell = nb201.parse(cell)
        self.C = C
        # One module per edge (a parameter-free Zero on `none` edges) keeps edge indices aligned.
        self.edges = nn.ModuleList(make_op(nb201.OPS[op], C, 1, affine, track_running_stats) for op in self.cell)
        # For each node 1..3: its computed incoming edges as (edge index, source node).
        self._inputs = tuple(
            tuple((e, src) for e, (src, dst) in enumerate(nb201.EDGES) if dst == target and self.cell[e] != nb201.NONE)
            for target in range(1, nb201.NUM_NODES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for inputs in self._inputs:
            nodes.append(self._node(nodes, inputs))
        return nodes[-1]

    def _node(self, nodes: list[torch.Tensor], inputs: tuple[tuple[int, int], ...]) -> torch.Tensor:
        if not inputs:
            return torch.zeros_like(nodes[0])
        total = self.edges[inputs[0][0]](nodes[inputs[0][1]])
        for edge, src in inputs[1:]:
            total = total + self.edges[edge](nodes[src])
        return total

    def extra_repr(self) -> str:
        return f"{nb201.to_string(self.cell)}, C={self.C}"


class ResNetBasicBlock(nn.Module):
    """The benchmark's reduction block: (B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2)).

    ``conv_b(conv_a(x)) + shortcut(x)`` with two ReLU-Conv3x3-BN layers (the first of stride 2)
    and a shortcut of 2x2 average pooling followed by a 1x1 conv without bias.
    """

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride=2, padding=1)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, stride=1, padding=1)
        self.shortcut = nn.Sequential(
            # ceil_mode: an odd size (7x7 after two halvings of MNIST's 28x28) gives ceil(7/2) = 4
            # like the strided conv; even sizes are pooled exactly as in the benchmark.
            nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True),
            nn.Conv2d(C_in, C_out, kernel_size=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro network around ``cell``: (B, in_channels, H, W) -> logits (B, num_classes).

    Args:
        cell: op-index tuple or benchmark string, used for all 3 * N cells.
        C: channels of the first stage (then 2C, 4C).
        N: cells per stage.
        num_classes: output size of the classifier.
        in_channels: channels of the input images.
    """

    def __init__(self, cell: str | Sequence[int], C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            if int(value) != value or value < 1:
                raise UserError(f"NB201Network needs a positive integer {name}, got {value!r}")
        self.cell = nb201.parse(cell)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells = nn.Sequential(*self._body(C, N))
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def _body(self, C: int, N: int) -> list[nn.Module]:
        blocks: list[nn.Module] = []
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                blocks.append(ResNetBasicBlock(width // 2, width))
            blocks.extend(Cell(self.cell, width) for _ in range(N))
        return blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.lastact(self.cells(self.stem(x)))  # (B, 4C, H/4, W/4), rounded up
        return self.classifier(self.global_pooling(features).flatten(1))


def model_cost(
    cell: str | Sequence[int],
    C: int = 16,
    N: int = 5,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
) -> dict[str, float]:
    """Parameters and FLOPs of :class:`NB201Network`, in millions: ``{"params_m", "flops_m"}``.

    ``flops_m`` follows :func:`count_flops` (conv and linear multiply-accumulates) for one
    ``in_channels x image_size x image_size`` input.
    """
    # Built on the CPU: a forward pass there is ~10x faster than shape propagation on "meta".
    with torch.device("cpu"):
        model = NB201Network(cell, C=C, N=N, num_classes=num_classes, in_channels=in_channels)
    return {
        "params_m": count_parameters(model) / 1e6,
        "flops_m": count_flops(model, (in_channels, image_size, image_size)) / 1e6,
    }
