"""Run every (optimizer, dataset, seed) of a black-box comparison, resumably and in parallel.

Fairness is structural: every run goes through :func:`~naslib_bayes.experiment.run_blackbox_search`
with the same benchmark, budget, metrics and seed list, so query accounting is identical.

Layout of the output folder ``DIR``::

    DIR/runs/<optimizer>-<dataset>-<seed>.json     one result.json per finished run
    DIR/surrogates/<dataset>/<optimizer>/seed-<s>/ a transfer method's preparation (meta-training
        prepared.json                              on the other datasets), written last: marks it complete

A transfer method is prepared once per (dataset, seed) by default: the seed drives its
meta-training, so the seeds are independent repetitions of the whole method. With
``prepare_per="dataset"`` one preparation (seed 0) serves every seed of a dataset, the paper's
protocol at 1/N of the cost; a method whose search is deterministic then repeats one
trajectory N times.

Each file is written atomically by the process that finished the work, so killing the command
loses only the work in flight; running it again skips every run whose file exists. A run does
not depend on which process runs it or on ``jobs``: workers use one torch thread, and all of a
run's randomness comes from its seed.

A file is reused only when it was made with everything that decides a run: budget, metrics,
seed, the seed of the preparation it used, the optimizer's hyper-parameters as resolved
(defaults included), the benchmark's content (a SHA-256 of its cells and tables,
``config.benchmark_sha256``) and that of a surrogate file the user gave
(``config.surrogate_sha256``: the same path meta-trained anew is another surrogate); a
preparation likewise. A file made otherwise is refused with an error naming it and the first setting that
differs: deleting it would lose a result, and keeping it would mix settings in one summary.
The code is not a determinant (any edit would refuse every earlier run); each run records its
fingerprint in ``versions`` and a summary of runs of several versions says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NoReturn, Sequence

import numpy as np
import torch

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset, resolve_metrics
from naslib_bayes.threads import torch_threads

RUNS_DIR = "runs"
SURROGATES_DIR = "surrogates"
PREPARED_FILE = "prepared.json"
#: How often a transfer method is prepared: once per (dataset, seed), or once per dataset.
PREPARE_PER = ("seed", "dataset")
#: Seed of the preparation every seed shares with ``prepare_per="dataset"``; also the seed of
#: every preparation made before preparations were per seed.
PREPARE_SEED = 0
#: Key (in a run's ``config``) of the seed of the preparation the run used.
PREPARATION_SEED_KEY = "preparation_seed"
#: Key (in a run's ``config`` and in ``prepared.json``) of the benchmark's content hash.
FINGERPRINT_KEY = "benchmark_sha256"
#: Hyper-parameter naming an artefact the user made beforehand (a TNAS surrogate); an optimizer
#: given one is not prepared by the comparison.
USER_ARTEFACT_KEY = "surrogate"
#: The run config's SHA-256 of the file a user-given ``USER_ARTEFACT_KEY`` names.
ARTEFACT_SHA_KEY = "surrogate_sha256"


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
        prepare_per: ``"seed"`` (a transfer method is meta-trained for every seed) or
            ``"dataset"`` (once per dataset, with seed 0, for all seeds); see the module's text.
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
    prepare_per: str = "seed"

    def __post_init__(self) -> None:
        if self.prepare_per not in PREPARE_PER:
            raise UserError(f"--prepare-per {self.prepare_per!r}: expected one of {', '.join(PREPARE_PER)}")
        canonical = [canonical_dataset(d) for d in self.datasets]
        require_distinct("datasets", self.datasets, canonical)
        require_distinct("optimizers", self.optimizers)
        require_distinct("seeds", self.seeds)
        self.datasets = canonical
        for name in self.optimizers:
            registry.get_spec(name, registry.BLACK_BOX)  # the registry's one-line error
        unknown = sorted(set(self.hyperparameters) - set(self.optimizers))
        if unknown:
            raise UserError(f"hyper-parameters given for {unknown[0]!r}, which is not among the optimizers compared")
        for name in self.optimizers:
            self.resolved_hyperparameters(name)  # a misspelt or mistyped --opt fails before any run

    def resolved_hyperparameters(self, optimizer: str) -> dict[str, Any]:
        """Every hyper-parameter of ``optimizer`` (defaults and overrides), as its runs record them."""
        created = registry.create(optimizer, kind=registry.BLACK_BOX, seed=0, **self.hyperparameters.get(optimizer, {}))
        return _as_json(created.config)

    def user_artefact(self, optimizer: str) -> str | None:
        """The prepared artefact (a surrogate path) the user gave ``optimizer``, if any."""
        value = self.hyperparameters.get(optimizer, {}).get(USER_ARTEFACT_KEY)
        return None if value is None else str(value)

    def user_artefact_sha256(self, optimizer: str) -> str | None:
        """SHA-256 of the file :meth:`user_artefact` names (its ``surrogate.pt`` for a folder), or None."""
        from naslib_bayes.predictors import surrogate_io

        path = self.user_artefact(optimizer)
        return None if path is None else hashlib.sha256(surrogate_io.resolve(path).read_bytes()).hexdigest()

    def preparation_seed(self, seed: int) -> int:
        """The seed of the preparation that the runs of ``seed`` use."""
        return seed if self.prepare_per == "seed" else PREPARE_SEED

    def preparation_of(self, spec: RunSpec) -> "PrepKey | None":
        """(optimizer, dataset, preparation seed) of the preparation ``spec`` needs; None if none."""
        if not needs_preparation(self, spec.optimizer):
            return None
        return spec.optimizer, spec.dataset, self.preparation_seed(spec.seed)

    def runs(self) -> list[RunSpec]:
        """Every run, dataset-major so that a partial comparison covers datasets evenly."""
        return [RunSpec(o, d, s) for d in self.datasets for s in self.seeds for o in self.optimizers]


def require_distinct(what: str, given: Sequence[Any], canonical: Sequence[Any] | None = None) -> None:
    """Refuse a name given twice (or two spellings of one dataset): the grid would hold the same
    run twice, and concurrent workers would write its file twice."""
    canonical = list(given) if canonical is None else list(canonical)
    for value in dict.fromkeys(canonical):
        spellings = [str(g) for g, c in zip(given, canonical) if c == value]
        if len(spellings) == 1:
            continue
        if len(set(spellings)) == 1:
            raise UserError(f"{what}: {value} is given {len(spellings)} times; give each once")
        raise UserError(f"{what}: {', '.join(spellings)} all name {value}; give each once")


#: A preparation: (optimizer, dataset, seed).
PrepKey = tuple[str, str, int]


@dataclass
class CompareReport:
    """What :func:`run_comparison` did: runs done now, runs reused, preparations made, elapsed seconds."""

    ran: list[RunSpec]
    skipped: list[RunSpec]
    prepared: list[PrepKey]
    elapsed_s: float


def run_path(out: Path, spec: RunSpec) -> Path:
    return Path(out) / RUNS_DIR / f"{spec.name}.json"


def prepared_dir(out: Path, optimizer: str, dataset: str, seed: int) -> Path:
    """The folder of a preparation, finished or to be made.

    A comparison made before preparations were per seed kept its one preparation (seed 0) in
    the optimizer's folder itself; that folder is still found, so its runs keep their surrogate.
    """
    folder = Path(out) / SURROGATES_DIR / dataset / optimizer
    if seed == PREPARE_SEED and (folder / PREPARED_FILE).exists():
        return folder
    return folder / f"seed-{seed}"


def load_run(out: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The finished run's result, or None when it has not finished."""
    return read_record(run_path(out, spec), "run file", "delete it to run it again")


