"""The random-cell baseline: the same supernet training, then a uniformly random architecture.

It trains the supernet's weights with every op at weight 1 (BayesNAS's supernet with its
switches frozen at their initial value) for the same epochs on all search images, so its
timings are comparable, and derives a random architecture from its seed: on NAS-Bench-201 a
uniformly random *connected* cell (stricter than NASLib's sampler, which refuses only cells whose
three edges out of the input, or into the output, are all ``none``, and so can draw cells
whose input does not reach the output), on the DARTS space a genotype with two
distinct random predecessors and random non-``none`` ops per node. A search method is only
worth its cost if it beats this.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.oneshot import OneShotOptimizer
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.oneshot import SumMixer


class RandomCell(OneShotOptimizer):
    """Supernet training with fixed unit weights, then a random architecture."""

    def build_architecture(self, supernet: nn.Module) -> nn.Module:
        return SumMixer()

    def step(self, data_train, data_val=None):
        logits, loss = self.weight_step(*data_train)
        logits_val = val_loss = None
        if data_val is not None:
            with torch.no_grad():
                logits_val = self.model(data_val[0])
                val_loss = F.cross_entropy(logits_val, data_val[1])
        return logits, logits_val, loss, val_loss

    def get_final_architecture(self):
        rng = self.random()
        if self.space_name == "nasbench201":
            while True:
                cell = nb201.random_cell(rng)
                if nb201.is_connected(cell):
                    return cell
        if self.space_name == "darts":
            steps = self.model.net.steps
            # the concat is what the search cells concatenate (the last `multiplier` nodes)
            concat = tuple(self.model.net.topologies()[0].outputs)

            def random_cell():
                edges = []
                for j in range(2, steps + 2):
                    for src in sorted(rng.sample(range(j), 2)):
                        edges.append((rng.choice(NONZERO_PRIMITIVES), src))
                return tuple(edges), concat

            normal, reduce = random_cell(), random_cell()
            return Genotype(normal[0], normal[1], reduce[0], reduce[1])
        raise UserError(f"random-cell cannot sample architectures of search space {self.space_name!r}")
