"""Local search with random restarts, as NASLib's ``LocalSearch`` (White et al., UAI 2021).

1. Query ``num_init`` random cells; the best one becomes the *centre*.
2. Query the centre's one-edge neighbours (24 on NAS-Bench-201) in random order.
   ``improvement="best"`` (NASLib's behaviour) evaluates the whole neighbourhood and then moves
   to its best cell if that beats the centre; ``"first"`` moves as soon as a neighbour beats it.
3. When no neighbour beats the centre (a local optimum), restart from a random cell, which
   becomes the new centre after it is queried.

Neighbours queried earlier are not queried again: their known values still count when the
best neighbour is chosen, so skipping them changes nothing but the cost.
"""

from __future__ import annotations

from collections import deque

from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer, missing_as_worst
from naslib_bayes.optimizers.hyperparameters import at_least, require_choice
from naslib_bayes.search_spaces.nasbench201.cell import Cell


class LocalSearch(BlackBoxOptimizer):
    """Hill climbing over one-edge neighbourhoods with random restarts."""

    defaults = {"num_init": 10, "improvement": "best"}
    lower_bounds = {"num_init": at_least(1)}  # the first centre is the best initial cell

    def check_config(self) -> None:
        require_choice("improvement", self.config["improvement"], ("best", "first"))

    def setup(self) -> None:
        self.known: dict[Cell, float] = {}
        self.centre: Cell | None = None
        self.queue: deque[Cell] = deque()
        self.restarting = False

    def propose(self) -> Cell:
        if len(self.history) < self.config["num_init"]:
            return self.random_unqueried()
        if self.centre is None:  # first step after the initial design
            self._move_to(max(self.known, key=lambda c: missing_as_worst(self.known[c])))
        while not self.queue and not self.restarting:
            self._finish_neighbourhood()
        if self.restarting:
            return self.random_unqueried()
        return self.queue.popleft()

    def observe(self, cell: Cell, value: float) -> None:
        self.known[cell] = value
        if self.restarting:
            self.restarting = False
            self._move_to(cell)
        elif (self.centre is not None and self.config["improvement"] == "first"
              and missing_as_worst(value) > missing_as_worst(self.known[self.centre])):
            self._move_to(cell)

    # ---- neighbourhood bookkeeping ---------------------------------------------------------
    def _move_to(self, centre: Cell) -> None:
        """Make ``centre`` the centre and queue its unqueried neighbours in random order."""
        self.centre = centre
        fresh = self.unqueried_neighbours(centre)
        self.rng.shuffle(fresh)
        self.queue = deque(fresh)

    def _finish_neighbourhood(self) -> None:
        """The centre's neighbourhood is spent: climb to its best cell, or restart."""
        neighbours = [n for n in self.problem.space.neighbours(self.centre) if n in self.known]
        best = max(neighbours, key=lambda c: missing_as_worst(self.known[c]), default=None)
        if best is not None and missing_as_worst(self.known[best]) > missing_as_worst(self.known[self.centre]):
            self._move_to(best)
        else:
            self.restarting = True
