"""The NAS-Bench-201 search space as an object optimizers receive (NASLib's ``search_space``)."""

from __future__ import annotations

import random
from typing import Iterator, Sequence

from naslib_bayes.search_spaces.nasbench201 import cell as nb201


class NasBench201Space:
    """Discrete NB201 cell space: sampling, mutation and neighbourhoods over op-index tuples.

    Stateless apart from its name; every random choice takes the caller's ``random.Random`` so
    that optimizers own their randomness.
    """

    name = "nasbench201"
    num_cells = nb201.NUM_CELLS
    num_edges = nb201.NUM_EDGES
    num_ops = nb201.NUM_OPS
    op_names = nb201.OPS

    def get_type(self) -> str:
        """NASLib's name for this space."""
        return self.name

    def all_cells(self) -> Iterator[nb201.Cell]:
        return nb201.all_cells()

    def sample(self, rng: random.Random) -> nb201.Cell:
        return nb201.random_cell(rng)

    def mutate(self, cell: Sequence[int], rng: random.Random) -> nb201.Cell:
        return nb201.mutate(cell, rng)

    def neighbours(self, cell: Sequence[int]) -> list[nb201.Cell]:
        return nb201.neighbours(cell)

    def to_string(self, cell: Sequence[int]) -> str:
        return nb201.to_string(cell)

    def parse(self, arch) -> nb201.Cell:
        return nb201.parse(arch)
