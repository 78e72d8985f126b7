"""examples/bayesnas_darts.py: BayesNAS on the DARTS space, its genotype, switch table and from-scratch training."""

from __future__ import annotations

import math
import re

import pytest

from example_loader import load_example, run_example
from naslib_bayes.optimizers.bayesnas import derive
from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES

# The smallest run that still goes through every stage: a 3-cell supernet (one normal, two
# reduction cells) with 2 channels, one joint epoch of 2 steps and the architecture update,
# then one epoch of from-scratch training of a 3-cell, 4-channel network.
FAST = ["--search-images", "128", "--batch-size", "64", "--warmup-epochs", "0", "--search-channels", "2",
        "--search-cells", "3", "--curvature-batches", "1", "--train-epochs", "1", "--train-channels", "4",
        "--train-cells", "3", "--seed", "3"]
CELL_TYPES = ("normal", "reduce")
STEPS = 4
INPUT_NODES = {"c_{k-2}": 0, "c_{k-1}": 1}


@pytest.fixture(scope="module")
def example():
    return load_example("bayesnas_darts")


@pytest.fixture(scope="module")
def plain_run(example):
    return run_example(example, FAST)


@pytest.fixture(scope="module")
def compare_run(example):
    return run_example(example, FAST + ["--compare", "darts"])


def _check_darts_cell(edges, concat) -> None:
    """The DARTS space's rules for one cell of a genotype."""
    assert len(edges) == 2 * STEPS and list(concat) == list(range(2, STEPS + 2))
    for i in range(STEPS):
        node = 2 + i
        pair = edges[2 * i:2 * i + 2]
        sources = [src for _, src in pair]
        assert all(0 <= src < node for src in sources)  # earlier nodes or the two cell inputs
        assert len(set(sources)) == 2  # one edge per predecessor: two distinct inputs
        assert all(op in NONZERO_PRIMITIVES and op != "none" for op, _ in pair)


def test_derived_genotype_is_valid_in_the_darts_space(plain_run):
    result, _ = plain_run
    genotype = result["genotype"]
    Genotype.from_json(genotype)  # the package's own validation raises on a malformed genotype
    for cell_type in CELL_TYPES:
        _check_darts_cell(genotype[cell_type], genotype[f"{cell_type}_concat"])
    search = result["searches"]["bayesnas"]
    assert search["search_space"] == "darts" and search["final_architecture"] == genotype
    assert result["dataset"] == "digits" and result["seed"] == 3
    assert search["config"]["channels"] == 2 and search["config"]["cells"] == 3
    assert search["search_data"]["search_images"] == 128


def _printed_cells(out: str, method: str) -> dict[str, list[list[tuple[str, int]]]]:
    """Per cell type, the printed nodes as lists of (op, input node)."""
    cells: dict[str, list] = {}
    current = None
    for line in out.splitlines():
        header = re.match(rf"^{method} (normal|reduce) cell \(output: concatenation of nodes 2, 3, 4, 5\)$", line)
        if header:
            current = cells.setdefault(header.group(1), [])
            continue
        node = re.match(r"^  node (\d+) = (\w+)\((.+?)\) \+ (\w+)\((.+?)\)$", line)
        if node and current is not None:
            assert int(node.group(1)) == 2 + len(current)
            current.append([(node.group(2), _node_index(node.group(3))), (node.group(4), _node_index(node.group(5)))])
        elif line.strip() == "" or not line.startswith("  node"):
            current = None
    return cells


def _node_index(name: str) -> int:
    return INPUT_NODES.get(name) if name in INPUT_NODES else int(name.removeprefix("node "))


def test_printed_nodes_agree_with_the_genotype(plain_run):
    result, out = plain_run
    printed = _printed_cells(out, "bayesnas")
    assert set(printed) == set(CELL_TYPES)
    for cell_type in CELL_TYPES:
        expected = [[tuple(e) for e in result["genotype"][cell_type][2 * i:2 * i + 2]] for i in range(STEPS)]
        assert printed[cell_type] == expected
        assert [n["inputs"] for n in result["cells"][cell_type]] == expected


def _gammas(rows) -> tuple[list[float], list[list[float]]]:
    """(14,) parent gammas and (14, 7) op gammas of one cell type, from the switch rows."""
    return [row["parent"]["gamma"] for row in rows], [[s["gamma"] for s in row["ops"]] for row in rows]


