"""An objective whose target column can be read only at the cell being queried: tests that an
optimizer never looks at the benchmark values of cells it has not queried."""

from __future__ import annotations

import numpy as np

from naslib_bayes.optimizers.blackbox import Objective


class GuardedColumn:
    """The target's accuracy column, readable one authorised entry at a time, nothing else."""

    def __init__(self, column: np.ndarray):
        self._column = np.asarray(column)
        self.allowed: int | None = None
        self.reads: list[int] = []

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)) or int(index) != self.allowed:
            raise AssertionError(f"read of target entry {index!r} other than the queried cell")
        self.reads.append(int(index))
        return self._column[index]

    def __getattr__(self, name):
        raise AssertionError(f"access to the target column's {name!r}")

    def __len__(self):
        raise AssertionError("access to the target column's length")

    def __iter__(self):
        raise AssertionError("iteration over the target column")

    def __array__(self, *args, **kwargs):
        raise AssertionError("conversion of the target column to an array")


class StrictObjective(Objective):
    """An objective whose only readable target value is the one of the cell being queried."""

    def __init__(self, benchmark, dataset, metric, budget):
        super().__init__(benchmark, dataset, metric, budget)
        self._values = GuardedColumn(self._values)

    def __call__(self, cell):
        self._values.allowed = self._index_of(cell)
        try:
            return super().__call__(cell)
        finally:
            self._values.allowed = None