def load_preparation(out: Path, key: PrepKey) -> dict[str, Any] | None:
    """The finished preparation's record, or None when it has not finished."""
    path = prepared_dir(out, *key) / PREPARED_FILE
    return read_record(path, "preparation record", "delete its folder to prepare it again")


def read_record(path: Path, what: str, remedy: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, None when there is no file; a file that cannot be read, or holds
    JSON other than an object (null would pass for a run not yet made, and be overwritten), is a
    :class:`UserError` naming it."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable {what} ({exc}); {remedy}") from None
    if not isinstance(record, dict):
        held = "null" if record is None else f"a {type(record).__name__}"
        raise UserError(f"{path}: not a {what} (holds {held}); {remedy}")
    return record


def needs_preparation(settings: CompareSettings, optimizer: str) -> bool:
    """True when the comparison must prepare ``optimizer`` itself (the user gave no artefact)."""
    has_preparation = registry.get_spec(optimizer, registry.BLACK_BOX).load().has_preparation()
    return has_preparation and settings.user_artefact(optimizer) is None


# ---- what decides a run ----------------------------------------------------------------------
def benchmark_fingerprint(benchmark: Benchmark) -> str:
    """SHA-256 of the benchmark's cells and tables: its identity, wherever the file lies."""
    digest = hashlib.sha256(np.ascontiguousarray(benchmark.cells, dtype=np.int64).tobytes())
    for dataset in benchmark.datasets:
        for metric in sorted(benchmark.metrics(dataset)):
            digest.update(f"{dataset}/{metric}".encode())
            digest.update(np.ascontiguousarray(benchmark.query_all(dataset, metric), dtype=np.float64).tobytes())
    return digest.hexdigest()


