"""examples/bayesnas_search.py: BayesNAS one-shot search from Python, its switch table and benchmark lookup."""

from __future__ import annotations


import numpy as np
import pytest

from example_loader import load_example, run_example
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

# The smallest search that still runs every stage: one joint epoch of 2 steps, then the update.
FAST = ["--search-images", "128", "--batch-size", "64", "--warmup-epochs", "0", "--seed", "3"]


@pytest.fixture(scope="module")
def example():
    return load_example("bayesnas_search")


@pytest.fixture(scope="module")
def plain_run(example):
    return run_example(example, FAST)


@pytest.fixture(scope="module")
def benchmark_run(example, nats_csv):
    return run_example(example, FAST + ["--benchmark", str(nats_csv), "--compare", "darts,random-cell"])


def test_derived_cell_is_a_connected_nb201_cell(plain_run):
    result, out = plain_run
    cell = nb201.from_string(result["cell"])  # raises on a malformed string
    assert nb201.to_string(cell) == result["cell"]
    assert nb201.is_connected(cell)
    assert result["dataset"] == "digits" and result["seed"] == 3
    assert f"BayesNAS derived cell: {result['cell']}" in out


def test_switch_table_agrees_with_the_cell_and_the_derivation_rule(plain_run):
    result, _ = plain_run
    cell = nb201.from_string(result["cell"])
    edges = result["edges"]
    assert [(row["source"], row["target"]) for row in edges] == list(nb201.EDGES)
    for row, op in zip(edges, cell):
        assert row["chosen"] == nb201.OPS[op]
        assert [s["op"] for s in row["ops"]] == ["skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
        kept = [s["op"] for s in row["ops"] if s["kept"]]
        if row["parent"]["kept"]:
            # one op per kept edge: the largest gamma (survivors of the entropy criterion first,
            # and the largest gamma is a survivor whenever any op survives)
            gammas = [s["gamma"] for s in row["ops"]]
            assert kept == [row["ops"][int(np.argmax(gammas))]["op"]]
        else:
            assert kept == [] and row["chosen"] == "none"
        for stats in [row["parent"], *row["ops"]]:
            assert stats["decision"] in ("entropy", "repair")
            if stats["gamma"] > 0:
                assert stats["entropy"] == pytest.approx(0.5 * np.log(2 * np.pi * np.e * stats["gamma"]))


def test_printed_table_marks_the_cells_ops(plain_run):
    result, out = plain_run
    # a table line: 6 columns of edge label, then "*" on the op the cell carries
    marked = [line[7:].split()[0] for line in out.splitlines() if line[6:7] == "*"]
    assert marked == [row["chosen"] for row in result["edges"] if row["chosen"] != "none"]
    for row in result["edges"]:
        assert f"{row['target']}<-{row['source']}" in out
        gamma = next(s["gamma"] for s in row["ops"] if s["op"] == "nor_conv_3x3")
        assert f"{gamma:.4f}" in out


def test_same_seed_gives_the_same_cell_and_switch_statistics(example, plain_run):
    again, _ = run_example(example, FAST)
    assert again["cell"] == plain_run[0]["cell"]
    assert again["edges"] == plain_run[0]["edges"]


def test_benchmark_accuracy_is_the_benchmarks_and_the_rank_is_consistent(benchmark_run, plain_run, nats_benchmark):
    result, out = benchmark_run
    assert result["cell"] == plain_run[0]["cell"]  # looking the cell up does not change the search
    standing = result["benchmark"]
    assert set(standing) == set(nats_benchmark.datasets)
    for dataset, s in standing.items():
        accuracy = nats_benchmark.query(result["cell"], dataset, "test_accuracy")
        assert s["test_accuracy"] == accuracy
        assert result["results"]["bayesnas"]["benchmark_accuracy"][dataset] == pytest.approx(accuracy)
        values = np.asarray(nats_benchmark.query_all(dataset, "test_accuracy"))
        values = values[np.isfinite(values)]
        ordered = np.sort(values)[::-1]
        assert s["cells"] == values.size == nb201.NUM_CELLS
        assert ordered[s["rank"] - 1] == accuracy and (s["rank"] == 1 or ordered[s["rank"] - 2] > accuracy)
        assert s["percentile"] == pytest.approx(100.0 * np.searchsorted(np.sort(values), accuracy) / values.size)
        assert f"{accuracy:6.2f}%  rank {s['rank']:>5} of {values.size}" in out


def test_baselines_run_on_the_same_supernet_seed_and_data(benchmark_run, nats_benchmark):
    result, out = benchmark_run
    assert list(result["runs"]) == ["bayesnas", "darts", "random-cell"]
    shared = ("seed", "data_seed", "dataset", "channels", "cells", "batch_size", "search_images", "total_epochs")
    reference = result["results"]["bayesnas"]
    for name, run in result["runs"].items():
        other = result["results"][name]
        assert other["optimizer"] == name
        assert {k: other["config"][k] for k in shared} == {k: reference["config"][k] for k in shared}
        assert other["search_data"] == reference["search_data"]
        assert nb201.to_string(nb201.from_string(run["cell"])) == run["cell"]
        for dataset, s in run["benchmark"].items():
            assert s["test_accuracy"] == nats_benchmark.query(run["cell"], dataset, "test_accuracy")
        assert f"{name:<12}" in out and run["cell"] in out


def test_mnist_from_data_root_is_the_default_dataset_there(example, mnist_dir):
    result, _ = run_example(example, FAST + ["--data-root", str(mnist_dir)])
    data = result["results"]["bayesnas"]["search_data"]
    assert result["dataset"] == "mnist" and data["image_shape"] == [1, 28, 28] and data["search_images"] == 128
    nb201.from_string(result["cell"])


def _error(example, capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "searching:" not in out  # refused before any training
    message = err.strip()
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_missing_benchmark_file_is_a_one_line_error_naming_it(example, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "nats_bench.csv"
    assert str(missing) in _error(example, capsys, FAST + ["--benchmark", str(missing)])


def test_unknown_baseline_is_a_one_line_error(example, capsys):
    message = _error(example, capsys, FAST + ["--compare", "darts,enas"])
    assert "'enas'" in message and "random-cell" in message


def test_a_benchmark_without_test_accuracy_is_refused_before_the_search(example, zc_json, capsys):
    # the zero-cost proxy file reads as a benchmark, but has no test accuracy to rank the cell by:
    # the lookup section would print its header and nothing under it
    message = _error(example, capsys, FAST + ["--benchmark", str(zc_json)])
    assert str(zc_json) in message and "test_accuracy" in message


@pytest.mark.parametrize("name", ["bayesnas_search", "bayesnas_darts", "compress_your_cnn", "tnas_transfer",
                                  "tnas_predictor"])
@pytest.mark.parametrize("seed", ["-1", "2.5", str(2**32)])
def test_every_example_refuses_a_seed_the_commands_refuse(name, seed, capsys):
    # Three examples read --seed as any int: -1 ran (torch wraps it), where the commands and the
    # other examples refuse it as outside 0..2**32-1.
    with pytest.raises(SystemExit) as stop:
        load_example(name).parse_args(["--seed", seed])
    assert stop.value.code == 2 and "expected an integer from 0 to" in capsys.readouterr().err
