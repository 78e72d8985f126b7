"""Loaders turning NAS-Bench-201 result files into a :class:`Benchmark`.

Supported inputs (``load_benchmark`` takes a file or a folder):

* the NATS-Bench CSV export (``*.csv`` with ``ArchitectureString`` and
  ``CIFAR10TestAccuracy200Epochs``-style columns): test accuracy only;
* NASLib's NB201 pickles (``nb201_<dataset>_full_training.pickle``), one dataset each; a folder
  of them loads as one multi-dataset benchmark; each curve is read at its last epoch, and a
  dataset's curves of different lengths (another schedule, or cut short) are an error;
* the official NAS-Bench-201 ``.pth`` file, read through the ``nas_201_api`` package and cached
  as a compact ``.npz`` array file (see :mod:`naslib_bayes.search_spaces.nasbench201.official`);
  reading it unpickles the file, which executes code stored in it: load only a file you trust;
* NASLib's zero-cost JSON (``zc_nasbench201.json``): validation accuracy, params, FLOPs and
  zero-cost proxies of the cells it lists (all of them, or a sample: absent cells read NaN);
* a ``.npz`` file written by :func:`save_npz` (the cache format).

A folder is searched in this order of preference: ``.npz`` cache, NASLib pickles, CSV,
zero-cost JSON; the first kind present is loaded (all NASLib pickles, else the first file of
that kind by name) and the others are ignored, with a warning naming both. A ``.pth`` in a
folder is never loaded (it has to be named itself), and NASLib pickles are read by an
unpickler that builds data only.

In the text formats an empty field (CSV) or ``null`` (JSON) is a missing value; text, a boolean
or a non-finite number where a number belongs is an error naming the file and the place; so
is a boolean or text in a NASLib pickle (naming the file, the cell, the dataset and the field).
An accuracy outside 0..100 (percent), from any file, is an error naming the file, the dataset
and the cell, and so are accuracies given as fractions (all within 0..1); :class:`Benchmark`
checks both.
A dataset held under two keys (``cifar10`` and ``cifar10-valid``: different training runs), in any
file, or by two NASLib pickles, is an error too, rather than one overwriting the other.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
import os
import pickle
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from naslib_bayes.errors import UserError, cause
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import (
    ACCURACY_METRICS, COST_METRICS, DATASETS, Benchmark, canonical_dataset,
)

logger = logging.getLogger(__name__)

CSV_COLUMNS = {
    "CIFAR10TestAccuracy200Epochs": "cifar10",
    "CIFAR100TestAccuracy200Epochs": "cifar100",
    "ImageNetTestAccuracy200Epochs": "ImageNet16-120",
}
CSV_NOTE = "the NATS-Bench CSV holds test accuracy only: searching on test accuracy is unavoidable"
PICKLE_NOTE = (
    "NASLib's pickles store one evaluation curve (eval_acc1es): validation and test accuracy are the same number"
)
ZC_NOTE = "the zero-cost JSON has values for the cells it lists only; absent cells read NaN"
_ZC_RENAME = {"val_accuracy": "val_accuracy", "params": "params", "flops": "flops"}


def load_benchmark(path: str | os.PathLike) -> Benchmark:
    """Load a benchmark file or folder; :class:`UserError` names the path when it cannot."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"benchmark path {str(path)!r} does not exist")
    if path.is_dir():
        return _load_folder(path)
    loader = _loader_for(path)
    if path.name.lower().endswith(NATS_ARCHIVE):
        raise UserError(f"{path}: {NATS_ARCHIVES_UNREAD}")
    if loader is None:
        raise UserError(f"{path}: not a NAS-Bench-201 benchmark file (.csv, .pickle, .pth, .json or .npz)")
    return _guarded(path, lambda: loader(path))


# What reading a file of the wrong shape raises (AttributeError: a value of the wrong type;
# BadZipFile: a damaged .npz; csv.Error: a NUL byte or an overlong field).
_READ_ERRORS = (
    OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
    pickle.UnpicklingError, EOFError, zipfile.BadZipFile, csv.Error,
)


def _guarded(path: Path, load) -> Benchmark:
    """Run ``load()``, turning a read or format error into a :class:`UserError` naming ``path``."""
    try:
        return load()
    except UserError:
        raise
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: cannot read it as a NAS-Bench-201 benchmark ({cause(exc)})") from None


