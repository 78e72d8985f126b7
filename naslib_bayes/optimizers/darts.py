"""First-order DARTS (Liu, Simonyan, Yang; ICLR 2019) on the same supernets as BayesNAS.

Every cell type has architecture weights ``alpha`` of shape (edges, ops incl. ``none``),
shared by all cells of the type; an edge outputs ``sum_k softmax(alpha_e)_k op_k(x)`` (the
``none`` op contributes zero but takes part in the softmax). One step: an Adam step on
``alpha`` with the loss of a validation batch (lr 3e-4, betas (0.5, 0.999), weight decay
1e-3), then an SGD step on the weights with the loss of a training batch: the search images
are split 50/50 between the two. During warm-up epochs both batches train the weights, so
every method uses every search image for the same number of epochs.

Derivation: NAS-Bench-201 — per edge the argmax over all 5 ops, ``none`` included (the
benchmark's DARTS protocol); DARTS space — per intermediate node the two incoming edges with
the largest non-``none`` weight, each with its largest non-``none`` op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import above, at_least
from naslib_bayes.optimizers.oneshot import OneShotOptimizer
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.nasbench201 import cell as nb201


class SoftmaxMixer(nn.Module):
    """DARTS's continuous relaxation: softmax-weighted sum of an edge's ops."""

    def __init__(self, topologies, generator: torch.Generator, scale: float = 1e-3):
        super().__init__()
        self.alpha = nn.ParameterDict()
        for t in topologies:
            # column 0 is `none`, columns 1.. follow the supernet's non-zero ops
            self.alpha[t.name] = nn.Parameter(scale * torch.randn(t.num_edges, t.num_ops + 1, generator=generator))

    def mix(self, x, ops, cell_type, cell, edge):
        weights = F.softmax(self.alpha[cell_type][edge], dim=-1)
        total = None
        for k, op in enumerate(ops):
            y = weights[k + 1] * op(x)
            total = y if total is None else total + y
        return total


class DARTS(OneShotOptimizer):
    """First-order DARTS; see the module docstring."""

    uses_validation_split = True
    defaults = {"arch_lr": 3e-4, "arch_beta1": 0.5, "arch_beta2": 0.999, "arch_weight_decay": 1e-3}
    lower_bounds = {"arch_lr": above(0), "arch_weight_decay": at_least(0)}

    def __init__(self, seed: int = 0, **hyperparameters: Any):
        super().__init__(seed, **hyperparameters)
        for name in ("arch_beta1", "arch_beta2"):  # Adam's, refused by torch only once the search has begun
            beta = self.config[name]
            if not 0 <= beta < 1:
                raise UserError(f"DARTS: hyper-parameter {name}={beta!r}: expected a number in [0, 1) "
                                f"(default {self.defaults[name]!r})")

    def build_architecture(self, supernet: nn.Module) -> nn.Module:
        generator = torch.Generator().manual_seed(self.seed)
        self.mixer = SoftmaxMixer(supernet.topologies(), generator)
        self.topologies = {t.name: t for t in supernet.topologies()}
        return self.mixer

    def build_arch_optimizer(self):
        c = self.config
        return torch.optim.Adam(self.mixer.parameters(), lr=float(c["arch_lr"]),
                                betas=(float(c["arch_beta1"]), float(c["arch_beta2"])),
                                weight_decay=float(c["arch_weight_decay"]))

    @property
    def architectural_weights(self) -> list[nn.Parameter]:
        return list(self.mixer.parameters())

    def step(self, data_train, data_val=None):
        x, y = data_train
        if self.is_warmup(self.epoch):
            logits_val = val_loss = None
            if data_val is not None:
                logits_val, val_loss = self.weight_step(*data_val)
            logits, loss = self.weight_step(x, y)
            return logits, logits_val, loss, val_loss
        if data_val is None:
            raise UserError("DARTS needs validation batches for its architecture step")
        self.model.train()
        logits_val = self.model(data_val[0])
        val_loss = F.cross_entropy(logits_val, data_val[1])
        self.arch_optimizer.zero_grad(set_to_none=True)
        self.op_optimizer.zero_grad(set_to_none=True)
        val_loss.backward()
        self.arch_optimizer.step()
        logits, loss = self.weight_step(x, y)
        return logits, logits_val.detach(), loss, val_loss.detach()

    def before_weight_update(self) -> None:
        for p in self.mixer.parameters():
            p.grad = None  # the SGD step never moves alpha

    def weights(self) -> dict[str, torch.Tensor]:
        """Softmax weights per cell type, (edges, ops incl. none)."""
        return {name: F.softmax(a.detach(), dim=-1) for name, a in self.mixer.alpha.items()}

    def get_final_architecture(self):
        weights = self.weights()
        if self.space_name == "nasbench201":
            (name, w), = weights.items()
            ops = [nb201.NONE] + [nb201.OPS.index(op) for op in self.topologies[name].ops]
            return tuple(ops[int(torch.argmax(w[e]))] for e in range(nb201.NUM_EDGES))
        if self.space_name == "darts":
            cells = {name: _darts_cell(w, self.topologies[name], self.model.net.steps) for name, w in weights.items()}
            normal = cells.get("normal") or cells["reduce"]
            reduce = cells.get("reduce") or cells["normal"]
            return Genotype(normal[0], normal[1], reduce[0], reduce[1])
        raise UserError(f"DARTS cannot derive architectures of search space {self.space_name!r}")

    def result_extras(self) -> dict[str, Any]:
        return {"architecture_weights": {name: w.tolist() for name, w in self.weights().items()}}


def _darts_cell(weights: torch.Tensor, topology, steps: int):
    """Top-2 incoming edges per node by their best non-none weight, each with that op; the
    concat is the nodes the search cell concatenates (``topology.outputs``)."""
    ops = topology.ops
    edges = [(src, j) for j in range(2, steps + 2) for src in range(j)]
    chosen = []
    for j in range(2, steps + 2):
        incoming = [e for e, (_, dst) in enumerate(edges) if dst == j]
        best = sorted(incoming, key=lambda e: (-float(weights[e, 1:].max()), e))[:2]
        for e in sorted(best, key=lambda e: edges[e][0]):
            k = int(torch.argmax(weights[e, 1:]))
            chosen.append((ops[k], edges[e][0]))
    return tuple(chosen), tuple(topology.outputs)
