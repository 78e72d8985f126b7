"""Run every (optimizer, dataset, seed) of a black-box comparison, resumably and in parallel.

Fairness is structural: every run goes through :func:`~naslib_bayes.experiment.run_blackbox_search`
with the same benchmark, budget, metrics and seed list, so query accounting is identical.

Layout of the output folder ``DIR``::

    DIR/runs/<optimizer>-<dataset>-<seed>.json     one result.json per finished run
    DIR/surrogates/<dataset>/<optimizer>/          per-dataset preparation (meta-training),
        prepared.json                              written last: marks it complete

Each file is written atomically by the process that finished the work, so killing the command
loses only the work in flight; running it again skips every run whose file exists. A run does
not depend on which process runs it or on ``jobs``: workers use one torch thread, and all of a
run's randomness comes from its seed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset, resolve_metrics

RUNS_DIR = "runs"
SURROGATES_DIR = "surrogates"
PREPARED_FILE = "prepared.json"
#: Seed of the per-dataset preparation: one artefact serves every search seed.
PREPARE_SEED = 0
#: Result keys a finished run must agree on with the current settings to be reused.
_SETTING_KEYS = ("budget", "search_metric", "report_metric")


@dataclass(frozen=True)
class RunSpec:
    """One search of a comparison."""

    optimizer: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.optimizer}-{self.dataset}-{self.seed}"


@dataclass
class CompareSettings:
    """What a black-box comparison runs.

    Attributes:
        benchmark: path of the benchmark file or folder (workers load it themselves).
        out: output folder.
        optimizers, datasets, seeds: the grid; datasets are canonicalised.
        budget: queries per run, the initial design included.
        search_metric, report_metric: as for ``naslib-bayes search`` (None: defaults).
        hyperparameters: per-optimizer overrides, ``{optimizer: {key: value}}``.
        jobs: worker processes (1 runs in this process).
    """

    benchmark: Path
    out: Path
    optimizers: list[str]
    datasets: list[str]
    seeds: list[int]
    budget: int
    search_metric: str | None = None
    report_metric: str | None = None
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: int = 1

    def __post_init__(self) -> None:
        self.datasets = [canonical_dataset(d) for d in self.datasets]
        for name in self.optimizers:
            registry.get_spec(name, registry.BLACK_BOX)  # the registry's one-line error
        unknown = sorted(set(self.hyperparameters) - set(self.optimizers))
        if unknown:
            raise UserError(f"hyper-parameters given for {unknown[0]!r}, which is not among the optimizers compared")

    def runs(self) -> list[RunSpec]:
        """Every run, dataset-major so that a partial comparison covers datasets evenly."""
        return [RunSpec(o, d, s) for d in self.datasets for s in self.seeds for o in self.optimizers]


@dataclass
class CompareReport:
    """What :func:`run_comparison` did: runs done now, runs reused, elapsed seconds."""

    ran: list[RunSpec]
    skipped: list[RunSpec]
    prepared: list[tuple[str, str]]
    elapsed_s: float


def run_path(out: Path, spec: RunSpec) -> Path:
    return Path(out) / RUNS_DIR / f"{spec.name}.json"


def prepared_dir(out: Path, optimizer: str, dataset: str) -> Path:
    return Path(out) / SURROGATES_DIR / dataset / optimizer


def load_run(out: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The finished run's result, or None when it has not finished."""
    path = run_path(out, spec)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable run file ({exc}); delete it to run it again") from None


