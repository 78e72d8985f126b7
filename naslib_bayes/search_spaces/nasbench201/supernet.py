"""The NAS-Bench-201 one-shot supernet: the benchmark's macro skeleton with all ops on every edge.

Skeleton as :class:`~naslib_bayes.search_spaces.nasbench201.model.NB201Network` (stem, three
stages of ``N`` cells at C, 2C, 4C channels joined by ResNet reduction blocks, BN-ReLU, global
average pooling, linear classifier), but each cell edge holds the four non-zero primitives
(``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``) built without affine
BatchNorm parameters and without running statistics, as in NASLib's NB201 search space; the
``none`` op is the absence of the edge (BayesNAS's parent switch, DARTS's ``none`` weight).
The optimizer's mixer combines each edge's ops (see :mod:`naslib_bayes.search_spaces.oneshot`).
All ``3N`` cells form one cell type, ``normal``, with their own switches.
"""

from __future__ import annotations

import torch
from torch import nn

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.bayesnas.switches import CellTopology
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.model import ResNetBasicBlock
from naslib_bayes.search_spaces.nasbench201.ops import make_op
from naslib_bayes.search_spaces.oneshot import node_sum

CELL_TYPE = "normal"
#: Non-zero candidate ops, in the benchmark's op order.
SUPERNET_OPS: tuple[str, ...] = tuple(name for name in nb201.OPS if name != "none")


class SuperCell(nn.Module):
    """One NB201 cell whose 6 edges carry every non-zero op."""

    def __init__(self, C: int, index: int, affine: bool = False, track_running_stats: bool = False):
        super().__init__()
        self.index = index
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(name, C, 1, affine, track_running_stats) for name in SUPERNET_OPS)
            for _ in nb201.EDGES
        )
        self._inputs = tuple(tuple((e, src) for e, (src, dst) in enumerate(nb201.EDGES) if dst == target)
                             for target in range(1, nb201.NUM_NODES))

    def forward(self, x: torch.Tensor, mixer) -> torch.Tensor:
        nodes = [x]
        for inputs in self._inputs:
            terms = [mixer.mix(nodes[src], self.edges[e], CELL_TYPE, self.index, e) for e, src in inputs]
            nodes.append(node_sum(terms, x, x.shape))
        return nodes[-1]


class NB201SuperNet(nn.Module):
    """NAS-Bench-201 supernet: ``forward(x, mixer) -> logits``.

    Args:
        C: channels of the first stage (benchmark: 16).
        N: cells per stage (benchmark: 5).
        num_classes: classifier outputs.
        in_channels: image channels.
    """

    space_name = "nasbench201"
    ops = SUPERNET_OPS

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            if int(value) != value or value < 1:
                raise UserError(f"NB201SuperNet needs a positive integer {name}, got {value!r}")
        if C % 2:
            raise UserError(f"NB201SuperNet needs an even C, got {C}")
        self.C, self.N = C, N
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        blocks: list[nn.Module] = []
        index = 0
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                blocks.append(ResNetBasicBlock(width // 2, width))
            for _ in range(N):
                blocks.append(SuperCell(width, index))
                index += 1
        self.cells = nn.ModuleList(blocks)
        self.num_cells = index
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * C, num_classes)

    def topologies(self) -> list[CellTopology]:
        return [CellTopology(CELL_TYPE, self.num_cells, nb201.EDGES, SUPERNET_OPS, (0,), (nb201.NUM_NODES - 1,))]

    def forward(self, x: torch.Tensor, mixer) -> torch.Tensor:
        x = self.stem(x)
        for block in self.cells:
            x = block(x, mixer) if isinstance(block, SuperCell) else block(x)
        return self.classifier(torch.flatten(self.global_pooling(self.lastact(x)), 1))
