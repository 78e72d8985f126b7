"""Regularized (aging) evolution, Real et al. (AAAI 2019), as NASLib's ``RegularizedEvolution``.

A population of ``population_size`` cells is first filled with random cells. Each later step
draws ``sample_size`` members of the population uniformly *with* replacement (the tournament of
Algorithm 1 of the paper and of NASLib: each draw is a random element of the whole population),
mutates the best of them by changing the op on one random edge, queries the child, appends it
and removes the *oldest* member (aging, not the worst: the regularisation of the paper).

Defaults for a budget of 100 queries: the paper uses population 100 / sample 25, and NASLib's
NAS-Bench-201 black-box config population 30 / sample 10, which would spend a third of a budget
of 100 on the random initial population. Population 20 / sample 5 keeps the paper's
sample-to-population ratio of 1/4 while leaving 80 queries for evolution.
"""

from __future__ import annotations

from collections import deque

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer, missing_as_worst
from naslib_bayes.optimizers.hyperparameters import at_least
from naslib_bayes.search_spaces.nasbench201.cell import Cell

#: Mutations drawn before the child is chosen among the unqueried neighbours left (random
#: draws first, so that a search in which they find a child is the one they always made).
_MUTATION_TRIES = 50


class RegularizedEvolution(BlackBoxOptimizer):
    """Aging evolution with tournament selection and one-edge mutation."""

    defaults = {"population_size": 20, "sample_size": 5}
    lower_bounds = {"population_size": at_least(1), "sample_size": at_least(1)}

    def check_config(self) -> None:
        population, sample = self.config["population_size"], self.config["sample_size"]
        if not 1 <= sample <= population:
            raise UserError(f"sample_size must be in 1..population_size, got {sample} and {population}")

    def setup(self) -> None:
        self.population: deque[tuple[Cell, float]] = deque()

    def propose(self) -> Cell:
        if len(self.history) < self.config["population_size"]:
            return self.random_unqueried()
        members = list(self.population)
        tournament = [self.rng.choice(members) for _ in range(self.config["sample_size"])]
        parent = max(tournament, key=lambda member: missing_as_worst(member[1]))[0]
        return self._unqueried_child(parent)

    def observe(self, cell: Cell, value: float) -> None:
        self.population.append((cell, value))
        if len(self.population) > self.config["population_size"]:
            self.population.popleft()

    def _unqueried_child(self, parent: Cell) -> Cell:
        """A one-edge mutant of ``parent`` not queried yet.

        Every mutant already queried would be a wasted (and forbidden) query, so mutation is
        redrawn; if the parent's whole neighbourhood is spent, the search walks on by mutating
        a mutant, which keeps the child close to the parent. Draws that keep missing the few
        unqueried neighbours left (of the parent while it has any, else of the cell walked to)
        end in a seeded choice among them, so that a mutation is made whenever one exists; a
        random cell only when none is left.
        """
        current = parent
        for _ in range(_MUTATION_TRIES):
            child = self.problem.space.mutate(current, self.rng)
            if not self.is_queried(child):
                return child
            if not self.unqueried_neighbours(current):
                current = child
        left = self.unqueried_neighbours(current)
        return self.rng.choice(left) if left else self.random_unqueried()