def grid_metrics(benchmark: Benchmark, settings: CompareSettings) -> tuple[str, str]:
    """The (search, report) metrics of every run; also raises for a missing dataset or metric.

    A summary scores all datasets on one search metric, so a default that differs between
    datasets (validation accuracy on one, test accuracy on another) is an error before any run.
    """
    chosen = {d: resolve_metrics(benchmark, d, settings.search_metric, settings.report_metric)[:2]
              for d in settings.datasets}
    if len(set(chosen.values())) > 1:
        found = ", ".join(f"{d}: {search}" for d, (search, _) in chosen.items())
        raise UserError(f"the default search metric differs between datasets ({found}); choose one with --search-metric")
    return next(iter(chosen.values()))


@dataclass(frozen=True)
class Determinants:
    """What decides a run's outcome besides its (optimizer, dataset, seed)."""

    budget: int
    search_metric: str
    report_metric: str
    benchmark_sha256: str
    hyperparameters: Mapping[str, Mapping[str, Any]]  # optimizer -> resolved hyper-parameters
    preparation_of: Callable[[RunSpec], PrepKey | None]  # CompareSettings.preparation_of
    artefact_sha256: Mapping[str, str | None]  # optimizer -> CompareSettings.user_artefact_sha256

    @classmethod
    def of(cls, settings: CompareSettings, benchmark: Benchmark) -> "Determinants":
        search, report = grid_metrics(benchmark, settings)
        return cls(settings.budget, search, report, benchmark_fingerprint(benchmark),
                   {o: settings.resolved_hyperparameters(o) for o in settings.optimizers}, settings.preparation_of,
                   {o: settings.user_artefact_sha256(o) for o in settings.optimizers})

    def of_run(self, spec: RunSpec) -> dict[str, Any]:
        preparation = self.preparation_of(spec)
        prepared = {} if preparation is None else {PREPARATION_SEED_KEY: preparation[2]}
        artefact = self.artefact_sha256[spec.optimizer]
        given = {} if artefact is None else {ARTEFACT_SHA_KEY: artefact}
        return {"optimizer": spec.optimizer, "dataset": spec.dataset, "seed": spec.seed, "budget": self.budget,
                "search_metric": self.search_metric, "report_metric": self.report_metric,
                FINGERPRINT_KEY: self.benchmark_sha256, **prepared,
                **_prefixed(spec.optimizer, {**self.hyperparameters[spec.optimizer], **given})}

    def of_preparation(self, key: PrepKey) -> dict[str, Any]:
        optimizer, dataset, seed = key
        return {"optimizer": optimizer, "dataset": dataset, "metric": self.search_metric, "seed": seed,
                FINGERPRINT_KEY: self.benchmark_sha256, **_prefixed(optimizer, self.hyperparameters[optimizer])}


def recorded_run(result: Mapping[str, Any], prepared: bool = False) -> dict[str, Any]:
    """A run file's determinants, keyed as :meth:`Determinants.of_run` keys them.

    ``prepared``: the run is expected to have used a preparation. A run file from before
    preparations were per seed does not name its preparation's seed; it used seed 0's.
    """
    config = dict(result.get("config") or {})
    fingerprint = config.pop(FINGERPRINT_KEY, None)
    config.pop("benchmark", None)  # the path may move; the content hash is the identity
    preparation_seed = config.pop(PREPARATION_SEED_KEY, PREPARE_SEED if prepared else None)
    return {**{key: result.get(key) for key in ("optimizer", "dataset", "seed", "budget", "search_metric", "report_metric")},
            FINGERPRINT_KEY: fingerprint,
            **({} if preparation_seed is None else {PREPARATION_SEED_KEY: preparation_seed}),
            **_prefixed(str(result.get("optimizer")), config)}


