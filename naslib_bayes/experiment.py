"""One black-box search on a tabular benchmark, from arguments to a result dict.

Shared by ``naslib-bayes search`` and ``naslib-bayes compare`` so that both account for
queries, metrics and seeds identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from naslib_bayes import results
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer, BlackBoxProblem, run_black_box
from naslib_bayes.optimizers.hyperparameters import whole_number
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset, finite_or_none, resolve_metrics


@dataclass
class BlackBoxSearch:
    """One seeded search, its arguments checked and its optimizer made, not yet run.

    :func:`plan_blackbox_search` makes it; a caller can then prepare its output (``--out``)
    knowing that bad arguments (a budget beyond the cells, a metric the benchmark lacks, an
    optimizer setting out of range) were already refused, and :meth:`run` it.
    """

    benchmark: Benchmark
    optimizer_name: str
    optimizer: BlackBoxOptimizer
    problem: BlackBoxProblem
    seed: int
    budget: int
    report_metric: str
    warnings: list[str]
    started: float

    def run(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Run the search (once: it spends the budget) and return its result (schema ``result.json``)."""
        run_black_box(self.optimizer, self.problem, progress=progress)
        final = self.optimizer.get_final_architecture()
        benchmark, dataset, objective = self.benchmark, self.problem.dataset, self.problem.objective
        return results.new_result(
            "search",
            optimizer=self.optimizer_name,
            search_space="nasbench201",
            dataset=dataset,
            seed=self.seed,
            budget=self.budget,
            search_metric=objective.metric,
            report_metric=self.report_metric,
            final_architecture=nb201.to_string(final),
            final_architecture_op_indices=list(final),
            benchmark_accuracy=benchmark.query_everywhere(final, self.report_metric),
            trajectory=objective.trajectory(),
            report_optimum=finite_or_none(benchmark.best(dataset, self.report_metric)),
            incumbent_report_accuracy=incumbent_report_values(benchmark, dataset, self.report_metric, objective),
            wall_time_s=time.perf_counter() - self.started,
            config={"benchmark": benchmark.source, **self.optimizer.config},
            notes=list(benchmark.notes) + self.warnings,
            **self.optimizer.result_extras(),
        )


def plan_blackbox_search(
    benchmark: Benchmark,
    optimizer: str,
    dataset: str,
    budget: int,
    seed: int,
    search_metric: str | None = None,
    report_metric: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    prepared: Path | None = None,
) -> BlackBoxSearch:
    """Check one search's arguments and make its optimizer (:class:`UserError` on bad ones).

    ``prepared`` is the folder of the optimizer's per-dataset preparation (see
    :meth:`BlackBoxOptimizer.prepare`), when a caller made it ahead for several seeds.
    """
    started = time.perf_counter()
    seed, budget = whole_number("seed", seed), whole_number("budget", budget)  # the result records them as JSON
    dataset = canonical_dataset(dataset)
    search_metric, report_metric, warnings = resolve_metrics(benchmark, dataset, search_metric, report_metric)
    problem = BlackBoxProblem.from_benchmark(benchmark, dataset, search_metric, budget)
    problem.prepared = Path(prepared) if prepared is not None else None
    opt = registry.create(optimizer, kind=registry.BLACK_BOX, seed=seed, **dict(hyperparameters or {}))
    opt.check_budget(problem.objective)
    return BlackBoxSearch(benchmark, optimizer, opt, problem, seed, budget, report_metric, warnings, started)


def run_blackbox_search(
    benchmark: Benchmark,
    optimizer: str,
    dataset: str,
    budget: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] = lambda message: None,
    **options: Any,
) -> dict[str, Any]:
    """Run one seeded search and return its result (schema ``result.json``): :func:`plan_blackbox_search`
    with ``options`` (``search_metric``, ``report_metric``, ``hyperparameters``, ``prepared``),
    each of its warnings passed to ``warn``, then :meth:`BlackBoxSearch.run`."""
    search = plan_blackbox_search(benchmark, optimizer, dataset, budget, seed, **options)
    for message in search.warnings:
        warn(message)
    return search.run(progress)


def incumbent_report_values(benchmark: Benchmark, dataset: str, report_metric: str, objective) -> list[float | None]:
    """Report-metric value of the incumbent after each query.

    The incumbent is chosen by the *search* metric (the first queried among ties, as
    :meth:`Objective.incumbent`); only its reported value comes from ``report_metric``, so regret
    never rewards a search for what it could not see.
    """
    report = benchmark.query_all(dataset, report_metric)
    values, best, best_search = [], None, -math.inf
    for cell, value in zip(objective.queried, objective.values):
        if not math.isnan(value) and value > best_search:
            best_search, best = value, cell
        values.append(None if best is None else finite_or_none(float(report[benchmark.index_of(best)])))
    return values
