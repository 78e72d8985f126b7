"""Black-box NAS on a tabular benchmark: the objective, the problem, the optimizer contract.

The objects are kept apart as in BoTorch: :class:`Objective` is the only door to the target
dataset's accuracies and does the query accounting; :class:`BlackBoxProblem` bundles what an
optimizer may see; :class:`BlackBoxOptimizer` proposes cells; :func:`run_black_box` is the loop.

The optimizer methods mirror NASLib's black-box ``MetaOptimizer`` (``using_step_function =
False``): ``adapt_search_space``, ``new_epoch`` (one epoch = one evaluated cell),
``train_statistics``, ``get_final_architecture``, ``get_checkpointables``.
"""

from __future__ import annotations

import abc
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

import numpy as np
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import LowerBound, merge_hyperparameters, seed_number
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset, finite_or_none
from naslib_bayes.search_spaces.nasbench201.space import NasBench201Space


class BudgetExhausted(RuntimeError):
    """An optimizer queried more cells than its budget allows (a bug in the optimizer)."""


class DuplicateQuery(RuntimeError):
    """An optimizer queried a cell twice (a bug in the optimizer: every query costs budget)."""


class NoValueQueried(UserError):
    """No cell queried so far has a value (a partial benchmark), so there is no incumbent."""


#: Draws of rejection sampling before the cells left are listed instead; reached only when
#: nearly every cell is taken, so it bounds the loop without changing any ordinary draw.
_REJECTION_TRIES = 1000


class Objective:
    """The target dataset's search metric behind a query counter.

    Every call costs one unit of budget; querying a cell twice or past the budget raises,
    so a search can never silently exceed or double-count its budget.

    Args:
        benchmark: the tabular benchmark.
        dataset: target dataset (canonical name or alias).
        metric: the search metric, e.g. ``val_accuracy``.
        budget: number of queries allowed.

    Attributes:
        domain: the cells the benchmark has a value of the search metric for (sorted), which
            optimizers may draw from; ``None`` when every cell has one. Where a file has values
            is public, like the space itself; the values are read one query at a time.
    """

    source = "the benchmark"
    domain: tuple[nb201.Cell, ...] | None = None

    def __init__(self, benchmark: Benchmark, dataset: str, metric: str, budget: int):
        self.check_query_budget(budget)
        self.dataset = canonical_dataset(dataset)
        self.metric = metric
        self.budget = int(budget)
        self.source = benchmark.source
        self._values = benchmark.query_all(self.dataset, metric)  # private: never handed out
        self._index_of = benchmark.index_of
        self.domain = benchmark.partial_domain(self.dataset, metric)
        self.queried: list[nb201.Cell] = []
        self.values: list[float] = []
        self._seen: set[nb201.Cell] = set()

    @staticmethod
    def check_query_budget(budget: int) -> None:
        """A UserError unless ``budget`` queries of distinct cells fit in the search space."""
        if budget < 1:
            raise UserError(f"budget must be at least 1, got {budget}")
        if budget > nb201.NUM_CELLS:
            raise UserError(f"a budget of {budget} queries exceeds the {nb201.NUM_CELLS:,} cells of the search "
                            "space (no cell is queried twice)")

    def __call__(self, cell: Sequence[int]) -> float:
        """Search-metric value of ``cell`` (counts one query)."""
        cell = nb201.validate(cell)
        if cell in self._seen:
            raise DuplicateQuery(f"cell {nb201.to_string(cell)} was already queried")
        if self.remaining <= 0:
            raise BudgetExhausted(f"budget of {self.budget} queries exhausted")
        value = self._lookup(cell)
        self._seen.add(cell)
        self.queried.append(cell)
        self.values.append(value)
        return value

    def _lookup(self, cell: nb201.Cell) -> float:
        """The search-metric value of ``cell``; subclasses may read it elsewhere (NASLib's query)."""
        return float(self._values[self._index_of(cell)])

    def is_queried(self, cell: Sequence[int]) -> bool:
        return tuple(cell) in self._seen

    @property
    def num_queries(self) -> int:
        return len(self.queried)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.queried)

    def has_value(self) -> bool:
        """True once some queried cell had a value (a partial benchmark lacks the others)."""
        return bool(np.isfinite(np.asarray(self.values, dtype=float)).any())

    def incumbent(self) -> tuple[nb201.Cell, float]:
        """Best cell so far and its value (the first one queried among ties).

        Raises:
            NoValueQueried: when no queried cell had a value.
        """
        if not self.has_value():
            raise NoValueQueried(f"none of the {self.num_queries} cells queried has a {self.dataset} {self.metric} "
                                 f"value in {self.source}: the search found no incumbent")
        best = int(np.nanargmax(np.asarray(self.values, dtype=float)))
        return self.queried[best], self.values[best]

    def trajectory(self) -> list[dict[str, Any]]:
        """One entry per query in order, as the result schema records it."""
        entries, best = [], -math.inf
        for cell, value in zip(self.queried, self.values):
            best = value if not math.isnan(value) and value > best else best
            entries.append(
                {"architecture": nb201.to_string(cell), "accuracy": finite_or_none(value), "incumbent_accuracy": finite_or_none(best)}
            )
        return entries


