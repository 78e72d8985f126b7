"""``transfer-topk``: query cells in the order of their mean standardised accuracy on other datasets.

The zero-adaptation transfer baseline: each dataset of ``problem.source`` (the benchmark
without the target) is standardised with its own mean and standard deviation over the cells it
has, the scores are averaged over the datasets that evaluated a cell, and cells are queried from
the best score down. Exact ties are broken by a permutation drawn from the seed, so the order is
deterministic for a seed. Cells no source dataset evaluated come last, in seeded random order.
On a partial benchmark the cells with a value of the target's search metric come before all
others (a query of any other cell costs budget and returns nothing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer
from naslib_bayes.search_spaces.nasbench201.cell import Cell


def transfer_scores(source, metric: str = "test_accuracy") -> np.ndarray:
    """Mean standardised ``metric`` over ``source``'s datasets, (15625,) in ``source`` index order.

    NaN where no dataset has a value. A dataset lacking ``metric`` falls back to test accuracy.
    """
    total = np.zeros(len(source))
    count = np.zeros(len(source))
    for dataset in source.datasets:
        column = source.query_all(dataset, metric if source.has_metric(dataset, metric) else "test_accuracy")
        finite = np.isfinite(column)
        if finite.sum() < 2:
            continue
        std = column[finite].std() or 1.0
        total[finite] += (column[finite] - column[finite].mean()) / std
        count[finite] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class TransferTopK(BlackBoxOptimizer):
    """Queries cells by decreasing mean standardised accuracy over the source datasets."""

    picks_only_from_domain = True

    def setup(self) -> None:
        source = self.problem.source
        if source is None or not source.datasets:
            raise UserError("transfer-topk needs a benchmark with datasets other than the target")
        scores = transfer_scores(source, self.problem.objective.metric)
        # Seeded tie-breaking: order by score, then by a random priority.
        priority = self.np_rng.permutation(len(scores))
        filled = np.where(np.isfinite(scores), scores, -np.inf)
        outside = ~self._in_domain(source.cells)
        self.order = np.lexsort((-priority, -filled, outside))  # the last key sorts first
        self.cells_in_order = source.cells
        self.source_datasets = list(source.datasets)
        self._position = 0

    def _in_domain(self, cells: np.ndarray) -> np.ndarray:
        """(n,) bool: which of ``cells`` (n, 6) the target's benchmark has a value for."""
        domain = self.problem.objective.domain
        if domain is None:
            return np.ones(len(cells), dtype=bool)
        members = set(domain)
        return np.fromiter((tuple(int(op) for op in cell) in members for cell in cells), dtype=bool, count=len(cells))

    def propose(self) -> Cell:
        while self._position < len(self.order):
            cell = tuple(int(op) for op in self.cells_in_order[self.order[self._position]])
            self._position += 1
            if not self.is_queried(cell):
                return cell
        raise RuntimeError("transfer-topk ran out of cells")

    def result_extras(self) -> dict[str, Any]:
        return {"transfer_source": {"datasets": self.source_datasets,
                                    "score": "mean over source datasets of the standardised accuracy"}}
