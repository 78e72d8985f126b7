"""What one-shot supernets share: the edge-mixing protocol between a supernet and an optimizer.

A supernet owns the candidate ops of every edge of every cell but no architecture
parameters. Its ``forward(x, mixer)`` asks the optimizer's *mixer* to combine each edge's
non-zero ops: ``mixer.mix(x, ops, cell_type, cell, edge)`` returns the edge's output, or
``None`` when the edge contributes nothing (a pruned edge). So one supernet class serves
BayesNAS (switches: ``s_parent * sum_k s_k op_k(x)``), DARTS (softmax weights) and baselines.

Every supernet also describes its cells with :meth:`topologies` (one
:class:`~naslib_bayes.optimizers.bayesnas.switches.CellTopology` per cell type).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn as nn


class EdgeMixer(Protocol):
    def mix(self, x: torch.Tensor, ops: Sequence[nn.Module], cell_type: str, cell: int, edge: int) -> torch.Tensor | None:
        """Output of edge ``edge`` of cell ``cell`` (index among cells of ``cell_type``)."""


class SumMixer(nn.Module):
    """Every op with weight 1 (the supernet with all switches at 1); no parameters."""

    def mix(self, x, ops, cell_type, cell, edge):
        total = None
        for op in ops:
            y = op(x)
            total = y if total is None else total + y
        return total


def node_sum(terms: Sequence[torch.Tensor | None], like: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Sum of the non-None edge outputs into a node; zeros of ``shape`` when every edge is pruned."""
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else total + t
    if total is None:
        total = like.new_zeros(tuple(shape))
    return total