def missing_as_worst(value: float | None) -> float:
    """Sort key of an accuracy that treats a missing one (None, NaN) as the worst."""
    return -math.inf if value is None or math.isnan(value) else value


@dataclass
class BlackBoxProblem:
    """What a black-box optimizer may see.

    Attributes:
        objective: the counted door to the target dataset.
        space: the search space.
        source: evaluations on *other* datasets, for transfer methods (the target dataset is
            removed from it); ``None`` when the benchmark has no other dataset.
        dataset: the target dataset's canonical name.
        prepared: folder holding what the optimizer's :meth:`BlackBoxOptimizer.prepare` made for
            this target dataset and the run's seed (a meta-trained surrogate, say), or for the
            dataset alone when a comparison shares one among its seeds; ``None``
            when nothing was prepared ahead, in which case the optimizer prepares in ``setup()``.
    """

    objective: Objective
    space: NasBench201Space = field(default_factory=NasBench201Space)
    source: Benchmark | None = None
    prepared: Path | None = None

    @property
    def dataset(self) -> str:
        return self.objective.dataset

    @classmethod
    def from_benchmark(cls, benchmark: Benchmark, dataset: str, metric: str, budget: int) -> "BlackBoxProblem":
        source = benchmark.without(dataset)
        return cls(Objective(benchmark, dataset, metric, budget), source=source if source.datasets else None)


