"""The DARTS evaluation network built from a genotype, with drop-path and an auxiliary head.

As in DARTS's CIFAR network: a 3x3 stem to ``3C`` channels, ``layers`` cells (reductions at
1/3 and 2/3 of the depth), global pooling and a linear classifier. During training each op
output other than an identity is dropped per sample with probability ``drop_path_prob``
(rescaled by ``1/(1-p)``), and an auxiliary classifier reads the features after the second
reduction cell. The auxiliary head pools adaptively to 2x2, so any input resolution works
(digits' 8x8 included), and its widths (DARTS: 128 and 768 at C=36) scale with C.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.ops import FactorizedReduce, ReLUConvBN, make_op
from naslib_bayes.search_spaces.darts.search_network import reduction_layers


def drop_path(x: torch.Tensor, drop_prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero whole samples of ``x`` with probability ``drop_prob``, rescaling the others."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.bernoulli(torch.full((x.shape[0], 1, 1, 1), keep, dtype=x.dtype, device=x.device), generator=generator)
    return x * mask / keep


class EvalCell(nn.Module):
    def __init__(self, edges, concat, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.inputs = [int(src) for _, src in edges]
        self.concat = [int(i) for i in concat]
        self.steps = len(edges) // 2
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and src < 2 else 1) for op, src in edges)
        self.identity = [isinstance(op, nn.Identity) for op in self.ops]
        self.multiplier = len(self.concat)

    def forward(self, s0, s1, drop_prob: float = 0.0, generator=None):
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(self.steps):
            total = 0
            for k in (2 * i, 2 * i + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and drop_prob > 0 and not self.identity[k]:
                    h = drop_path(h, drop_prob, generator)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier on the features after the second reduction cell."""

    def __init__(self, channels: int, num_classes: int, hidden: tuple[int, int] = (128, 768)):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(channels, hidden[0], 1, bias=False),
            nn.BatchNorm2d(hidden[0]),
            nn.ReLU(inplace=False),
            nn.Conv2d(hidden[0], hidden[1], 2, bias=False),
            nn.BatchNorm2d(hidden[1]),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(hidden[1], num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class DartsEvalNetwork(nn.Module):
    """A genotype's network for training from scratch.

    ``forward(x)`` returns ``(logits, aux_logits)``; ``aux_logits`` is None unless the
    network has an auxiliary head and is in training mode. ``drop_path_prob`` and
    ``generator`` (the drop-path randomness) are plain attributes a trainer may set.
    """

    def __init__(self, genotype: Genotype, C: int, num_classes: int, layers: int, auxiliary: bool = True,
                 in_channels: int = 3, stem_multiplier: int = 3, drop_path_prob: float = 0.0):
        super().__init__()
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.generator: torch.Generator | None = None
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reductions = reduction_layers(layers)
        reduction_prev = False
        self.aux_position = 2 * layers // 3 if auxiliary and reductions else None
        c_aux = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
                edges, concat = genotype.reduce, genotype.reduce_concat
            else:
                edges, concat = genotype.normal, genotype.normal_concat
            cell = EvalCell(edges, concat, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_p
        # DARTS's head (128 then 768 channels) belongs to C=36; scale it with C for small networks
        hidden = (max(16, round(128 * C / 36)), max(32, round(768 * C / 36)))
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes, hidden) if self.aux_position is not None else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x):
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob, self.generator)
            if i == self.aux_position and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1)), aux
