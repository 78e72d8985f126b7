"""The Benchmark API on the real NATS-Bench CSV and NASLib's zero-cost JSON."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.stats import spearmanr

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark, resolve_metrics
from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

BEST_CIFAR10 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
)


def test_csv_holds_three_datasets_of_test_accuracy(nats_benchmark):
    assert nats_benchmark.datasets == ("cifar10", "cifar100", "ImageNet16-120")
    for dataset in nats_benchmark.datasets:
        assert nats_benchmark.metrics(dataset) == ("test_accuracy",)
        assert nats_benchmark.is_complete(dataset, "test_accuracy")
    assert nats_benchmark.num_in_file == 15625


def test_index_order_is_the_files_row_order(nats_benchmark, nats_csv):
    with open(nats_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i in (0, 1, 777, 15624):
        assert nats_benchmark.index_of(rows[i]["ArchitectureString"]) == i
        assert nb201.to_string(nats_benchmark.cell(i)) == rows[i]["ArchitectureString"]
        assert nats_benchmark.query_all("cifar100")[i] == pytest.approx(float(rows[i]["CIFAR100TestAccuracy200Epochs"]))


def test_best_cifar10_cells_share_94_37(nats_benchmark):
    values = nats_benchmark.query_all("cifar10")
    best = values.max()
    assert round(best, 2) == 94.37
    winners = {nb201.to_string(nats_benchmark.cell(i)) for i in np.flatnonzero(values == best)}
    assert winners == set(BEST_CIFAR10)
    assert nats_benchmark.query(BEST_CIFAR10[0], "cifar10") == best
    assert round(nats_benchmark.best("cifar100"), 2) == 73.51
    assert round(nats_benchmark.best("ImageNet16-120"), 2) == 47.31


def test_query_accepts_strings_tuples_and_aliases(nats_benchmark):
    cell = nb201.from_string(BEST_CIFAR10[0])
    assert nats_benchmark.query(cell, "cifar10-valid") == nats_benchmark.query(BEST_CIFAR10[0], "CIFAR10")
    assert nats_benchmark.query(cell, "imagenet16-120") == nats_benchmark.query(cell, "ImageNet16-120")


def test_vectorised_query_is_read_only(nats_benchmark):
    values = nats_benchmark.query_all("cifar10")
    assert values.shape == (15625,)
    first = nats_benchmark.query(nats_benchmark.cell(0), "cifar10")
    with pytest.raises(ValueError, match="read-only"):
        values[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        values += 1.0
    with pytest.raises(ValueError, match="read-only"):
        values.sort()
    # the refused writes left the benchmark's own values untouched
    assert values[0] == first == nats_benchmark.query_all("cifar10")[0]
    assert round(float(nats_benchmark.query_all("cifar10").max()), 2) == 94.37


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda b: b.query(BEST_CIFAR10[0], "svhn"), "'svhn'"),
        (lambda b: b.query(BEST_CIFAR10[0], "cifar10", "val_accuracy"), "'val_accuracy'"),
        (lambda b: b.query("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "cifar10"), "nor_conv_5x5"),
    ],
)
def test_bad_queries_name_the_culprit(nats_benchmark, call, message):
    with pytest.raises(UserError, match=message):
        call(nats_benchmark)


def test_without_hides_the_target_dataset(nats_benchmark):
    source = nats_benchmark.without("cifar10")
    assert source.datasets == ("cifar100", "ImageNet16-120")
    with pytest.raises(UserError, match="no dataset 'cifar10'"):
        source.query_all("cifar10")
    assert nats_benchmark.datasets == ("cifar10", "cifar100", "ImageNet16-120")


def test_search_metric_falls_back_to_test_accuracy_with_a_warning(nats_benchmark):
    search, report, warnings = resolve_metrics(nats_benchmark, "cifar10", None, None)
    assert (search, report) == ("test_accuracy", "test_accuracy")
    assert len(warnings) == 1 and "searching on test accuracy" in warnings[0]


def test_search_metric_prefers_complete_validation_accuracy():
    cells = list(nb201.all_cells())
    bench = Benchmark(cells, {"cifar100": {"val_accuracy": np.linspace(0, 100, 15625), "test_accuracy": np.full(15625, 50.0)}})
    assert resolve_metrics(bench, "cifar100", None, None) == ("val_accuracy", "test_accuracy", [])


def test_zero_cost_json_maps_491_cells_to_the_right_strings(zc_json, nats_benchmark):
    zc = load_benchmark(zc_json)
    assert zc.num_in_file == 491
    for dataset in zc.datasets:
        values = zc.query_all(dataset, "val_accuracy")
        present = np.isfinite(values)
        assert present.sum() == 491
        rows = [nats_benchmark.index_of(tuple(c)) for c in zc.cells[present]]
        rho = spearmanr(values[present], nats_benchmark.query_all(dataset)[rows]).statistic
        assert rho >= 0.98, (dataset, rho)
    absent = zc.cells[-1]
    assert np.isnan(zc.query(tuple(absent), "cifar10", "val_accuracy"))
    assert "synflow" in zc.metrics("cifar10")


def test_folder_prefers_the_complete_csv(zc_json):
    bench = load_benchmark(zc_json.parent)
    assert bench.source.endswith(".csv")


# ---- what a benchmark and its metrics may hold -----------------------------------------------
CELLS = list(nb201.all_cells())


def costs_benchmark(val_cells: int = 15625) -> Benchmark:
    """All cells with test accuracy, params and flops on cifar100; validation accuracy for the first ``val_cells``."""
    val = np.where(np.arange(15625) < val_cells, np.linspace(10, 90, 15625), np.nan)
    tables = {"cifar100": {"test_accuracy": np.linspace(20, 70, 15625), "val_accuracy": val,
                           "params": np.linspace(0.1, 1.5, 15625), "flops": np.linspace(10, 200, 15625)}}
    return Benchmark(CELLS, tables, source="costs.npz")


@pytest.mark.parametrize("search, report, role", [
    ("params", None, "search"), ("flops", None, "search"), (None, "params", "report"), ("val_accuracy", "flops", "report"),
])
def test_cost_metrics_are_refused_as_search_or_report_metric(search, report, role):
    with pytest.raises(UserError) as info:
        resolve_metrics(costs_benchmark(), "cifar100", search, report)
    metric = search if role == "search" else report
    assert str(info.value).startswith(f"{role} metric {metric!r} is a cost (smaller is better), but searches maximise "
                                      "accuracy-like metrics")


def test_fallback_warning_says_how_many_cells_have_validation_accuracy():
    search, _, warnings = resolve_metrics(costs_benchmark(val_cells=491), "cifar100", None, None)
    assert search == "test_accuracy"
    assert warnings == ["costs.npz has cifar100 val_accuracy for 491 of 15,625 cells only: searching on test accuracy"]


def test_partial_search_metric_is_warned_about():
    _, _, warnings = resolve_metrics(costs_benchmark(val_cells=491), "cifar100", "val_accuracy", None)
    expected = ("costs.npz has cifar100 val_accuracy for 491 of 15,625 cells: random and model-based picks take "
                "cells with a value while any is left, a mutation or neighbour (re, ls, bananas) of another cell "
                "costs a query and returns no value, and regret is measured from the best listed cell")
    assert warnings == [expected]


def test_a_metric_without_any_value_is_refused_naming_file_dataset_and_metric():
    with pytest.raises(UserError, match=r"^costs.npz has no cifar100 val_accuracy value for any cell$"):
        resolve_metrics(costs_benchmark(val_cells=0), "cifar100", "val_accuracy", None)


def test_zero_cost_json_defaults_say_there_is_no_test_accuracy(zc_json):
    with pytest.raises(UserError, match=r"has cifar10 val_accuracy for 491 of 15,625 cells only and no test_accuracy"):
        resolve_metrics(load_benchmark(zc_json), "cifar10", None, None)


def test_no_test_accuracy_to_fall_back_on_offers_no_cost_metric_as_a_choice():
    # The metrics it offers must be ones the search accepts: costs are refused as search metrics.
    val = np.where(np.arange(15625) < 491, np.linspace(10, 90, 15625), np.nan)
    tables = {"cifar10": {"val_accuracy": val, "synflow": np.linspace(0, 1, 15625),
                          "params": np.linspace(0.1, 1.5, 15625), "flops": np.linspace(10, 200, 15625)}}
    with pytest.raises(UserError) as info:
        resolve_metrics(Benchmark(CELLS, tables, source="zc.json"), "cifar10", None, None)
    assert str(info.value).endswith("choose the search and report metrics among synflow, val_accuracy")


def test_a_benchmark_without_cells_is_refused():
    with pytest.raises(UserError, match=r"^empty.csv: the benchmark holds no cells$"):
        Benchmark([], {"cifar10": {"test_accuracy": []}}, source="empty.csv")


def test_a_cell_listed_twice_is_named():
    twice = [CELLS[0], CELLS[1], CELLS[0]]
    with pytest.raises(UserError) as info:
        Benchmark(twice, {"cifar10": {"test_accuracy": [1.0, 2.0, 3.0]}}, source="twice.npz")
    assert str(info.value) == f"twice.npz: the benchmark lists cell {nb201.to_string(CELLS[0])} twice (entries 1 and 3)"


def test_two_tables_of_one_dataset_are_refused_not_merged():
    """cifar10-valid and cifar10 are different training runs: one would overwrite the other's numbers."""
    tables = {"cifar10-valid": {"test_accuracy": [90.0, 80.0]}, "CIFAR10": {"test_accuracy": [70.0, 60.0]}}
    with pytest.raises(UserError) as info:
        Benchmark(CELLS[:2], tables, source="two.npz")
    assert str(info.value) == "two.npz: keys 'cifar10-valid' and 'CIFAR10' both hold cifar10 results: keep one of them"