def recorded_preparation(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``prepared.json``'s determinants, keyed as :meth:`Determinants.of_preparation` keys them."""
    return {**{key: record.get(key) for key in ("optimizer", "dataset", "metric", "seed", FINGERPRINT_KEY)},
            **_prefixed(str(record.get("optimizer")), record.get("hyperparameters") or {})}


def refuse_other_settings(path: Path, recorded: Mapping[str, Any], expected: Mapping[str, Any], made: str = "run",
                          recorded_benchmark: str | None = None) -> None:
    """Refuse to reuse a file made with other settings: it would mix settings in one summary.

    The file stays: it is a finished result, and the user decides where the new runs go.
    ``recorded_benchmark`` is the benchmark path the file names, for the message.
    """
    for key in [*expected, *(k for k in recorded if k not in expected)]:
        old, new = recorded.get(key, _UNSET), expected.get(key, _UNSET)
        if old == new:
            continue
        if key == FINGERPRINT_KEY and old in (None, _UNSET):
            raise UserError(f"{path} does not record its benchmark's contents ({key}), so it cannot be shown to "
                            "match this benchmark; use another --out")
        if key == FINGERPRINT_KEY:
            name = f"{Path(recorded_benchmark).name}, " if recorded_benchmark else ""
            raise UserError(f"{path} was {made} on another benchmark ({name}{key} {_short(old)}; this one has "
                            f"{_short(new)}); use another --out")
        hint = _HINTS.get(key, "")
        raise UserError(f"{path} was {made} with {key}={_shown(old)}, not {_shown(new)}{hint}; use another --out")


_HINTS = {PREPARATION_SEED_KEY: " (with --prepare-per dataset every seed uses seed 0's preparation)"}


_UNSET = object()


def _prefixed(optimizer: str, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """``{"population_size": 20}`` -> ``{"re.population_size": 20}``, as ``--opt`` names them."""
    return {f"{optimizer}.{key}": value for key, value in hyperparameters.items()}


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else repr(value)


def _short(fingerprint: Any) -> str:
    return str(fingerprint)[:12]


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from a JSON file (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))


def refuse_budgets_no_run_can_spend(settings: CompareSettings, benchmark: Benchmark, search_metric: str) -> None:
    """A budget beyond the space, or beyond the cells with a value for an optimizer that picks only
    those, fails every run of the grid: refused before the preparations and the other runs."""
    from naslib_bayes.optimizers.blackbox import Objective

    for dataset in settings.datasets:
        objective = Objective(benchmark, dataset, search_metric, settings.budget)  # refuses budget > 15,625
        for name in settings.optimizers:
            registry.get_spec(name, registry.BLACK_BOX).load().check_budget(objective)


def refuse_targets_in_user_surrogates(settings: CompareSettings) -> None:
    """A transfer method must never see its target: refuse a given surrogate meta-trained on one."""
    for optimizer in settings.optimizers:
        path = settings.user_artefact(optimizer)
        if path is None:
            continue
        extractor = settings.hyperparameters.get(optimizer, {}).get("feature_extractor", False)
        seen = surrogate_meta_datasets(path, trust_feature_extractor=extractor)
        leaked = [d for d in settings.datasets if d in seen]
        if leaked:
            raise UserError(f"{optimizer}.{USER_ARTEFACT_KEY}={path} was meta-trained on {', '.join(leaked)}, a target "
                            "of this comparison (transfer methods must never see it): meta-train it without "
                            f"{', '.join(leaked)}, or leave {optimizer}.{USER_ARTEFACT_KEY} unset so that the comparison "
                            "meta-trains one per dataset")


def surrogate_meta_datasets(path: str, trust_feature_extractor: bool | str = False) -> set[str]:
    """Canonical names of the datasets a surrogate file was meta-trained on (``trust_feature_extractor``
    as in :func:`~naslib_bayes.predictors.surrogate_io.load`: the search would trust the same)."""
    from naslib_bayes.predictors import surrogate_io

    surrogate, info = surrogate_io.load(path, trust_feature_extractor=trust_feature_extractor)
    names = [*surrogate.config.meta_datasets, *(info.get("meta_datasets") or [])]
    return {_canonical_or_same(name) for name in names}


def _canonical_or_same(name: str) -> str:
    try:
        return canonical_dataset(name)
    except UserError:  # a dataset outside NAS-Bench-201 (images mode) cannot be a target here
        return str(name)


# ---- the work each process does ------------------------------------------------------------
_WORKER_BENCHMARK: Benchmark | None = None


def _init_worker(benchmark_path: str) -> None:
    """Worker start: one torch thread (runs share the cores) and the benchmark loaded once.

    Ctrl-C, which a terminal sends to the workers too, is the main process's to act on: it stops
    the workers (:func:`stop_workers`). Acted on here, it printed a worker's traceback beside the
    command's one line, or broke the pool mid-start (a ``BrokenProcessPool`` traceback).
    """
    global _WORKER_BENCHMARK
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    _leave_signals_to_the_parent()  # and exit with the command
    torch.set_num_threads(1)
    _WORKER_BENCHMARK = load_benchmark(benchmark_path)


def _exit_with_the_command() -> None:
    """End this worker as soon as the command that started it has ended.

    Ctrl-C and SIGTERM stop the workers from the command (:func:`stop_workers`); SIGKILL gives
    it no chance, and orphaned workers went on with the runs queued for them (holding a one-shot
    run's folder against the re-run) and then waited for work for good. The parent's sentinel
    (a pipe whose other end the command holds, also through a forkserver) becomes readable
    when it ends; a run cut short leaves only a temporary file or a checkpoint, as a kill does.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-the-command", daemon=True).start()


def worker_benchmark(benchmark: Benchmark | None = None) -> Benchmark:
    """``benchmark``, or (when None, in a worker process) the benchmark :func:`_init_worker` loaded."""
    return benchmark or _WORKER_BENCHMARK


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


def remove_partial_files(out: Path) -> None:
    """Delete what a writer killed mid-write left behind; no reader ever takes it for a result."""
    results.remove_killed_writes(Path(out, RUNS_DIR))
    # preparations build in ".<optimizer>.*" folders beside their final one
    for stale in [*Path(out, SURROGATES_DIR).glob("*/.*"), *Path(out, SURROGATES_DIR).glob("*/*/.*")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


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


#: One piece of work for :func:`run_in_workers`: ``(tag, function, arguments)``; the tag comes
#: back with the function's result.
Task = tuple[Any, Callable[..., Any], tuple]


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


def run_in_workers(jobs: int, benchmark_path: str | Path, out: str | Path, first: Iterable[Iterable[Task]],
                   on_result: Callable[[Any, Any], Iterable[Task] | None]) -> None:
    """Run tasks in ``jobs`` worker processes, each with one torch thread and the benchmark loaded once.

    Each batch of ``first`` is submitted in turn with the signals held (:func:`signals_held`).
    As a task finishes, ``on_result(tag, result)`` is called (a worker's error is re-raised
    here instead) and may return a further batch to submit. On any exception (Ctrl-C, SIGTERM
    or a failed task) the workers are stopped (:func:`stop_workers`) and the partial files in
    ``out`` removed (:func:`remove_partial_files`) before it propagates.
    """
    with ProcessPoolExecutor(max_workers=jobs, mp_context=_worker_context(), initializer=_init_worker,
                             initargs=(str(benchmark_path),)) as pool:
        futures: dict[Future, Any] = {}
        try:
            for batch in first:
                _submit(pool, futures, batch)
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    tag = futures.pop(future)
                    more = on_result(tag, future.result())  # future.result() re-raises a worker's error here
                    if more is not None:
                        _submit(pool, futures, more)
        except BaseException:  # Ctrl-C, SIGTERM or a failed task: no worker outlives the command
            stop_workers(pool)
            remove_partial_files(out)
            raise


def _submit(pool: ProcessPoolExecutor, futures: dict[Future, Any], tasks: Iterable[Task]) -> None:
    """Submit ``tasks``, recording each future's tag in ``futures``; a worker starting when Ctrl-C
    comes must be known to :func:`stop_workers`, hence the signals held."""
    with signals_held():
        for tag, function, args in tasks:
            futures[pool.submit(function, *args)] = tag


#: Seconds to wait for a terminated worker to exit before its leftovers are removed.
WORKER_EXIT_TIMEOUT_S = 10.0


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Drop queued runs and end the running ones now (Ctrl-C or SIGTERM should not wait for them).

    Finished runs are already on disk, so nothing is lost but the work in flight. Each worker
    is waited for, so none outlives the command or writes after it; a worker killed mid-write
    leaves only a temporary file, which the caller removes. The executor has no public way to
    end running workers before Python 3.14, hence its process table. Its management thread is
    waited for too: ``shutdown(wait=False)`` forgets it, and one still closing its pipes while
    the interpreter exits makes the exit hook write to a closed pipe (an ``OSError`` printed
    after the command's last line).
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    manager = getattr(pool, "_executor_manager_thread", None)  # and this
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
    for process in processes:
        process.join(WORKER_EXIT_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(WORKER_EXIT_TIMEOUT_S)
    if manager is not None:
        manager.join(WORKER_EXIT_TIMEOUT_S)


@contextlib.contextmanager
def worker_pool(jobs: int) -> Iterable[ProcessPoolExecutor]:
    """A process pool for a script's runs (the benchmarks) whose workers never outlive it.

    In the main process SIGTERM is turned into an interrupt (as a command's), and Ctrl-C, SIGTERM
    or an error stops the workers (:func:`stop_workers`) before it propagates; the workers
    leave both signals to the main process. Without this, a terminated benchmark's workers
    went on with their runs, orphaned, and a re-run started meanwhile did the same runs beside them.
    """
    from naslib_bayes.cli import sigterm_as_interrupt

    with sigterm_as_interrupt(), ProcessPoolExecutor(max_workers=jobs, initializer=_leave_signals_to_the_parent) as pool:
        try:
            yield pool
        except BaseException:
            stop_workers(pool)
            raise


def _leave_signals_to_the_parent() -> None:
    """In a worker: Ctrl-C (sent to the whole terminal group) is the main process's to act on,
    and SIGTERM, from :func:`stop_workers`, ends the worker at once; a main process killed
    outright ends it too (:func:`_exit_with_the_command`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_the_command()


#: What a benchmark script says when Ctrl-C or SIGTERM stops it: the runs it finished are on disk.
SCRIPT_STOPPED_LINES = {signal.SIGINT: "stopped by Ctrl-C; finished runs are kept",
                        signal.SIGTERM: "stopped by SIGTERM; finished runs are kept"}


def run_script(main: Callable[[], int]) -> NoReturn:
    """A benchmark script's end: :func:`script_exit_code`, and the process ends with it as the
    ``naslib-bayes`` program does (:func:`naslib_bayes.cli.run_program`).

    Python's own exit (torch's teardown) takes a second or more with Ctrl-C and SIGTERM back at
    their default action: a Ctrl-C then killed the finished script by its signal, saying nothing.
    Here a signal until the end is answered with the script's line (:data:`SCRIPT_STOPPED_LINES`)
    and 130 / 143, and the process ends once the exit handlers have run, without the teardown.
    """
    from naslib_bayes.cli import end_process_with

    end_process_with(lambda: script_exit_code(main), SCRIPT_STOPPED_LINES)


def script_exit_code(main: Callable[[], int]) -> int:
    """``main()``'s exit code, or 130 / 143 (one line on stderr) when Ctrl-C / SIGTERM stopped it,
    or 2 with the message of bad input (a :class:`UserError`).

    As for a command, SIGTERM is an interrupt throughout ``main`` (not only while workers run), and
    a stop whose handler ran inside a finalizer is delivered again instead of dropped."""
    from naslib_bayes.cli import (EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_as_interrupt,
                                  stops_in_finalizers_delivered_again)

    try:
        with sigterm_as_interrupt(), stops_in_finalizers_delivered_again():
            return main()
    except UserError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(SCRIPT_STOPPED_LINES[signal.SIGTERM], file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(SCRIPT_STOPPED_LINES[signal.SIGINT], file=sys.stderr)
        return EXIT_INTERRUPTED


def _worker_context():
    """Workers start from a clean interpreter, never from a fork of this (possibly threaded) one.

    ``forkserver`` imports the package (and torch) once in a server process and forks workers
    from it, which starts them in a fraction of the time ``spawn`` needs to import torch in
    each; ``spawn`` is the fallback where forkserver does not exist.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, "naslib_bayes.comparison.worker_start"])
        return context
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM while submitting, and deliver them afterwards.

    A submission may start a worker process; interrupted between the worker's start and its
    registration in the pool, the worker would be unknown to :func:`stop_workers` and outlive
    the command. Outside the main thread (where handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            _deliver(held[0], previous[held[0]])


def _deliver(signum: int, handler) -> None:
    """Act on a held signal as its own handler would have."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action: end the process
