"""The one registry mapping optimizer names to their kind and implementation.

Entries name their class by import path so that ``naslib-bayes list`` (and any command using
only light optimizers) does not import gpytorch or the training stack.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType

from naslib_bayes.errors import UserError

BLACK_BOX = "black-box"
ONE_SHOT = "one-shot"


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    kind: str
    target: str  # "module:Class"
    summary: str

    def load(self) -> type:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


def _specs(*specs: OptimizerSpec) -> MappingProxyType:
    return MappingProxyType({spec.name: spec for spec in specs})


OPTIMIZERS = _specs(
    OptimizerSpec("rs", BLACK_BOX, "naslib_bayes.optimizers.random_search:RandomSearch", "random search"),
    OptimizerSpec("bayesnas", ONE_SHOT, "naslib_bayes.optimizers.bayesnas.optimizer:BayesNAS",
                  "BayesNAS: HARD priors on switches, Laplace updates, entropy pruning"),
    OptimizerSpec("darts", ONE_SHOT, "naslib_bayes.optimizers.darts:DARTS",
                  "first-order DARTS: softmax relaxation, argmax derivation"),
    OptimizerSpec("random-cell", ONE_SHOT, "naslib_bayes.optimizers.random_cell:RandomCell",
                  "same supernet training, then a uniformly random cell"),
    OptimizerSpec("tnas", BLACK_BOX, "naslib_bayes.optimizers.tnas:TNAS",
                  "TNAS: BO with a meta-learned deep-kernel GP surrogate (transfer from other datasets)"),
    OptimizerSpec("gp-bo", BLACK_BOX, "naslib_bayes.optimizers.gp_bo:GPBO",
                  "deep-kernel GP BO trained on the target only (TNAS without transfer)"),
    OptimizerSpec("transfer-topk", BLACK_BOX, "naslib_bayes.optimizers.transfer_topk:TransferTopK",
                  "cells by mean standardised accuracy on the other datasets (transfer baseline)"),
    OptimizerSpec("re", BLACK_BOX, "naslib_bayes.optimizers.regularized_evolution:RegularizedEvolution",
                  "regularized (aging) evolution, Real et al. 2019"),
    OptimizerSpec("ls", BLACK_BOX, "naslib_bayes.optimizers.local_search:LocalSearch",
                  "local search with random restarts"),
    OptimizerSpec("bananas", BLACK_BOX, "naslib_bayes.optimizers.bananas:Bananas",
                  "BANANAS: path encoding + MLP ensemble BO, White et al. 2021"),
)


def get_spec(name: str, kind: str | None = None) -> OptimizerSpec:
    """The spec of ``name``; a :class:`UserError` lists the valid names (of ``kind``) otherwise."""
    spec = OPTIMIZERS.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        valid = ", ".join(n for n, s in OPTIMIZERS.items() if kind is None or s.kind == kind)
        what = f"{kind} optimizer" if kind else "optimizer"
        raise UserError(f"unknown {what} {name!r}; valid: {valid}")
    return spec


def create(name: str, kind: str | None = None, **kwargs):
    """Instantiate the optimizer registered as ``name``."""
    return get_spec(name, kind).load()(**kwargs)


def names(kind: str | None = None) -> list[str]:
    return [n for n, s in OPTIMIZERS.items() if kind is None or s.kind == kind]