def _loader_for(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv
    if suffix in (".pickle", ".pkl"):
        return lambda p: load_naslib_pickles([p])
    if suffix == ".pth":
        from naslib_bayes.search_spaces.nasbench201.official import load_official

        return load_official
    if suffix == ".json":
        return load_zero_cost_json
    if suffix == ".npz":
        return load_npz
    return None


def _load_folder(folder: Path) -> Benchmark:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    present = [(kind, found) for kind, suffixes in _FOLDER_ORDER
               if (found := [p for p in files if p.suffix.lower() in suffixes])]
    # The official .pth is a pickle that runs code when loaded: it is read only when named itself.
    official = [p for p in files if p.suffix.lower() == ".pth"]
    if not present:
        if official:
            raise UserError(f"{folder}: {official[0].name} is the official benchmark, a pickle that runs code "
                            f"when loaded, so it is read only when named: --benchmark {official[0]}")
        if any(p.name.lower().endswith(NATS_ARCHIVE) for p in files):
            raise UserError(f"{folder}: {NATS_ARCHIVES_UNREAD}")
        raise UserError(f"{folder}: no NAS-Bench-201 benchmark file (.csv, .pickle, .pth, .json or .npz) in this folder")
    kind, found = present[0]
    chosen = found if kind == "pickle" else found[:1]  # NASLib's pickles hold one dataset each: all are merged
    ignored = [p for _, files_of_kind in present for p in files_of_kind if p not in chosen] + official
    if ignored:
        logger.warning("%s holds several benchmark files: loading %s, ignoring %s (preference: %s)", folder,
                       _names(chosen), _names(ignored), FOLDER_PREFERENCE)
    if kind == "pickle":
        logger.info("loading NASLib pickles %s", _names(chosen))
        # Guarded like a single file, so a damaged pickle is a UserError, not a traceback.
        return _guarded(folder, lambda: load_naslib_pickles(chosen))
    return load_benchmark(chosen[0])


def _names(paths) -> str:
    return ", ".join(p.name for p in paths)


_FOLDER_ORDER = (
    ("npz", (".npz",)),
    ("pickle", (".pickle", ".pkl")),
    ("csv", (".csv",)),
    ("json", (".json",)),
)
FOLDER_PREFERENCE = ".npz > NASLib pickles > .csv > .json; a .pth only when named"
# NATS-Bench's own release: a folder of one compressed pickle per cell, a format not read here.
NATS_ARCHIVE = ".pickle.pbz2"
NATS_ARCHIVES_UNREAD = (
    "NATS-Bench's .pickle.pbz2 archives are not read: use the official NAS-Bench-201 .pth file, "
    "NASLib's NB201 pickles or NATS-Bench's CSV export"
)


# ---- NATS-Bench CSV -------------------------------------------------------------------
def load_csv(path: Path) -> Benchmark:
    """The NATS-Bench CSV export: one row per cell in the API's index order."""
    # utf-8-sig: a byte-order mark (spreadsheets write one) would otherwise join the first column's name
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if "ArchitectureString" not in header:
            raise UserError(f"{path}: CSV has no 'ArchitectureString' column")
        _refuse_repeated_columns(path, header)
        arch_column = header.index("ArchitectureString")
        columns = {header.index(col): ds for col, ds in CSV_COLUMNS.items() if col in header}
        if not columns:
            raise UserError(f"{path}: CSV has none of the accuracy columns {', '.join(CSV_COLUMNS)}")
        cells, values, first_line = [], {ds: [] for ds in columns.values()}, {}
        for row in reader:
            if not row:  # a blank line
                continue
            where = f"{path}, line {reader.line_num}"
            if len(row) != len(header):
                raise UserError(f"{where}: {len(row)} fields where the header has {len(header)}")
            cell = _csv_cell(where, row[arch_column], first_line)
            first_line[cell] = reader.line_num
            cells.append(cell)
            for index, ds in columns.items():
                values[ds].append(_csv_number(where, header[index], row[index]))
    if not cells:
        raise UserError(f"{path}: the CSV has a header but no rows: no cell to search")
    tables = {ds: {"test_accuracy": vals} for ds, vals in values.items()}
    return Benchmark(cells, tables, source=str(path), notes=[CSV_NOTE])


def _refuse_repeated_columns(path: Path, header: list[str]) -> None:
    """A column the loader reads named twice: only the first would be read, the other ignored."""
    for column in ("ArchitectureString", *CSV_COLUMNS):
        if header.count(column) > 1:
            raise UserError(f"{path}: the CSV header names column {column!r} twice: keep one of them")


def _csv_cell(where: str, text: str, first_line: dict[nb201.Cell, int]) -> nb201.Cell:
    """The cell of an architecture string; malformed or listed before is a UserError at ``where``."""
    try:
        cell = nb201.from_string(text)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if cell in first_line:
        raise UserError(f"{where}: cell {text} is listed twice (first on line {first_line[cell]})")
    return cell


def _csv_number(where: str, column: str, text: str) -> float:
    """A CSV field as a float: empty is a missing value (NaN); anything but a finite number is an error."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}, column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}, column {column}: {text!r} is not a finite number (leave the field empty for no value)")
    return value


# ---- NASLib pickles -------------------------------------------------------------------
def load_naslib_pickles(paths) -> Benchmark:
    """NASLib's ``nb201_*_full_training.pickle`` files merged into one benchmark.

    Layout: ``{arch_str: {ds_key: {"train_acc1es": [...], "eval_acc1es": [...],
    "cost_info": {"flops", "params", "latency", "train_time"}, ...}}}``, with ``cifar10-valid``
    as NASLib's key for CIFAR-10.
    """
    cells: list[nb201.Cell] = []
    index: dict[nb201.Cell, int] = {}
    records: dict[str, dict[str, dict[int, float]]] = {}
    origins: dict[str, tuple[Path, str]] = {}
    arch_of: dict[tuple[str, nb201.Cell], str] = {}  # a cell spelled twice would overwrite its values
    epochs: dict[str, tuple[int, str]] = {}  # dataset -> (length of its curves, the arch first read)
    for path in paths:
        data = _guarded(path, partial(_unpickle, path))  # a dict: checked there
        for arch, per_dataset in data.items():
            cell = _pickle_cell(path, arch)
            if cell not in index:
                index[cell] = len(cells)
                cells.append(cell)
            for ds_key, entry in _pickle_mapping(path, str(arch), per_dataset).items():
                dataset = _single_origin(origins, path, ds_key)
                if arch_of.setdefault((dataset, cell), arch) != arch:
                    raise UserError(f"{path}: {arch} / {ds_key}: the same cell as {arch_of[dataset, cell]}: "
                                    "keep one of them")
                metrics = records.setdefault(dataset, {})
                for metric, value in _pickle_metrics(path, arch, ds_key, entry).items():
                    metrics.setdefault(metric, {})[index[cell]] = value
                first = epochs.setdefault(dataset, (len(entry["eval_acc1es"]), arch))
                _one_curve_length(f"{path}: {arch} / {ds_key}", entry, first)
    tables = {
        ds: {m: [vals.get(i, np.nan) for i in range(len(cells))] for m, vals in metrics.items()}
        for ds, metrics in records.items()
    }
    return Benchmark(cells, tables, source=", ".join(str(p) for p in paths), notes=[_pickle_note(epochs)])


def _one_curve_length(where: str, entry: dict, first: tuple[int, str]) -> None:
    """Every curve of a dataset is as long as the first one read: the last value of a curve of
    another length is another epoch, or another training schedule (12 epochs against 200)."""
    epochs, first_arch = first
    for field in ("eval_acc1es", "train_acc1es"):
        curve = entry.get(field)
        if curve and len(curve) != epochs:
            raise UserError(f"{where}, {field}: {len(curve)} epochs where {first_arch} has {epochs}: "
                            "its last value is another epoch or training schedule; keep curves of one length")


def _pickle_note(epochs: dict[str, tuple[int, str]]) -> str:
    """PICKLE_NOTE and the epoch the values were read at, which results should state."""
    datasets_of: dict[int, list[str]] = {}
    for dataset in DATASETS:
        if dataset in epochs:
            datasets_of.setdefault(epochs[dataset][0], []).append(dataset)
    read_at = "; ".join(f"epoch {length} for {', '.join(names)}" for length, names in datasets_of.items())
    return f"{PICKLE_NOTE}; values are the last epoch of each curve ({read_at})" if read_at else PICKLE_NOTE


def _pickle_mapping(path: Path, what: str, value) -> dict:
    """``value``, an architecture's entry in a NASLib pickle, which must be a mapping; otherwise a
    UserError naming the file (a folder holds one per dataset) instead of Python's AttributeError."""
    if not isinstance(value, dict):
        raise UserError(f"{path}: {what} holds {type(value).__name__}, not a mapping; NASLib's "
                        "nb201_<dataset>_full_training.pickle maps architecture strings to {dataset: results}")
    return value


def _pickle_cell(path: Path, arch) -> nb201.Cell:
    """The cell of a NASLib pickle's key; anything but a well-formed architecture string is a UserError."""
    if not isinstance(arch, str):  # NASLib's val_test pickles key cells by op-index tuples
        raise UserError(f"{path}: key {arch!r} is not an architecture string; NASLib's "
                        "nb201_<dataset>_full_training.pickle maps strings like '|nor_conv_3x3~0|+...' to results")
    try:
        return nb201.from_string(arch)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _unpickle(path: Path) -> dict:
    from naslib_bayes.data.formats import load_data_pickle

    with open(path, "rb") as handle:
        data = load_data_pickle(handle)  # evaluation records only: a pickle that would run code is refused
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict of architecture strings")
    return data


def _pickle_metrics(path, arch: str, ds_key: str, entry: dict) -> dict[str, float]:
    where = f"{path}: {arch} / {ds_key}"
    try:
        final_eval = _pickle_number(where, "eval_acc1es", entry["eval_acc1es"][-1])
        metrics = {"val_accuracy": final_eval, "test_accuracy": final_eval}
        if entry.get("train_acc1es"):
            metrics["train_accuracy"] = _pickle_number(where, "train_acc1es", entry["train_acc1es"][-1])
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{where} has no 'eval_acc1es' curve") from None
    cost_info = entry.get("cost_info") or {}
    if not isinstance(cost_info, dict):
        raise UserError(f"{where}, cost_info holds {type(cost_info).__name__}, not a mapping")
    for field, value in cost_info.items():
        if field in ("flops", "params", "latency", "train_time") and value is not None:
            metrics[field] = _pickle_number(where, f"cost_info.{field}", value)
    return metrics


def _pickle_number(where: str, field: str, value) -> float:
    """A pickled value as a float; a bool or anything but a number is a UserError at ``where``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise UserError(f"{where}, {field}: {value!r} is not a number")
    return float(value)


# ---- NASLib zero-cost JSON ------------------------------------------------------------
def load_zero_cost_json(path: Path) -> Benchmark:
    """NASLib's ``zc_nasbench201.json``: ``{dataset: {cell: {metric: value}}}``, optionally under a
    top-level ``nasbench201`` key; cells are NASLib op-index tuples as strings, and a value is a
    number or NASLib's ``{"score": ..., "time": ...}``."""
    # utf-8-sig: read past a byte-order mark (some editors write one), as the CSV loader does
    with open(path, encoding="utf-8-sig") as handle:
        data = json.load(handle, object_pairs_hook=partial(_object_of_distinct_keys, path))
    cells: list[nb201.Cell] = []
    index: dict[nb201.Cell, int] = {}
    records: dict[str, dict[str, dict[int, float]]] = {}
    origins: dict[str, tuple[Path, str]] = {}
    for ds_key, per_cell in _zc_datasets(path, data).items():
        metrics = records.setdefault(_single_origin(origins, path, ds_key), {})
        if not isinstance(per_cell, dict):
            raise UserError(f"{path}: {ds_key!r} holds {type(per_cell).__name__}, not an object mapping cells to metrics")
        key_of: dict[nb201.Cell, str] = {}  # a cell spelled twice would overwrite its values
        for key, entry in per_cell.items():
            where = f"{path}: {ds_key} {key}"
            cell = _json_cell(where, key)
            if key_of.setdefault(cell, key) != key:
                raise UserError(f"{where}: the same cell as {key_of[cell]!r}: keep one of them")
            if not isinstance(entry, dict):
                raise UserError(f"{where}: {type(entry).__name__}, not an object of metrics")
            if cell not in index:
                index[cell] = len(cells)
                cells.append(cell)
            for metric, value in entry.items():
                number = _json_number(where, metric, value)
                if number is not None:
                    metrics.setdefault(metric, {})[index[cell]] = number
    tables = {
        ds: {m: [vals.get(i, np.nan) for i in range(len(cells))] for m, vals in metrics.items()}
        for ds, metrics in records.items()
    }
    return Benchmark(cells, tables, source=str(path), notes=[ZC_NOTE])


def _object_of_distinct_keys(path: Path, pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict; a key written twice is a UserError (json.load keeps the last silently)."""
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise UserError(f"{path}: key {key!r} appears twice in one object: keep one of them")
        obj[key] = value
    return obj


def _zc_datasets(path: Path, data) -> dict:
    """The ``{dataset: {cell: metrics}}`` object of a zero-cost JSON: the file itself, as NASLib's
    ``get_zc_benchmark_api`` reads it, or the same under a top-level ``nasbench201`` key."""
    if isinstance(data, dict) and isinstance(data.get("nasbench201"), dict):
        return data["nasbench201"]
    if isinstance(data, dict) and any(_names_a_dataset(key) for key in data):
        return data  # an unknown key among them is named by _dataset_of
    raise UserError(f"{path}: expected NASLib's zero-cost JSON: an object of datasets ({', '.join(DATASETS)}), "
                    "or one under a top-level 'nasbench201' key")


def _names_a_dataset(key: str) -> bool:
    try:
        canonical_dataset(key)
    except UserError:
        return False
    return True


def _single_origin(origins: dict[str, tuple[Path, str]], path: Path, key: str) -> str:
    """The dataset ``key`` of ``path`` names, recorded in ``origins``; a dataset that another key or
    file holds too is a UserError. ('cifar10' and 'cifar10-valid' are different training runs:
    merged, one would overwrite the other's numbers cell by cell.)"""
    dataset = _dataset_of(path, key)
    first_path, first_key = origins.setdefault(dataset, (path, key))
    if first_path != path:
        raise UserError(f"{path}: its {dataset} results (key {key!r}) are in {first_path} too: keep one of the files")
    if first_key != key:
        raise UserError(f"{path}: keys {first_key!r} and {key!r} both hold {dataset} results: keep one of them")
    return dataset


def _dataset_of(path, key: str) -> str:
    try:
        return canonical_dataset(key)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _json_cell(where: str, key: str) -> nb201.Cell:
    try:
        return nb201.from_naslib(tuple(int(tok) for tok in key.strip("()[] ").split(",")))
    except ValueError as exc:  # UserError is a ValueError too
        detail = exc if isinstance(exc, UserError) else "not an op-index tuple"
        raise UserError(f"{where}: {detail}") from None


#: Metrics the loaders define: their values must be numbers (or null, missing).
_KNOWN_METRICS = ACCURACY_METRICS + COST_METRICS


def _json_number(where: str, metric: str, value) -> float | None:
    """The value of one metric of one cell, or None when there is none to record.

    A value may be NASLib's ``{"score": ..., "time": ...}`` object, read as its score. A known
    metric must be a finite number or null. Other keys (zero-cost proxies) are kept when they
    are numbers and skipped otherwise.
    """
    if isinstance(value, dict) and "score" in value:  # NASLib's {"score": ..., "time": ...}
        value = value["score"]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is no 1.0
    if not is_number:
        if metric in _KNOWN_METRICS and value is not None:
            raise UserError(f"{where}, {metric}: {value!r} is not a number")
        return None
    if not math.isfinite(value):
        raise UserError(f"{where}, {metric}: {value!r} is not a finite number (use null for no value)")
    return float(value)


# ---- compact cache --------------------------------------------------------------------
def save_npz(benchmark: Benchmark, path: str | os.PathLike) -> None:
    """Write ``benchmark`` as a compact array file (cells in index order + one array per table)."""
    arrays = {"cells": np.asarray(benchmark.cells[: benchmark.num_in_file])}
    for dataset in benchmark.datasets:
        for metric in benchmark.metrics(dataset):
            arrays[f"{dataset}/{metric}"] = benchmark.query_all(dataset, metric)[: benchmark.num_in_file]
    arrays["notes"] = np.asarray(json.dumps(list(benchmark.notes)))
    tmp = Path(f"{path}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_npz(path: Path, source: str | None = None) -> Benchmark:
    """Read a :func:`save_npz` file; ``source`` (default: ``path``) is what messages name."""
    with np.load(path, allow_pickle=False) as data:
        if "cells" not in data.files:
            raise UserError(f"{path}: not a naslib-bayes benchmark array file (no 'cells')")
        tables: dict[str, dict[str, np.ndarray]] = {}
        for name in data.files:
            if "/" in name:
                dataset, metric = name.split("/", 1)
                tables.setdefault(dataset, {})[metric] = data[name]
        notes = json.loads(str(data["notes"])) if "notes" in data.files else []
        return Benchmark([tuple(c) for c in data["cells"]], tables, source=source or str(path), notes=notes)