def check_compatible(path: Path, result: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse to mix runs made with other settings into one comparison."""
    for key, value in expected.items():
        if value is not None and result.get(key) != value:
            raise UserError(f"{path} was run with {key}={result.get(key)!r}, not {value!r}; use another --out")


def needs_preparation(optimizer: str) -> bool:
    return registry.get_spec(optimizer, registry.BLACK_BOX).load().has_preparation()


# ---- the work each process does ------------------------------------------------------------
_WORKER_BENCHMARK: Benchmark | None = None


def _init_worker(benchmark_path: str) -> None:
    """Worker start: one torch thread (runs share the cores) and the benchmark loaded once."""
    global _WORKER_BENCHMARK
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    torch.set_num_threads(1)
    _WORKER_BENCHMARK = load_benchmark(benchmark_path)


def _execute_run(settings: CompareSettings, spec: RunSpec, prepared: str | None,
                 benchmark: Benchmark | None = None) -> tuple[RunSpec, float]:
    """Run one search and write its file atomically; returns its wall time."""
    from naslib_bayes.experiment import run_blackbox_search

    result = run_blackbox_search(
        benchmark or _WORKER_BENCHMARK, spec.optimizer, spec.dataset, settings.budget, spec.seed,
        search_metric=settings.search_metric, report_metric=settings.report_metric,
        hyperparameters=settings.hyperparameters.get(spec.optimizer, {}),
        prepared=Path(prepared) if prepared else None,
    )
    result["command"] = "compare"
    results.atomic_write_json(run_path(settings.out, spec), result)
    return spec, float(result["wall_time_s"])


def _execute_preparation(settings: CompareSettings, optimizer: str, dataset: str,
                         benchmark: Benchmark | None = None) -> tuple[str, str]:
    """Prepare ``optimizer`` for ``dataset`` from the other datasets only, then publish it.

    The artefact is built in a temporary sibling folder and renamed into place with its
    ``prepared.json`` inside, so a half-written artefact is never taken for a finished one.
    """
    benchmark = benchmark or _WORKER_BENCHMARK
    cls = registry.get_spec(optimizer, registry.BLACK_BOX).load()
    final = prepared_dir(settings.out, optimizer, dataset)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{optimizer}.", dir=final.parent))
    try:
        metric, _, _ = resolve_metrics(benchmark, dataset, settings.search_metric, settings.report_metric)
        source = benchmark.without(dataset)  # the target's accuracies are never handed out
        start = time.perf_counter()
        facts = cls.prepare(source, dataset, tmp, metric, seed=PREPARE_SEED, **settings.hyperparameters.get(optimizer, {}))
        record = {"optimizer": optimizer, "dataset": dataset, "source_datasets": list(source.datasets),
                  "metric": metric, "seed": PREPARE_SEED, "wall_time_s": time.perf_counter() - start, **(facts or {})}
        results.atomic_write_json(tmp / PREPARED_FILE, record)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return optimizer, dataset


# ---- scheduling ------------------------------------------------------------------------------
def plan(settings: CompareSettings) -> tuple[list[RunSpec], list[RunSpec], list[tuple[str, str]]]:
    """Split the grid into runs to do, runs already done, and preparations still missing."""
    expected = {"budget": settings.budget, "search_metric": settings.search_metric,
                "report_metric": settings.report_metric}
    todo, done = [], []
    for spec in settings.runs():
        result = load_run(settings.out, spec)
        if result is None:
            todo.append(spec)
        else:
            check_compatible(run_path(settings.out, spec), result, expected)
            done.append(spec)
    pending = {(s.optimizer, s.dataset) for s in todo if needs_preparation(s.optimizer)}
    missing = [key for key in sorted(pending)
               if not (prepared_dir(settings.out, *key) / PREPARED_FILE).exists()]
    return todo, done, missing


def run_comparison(
    settings: CompareSettings,
    benchmark: Benchmark | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_run_done: Callable[[RunSpec], None] | None = None,
) -> CompareReport:
    """Run what is missing of the comparison.

    Args:
        settings: the grid and folder.
        benchmark: an already loaded benchmark for ``jobs == 1`` (loaded from the path if None).
        on_progress: called with (finished, total) runs after each run (a progress bar).
        on_run_done: called with each finished run's spec after its file is written.
    """
    start = time.perf_counter()
    runs_dir = Path(settings.out, RUNS_DIR)
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in runs_dir.glob(".*.tmp"):  # left by a writer killed mid-write; never read
        stale.unlink(missing_ok=True)
    todo, done, missing = plan(settings)
    total = len(todo) + len(done)
    progress = _Progress(len(done), total, on_progress, on_run_done)
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


def _prepared_arg(settings: CompareSettings, spec: RunSpec) -> str | None:
    if not needs_preparation(spec.optimizer):
        return None
    return str(prepared_dir(settings.out, spec.optimizer, spec.dataset))


def _run_serially(settings, benchmark, todo, missing, progress) -> None:
    """``jobs == 1``: this process, one torch thread (as a worker would have)."""
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    benchmark = benchmark or load_benchmark(settings.benchmark)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for optimizer, dataset in missing:
            _execute_preparation(settings, optimizer, dataset, benchmark)
        for spec in todo:
            _execute_run(settings, spec, _prepared_arg(settings, spec), benchmark)
            progress.done(spec)
    finally:
        torch.set_num_threads(threads)


def _run_in_pool(settings, todo, missing, progress) -> None:
    """``jobs > 1``: worker processes; a dataset's runs start once its preparations are done."""
    blocked = {key: [s for s in todo if (s.optimizer, s.dataset) == key] for key in missing}
    ready = [s for s in todo if (s.optimizer, s.dataset) not in blocked]
    context = _worker_context()
    with ProcessPoolExecutor(max_workers=settings.jobs, mp_context=context, initializer=_init_worker,
                             initargs=(str(settings.benchmark),)) as pool:
        futures: dict[Future, Any] = {}
        try:
            for key in missing:
                futures[pool.submit(_execute_preparation, settings, *key)] = ("prepare", key)
            _submit_runs(pool, futures, settings, ready)
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    what, payload = futures.pop(future)
                    future.result()  # re-raise a worker's error here
                    if what == "prepare":
                        _submit_runs(pool, futures, settings, blocked.pop(payload))
                    else:
                        progress.done(payload)
        except BaseException:
            _stop_workers(pool)
            raise


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Drop queued runs and end the running ones now (Ctrl-C should not wait for them).

    Finished runs are already on disk and a run in flight never leaves a partial file, so
    nothing is lost but the work in flight. The executor has no public way to end running
    workers before Python 3.14, hence its process table.
    """
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _worker_context():
    """Workers start from a clean interpreter, never from a fork of this (possibly threaded) one.

    ``forkserver`` imports the package (and torch) once in a server process and forks workers
    from it, which starts them in a fraction of the time ``spawn`` needs to import torch in
    each; ``spawn`` is the fallback where forkserver does not exist.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _submit_runs(pool, futures, settings, specs: Iterable[RunSpec]) -> None:
    for spec in specs:
        futures[pool.submit(_execute_run, settings, spec, _prepared_arg(settings, spec))] = ("run", spec)