def test_an_infinite_value_is_refused_and_never_reaches_json():
    from naslib_bayes.search_spaces.nasbench201.benchmark import finite_or_none

    with pytest.raises(UserError, match=r"^inf.npz: cifar10 test_accuracy of cell .* is inf, not a finite number$"):
        Benchmark(CELLS[:2], {"cifar10": {"test_accuracy": [1.0, np.inf]}}, source="inf.npz")
    assert finite_or_none(float("inf")) is None and finite_or_none(float("nan")) is None and finite_or_none(2) == 2.0


@pytest.mark.parametrize("metric", ["test_accuracy", "val_accuracy", "train_accuracy"])
@pytest.mark.parametrize("value", [-5.0, 100.5, 250.0])
def test_an_accuracy_outside_0_to_100_percent_is_refused_naming_the_cell(metric, value):
    """250 would become the dataset's best value, and every regret measured from it wrong."""
    with pytest.raises(UserError) as info:
        Benchmark(CELLS[:3], {"cifar100": {metric: [61.0, value, 100.0]}}, source="bad.csv")
    assert str(info.value) == (f"bad.csv: cifar100 {metric} of cell {nb201.to_string(CELLS[1])} is {value}, "
                               "outside 0..100 (accuracies are percentages)")


def test_accuracies_given_as_fractions_are_refused_naming_the_largest():
    """0.9437 for 94.37%: results would be written and labelled as percentages 100 times too small."""
    nan = float("nan")
    with pytest.raises(UserError) as info:
        Benchmark(CELLS[:3], {"cifar10": {"test_accuracy": [0.9437, nan, 0.1]}}, source="fractions.csv")
    assert str(info.value) == ("fractions.csv: every cifar10 test_accuracy lies within 0..1 (the largest is 0.9437), "
                               "but accuracies are percentages: multiply the file's values by 100")


def test_low_percentages_and_zeros_are_not_taken_for_fractions():
    bench = Benchmark(CELLS[:2], {"cifar10": {"test_accuracy": [0.5, 1.5]}, "cifar100": {"test_accuracy": [0.0, 0.0]}},
                      source="low.npz")
    assert bench.best("cifar10") == 1.5 and bench.best("cifar100") == 0.0


def test_accuracy_bounds_leave_other_metrics_alone():
    bench = Benchmark(CELLS[:2], {"cifar10": {"test_accuracy": [0.0, 100.0], "synflow": [-3.0, 250.0],
                                              "flops": [150.0, 250.0]}}, source="ok.npz")
    assert bench.query(CELLS[1], "cifar10", "synflow") == 250.0 and bench.best("cifar10") == 100.0


def test_the_best_value_of_a_partial_file_is_that_of_its_cells_with_a_value():
    nan = float("nan")
    bench = Benchmark(CELLS[:3], {"cifar10": {"test_accuracy": [61.0, nan, 64.5]}}, source="three.npz")
    assert bench.best("cifar10") == 64.5  # the cell without a value and the 15,622 absent ones are skipped