class BlackBoxOptimizer(abc.ABC):
    """Base class of black-box optimizers (NASLib ``MetaOptimizer`` methods, NB201 cells).

    Subclasses implement :meth:`propose`, returning one not-yet-queried cell; :meth:`new_epoch`
    queries it. Randomness comes only from ``self.rng`` (``random.Random``),
    ``self.np_rng`` and ``self.torch_gen``, all seeded from ``seed``.
    """

    using_step_function = False
    kind = "black-box"
    #: hyper-parameters a subclass accepts, with defaults (validated in __init__).
    defaults: dict[str, Any] = {}
    #: lower bounds of numeric hyper-parameters (``at_least(1)``, ``above(0)``), checked in __init__.
    lower_bounds: dict[str, LowerBound] = {}
    #: True when every cell the optimizer proposes comes from ``objective.domain`` while any of
    #: it is left: a budget larger than the domain would then be spent on cells without a value.
    picks_only_from_domain = False

    def __init__(self, seed: int = 0, **hyperparameters: Any):
        self.config = merge_hyperparameters(type(self).__name__, self.defaults, hyperparameters, self.lower_bounds)
        self.check_config()  # on construction, so that a command refuses a bad setting before it writes
        self.seed = seed_number(seed)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.torch_gen = torch.Generator().manual_seed(self.seed)
        self.problem: BlackBoxProblem | None = None
        self.history: list[tuple[nb201.Cell, float]] = []
        self.epoch_times: list[float] = []

    # ---- NASLib's MetaOptimizer methods -----------------------------------------------------
    def adapt_search_space(self, search_space=None, dataset=None, scope=None, dataset_api=None, **kwargs):
        """Bind the optimizer to a problem. ``dataset_api`` is the :class:`BlackBoxProblem`.

        Accepts both of NASLib's call forms, ``(search_space, dataset, scope)`` and
        ``(search_space, scope=None, dataset_api=...)``.
        """
        problem = dataset_api if isinstance(dataset_api, BlackBoxProblem) else kwargs.get("problem")
        if not isinstance(problem, BlackBoxProblem):
            raise TypeError("adapt_search_space needs dataset_api=BlackBoxProblem(...)")
        if search_space is not None:
            problem.space = search_space
        self.problem = problem
        self.check_budget(problem.objective)
        self.setup()

    @classmethod
    def check_budget(cls, objective: Objective) -> None:
        """A UserError when this optimizer cannot spend ``objective``'s budget on cells with a value
        (a comparison asks before any run, so that no run is spent on a grid that fails later)."""
        if cls.picks_only_from_domain and objective.domain is not None and objective.budget > len(objective.domain):
            raise UserError(
                f"{objective.source} has {objective.dataset} {objective.metric} for {len(objective.domain):,} of "
                f"{nb201.NUM_CELLS:,} cells and {cls.__name__} picks only among them: a budget of "
                f"{objective.budget} queries exceeds them"
            )

    def new_epoch(self, epoch: int) -> None:
        """Propose one cell and evaluate it (one epoch = one query, as in NASLib)."""
        start = time.perf_counter()
        cell = nb201.validate(self.propose())
        value = self.problem.objective(cell)
        self.history.append((cell, value))
        self.observe(cell, value)
        self.epoch_times.append(time.perf_counter() - start)

    def train_statistics(self, report_incumbent: bool = True) -> tuple[float, float, float, float]:
        """``(train_acc, val_acc, test_acc, train_time)`` of the incumbent (or last) cell.

        Only the search metric is known to a black-box optimizer; the other entries are -1, as
        NASLib logs unknown values.
        """
        incumbent_known = report_incumbent and self.problem.objective.has_value()
        cell, value = self.incumbent() if incumbent_known else self.history[-1]
        return -1.0, value, -1.0, self.epoch_times[-1] if self.epoch_times else 0.0

    def test_statistics(self):
        return None

    def get_final_architecture(self) -> nb201.Cell:
        return self.incumbent()[0]

    def get_op_optimizer(self):
        return None

    def get_model_size(self) -> float:
        return 0.0

    def get_checkpointables(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def before_training(self) -> None:
        pass

    def after_training(self) -> None:
        pass

    # ---- what subclasses write ------------------------------------------------------------
    @classmethod
    def prepare(cls, source: Benchmark, dataset: str, directory: Path, metric: str, seed: int = 0,
                **hyperparameters: Any) -> dict[str, Any]:
        """Work done before the search and kept apart from it (meta-training), made with ``seed``.

        A comparison prepares once per target dataset and seed, or once per dataset for all
        seeds (``--prepare-per dataset``).

        Transfer methods override this: learn ``metric`` from ``source`` (the benchmark
        *without* the target dataset, so the target's accuracies are never seen) and write the
        artefact into ``directory``; a search then finds it as ``self.problem.prepared``.
        ``hyperparameters`` are the ones the searches will get. Returns facts to record beside
        the artefact. The base class prepares nothing.
        """
        return {}

    @classmethod
    def has_preparation(cls) -> bool:
        """True when the class overrides :meth:`prepare` (a comparison then caches its output)."""
        return cls.prepare.__func__ is not BlackBoxOptimizer.prepare.__func__

    def check_config(self) -> None:
        """A UserError for settings that the per-value checks of ``lower_bounds`` cannot see (a
        variant's name, a relation between two settings); subclasses extend it."""

    def check_inputs(self, problem: BlackBoxProblem) -> None:
        """A UserError for inputs :meth:`setup` will read from outside the settings (files,
        images) that it could not use: a command calls this before it writes anything. Nothing
        by default; subclasses that read files extend it."""

    def setup(self) -> None:
        """Called once the problem is bound (meta-train, precompute encodings, ...)."""

    @abc.abstractmethod
    def propose(self) -> nb201.Cell:
        """The next cell to query; it must not have been queried before."""

    def observe(self, cell: nb201.Cell, value: float) -> None:
        """Called after each query with its result."""

    def result_extras(self) -> dict[str, Any]:
        """Extra result.json keys of this optimizer (declared in the result schema)."""
        return {}

    # ---- helpers ---------------------------------------------------------------------------
    def incumbent(self) -> tuple[nb201.Cell, float]:
        return self.problem.objective.incumbent()

    def is_queried(self, cell: Sequence[int]) -> bool:
        return self.problem.objective.is_queried(cell)

    def unqueried_neighbours(self, cell: Sequence[int]) -> list[nb201.Cell]:
        """The one-edge neighbours of ``cell`` not queried yet, in the space's neighbour order."""
        return [n for n in self.problem.space.neighbours(cell) if not self.is_queried(n)]

    def random_unqueried(self, exclude: Collection[nb201.Cell] = ()) -> nb201.Cell:
        """A uniformly random cell neither queried yet nor in ``exclude``.

        Drawn among the cells the benchmark has a value for while any is left (a query of
        another cell costs budget and returns nothing), else among all cells of the space.
        """
        domain = self.problem.objective.domain
        if domain is not None:
            cell = self._draw(lambda: domain[self.rng.randrange(len(domain))], domain, exclude)
            if cell is not None:
                return cell
        cell = self._draw(lambda: self.problem.space.sample(self.rng), nb201.all_cells(), exclude)
        if cell is None:
            raise RuntimeError("every cell of the search space is queried or excluded")
        return cell

    def _draw(self, sample, population: Iterable[nb201.Cell], exclude: Collection[nb201.Cell]) -> nb201.Cell | None:
        """Rejection sampling from ``sample()`` (the space is large), then a uniform choice among
        the cells of ``population`` still free once rejections run long; None when none is."""
        def free(cell) -> bool:
            return not self.is_queried(cell) and cell not in exclude

        for _ in range(_REJECTION_TRIES):
            cell = sample()
            if free(cell):
                return cell
        left = [cell for cell in population if free(cell)]
        return self.rng.choice(left) if left else None


def run_black_box(optimizer: BlackBoxOptimizer, problem: BlackBoxProblem, progress=None) -> BlackBoxOptimizer:
    """Drive ``optimizer`` on ``problem`` until the budget is spent (NASLib Trainer's loop).

    ``progress`` is an optional callable taking the number of queries done (for a progress bar).
    """
    optimizer.adapt_search_space(problem.space, dataset_api=problem)
    optimizer.before_training()
    for epoch in range(problem.objective.budget):
        before = problem.objective.num_queries
        optimizer.new_epoch(epoch)
        if problem.objective.num_queries != before + 1:
            raise RuntimeError(f"{type(optimizer).__name__}.new_epoch made {problem.objective.num_queries - before} queries, not 1")
        if progress is not None:
            progress(problem.objective.num_queries)
    optimizer.after_training()
    return optimizer
