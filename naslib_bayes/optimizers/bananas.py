"""BANANAS, White et al. (AAAI 2021): Bayesian optimisation with a neural ensemble predictor.

Following the paper and NASLib's ``Bananas``:

1. query ``num_init`` random cells (they count toward the budget), and more until one of them
   has a value (on a partial benchmark a cell may have none, and the ensemble needs data);
2. fit an ensemble of MLPs (:class:`~naslib_bayes.predictors.mlp_ensemble.MLPEnsemble`) on the
   path encodings (:mod:`~naslib_bayes.search_spaces.nasbench201.encodings`) of every cell
   queried so far;
3. build ``num_candidates`` unqueried candidates by mutating the ``num_arches_to_mutate`` best
   cells queried so far (1 to ``max_mutations`` one-edge mutations each);
4. score the candidates with the acquisition function on the ensemble's mean and standard
   deviation, ``its`` (independent Thompson sampling, the paper's choice: one Gaussian draw
   per candidate) or ``ei`` (expected improvement over the best value so far);
5. query the ``k`` best candidates in order, then refit (step 2).

``k = 10`` is NASLib's default and the paper's batch size; it refits the ensemble 9 times for a
budget of 100. The ensemble trains on ``threads`` torch threads (1, as ``compare``'s workers and
gp-bo and TNAS use): the count changes float reductions, so a standalone search on a many-core
machine would otherwise round differently from the same seed's run in a comparison.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer, missing_as_worst
from naslib_bayes.optimizers.hyperparameters import above, at_least, require_choice
from naslib_bayes.predictors.mlp_ensemble import MLPEnsemble, MLPEnsembleConfig
from naslib_bayes.search_spaces.nasbench201.cell import Cell
from naslib_bayes.search_spaces.nasbench201.encodings import path_encodings
from naslib_bayes.threads import torch_threads

ACQUISITIONS = ("its", "ei")


class Bananas(BlackBoxOptimizer):
    """Path-encoding + MLP-ensemble Bayesian optimisation with mutation-based acquisition."""

    defaults = {
        "num_init": 10,
        "k": 10,
        "num_ensemble": 5,
        "acq_fn_type": "its",
        "num_candidates": 100,
        "num_arches_to_mutate": 5,
        "max_mutations": 2,
        "num_layers": 10,
        "layer_width": 20,
        "epochs": 200,
        "batch_size": 32,
        "lr": 0.01,
        "threads": 1,
    }
    lower_bounds = {
        **{name: at_least(1) for name in ("num_init", "k", "num_ensemble", "num_candidates", "num_arches_to_mutate",
                                          "max_mutations", "num_layers", "layer_width", "epochs", "batch_size",
                                          "threads")},
        "lr": above(0),
    }

    def check_config(self) -> None:
        require_choice("acq_fn_type", self.config["acq_fn_type"], ACQUISITIONS)

    def setup(self) -> None:
        self.next_batch: list[Cell] = []
        self.num_fits = 0

    def propose(self) -> Cell:
        if len(self.history) < self.config["num_init"] or not self.problem.objective.has_value():
            return self.random_unqueried()
        if not self.next_batch:
            with torch_threads(self.config["threads"]):
                self.next_batch = self._select_batch()
        return self.next_batch.pop(0)

    # ---- one BO iteration ------------------------------------------------------------------
    def _select_batch(self) -> list[Cell]:
        """Fit the ensemble on everything queried and return the top-k candidates, best first."""
        cells = [cell for cell, _ in self.history]
        values = np.array([value for _, value in self.history], dtype=float)
        known = np.isfinite(values)
        ensemble = self._ensemble().fit(path_encodings([c for c, ok in zip(cells, known) if ok]), values[known])
        self.num_fits += 1
        candidates = self._candidates()
        predictions = ensemble.predict(path_encodings(candidates))  # (members, n)
        scores = self._acquisition(predictions.mean(axis=0), predictions.std(axis=0), float(values[known].max()))
        order = np.argsort(-scores, kind="stable")
        return [candidates[i] for i in order[: self.config["k"]]]

    def _ensemble(self) -> MLPEnsemble:
        cfg = self.config
        settings = MLPEnsembleConfig(num_members=cfg["num_ensemble"], num_layers=cfg["num_layers"],
                                     width=cfg["layer_width"], epochs=cfg["epochs"],
                                     batch_size=cfg["batch_size"], lr=cfg["lr"])
        return MLPEnsemble(settings, generator=self.torch_gen)

    def _candidates(self) -> list[Cell]:
        """Distinct unqueried mutants of the best cells so far (random cells if too few)."""
        cfg = self.config
        ranked = sorted(self.history, key=lambda item: -missing_as_worst(item[1]))
        parents = [cell for cell, _ in ranked[: cfg["num_arches_to_mutate"]]]
        found: dict[Cell, None] = {}
        for attempt in range(20 * cfg["num_candidates"]):
            if len(found) >= cfg["num_candidates"]:
                break
            child = parents[attempt % len(parents)]
            for _ in range(self.rng.randint(1, cfg["max_mutations"])):
                child = self.problem.space.mutate(child, self.rng)
            if not self.is_queried(child):
                found.setdefault(child)
        while len(found) < min(cfg["k"], self.problem.objective.remaining):
            found.setdefault(self.random_unqueried(exclude=found))
        return list(found)

    def _acquisition(self, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
        """Acquisition value per candidate (higher is better): ``mean``, ``std`` (n,) -> (n,)."""
        if self.config["acq_fn_type"] == "its":
            return mean + std * self.np_rng.standard_normal(len(mean))
        std = np.maximum(std, 1e-9)
        z = (mean - best) / std
        return (mean - best) * norm.cdf(z) + std * norm.pdf(z)
