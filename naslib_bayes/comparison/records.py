"""The files of a comparison's finished runs and preparations, and whether a run may be reused.

Layout of the output folder ``DIR``::

    DIR/runs/<optimizer>-<dataset>-<seed>.json     one result.json per finished run
    DIR/surrogates/<dataset>/<optimizer>/seed-<s>/ a transfer method's preparation (meta-training
        prepared.json                              on the other datasets), written last: marks it complete

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

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from naslib_bayes import results
from naslib_bayes.comparison.grid import PREPARE_SEED, USER_ARTEFACT_KEY, CompareSettings, PrepKey, RunSpec
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset, resolve_metrics

RUNS_DIR = "runs"
SURROGATES_DIR = "surrogates"
PREPARED_FILE = "prepared.json"
#: Key (in a run's ``config``) of the seed of the preparation the run used.
PREPARATION_SEED_KEY = "preparation_seed"
#: Key (in a run's ``config`` and in ``prepared.json``) of the benchmark's content hash.
FINGERPRINT_KEY = "benchmark_sha256"
#: The run config's SHA-256 of the file a user-given ``USER_ARTEFACT_KEY`` names.
ARTEFACT_SHA_KEY = "surrogate_sha256"


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


def remove_partial_files(out: Path) -> None:
    """Delete what a writer killed mid-write left behind; no reader ever takes it for a result."""
    results.remove_killed_writes(Path(out, RUNS_DIR))
    # preparations build in ".<optimizer>.*" folders beside their final one
    for stale in [*Path(out, SURROGATES_DIR).glob("*/.*"), *Path(out, SURROGATES_DIR).glob("*/*/.*")]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


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
