"""Random search: cells drawn uniformly without replacement (the baseline every method must beat).

On a partial benchmark the cells are drawn among those with a value, so no query is wasted.
"""

from __future__ import annotations

from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer
from naslib_bayes.search_spaces.nasbench201.cell import Cell


class RandomSearch(BlackBoxOptimizer):
    """Uniform random sampling of not-yet-queried cells."""

    picks_only_from_domain = True

    def propose(self) -> Cell:
        return self.random_unqueried()
