"""One black-box search on a tabular benchmark, from arguments to a result dict.

Shared by ``naslib-bayes search`` and ``naslib-bayes compare`` so that both account for
queries, metrics and seeds identically.
"""

from __future__ import annotations

import time
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
) -> dict[str, Any]:
    """Run one seeded search and return its result (schema ``result.json``)."""
    start = time.perf_counter()
    dataset = canonical_dataset(dataset)
    search_metric, report_metric, warnings = resolve_metrics(benchmark, dataset, search_metric, report_metric)
    for message in warnings:
        warn(message)
    problem = BlackBoxProblem.from_benchmark(benchmark, dataset, search_metric, budget)
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
        benchmark_accuracy={d: finite_or_none(benchmark.query(final, d, report_metric))
                            for d in benchmark.datasets if benchmark.has_metric(d, report_metric)},
        trajectory=problem.objective.trajectory(),
        wall_time_s=time.perf_counter() - start,
        config={"benchmark": benchmark.source, **opt.config},
        notes=list(benchmark.notes) + warnings,
        **opt.result_extras(),
    )
