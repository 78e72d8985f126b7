"""NASLib's NAS-Bench-201 ``dataset_api``, built from a naslib-bayes :class:`Benchmark`.

NASLib's ``NasBench201SearchSpace.query(metric, dataset, epoch=-1, dataset_api=api)`` reads
``api["nb201_data"][arch_str][ds_key][field][epoch]`` (``cost_info`` for training time and
hyper-parameters), where ``ds_key`` is ``cifar10-valid`` for CIFAR-10 and ``arch_str`` is the
benchmark string of the cell. NASLib's own loader reads pickles with 200-epoch curves; this
module serves the same layout from whatever benchmark file naslib-bayes loaded, so NASLib's
optimizers and Trainer run on it without NASLib's data files:

* every curve (``train_acc1es``, ``eval_acc1es``, ``train_losses``, ``eval_losses``) holds one
  value, the final one, so ``query(..., epoch=-1)`` (NASLib's default) returns it;
* ``eval_acc1es`` is the validation accuracy where the benchmark has it, else the test accuracy.
  NASLib reads both VAL_ACCURACY and TEST_ACCURACY from this one field, so a search run through
  NASLib always sees its reported number; :func:`naslib_dataset_api` warns once when the two
  are the same number;
* a field the benchmark lacks reads -1 (NASLib's own marker for unknown values);
* cells the benchmark does not cover are absent, as in NASLib's pickles.

No NASLib import is needed here; the mapping is built lazily, one cell at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Callable

import numpy as np

from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, canonical_dataset

#: naslib-bayes dataset name -> NASLib's key in ``nb201_data[arch]``
NASLIB_DATASET_KEYS = {"cifar10": "cifar10-valid", "cifar100": "cifar100", "ImageNet16-120": "ImageNet16-120"}
UNKNOWN = -1.0
CURVE_FIELDS = ("train_acc1es", "eval_acc1es", "train_losses", "eval_losses")
COST_FIELDS = ("flops", "params", "latency", "train_time")


def served_metric(benchmark: Benchmark, dataset: str) -> str | None:
    """The metric NASLib gets as ``eval_acc1es`` of ``dataset``: validation accuracy where the
    benchmark has it, else test accuracy (None: neither)."""
    for metric in ("val_accuracy", "test_accuracy"):
        if benchmark.has_metric(dataset, metric):
            return metric
    return None


def _value(column: np.ndarray | None, index: int) -> float:
    if column is None:
        return UNKNOWN
    value = float(column[index])
    return UNKNOWN if math.isnan(value) else value


class NB201Data(Mapping):
    """Read-only ``{arch_str: {ds_key: record}}`` over a benchmark, built on access and cached.

    ``record`` is ``{"train_acc1es": [v], "eval_acc1es": [v], "train_losses": [v],
    "eval_losses": [v], "cost_info": {"flops", "params", "latency", "train_time"}, "flop": [v],
    "params": [v], "latency": [v], "train_times": [v], "eval_times": [v], "epochs": [v]}``.
    """

    def __init__(self, benchmark: Benchmark):
        self.benchmark = benchmark
        self._columns: dict[str, dict[str, np.ndarray | None]] = {}
        present = np.zeros(nb201.NUM_CELLS, dtype=bool)
        for dataset in benchmark.datasets:
            eval_metric = self.eval_metric(dataset)
            if eval_metric is None:
                continue
            has = lambda m: benchmark.has_metric(dataset, m)  # noqa: E731
            columns = {
                "eval": benchmark.query_all(dataset, eval_metric),
                "train_acc": benchmark.query_all(dataset, "train_accuracy") if has("train_accuracy") else None,
            }
            for field in COST_FIELDS:
                columns[field] = benchmark.query_all(dataset, field) if has(field) else None
            self._columns[NASLIB_DATASET_KEYS[dataset]] = columns
            present |= np.isfinite(columns["eval"])
        self._rows = np.flatnonzero(present)
        self._cache: dict[str, dict] = {}

    def eval_metric(self, dataset: str) -> str | None:
        """The benchmark metric served as ``eval_acc1es`` for ``dataset`` (None: nothing to serve)."""
        return served_metric(self.benchmark, dataset)

    @property
    def dataset_keys(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def _record(self, index: int) -> dict:
        entry = {}
        for ds_key, columns in self._columns.items():
            final_eval = _value(columns["eval"], index)
            if final_eval == UNKNOWN:
                continue
            cost = {field: _value(columns[field], index) for field in COST_FIELDS}
            entry[ds_key] = {
                "train_acc1es": [_value(columns["train_acc"], index)],
                "eval_acc1es": [final_eval],
                "train_losses": [UNKNOWN],
                "eval_losses": [UNKNOWN],
                "cost_info": cost,
                # what NASLib's query reads for FLOPS, PARAMETERS, LATENCY, *_TIME and EPOCH
                "flop": [cost["flops"]], "params": [cost["params"]], "latency": [cost["latency"]],
                "train_times": [UNKNOWN], "eval_times": [UNKNOWN], "epochs": [UNKNOWN],
            }
        return entry

    def __getitem__(self, arch_str: str) -> dict:
        cached = self._cache.get(arch_str)
        if cached is not None:
            return cached
        if not isinstance(arch_str, str):
            raise KeyError(arch_str)
        try:
            index = self.benchmark.index_of(nb201.from_string(arch_str))
        except ValueError:  # UserError for a malformed string
            raise KeyError(arch_str) from None
        entry = self._record(index)
        if not entry:
            raise KeyError(arch_str)
        self._cache[arch_str] = entry
        return entry

    def __iter__(self) -> Iterator[str]:
        for index in self._rows:
            yield nb201.to_string(self.benchmark.cell(int(index)))

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, arch_str) -> bool:
        try:
            self[arch_str]
            return True
        except KeyError:
            return False


def same_val_and_test(benchmark: Benchmark, dataset: str) -> bool:
    """True when NASLib's ``eval_acc1es`` for ``dataset`` is also the benchmark's test accuracy."""
    if not benchmark.has_metric(dataset, "val_accuracy"):
        return True
    if not benchmark.has_metric(dataset, "test_accuracy"):
        return False
    val, test = benchmark.query_all(dataset, "val_accuracy"), benchmark.query_all(dataset, "test_accuracy")
    both = np.isfinite(val) & np.isfinite(test)
    return bool(both.any() and np.array_equal(val[both], test[both]))


def naslib_dataset_api(benchmark: Benchmark, warn: Callable[[str], None] | None = None) -> dict:
    """``{"nb201_data": NB201Data(benchmark)}``, NASLib's ``dataset_api`` for NAS-Bench-201.

    ``warn`` (e.g. ``logging.warning``) receives one line when, for some dataset, the value
    NASLib reads as validation accuracy is the test accuracy.
    """
    data = NB201Data(benchmark)
    same = [d for d in benchmark.datasets if NASLIB_DATASET_KEYS[d] in data.dataset_keys and same_val_and_test(benchmark, d)]
    if same and warn is not None:
        warn(
            f"{benchmark.source}: validation and test accuracy are the same number for {', '.join(same)} "
            "(NASLib's eval_acc1es holds the test accuracy): searches through NASLib select on test accuracy"
        )
    return {"nb201_data": data}


def served_domain(dataset_api: Mapping, dataset: str) -> tuple | None:
    """The cells (sorted) a naslib-bayes ``dataset_api`` serves a finite ``eval_acc1es`` for on
    ``dataset``, or None when it serves every cell or is NASLib's own (which cells it covers is
    not known here)."""
    data = dataset_api.get("nb201_data") if isinstance(dataset_api, Mapping) else None
    if not isinstance(data, NB201Data):
        return None
    dataset = canonical_dataset(dataset)
    metric = served_metric(data.benchmark, dataset)
    return None if metric is None else data.benchmark.partial_domain(dataset, metric)


def curve_length(dataset_api: Mapping) -> int | None:
    """Length of the learning curves in ``dataset_api`` (1 for a naslib-bayes api, 200 for NASLib's pickles)."""
    data = dataset_api.get("nb201_data") if isinstance(dataset_api, Mapping) else None
    if isinstance(data, NB201Data):
        return 1
    if not data:
        return None
    first = next(iter(data.values()))
    for record in first.values():
        if isinstance(record, Mapping) and "eval_acc1es" in record:
            return len(record["eval_acc1es"])
    return None
