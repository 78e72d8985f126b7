"""The DARTS one-shot search network: stacked search cells whose edges carry every op.

``DartsSearchNetwork(C, num_classes, layers=8)`` follows DARTS: a 3x3 stem to ``3C``
channels, ``layers`` cells with reduction cells at ``layers // 3`` and ``2 * layers // 3``
(channels double there), global average pooling and a linear classifier. Each cell has two
inputs (the two previous cells' outputs, preprocessed to ``C`` channels), ``steps``
intermediate nodes each summing one edge from every earlier node (14 edges for 4 steps), and
concatenates its intermediate nodes. Every edge holds the 7 non-zero primitives; how they are
weighted is the mixer's business (see :mod:`naslib_bayes.search_spaces.oneshot`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from naslib_bayes.optimizers.bayesnas.switches import CellTopology
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES, FactorizedReduce, ReLUConvBN, make_op
from naslib_bayes.search_spaces.oneshot import node_sum


def cell_edges(steps: int = 4) -> tuple[tuple[int, int], ...]:
    """(source, target) of each edge: node j = 2..steps+1 takes one edge from every node < j."""
    return tuple((src, j) for j in range(2, steps + 2) for src in range(j))


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Indices of the reduction cells (DARTS: at 1/3 and 2/3 of the depth)."""
    if layers < 3:
        return ()
    return (layers // 3, 2 * layers // 3)


class SearchCell(nn.Module):
    def __init__(self, steps: int, multiplier: int, c_pp: int, c_p: int, c: int, reduction: bool,
                 reduction_prev: bool, cell_type: str, index: int, ops=NONZERO_PRIMITIVES):
        super().__init__()
        self.steps, self.multiplier, self.reduction = steps, multiplier, reduction
        self.cell_type, self.index, self.channels = cell_type, index, c
        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for src, _ in cell_edges(steps):
            stride = 2 if reduction and src < 2 else 1
            self.edges.append(nn.ModuleList(make_op(name, c, stride, affine=False, pool_bn=True) for name in ops))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, mixer) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        n, _, h, w = states[1].shape
        if self.reduction:
            h, w = (h + 1) // 2, (w + 1) // 2
        e = 0
        for j in range(self.steps):
            terms = []
            for src in range(j + 2):
                terms.append(mixer.mix(states[src], self.edges[e], self.cell_type, self.index, e))
                e += 1
            states.append(node_sum(terms, states[1], (n, self.channels, h, w)))
        return torch.cat(states[-self.multiplier:], dim=1)


class DartsSearchNetwork(nn.Module):
    """The one-shot network of the DARTS space.

    Args:
        C: initial channels (DARTS: 16).
        num_classes: classifier outputs.
        layers: number of cells (DARTS: 8; two of them reduction cells).
        steps: intermediate nodes per cell (4, giving 14 edges).
        multiplier: nodes concatenated into the output (4).
        stem_multiplier: stem channels = stem_multiplier * C.
        in_channels: image channels (1 for digits/MNIST, 3 for CIFAR).
    """

    ops = NONZERO_PRIMITIVES
    space_name = "darts"

    def __init__(self, C: int, num_classes: int, layers: int = 8, steps: int = 4, multiplier: int = 4,
                 stem_multiplier: int = 3, in_channels: int = 3):
        super().__init__()
        self.C, self.num_classes, self.layers, self.steps, self.multiplier = C, num_classes, layers, steps, multiplier
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        counts = {"normal": 0, "reduce": 0}
        reduction_prev = False
        reductions = reduction_layers(layers)
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            cell = SearchCell(steps, multiplier, c_pp, c_p, c_curr, reduction, reduction_prev, cell_type, counts[cell_type])
            counts[cell_type] += 1
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.num_cells = counts
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def topologies(self) -> list[CellTopology]:
        edges = cell_edges(self.steps)
        outputs = tuple(range(2 + self.steps - self.multiplier, 2 + self.steps))
        return [CellTopology(t, n, edges, tuple(self.ops), (0, 1), outputs) for t, n in self.num_cells.items() if n]

    def forward(self, x: torch.Tensor, mixer) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, mixer)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1))
