"""The official NAS-Bench-201 ``.pth`` file (v1_0 / v1_1) as a :class:`Benchmark`.

The file is a pickled dict (``meta_archs``, ``arch2infos``, ``evaluated_indexes``) read
through the ``nas_201_api`` package. Unpickling runs code stored in the file, so
:func:`load_official` unpickles only the file its caller names. The extracted tables are
cached as a small ``.npz`` array file, so later loads of the same, unchanged file are fast and
unpickle nothing.

Metric protocol (200-epoch results, final epoch, averaged over the seeds the file holds):

* ``cifar10``: ``val_accuracy`` is the ``cifar10-valid`` run's ``x-valid`` accuracy and
  ``test_accuracy`` the ``cifar10`` (train+valid) run's ``ori-test`` accuracy, the standard
  NAS-Bench-201 protocol: search on cifar10-valid's validation set, report cifar10's test set;
* ``cifar100``, ``ImageNet16-120``: ``x-valid`` and ``x-test`` accuracy of the same run;
* ``train_accuracy``, ``train_time`` (training time of all epochs), ``params``, ``flops`` and
  ``latency`` come from the run that is searched on (``cifar10-valid`` for cifar10).

A value the file lacks reads NaN; a dataset the file lacks is left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from naslib_bayes.errors import UserError, cause
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201 import loaders
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("meta_archs", "arch2infos", "evaluated_indexes")
HP = "200"  # the 200-epoch schedule; "12" is the short one

#: Bump when the extraction changes, so caches written by older code are not reused.
CACHE_FORMAT = 1

OFFICIAL_NOTE = (
    "official NAS-Bench-201 file, 200-epoch results averaged over seeds: for cifar10, "
    "val_accuracy is the cifar10-valid run's validation accuracy and test_accuracy the cifar10 "
    "(train+valid) run's test accuracy (search on cifar10-valid validation, report cifar10 test); "
    "cifar100 and ImageNet16-120 report x-valid and x-test accuracy of one run; train accuracy, "
    "train time and costs come from the run searched on"
)

# metric -> (official dataset setting, evaluation set) for each canonical dataset.
_ACCURACY_SOURCES: dict[str, dict[str, tuple[str, str]]] = {
    "cifar10": {
        "test_accuracy": ("cifar10", "ori-test"),
        "val_accuracy": ("cifar10-valid", "x-valid"),
        "train_accuracy": ("cifar10-valid", "train"),
    },
    "cifar100": {
        "test_accuracy": ("cifar100", "x-test"),
        "val_accuracy": ("cifar100", "x-valid"),
        "train_accuracy": ("cifar100", "train"),
    },
    "ImageNet16-120": {
        "test_accuracy": ("ImageNet16-120", "x-test"),
        "val_accuracy": ("ImageNet16-120", "x-valid"),
        "train_accuracy": ("ImageNet16-120", "train"),
    },
}
# The setting whose run is searched on: it supplies training time and compute costs.
_SEARCH_SETTING = {"cifar10": "cifar10-valid", "cifar100": "cifar100", "ImageNet16-120": "ImageNet16-120"}

# What nas_201_api raises when a seed, split, epoch or field is absent or None in the file.
_MISSING = (KeyError, IndexError, TypeError, ValueError, AssertionError, AttributeError, ZeroDivisionError)


def load_official(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Benchmark:
    """Load an official NAS-Bench-201 ``.pth`` file, through a cache of its extracted tables.

    Warning: the first load unpickles the file with ``torch.load(..., weights_only=False)``,
    which executes code stored in it; pass only a file from a source you trust (the official
    release). Peak memory is about twice the file's in-memory size, because ``nas_201_api``
    copies the dict it is given.

    Args:
        path: the ``.pth`` file.
        cache_dir: where the ``.npz`` cache goes; ``None`` means ``$XDG_CACHE_HOME/naslib-bayes``
            or ``~/.cache/naslib-bayes``. The cache is keyed by the file's absolute path, size
            and modification time, so a changed file is read again. An unwritable folder only
            skips caching (with a logged warning).

    Raises:
        UserError: naming the file, when it is not an official NAS-Bench-201 benchmark dict.
    """
    path = Path(path)
    try:
        cache_file = cache_path(path, cache_dir)
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None
    cached = _read_cache(cache_file, path)
    if cached is not None:
        return cached
    benchmark = _load_pth(path)
    _write_cache(benchmark, cache_file)
    return benchmark


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/naslib-bayes``, or ``~/.cache/naslib-bayes`` (XDG ignores relative values)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "naslib-bayes"


def cache_path(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache file for ``path`` as it is now (absolute path, size and mtime in the name's hash)."""
    path = Path(path).absolute()
    stat = path.stat()
    key = f"{CACHE_FORMAT}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"nb201-official-{path.stem}-{digest}.npz"


