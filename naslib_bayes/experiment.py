"""One black-box search on a tabular benchmark, from arguments to a result dict.

Shared by ``naslib-bayes search`` and ``naslib-bayes compare`` so that both account for
queries, metrics and seeds identically.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from naslib_bayes import results
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxProblem, run_black_box
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset, finite_or_none, resolve_metrics


def run_blackbox_search(
    benchmark: Benchmark,
    optimizer: str,
    dataset: str,
    budget: int,
    seed: int,
    search_metric: str | None = None,
    report_metric: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    warn: Callable[[str], None] = lambda message: None,
    prepared: Path | None = None,
) -> dict[str, Any]:
    """Run one seeded search and return its result (schema ``result.json``).

    ``prepared`` is the folder of the optimizer's per-dataset preparation (see
    :meth:`BlackBoxOptimizer.prepare`), when a caller made it ahead for several seeds.
    """
    start = time.perf_counter()
    dataset = canonical_dataset(dataset)
    search_metric, report_metric, warnings = resolve_metrics(benchmark, dataset, search_metric, report_metric)
    for message in warnings:
        warn(message)
    problem = BlackBoxProblem.from_benchmark(benchmark, dataset, search_metric, budget)
    problem.prepared = Path(prepared) if prepared is not None else None
    opt = registry.create(optimizer, kind=registry.BLACK_BOX, seed=seed, **dict(hyperparameters or {}))
    run_black_box(opt, problem, progress=progress)
    final = opt.get_final_architecture()
    return results.new_result(
        "search",
        optimizer=optimizer,
        search_space="nasbench201",
        dataset=dataset,
        seed=seed,
        budget=budget,
        search_metric=search_metric,
        report_metric=report_metric,
        final_architecture=nb201.to_string(final),
        final_architecture_op_indices=list(final),
        benchmark_accuracy=benchmark.query_everywhere(final, report_metric),
        trajectory=problem.objective.trajectory(),
        report_optimum=finite_or_none(benchmark.best(dataset, report_metric)),
        incumbent_report_accuracy=incumbent_report_values(benchmark, dataset, report_metric, problem.objective),
        wall_time_s=time.perf_counter() - start,
        config={"benchmark": benchmark.source, **opt.config},
        notes=list(benchmark.notes) + warnings,
        **opt.result_extras(),
    )


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