def test_each_edge_choice_follows_the_switch_statistics_and_the_derivation_rule(plain_run):
    result, _ = plain_run
    for cell_type in CELL_TYPES:
        rows = result["switches"][cell_type]
        assert [(row["source"], row["target"]) for row in rows] == list(derive.darts_edges(STEPS))
        genotype_edges = [tuple(e) for e in result["genotype"][cell_type]]
        # the rows' chosen ops are exactly the genotype's edges
        in_cell = sorted((row["target"], row["source"], row["chosen"]) for row in rows if row["chosen"])
        assert in_cell == sorted((2 + i // 2, src, op) for i, (op, src) in enumerate(genotype_edges))
        for row in rows:
            assert [s["op"] for s in row["ops"]] == list(NONZERO_PRIMITIVES)
            for stats in [row["parent"], *row["ops"]]:
                assert stats["decision"] in ("entropy", "repair")
                if stats["entropy_survivor"]:
                    assert stats["gamma"] > ENTROPY_THRESHOLD
                if stats["gamma"] > 0:
                    assert stats["entropy"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * stats["gamma"]))
        _check_top_two_rule(rows, genotype_edges)
        # and the package's derivation, run on the recorded gammas, gives the same cell and decisions
        gp, gc = _gammas(rows)
        edges, concat, decisions = derive.derive_darts_cell(gp, gc, NONZERO_PRIMITIVES, steps=STEPS)
        assert edges == genotype_edges and concat == result["genotype"][f"{cell_type}_concat"]
        recorded = [(s["op"], s["kept"], s["decision"]) for row in rows for s in [row["parent"], *row["ops"]]]
        assert [(d.op, d.kept, d.decision) for d in decisions] == recorded


def _check_top_two_rule(rows, genotype_edges) -> None:
    """derive.py's DARTS rule, restated: per node the two strongest surviving inputs (strength =
    largest surviving op gamma), filled up by largest gamma when fewer survive; on each, the
    largest-gamma surviving op (any op when none survives)."""
    for node in range(2, STEPS + 2):
        incoming = [row for row in rows if row["target"] == node]
        surviving = [r for r in incoming if any(s["entropy_survivor"] for s in r["ops"])]
        surviving.sort(key=lambda r: (-max(s["gamma"] for s in r["ops"] if s["entropy_survivor"]), r["edge"]))
        picked = surviving[:2]
        rest = sorted((r for r in incoming if r not in picked),
                      key=lambda r: (-max(s["gamma"] for s in r["ops"]), r["edge"]))
        picked += rest[:2 - len(picked)]
        expected = []
        for row in sorted(picked, key=lambda r: r["source"]):
            pool = [s for s in row["ops"] if s["entropy_survivor"]] or row["ops"]
            expected.append((max(pool, key=lambda s: s["gamma"])["op"], row["source"]))
        assert genotype_edges[2 * (node - 2):2 * (node - 2) + 2] == expected


def test_repair_fraction_is_the_share_of_repair_decisions(plain_run):
    result, out = plain_run
    relevance = result["searches"]["bayesnas"]["relevance"]
    repairs = sum(e["decision"] == "repair" for e in relevance)
    # 2 cell types x 14 edges x (1 parent + 7 op switches)
    assert len(relevance) == 2 * 14 * 8
    assert result["repair_fraction"] == pytest.approx(repairs / len(relevance))
    assert f"{result['repair_fraction']:.3f} ({repairs} of {len(relevance)})" in out


def test_printed_switch_table_marks_the_cells_ops(plain_run):
    result, out = plain_run
    for cell_type in CELL_TYPES:
        lines = out.split(f"BayesNAS {cell_type} cell: gamma")[1].splitlines()[2:16]
        for line, row in zip(lines, result["switches"][cell_type], strict=True):
            assert line.startswith(f"{row['target']}<-{row['source']}")
            columns = [line[6 + 9 * k:6 + 9 * (k + 1)] for k in range(1 + len(NONZERO_PRIMITIVES))]
            assert columns[0].strip() == f"{row['parent']['gamma']:.4f}"
            for column, stats in zip(columns[1:], row["ops"], strict=True):
                assert column.rstrip("* ").strip() == f"{stats['gamma']:.4f}"
                assert column.endswith("*") == (stats["op"] == row["chosen"])
            assert line[6 + 9 * 8:].split()[0] == (row["chosen"] or "-")


def test_parameter_count_is_that_of_the_packages_network_for_the_genotype(plain_run):
    from naslib_bayes.search_spaces.darts.eval_network import DartsEvalNetwork

    result, out = plain_run
    trained = result["trained"]["bayesnas"]
    assert trained["config"]["channels"] == 4 and trained["config"]["cells"] == 3
    genotype = Genotype.from_json(trained["final_architecture"])
    assert trained["final_architecture"] == result["genotype"]  # the searched genotype is what trained
    network = DartsEvalNetwork(genotype, 4, 10, 3, auxiliary=False, in_channels=1)
    params = sum(p.numel() for p in network.parameters())
    run = result["runs"]["bayesnas"]
    assert run["params"] == params
    with_head = DartsEvalNetwork(genotype, 4, 10, 3, auxiliary=True, in_channels=1)
    assert sum(p.numel() for p in with_head.parameters()) > params  # the count leaves the auxiliary head out
    assert 0 <= run["test_accuracy"] <= 100 and run["train_s"] > 0
    assert f"{params:,}" in out and f"{run['test_accuracy']:.2f}%" in out


def test_same_seed_gives_the_same_genotype_and_training(plain_run, compare_run):
    (first, _), (again, _) = plain_run, compare_run  # BayesNAS runs first in both, with the same seed
    assert again["genotype"] == first["genotype"]
    assert again["switches"] == first["switches"]
    assert again["runs"]["bayesnas"]["test_accuracy"] == first["runs"]["bayesnas"]["test_accuracy"]


def test_darts_searches_the_same_supernet_and_trains_the_same_way(compare_run):
    result, out = compare_run
    assert list(result["runs"]) == ["bayesnas", "darts"]
    shared = ("seed", "data_seed", "dataset", "search_space", "channels", "cells", "batch_size", "search_images",
              "total_epochs")
    searches = result["searches"]
    assert {k: searches["darts"]["config"][k] for k in shared} == {k: searches["bayesnas"]["config"][k] for k in shared}
    darts = searches["darts"]["final_architecture"]
    Genotype.from_json(darts)
    for cell_type in CELL_TYPES:
        _check_darts_cell(darts[cell_type], darts[f"{cell_type}_concat"])
    assert _printed_cells(out, "darts")["normal"] == [[tuple(e) for e in darts["normal"][2 * i:2 * i + 2]]
                                                      for i in range(STEPS)]
    trained = result["trained"]
    keys = ("channels", "cells", "epochs", "batch_size", "lr", "seed", "train_images", "test_images")
    assert {k: trained["darts"]["config"][k] for k in keys} == {k: trained["bayesnas"]["config"][k] for k in keys}
    assert re.search(r"^darts\s+\d+\.\d\s+\d+\.\d\s+[\d,]+\s+\d+\.\d\d%", out, re.MULTILINE)


def _error(example, capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "searching:" not in out  # refused before any training
    message = err.strip()
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_unknown_baseline_is_a_one_line_error(example, capsys):
    message = _error(example, capsys, FAST + ["--compare", "darts,enas"])
    assert "'enas'" in message and "random-cell" in message


def test_missing_data_root_is_a_one_line_error_naming_it(example, tmp_path, capsys):
    missing = tmp_path / "no-mnist-here"
    assert str(missing) in _error(example, capsys, FAST + ["--data-root", str(missing)])


def test_mnist_without_data_root_is_a_one_line_error(example, capsys):
    assert "mnist" in _error(example, capsys, FAST + ["--dataset", "mnist"])


def test_runs_of_two_seeds_keep_their_results_side_by_side(example, tmp_path):
    import json

    for seed in ("3", "4"):
        fast = [*FAST[:-1], seed]
        run_example(example, [*fast, "--out", str(tmp_path)])
    for seed in (3, 4):
        folder = tmp_path / f"bayesnas-digits-seed{seed}"
        assert json.loads((folder / "search" / "result.json").read_text())["seed"] == seed
        assert json.loads((folder / "train" / "result.json").read_text())["seed"] == seed


def test_an_out_that_is_a_file_is_refused_before_any_search(example, tmp_path, capsys):
    in_the_way = tmp_path / "runs"
    in_the_way.write_text("not a folder")
    assert str(in_the_way) in _error(example, capsys, FAST + ["--out", str(in_the_way)])
    assert in_the_way.read_text() == "not a folder"