# ---- cache ---------------------------------------------------------------------------------
def _read_cache(cache_file: Path, source: Path) -> Benchmark | None:
    if not cache_file.is_file():
        return None
    try:
        benchmark = loaders.load_npz(cache_file, source=str(source))
    except (UserError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        # A damaged cache is not the user's file: fall back to reading the .pth again.
        logger.warning("ignoring unreadable cache %s (%s)", cache_file, exc)
        return None
    logger.info("loaded %s from its cache %s", source, cache_file)
    return benchmark


def _write_cache(benchmark: Benchmark, cache_file: Path) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        loaders.save_npz(benchmark, cache_file)
    except OSError as exc:
        logger.warning("not caching %s: cannot write %s (%s)", benchmark.source, cache_file, exc)
        return
    logger.info("cached the tables of %s in %s", benchmark.source, cache_file)


# ---- reading the .pth ----------------------------------------------------------------------
def _load_pth(path: Path) -> Benchmark:
    api = _open_api(path, _unpickle(path))
    cells = [_parse_arch(path, arch) for arch in api.meta_archs]
    with contextlib.redirect_stdout(io.StringIO()):  # nas_201_api prints progress and notes
        tables = _extract_tables(path, api, len(cells))
    return Benchmark(cells, tables, source=str(path), notes=[OFFICIAL_NOTE])


def _unpickle(path: Path) -> dict:
    import torch  # deferred: a cached load needs neither torch nor nas_201_api

    try:
        # Executes code stored in the file: only ever called on the file the user named.
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling arbitrary bytes can raise almost any exception
        raise UserError(f"{path}: cannot unpickle it as a NAS-Bench-201 .pth file ({cause(exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected the NAS-Bench-201 dict, found a {type(data).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise UserError(f"{path}: not an official NAS-Bench-201 file (missing key(s) {', '.join(missing)})")
    return data


def _open_api(path: Path, data: dict):
    from nas_201_api import NASBench201API

    # Given a dict, the API skips its own torch.load (which fails under torch's weights_only default).
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NASBench201API(data, verbose=False)
    except _MISSING as exc:
        raise UserError(f"{path}: malformed NAS-Bench-201 file ({cause(exc)})") from None


def _parse_arch(path: Path, arch) -> nb201.Cell:
    if not isinstance(arch, str):
        raise UserError(f"{path}: meta_archs holds {arch!r}, not an architecture string")
    try:
        return nb201.from_string(arch)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _extract_tables(path: Path, api, num_cells: int) -> dict[str, dict[str, np.ndarray]]:
    """``{dataset: {metric: values}}`` in ``meta_archs`` order; all-NaN columns are dropped."""
    runs = {}
    for index, by_hp in api.arch2infos_dict.items():
        if not isinstance(index, (int, np.integer)) or not 0 <= index < num_cells:
            raise UserError(f"{path}: arch2infos key {index!r} is not an index into meta_archs")
        if HP in by_hp:
            runs[index] = by_hp[HP]
    settings = {name for results in runs.values() for name in results.get_dataset_names()}
    tables = {}
    for dataset, sources in _ACCURACY_SOURCES.items():
        if not settings & {setting for setting, _ in sources.values()}:
            continue  # the file has no run of this dataset at all
        columns: dict[str, np.ndarray] = {}
        for index, results in runs.items():
            for metric, value in _cell_metrics(results, dataset).items():
                columns.setdefault(metric, np.full(num_cells, np.nan))[index] = value
        tables[dataset] = {m: v for m, v in columns.items() if np.isfinite(v).any()}
    return tables


def _cell_metrics(results, dataset: str) -> dict[str, float]:
    """One cell's metrics on ``dataset`` from its 200-epoch ``ArchResults``."""
    values = {
        metric: _seed_mean(results, setting, split, "accuracy")
        for metric, (setting, split) in _ACCURACY_SOURCES[dataset].items()
    }
    setting = _SEARCH_SETTING[dataset]
    values["train_time"] = _seed_mean(results, setting, "train", "all_time")
    values.update(_costs(results, setting))
    return values


def _seed_mean(results, setting: str, split: str, field: str) -> float:
    """Final-epoch ``field`` on ``split``, averaged over seeds; NaN when the file lacks it."""
    try:
        info = results.get_metrics(setting, split, iepoch=None, is_random=False)
    except _MISSING:
        return math.nan
    return _as_float(info.get(field))


def _costs(results, setting: str) -> dict[str, float]:
    """Seed-averaged params, FLOPs and latency of one setting's runs, each NaN when absent.

    Read from the runs directly rather than through ``get_compute_costs``, which also sums
    every epoch's timings (slow over 15,625 cells) and loses all three costs when one is None.
    """
    try:
        runs = list(results.query(setting).values())
    except _MISSING:
        runs = []
    return {
        "params": _mean([_as_float(run.params) for run in runs]),
        "flops": _mean([_as_float(run.flop) for run in runs]),
        "latency": _mean([_latency(run) for run in runs]),
    }


def _latency(run) -> float:
    try:
        latency = float(run.get_latency())
    except _MISSING:  # an empty or None-holding latency list
        return math.nan
    return latency if latency > 0 else math.nan  # the API reads -1 for "not measured"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _as_float(value) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan
