"""One tabular-benchmark API for NAS-Bench-201, whatever file it was loaded from.

A :class:`Benchmark` always spans the whole space of 15,625 cells. Its *index order* is the
order of the loaded file (cells absent from a partial file follow, in lexicographic order),
so ``benchmark.index_of(cell)`` is the file's index where the file defines one. Tables hold one
float per cell for each (dataset, metric); an absent cell reads NaN.

Dataset names are canonical: ``cifar10``, ``cifar100``, ``ImageNet16-120`` (NASLib's
``cifar10-valid`` and a few spellings are accepted as aliases). Metric names:
``test_accuracy``, ``val_accuracy``, ``train_accuracy`` (percent), ``train_time`` (s),
``params`` (M), ``flops`` (M), ``latency`` (s), plus whatever extra columns a file holds
(zero-cost proxies, for instance). ``train_time`` is what the file holds, unconverted: the
official ``.pth`` files' time of all training epochs, a NASLib pickle's ``cost_info`` value;
compare training costs only between cells read from one kind of file.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
_DATASET_ALIASES = {
    "cifar10": "cifar10",
    "cifar10-valid": "cifar10",
    "cifar-10": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
    "imagenet16-120": "ImageNet16-120",
    "imagenet16": "ImageNet16-120",
    "imagenet": "ImageNet16-120",
}
ACCURACY_METRICS = ("test_accuracy", "val_accuracy", "train_accuracy")
#: Metrics where smaller is better: a search, which maximises, must not be pointed at them.
COST_METRICS = ("params", "flops", "latency", "train_time")


def canonical_dataset(name: str) -> str:
    """Canonical benchmark dataset name, or :class:`UserError` naming the unknown one."""
    canonical = _DATASET_ALIASES.get(str(name).strip().lower())
    if canonical is None:
        raise UserError(f"unknown NAS-Bench-201 dataset {name!r}; known: {', '.join(DATASETS)}")
    return canonical


class Benchmark:
    """Tabular NAS-Bench-201 results.

    Args:
        cells: op-index tuples in the file's index order; cells missing from it are appended.
        tables: ``{dataset: {metric: values}}``, each ``values`` of shape (len(cells),) aligned
            with ``cells`` (NaN where the file has no value).
        source: the path the benchmark came from, used in messages.
        notes: caveats of the file format that results should state.
    """

    def __init__(
        self,
        cells: Sequence[Sequence[int]],
        tables: Mapping[str, Mapping[str, Sequence[float]]],
        source: str = "<memory>",
        notes: Sequence[str] = (),
    ):
        self.source = str(source)
        self.notes = tuple(notes)
        try:
            ordered = [nb201.validate(c) for c in cells]
        except UserError as exc:  # name the file the cell came from
            raise UserError(f"{self.source}: {exc}") from None
        if not ordered:
            raise UserError(f"{self.source}: the benchmark holds no cells")
        seen = _refuse_duplicates(self.source, ordered)
        self.num_in_file = len(ordered)
        ordered += [c for c in nb201.all_cells() if c not in seen]
        self._cells = np.asarray(ordered, dtype=np.int64)  # (15625, 6)
        self._index = {c: i for i, c in enumerate(ordered)}
        self._tables: dict[str, dict[str, np.ndarray]] = {}
        key_of: dict[str, str] = {}
        for key, metrics in tables.items():
            dataset = _one_key_per_dataset(self.source, key, key_of)
            for metric, values in metrics.items():
                column = np.full(nb201.NUM_CELLS, np.nan)
                values = np.asarray(values, dtype=np.float64)
                if values.shape != (self.num_in_file,):
                    raise UserError(f"{self.source}: {dataset}/{metric} has shape {values.shape}, not one value for "
                                    f"each of its {self.num_in_file} cells")
                _refuse_infinities(self.source, dataset, metric, values, ordered)
                if metric in ACCURACY_METRICS:
                    _refuse_impossible_accuracies(self.source, dataset, metric, values, ordered)
                column[: self.num_in_file] = values
                self._tables.setdefault(dataset, {})[metric] = column

    # ---- what the file holds ---------------------------------------------------------
    @property
    def datasets(self) -> tuple[str, ...]:
        """Datasets present, in canonical order."""
        return tuple(d for d in DATASETS if d in self._tables)

    def metrics(self, dataset: str) -> tuple[str, ...]:
        """Metrics recorded for ``dataset``."""
        return tuple(self._tables[self._dataset(dataset)])

    def has_metric(self, dataset: str, metric: str) -> bool:
        return metric in self._tables.get(canonical_dataset(dataset), {})

    def is_complete(self, dataset: str, metric: str) -> bool:
        """True when every cell has a value for (dataset, metric)."""
        return bool(np.isfinite(self.query_all(dataset, metric)).all())

    def count_values(self, dataset: str, metric: str) -> int:
        """Number of cells with a value for (dataset, metric)."""
        return int(np.isfinite(self.query_all(dataset, metric)).sum())

    def cells_with_value(self, dataset: str, metric: str) -> list[nb201.Cell]:
        """The cells with a value for (dataset, metric), in index order: the benchmark's domain.

        Which cells a file covers is no secret of the target; their values are.
        """
        return [tuple(row) for row in self._cells[np.isfinite(self.query_all(dataset, metric))].tolist()]

    def __len__(self) -> int:
        return nb201.NUM_CELLS

    def __repr__(self) -> str:
        return f"Benchmark({self.source!r}, datasets={list(self.datasets)}, cells_in_file={self.num_in_file})"

    # ---- cells and indices ---------------------------------------------------------------
    @property
    def cells(self) -> np.ndarray:
        """Op-index tuples of all cells in index order, shape (15625, 6), a read-only view."""
        view = self._cells.view()
        view.flags.writeable = False
        return view

    def cell(self, index: int) -> nb201.Cell:
        return tuple(int(op) for op in self._cells[index])

    def index_of(self, arch: str | Sequence[int]) -> int:
        """Index of a cell (benchmark string or op-index tuple) in this benchmark's order."""
        return self._index[nb201.parse(arch)]

    # ---- queries ---------------------------------------------------------------------------
    def partial_domain(self, dataset: str, metric: str) -> tuple[nb201.Cell, ...] | None:
        """:meth:`cells_with_value`, sorted, when some cells lack a value for (dataset, metric);
        None when every cell has one (no domain to keep a search within)."""
        if self.is_complete(dataset, metric):
            return None
        return tuple(sorted(self.cells_with_value(dataset, metric)))

    def query_everywhere(self, arch: str | Sequence[int], metric: str) -> dict[str, float | None]:
        """``metric`` of one cell on every dataset that has the metric, a missing value as None
        (how result files report a derived or incumbent cell)."""
        return {d: finite_or_none(self.query(arch, d, metric)) for d in self.datasets if self.has_metric(d, metric)}

    def query(self, arch: str | Sequence[int], dataset: str, metric: str = "test_accuracy") -> float:
        """Value of ``metric`` for one cell on ``dataset`` (NaN when the file lacks the cell)."""
        return float(self._column(dataset, metric)[self.index_of(arch)])

    def query_all(self, dataset: str, metric: str = "test_accuracy") -> np.ndarray:
        """Values for all cells in index order, shape (15625,), a read-only view."""
        view = self._column(dataset, metric).view()
        view.flags.writeable = False
        return view

    def best(self, dataset: str, metric: str = "test_accuracy") -> float:
        """Largest value of ``metric`` on ``dataset`` over the cells present."""
        return float(np.nanmax(self.query_all(dataset, metric)))

    def without(self, *datasets: str) -> "Benchmark":
        """A view holding every dataset except ``datasets`` (for leave-one-dataset-out transfer)."""
        drop = {canonical_dataset(d) for d in datasets}
        kept = Benchmark.__new__(Benchmark)
        kept.__dict__.update(self.__dict__)
        kept._tables = {d: m for d, m in self._tables.items() if d not in drop}
        return kept

    # ---- internals -------------------------------------------------------------------------
    def _dataset(self, dataset: str) -> str:
        canonical = canonical_dataset(dataset)
        if canonical not in self._tables:
            raise UserError(f"{self.source}: no dataset {dataset!r}; it holds {', '.join(self.datasets) or 'none'}")
        return canonical

    def _column(self, dataset: str, metric: str) -> np.ndarray:
        dataset = self._dataset(dataset)
        columns = self._tables[dataset]
        if metric not in columns:
            raise UserError(f"{self.source}: no metric {metric!r} for {dataset}; it holds {', '.join(columns)}")
        return columns[metric]


def _one_key_per_dataset(source: str, key: str, key_of: dict[str, str]) -> str:
    """The canonical dataset of table ``key``, recorded in ``key_of``; a dataset under two keys is a
    UserError (``cifar10-valid`` and ``cifar10`` are different training runs: merged, the second
    would overwrite the first's numbers)."""
    try:
        dataset = canonical_dataset(key)
    except UserError as exc:  # name the file the table came from
        raise UserError(f"{source}: {exc}") from None
    first = key_of.setdefault(dataset, key)
    if first != key:
        raise UserError(f"{source}: keys {first!r} and {key!r} both hold {dataset} results: keep one of them")
    return dataset


def _refuse_duplicates(source: str, cells: list[nb201.Cell]) -> set[nb201.Cell]:
    """The set of ``cells``; a cell listed twice is a :class:`UserError` naming it and both entries."""
    first: dict[nb201.Cell, int] = {}
    for position, cell in enumerate(cells):
        if cell in first:
            raise UserError(f"{source}: the benchmark lists cell {nb201.to_string(cell)} twice "
                            f"(entries {first[cell] + 1} and {position + 1})")
        first[cell] = position
    return set(first)


def _refuse_infinities(source: str, dataset: str, metric: str, values: np.ndarray, cells: list[nb201.Cell]) -> None:
    """NaN means "no value"; an infinite one is a broken file (and cannot be written to JSON)."""
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        i = int(infinite[0])
        raise UserError(f"{source}: {dataset} {metric} of cell {nb201.to_string(cells[i])} is {values[i]}, not a finite number")


def _refuse_impossible_accuracies(source: str, dataset: str, metric: str, values: np.ndarray,
                                  cells: list[nb201.Cell]) -> None:
    """An accuracy below 0 or above 100 percent is a broken file: taken as it is, one such value
    becomes the dataset's best, and every regret measured from it is wrong. A column whose
    values all lie within 0..1 (some above 0) holds fractions, not percentages."""
    with np.errstate(invalid="ignore"):  # NaN (no value) is neither
        outside = np.flatnonzero((values < 0) | (values > 100))
    if outside.size:
        i = int(outside[0])
        raise UserError(f"{source}: {dataset} {metric} of cell {nb201.to_string(cells[i])} is {values[i]}, "
                        "outside 0..100 (accuracies are percentages)")
    largest = np.nanmax(values, initial=0.0)  # initial: a column of NaN only has no largest
    if 0 < largest <= 1:  # a fraction scale: results would be labelled percent, 100 times too small
        raise UserError(f"{source}: every {dataset} {metric} lies within 0..1 (the largest is {largest}), "
                        "but accuracies are percentages: multiply the file's values by 100")


def resolve_metrics(
    benchmark: Benchmark, dataset: str, search_metric: str | None, report_metric: str | None
) -> tuple[str, str, list[str]]:
    """Choose the search and report metrics, returning them with warnings to show the user.

    The search metric defaults to validation accuracy when every cell has it, else to test
    accuracy (with a warning: searching on the metric that is reported is optimistic). The
    report metric defaults to test accuracy. A cost metric (smaller is better), or a metric
    with no value on ``dataset``, is a :class:`UserError`; a search metric that only some cells
    have gives a warning, since queries of the other cells are spent for nothing.
    """
    dataset = canonical_dataset(dataset)
    warnings = []
    if search_metric is None:
        search_metric = _default_search_metric(benchmark, dataset, warnings)
    defaulted = report_metric is None
    report_metric = "test_accuracy" if defaulted else report_metric  # "" is an error, not the default
    for role, metric in (("search", search_metric), ("report", report_metric)):
        require_accuracy_like(role, metric)
        try:
            _require_values(benchmark, dataset, metric)
        except UserError as exc:
            if role == "report" and defaulted:  # the user never named test_accuracy: say where it came from
                raise UserError(f"{exc} (the default report metric); choose one with --report-metric") from None
            raise
    warnings += _coverage_warnings(benchmark, dataset, search_metric)
    return search_metric, report_metric, warnings


def _default_search_metric(benchmark: Benchmark, dataset: str, warnings: list[str]) -> str:
    """Validation accuracy when every cell has it, else test accuracy with a warning saying why."""
    have = benchmark.count_values(dataset, "val_accuracy") if benchmark.has_metric(dataset, "val_accuracy") else 0
    if have == nb201.NUM_CELLS:
        return "val_accuracy"
    if have == 0:
        why = f"{benchmark.source} has no validation accuracy for {dataset}"
    else:
        why = f"{benchmark.source} has {dataset} val_accuracy for {have:,} of {nb201.NUM_CELLS:,} cells only"
    if not benchmark.has_metric(dataset, "test_accuracy"):
        choices = sorted(set(benchmark.metrics(dataset)) - set(COST_METRICS))  # costs are refused as either
        raise UserError(f"{why} and no test_accuracy to fall back on: choose the search and report metrics "
                        f"among {', '.join(choices)}")
    warnings.append(f"{why}: searching on test accuracy")
    return "test_accuracy"


def require_accuracy_like(role: str, metric: str) -> None:
    """A cost metric (smaller is better) as ``role`` (search / report) metric is a UserError."""
    if metric in COST_METRICS:
        raise UserError(f"{role} metric {metric!r} is a cost (smaller is better), but searches maximise "
                        f"accuracy-like metrics such as {', '.join(ACCURACY_METRICS)}")


def _require_values(benchmark: Benchmark, dataset: str, metric: str) -> None:
    """A metric the benchmark lacks, or has no value of on ``dataset``, is a UserError naming both."""
    if benchmark.count_values(dataset, metric) == 0:  # count_values raises a UserError naming a missing metric
        raise UserError(f"{benchmark.source} has no {dataset} {metric} value for any cell")


def _coverage_warnings(benchmark: Benchmark, dataset: str, metric: str) -> list[str]:
    have = benchmark.count_values(dataset, metric)
    if have == nb201.NUM_CELLS:
        return []
    return [f"{benchmark.source} has {dataset} {metric} for {have:,} of {nb201.NUM_CELLS:,} cells: random and "
            "model-based picks take cells with a value while any is left, a mutation or neighbour (re, ls, bananas) "
            "of another cell costs a query and returns no value, and regret is measured from the best listed cell"]


def finite_or_none(value: float | None) -> float | None:
    """JSON-friendly float (of a Python or numpy number, or a 0-d tensor): None and any
    non-finite value (NaN, +-inf) become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
