"""Loaders turning NAS-Bench-201 result files into a :class:`Benchmark`.

Supported inputs (``load_benchmark`` takes a file or a folder):

* the NATS-Bench CSV export (``*.csv`` with ``ArchitectureString`` and
  ``CIFAR10TestAccuracy200Epochs``-style columns): test accuracy only;
* NASLib's NB201 pickles (``nb201_<dataset>_full_training.pickle``), one dataset each; a folder
  of them loads as one multi-dataset benchmark;
* the official NAS-Bench-201 ``.pth`` file, read through the ``nas_201_api`` package and cached
  as a compact ``.npz`` array file (see :mod:`naslib_bayes.search_spaces.nasbench201.official`);
  reading it unpickles the file, which executes code stored in it: load only a file you trust;
* NASLib's zero-cost JSON (``zc_nasbench201.json``): a partial benchmark with validation
  accuracy, params, FLOPs and zero-cost proxies for a sample of cells;
* a ``.npz`` file written by :func:`save_npz` (the cache format).

A folder is searched in that order of preference: ``.npz`` cache, ``.pth``, NASLib pickles,
CSV, zero-cost JSON; the first kind present is loaded and the others are ignored.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from naslib_bayes.errors import UserError, cause
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset

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
ZC_NOTE = "the zero-cost JSON covers a sample of cells; absent cells read NaN"
_ZC_RENAME = {"val_accuracy": "val_accuracy", "params": "params", "flops": "flops"}


def load_benchmark(path: str | os.PathLike) -> Benchmark:
    """Load a benchmark file or folder; :class:`UserError` names the path when it cannot."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"benchmark path {str(path)!r} does not exist")
    if path.is_dir():
        return _load_folder(path)
    loader = _loader_for(path)
    if loader is None:
        raise UserError(f"{path}: not a NAS-Bench-201 benchmark file (.csv, .pickle, .pth, .json or .npz)")
    return _guarded(path, lambda: loader(path))


# What reading a file of the wrong shape raises (AttributeError: a value of the wrong type;
# BadZipFile: a damaged .npz).
_READ_ERRORS = (
    OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
    pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
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
    by_kind = {suffix: [p for p in files if p.suffix.lower() in suffixes] for suffix, suffixes in _FOLDER_ORDER}
    for kind, found in by_kind.items():
        if not found:
            continue
        if kind == "pickle":
            logger.info("loading NASLib pickles %s", ", ".join(p.name for p in found))
            # Guarded like a single file, so a damaged pickle is a UserError, not a traceback.
            return _guarded(folder, lambda: load_naslib_pickles(found))
        if len(found) > 1:
            logger.warning("%s holds several %s files; loading %s", folder, kind, found[0].name)
        return load_benchmark(found[0])
    raise UserError(f"{folder}: no NAS-Bench-201 benchmark file (.csv, .pickle, .pth, .json or .npz) in this folder")


_FOLDER_ORDER = (
    ("npz", (".npz",)),
    ("pth", (".pth",)),
    ("pickle", (".pickle", ".pkl")),
    ("csv", (".csv",)),
    ("json", (".json",)),
)


# ---- NATS-Bench CSV -------------------------------------------------------------------
def load_csv(path: Path) -> Benchmark:
    """The NATS-Bench CSV export: one row per cell in the API's index order."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "ArchitectureString" not in header:
            raise UserError(f"{path}: CSV has no 'ArchitectureString' column")
        columns = {col: ds for col, ds in CSV_COLUMNS.items() if col in header}
        if not columns:
            raise UserError(f"{path}: CSV has none of the accuracy columns {', '.join(CSV_COLUMNS)}")
        cells, values = [], {ds: [] for ds in columns.values()}
        for line, row in enumerate(reader, start=2):
            try:
                cells.append(nb201.from_string(row["ArchitectureString"]))
                for col, ds in columns.items():
                    values[ds].append(_float(row[col]))
            except UserError as exc:
                raise UserError(f"{path}, line {line}: {exc}") from None
            except ValueError:
                raise UserError(f"{path}, line {line}: a non-numeric accuracy") from None
    tables = {ds: {"test_accuracy": vals} for ds, vals in values.items()}
    return Benchmark(cells, tables, source=str(path), notes=[CSV_NOTE])


def _float(text: str) -> float:
    return float("nan") if text in ("", None) else float(text)


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
    for path in paths:
        data = _guarded(path, partial(_unpickle, path))
        for arch, per_dataset in data.items():
            try:
                cell = nb201.from_string(arch)
            except UserError as exc:
                raise UserError(f"{path}: {exc}") from None
            if cell not in index:
                index[cell] = len(cells)
                cells.append(cell)
            for ds_key, entry in per_dataset.items():
                metrics = records.setdefault(canonical_dataset(ds_key), {})
                for metric, value in _pickle_metrics(path, arch, ds_key, entry).items():
                    metrics.setdefault(metric, {})[index[cell]] = value
    tables = {
        ds: {m: [vals.get(i, np.nan) for i in range(len(cells))] for m, vals in metrics.items()}
        for ds, metrics in records.items()
    }
    return Benchmark(cells, tables, source=", ".join(str(p) for p in paths), notes=[PICKLE_NOTE])


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as handle:
        data = pickle.load(handle)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict of architecture strings")
    return data


def _pickle_metrics(path, arch: str, ds_key: str, entry: dict) -> dict[str, float]:
    try:
        final_eval = float(entry["eval_acc1es"][-1])
        metrics = {"val_accuracy": final_eval, "test_accuracy": final_eval}
        if entry.get("train_acc1es"):
            metrics["train_accuracy"] = float(entry["train_acc1es"][-1])
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{path}: {arch} / {ds_key} has no 'eval_acc1es' curve") from None
    for field, value in (entry.get("cost_info") or {}).items():
        if field in ("flops", "params", "latency", "train_time") and value is not None:
            metrics[field] = float(value)
    return metrics


# ---- NASLib zero-cost JSON ------------------------------------------------------------
def load_zero_cost_json(path: Path) -> Benchmark:
    """NASLib's ``zc_nasbench201.json``: keys are NASLib op-index tuples as strings."""
    with open(path) as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or "nasbench201" not in data:
        raise UserError(f"{path}: expected NASLib's zero-cost JSON with a top-level 'nasbench201' key")
    cells: list[nb201.Cell] = []
    index: dict[nb201.Cell, int] = {}
    records: dict[str, dict[str, dict[int, float]]] = {}
    for ds_key, per_cell in data["nasbench201"].items():
        metrics = records.setdefault(canonical_dataset(ds_key), {})
        for key, entry in per_cell.items():
            cell = nb201.from_naslib(_parse_tuple_key(path, key))
            if cell not in index:
                index[cell] = len(cells)
                cells.append(cell)
            for metric, value in entry.items():
                if isinstance(value, (int, float)):
                    metrics.setdefault(metric, {})[index[cell]] = float(value)
    tables = {
        ds: {m: [vals.get(i, np.nan) for i in range(len(cells))] for m, vals in metrics.items()}
        for ds, metrics in records.items()
    }
    return Benchmark(cells, tables, source=str(path), notes=[ZC_NOTE])


def _parse_tuple_key(path, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(tok) for tok in key.strip("()[] ").split(","))
    except ValueError:
        raise UserError(f"{path}: key {key!r} is not an op-index tuple") from None


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
