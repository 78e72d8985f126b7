"""Run every (optimizer, dataset, seed) of a black-box comparison, resumably and in parallel.

Fairness is structural: every run goes through :func:`~naslib_bayes.experiment.run_blackbox_search`
with the same benchmark, budget, metrics and seed list, so query accounting is identical.

Each file is written atomically by the process that finished the work, so killing the command
loses only the work in flight; running it again skips every run whose file exists. A run does
not depend on which process runs it or on ``jobs``: workers use one torch thread, and all of a
run's randomness comes from its seed.

Its parts live beside it: the grid (:mod:`.grid`), the run files and when one may be reused
(:mod:`.records`), the worker processes (:mod:`.processes`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from naslib_bayes import results
from naslib_bayes.comparison.grid import CompareSettings, PrepKey, RunSpec
from naslib_bayes.comparison.processes import Task, run_in_workers, worker_benchmark
from naslib_bayes.comparison.records import (
    ARTEFACT_SHA_KEY, FINGERPRINT_KEY, PREPARATION_SEED_KEY, PREPARED_FILE, RUNS_DIR, Determinants,
    benchmark_fingerprint, load_preparation, load_run, prepared_dir, recorded_preparation, recorded_run,
    refuse_budgets_no_run_can_spend, refuse_other_settings, refuse_targets_in_user_surrogates, remove_partial_files,
    run_path,
)
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, resolve_metrics
from naslib_bayes.threads import torch_threads


@dataclass
class CompareReport:
    """What :func:`run_comparison` did: runs done now, runs reused, preparations made, elapsed seconds."""

    ran: list[RunSpec]
    skipped: list[RunSpec]
    prepared: list[PrepKey]
    elapsed_s: float


# ---- the work each process does ------------------------------------------------------------
def _execute_run(settings: CompareSettings, spec: RunSpec, benchmark: Benchmark | None = None) -> tuple[RunSpec, float]:
    """Run one search and write its file atomically; returns its wall time."""
    from naslib_bayes.experiment import run_blackbox_search

    benchmark = worker_benchmark(benchmark)
    preparation = settings.preparation_of(spec)
    prepared = None if preparation is None else prepared_dir(settings.out, *preparation)
    result = run_blackbox_search(
        benchmark, spec.optimizer, spec.dataset, settings.budget, spec.seed,
        search_metric=settings.search_metric, report_metric=settings.report_metric,
        hyperparameters=settings.hyperparameters.get(spec.optimizer, {}),
        prepared=prepared,
    )
    result["command"] = "compare"
    # The hash of the tables this process searched, so a later invocation can tell whether it
    # may reuse the run (see :func:`plan`).
    result["config"][FINGERPRINT_KEY] = benchmark_fingerprint(benchmark)
    if preparation is not None:
        result["config"][PREPARATION_SEED_KEY] = preparation[2]
    artefact = settings.user_artefact_sha256(spec.optimizer)
    if artefact is not None:
        result["config"][ARTEFACT_SHA_KEY] = artefact
    results.atomic_write_json(run_path(settings.out, spec), result)
    return spec, float(result["wall_time_s"])


def _execute_preparation(settings: CompareSettings, key: PrepKey, benchmark: Benchmark | None = None) -> PrepKey:
    """Prepare ``optimizer`` for ``dataset`` with ``seed`` from the other datasets only, then publish it.

    The artefact is built in a temporary sibling folder and renamed into place with its
    ``prepared.json`` inside, so a half-written artefact is never taken for a finished one.
    """
    benchmark = worker_benchmark(benchmark)
    optimizer, dataset, seed = key
    cls = registry.get_spec(optimizer, registry.BLACK_BOX).load()
    final = prepared_dir(settings.out, *key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{optimizer}.", dir=final.parent))
    try:
        metric, _, _ = resolve_metrics(benchmark, dataset, settings.search_metric, settings.report_metric)
        source = benchmark.without(dataset)  # the target's accuracies are never handed out
        start = time.perf_counter()
        facts = cls.prepare(source, dataset, tmp, metric, seed=seed, **settings.hyperparameters.get(optimizer, {}))
        record = {"optimizer": optimizer, "dataset": dataset, "source_datasets": list(source.datasets),
                  "metric": metric, "seed": seed, "wall_time_s": time.perf_counter() - start,
                  FINGERPRINT_KEY: benchmark_fingerprint(benchmark),
                  "hyperparameters": settings.resolved_hyperparameters(optimizer), **(facts or {})}
        results.atomic_write_json(tmp / PREPARED_FILE, record)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return key


# ---- scheduling ------------------------------------------------------------------------------
def split_finished(out: Path, specs: Iterable[RunSpec],
                   check: Callable[[RunSpec, dict[str, Any]], None]) -> tuple[list[RunSpec], list[RunSpec]]:
    """(runs with no file yet, runs finished); ``check(spec, result)`` raises for a file that was
    made with other settings, before anything runs."""
    todo, done = [], []
    for spec in specs:
        result = load_run(out, spec)
        if result is None:
            todo.append(spec)
        else:
            check(spec, result)
            done.append(spec)
    return todo, done


def plan(settings: CompareSettings, benchmark: Benchmark) -> tuple[list[RunSpec], list[RunSpec], list[PrepKey]]:
    """Split the grid into runs to do, runs already done, and preparations still missing.

    Every check happens here, before anything runs: a file made with other settings, a
    default search metric that differs between datasets, a given surrogate that saw a target.
    """
    determinants = Determinants.of(settings, benchmark)
    refuse_budgets_no_run_can_spend(settings, benchmark, determinants.search_metric)
    refuse_targets_in_user_surrogates(settings)

    def check(spec: RunSpec, result: dict[str, Any]) -> None:
        recorded = recorded_run(result, prepared=settings.preparation_of(spec) is not None)
        refuse_other_settings(run_path(settings.out, spec), recorded, determinants.of_run(spec),
                              recorded_benchmark=(result.get("config") or {}).get("benchmark"))

    todo, done = split_finished(settings.out, settings.runs(), check)
    missing = []
    for key in sorted({settings.preparation_of(s) for s in todo} - {None}):
        record = load_preparation(settings.out, key)
        if record is None:
            missing.append(key)
            continue
        refuse_other_settings(prepared_dir(settings.out, *key) / PREPARED_FILE, recorded_preparation(record),
                              determinants.of_preparation(key), made="prepared")
    return todo, done, missing


@contextlib.contextmanager
def holding(out: Path, held: contextlib.ExitStack | None = None):
    """``out`` made and held (:func:`results.exclusive_use`) while the block runs, or, entered into a
    caller's ``held`` stack, until that closes (a caller that writes summaries there afterwards)."""
    lock = results.exclusive_use(out, "--out")
    if held is None:
        with lock:
            yield
    else:
        held.enter_context(lock)
        yield


def run_comparison(
    settings: CompareSettings,
    benchmark: Benchmark | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_run_done: Callable[[RunSpec], None] | None = None,
    on_prepared: Callable[[PrepKey, int, int], None] | None = None,
    held: contextlib.ExitStack | None = None,
) -> CompareReport:
    """Run what is missing of the comparison.

    Args:
        settings: the grid and folder.
        benchmark: the loaded benchmark (loaded from the path if None); it decides which runs
            may be reused, and ``jobs == 1`` runs on it (workers load their own).
        on_progress: called with (finished, total) runs after each run (a progress bar).
        on_run_done: called with each finished run's spec after its file is written.
        on_prepared: called with (preparation, finished, total) after each preparation: with
            one per seed they can take most of a comparison's first minutes.
        held: where the lock on ``settings.out`` goes (see :func:`results.exclusive_use`), for a
            caller that writes there afterwards too; by default it is released on return.
    """
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    start = time.perf_counter()
    benchmark = benchmark or load_benchmark(settings.benchmark)
    todo, done, missing = plan(settings, benchmark)
    with holding(settings.out, held):  # made after every check: refused settings leave no folder
        Path(settings.out, RUNS_DIR).mkdir(parents=True, exist_ok=True)
        remove_partial_files(settings.out)
        total = len(todo) + len(done)
        progress = _Progress(len(done), total, on_progress, on_run_done, on_prepared, len(missing))
        if settings.jobs == 1:
            _run_serially(settings, benchmark, todo, missing, progress)
        else:
            _run_in_pool(settings, todo, missing, progress)
    return CompareReport(ran=progress.ran, skipped=done, prepared=missing, elapsed_s=time.perf_counter() - start)


@dataclass
class _Progress:
    finished: int
    total: int
    on_progress: Callable[[int, int], None] | None
    on_run_done: Callable[[RunSpec], None] | None
    on_prepared: Callable[[PrepKey, int, int], None] | None = None
    preparations: int = 0
    prepared: int = 0
    ran: list[RunSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_progress:
            self.on_progress(self.finished, self.total)

    def done(self, spec: RunSpec) -> None:
        self.finished += 1
        self.ran.append(spec)
        if self.on_progress:
            self.on_progress(self.finished, self.total)
        if self.on_run_done:
            self.on_run_done(spec)

    def prepared_one(self, key: PrepKey) -> None:
        self.prepared += 1
        if self.on_prepared:
            self.on_prepared(key, self.prepared, self.preparations)


def _run_serially(settings, benchmark, todo, missing, progress) -> None:
    """``jobs == 1``: this process, one torch thread (as a worker would have)."""
    with torch_threads(1):
        for key in missing:
            _execute_preparation(settings, key, benchmark)
            progress.prepared_one(key)
        for spec in todo:
            _execute_run(settings, spec, benchmark)
            progress.done(spec)


def _run_in_pool(settings, todo, missing, progress) -> None:
    """``jobs > 1``: worker processes; a run starts once its preparation is done."""
    blocked: dict[PrepKey, list[RunSpec]] = {key: [] for key in missing}
    ready: list[RunSpec] = []
    for spec in todo:  # each run waits for its own preparation, if that is still to be made
        blocked.get(settings.preparation_of(spec), ready).append(spec)

    def runs(specs: Iterable[RunSpec]) -> list[Task]:
        return [(("run", spec), _execute_run, (settings, spec)) for spec in specs]

    def on_result(tag: tuple[str, Any], _result) -> list[Task] | None:
        what, payload = tag
        if what == "prepare":
            progress.prepared_one(payload)
            return runs(blocked.pop(payload))
        progress.done(payload)
        return None

    preparations = [(("prepare", key), _execute_preparation, (settings, key)) for key in missing]
    run_in_workers(settings.jobs, settings.benchmark, settings.out, [preparations, runs(ready)], on_result)
