"""BayesNAS on the DARTS search space, run from Python: search a genotype, then train it from scratch.

What it shows, end to end on small data:

* a BayesNAS one-shot search on the DARTS supernet with
  :func:`naslib_bayes.training.search.run_oneshot_search` (the function behind
  ``naslib-bayes search --search-space darts``), on a small supernet so it runs on one CPU core;
* the derived genotype in readable form: per intermediate node of the normal and the reduction
  cell, its two inputs (``c_{k-2}``, ``c_{k-1}``: the two previous cells; ``node i``: an
  earlier node of the same cell) and the op on each;
* per edge of each cell the switch statistics the search recorded (``result["relevance"]``):
  the prior variance gamma of the edge's parent switch and of each of its 7 op switches, which
  op the derivation put in the cell, and why an edge was kept or dropped; and the repair
  fraction, the share of switch decisions that the derivation changed after the entropy
  criterion (``gamma <= 1/(2 pi e)`` prunes);
* the evaluation phase with :func:`naslib_bayes.training.evaluate.run_training` (the function
  behind ``naslib-bayes train``): the genotype trained from scratch in the DARTS evaluation
  network, with its held-out test accuracy, parameter count and training time;
* optionally (``--compare darts``) first-order DARTS searching the same supernet with the same
  seed, images and epochs, its genotype trained the same way, side by side.

The search sees the training split of scikit-learn's bundled ``digits`` (8x8 images, nothing
to download) by default, or of MNIST from ``--data-root DIR`` (its IDX files, gzipped or not).
Training from scratch uses the training and validation splits; the test split is seen once, at
the end, by nothing but the final accuracy. Defaults take about 1-2 minutes on one CPU core;
``--compare darts`` about twice that. MNIST's 28x28 images cost about ten times digits' per
image, and training uses its whole training split (8,000 images with only the t10k files):
the MNIST line below takes several minutes.

Usage:

    python examples/bayesnas_darts.py
    python examples/bayesnas_darts.py --compare darts --seed 1
    python examples/bayesnas_darts.py --data-root PATH/mnist --search-images 256 --train-epochs 2
    python examples/bayesnas_darts.py --search-channels 8 --search-cells 5 --train-epochs 20 \\
        --out runs/bayesnas-darts
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

BAYESNAS = "bayesnas"
SEARCH_SPACE = "darts"
CELL_TYPES = ("normal", "reduce")
#: Column headers of the switch table (the DARTS op names are too wide for a 7-column table).
SHORT_OP_NAMES = {"max_pool_3x3": "maxpool3", "avg_pool_3x3": "avgpool3", "skip_connect": "skip",
                  "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5"}


def parse_args(argv=None) -> argparse.Namespace:
    from naslib_bayes.commands.common import non_negative_int, positive_float, positive_int, seed_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=("digits", "mnist"), default=None,
                      help="images to search and train on (default: mnist with --data-root, else digits)")
    data.add_argument("--data-root", type=Path, help="folder of MNIST's IDX files")
    parser.add_argument("--compare", default="",
                        help="comma-separated one-shot baselines searched and trained the same way "
                             "(darts, random-cell; default: none)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of search and training (default 0)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path,
                        help="keep each method's search and training result.json and trained checkpoint under "
                             "DIR/<method>-<dataset>-seed<seed>/")
    search = parser.add_argument_group("search (the supernet is small so that it runs on a CPU)")
    search.add_argument("--search-channels", type=positive_int, default=4, help="supernet channels C (default 4)")
    search.add_argument("--search-cells", type=positive_int, default=3,
                        help="supernet cells, reductions at 1/3 and 2/3 of the depth (default 3)")
    search.add_argument("--search-images", type=positive_int, default=None,
                        help="search on a seeded subset of this many images (default: the whole training split)")
    search.add_argument("--batch-size", type=positive_int, default=128, help="search images per step (default 128)")
    search.add_argument("--warmup-epochs", type=non_negative_int, default=1,
                        help="weight-only epochs first (default 1)")
    search.add_argument("--epochs", type=positive_int, default=1,
                        help="joint epochs before the architecture update (default 1)")
    search.add_argument("--lambda", dest="lambda_", type=positive_float, default=None,
                        help="BayesNAS sparsity weight lambda (default 0.01)")
    search.add_argument("--curvature-batches", type=positive_int, default=2,
                        help="BayesNAS: last training batches the switch curvature is computed on (default 2)")
    train = parser.add_argument_group("training from scratch (DARTS evaluation network)")
    train.add_argument("--train-epochs", type=positive_int, default=4, help="epochs (default 4)")
    train.add_argument("--train-channels", type=positive_int, default=8, help="initial channels C (default 8)")
    train.add_argument("--train-cells", type=positive_int, default=5, help="cells (default 5)")
    train.add_argument("--train-batch-size", type=positive_int, default=None, help="batch size (default 96)")
    return parser.parse_args(argv)


# ---- configuration ----------------------------------------------------------------------------------
def run_folder(args, method: str) -> Path:
    """``OUT/<method>-<dataset>-seed<seed>``: runs of other seeds or datasets never overwrite it."""
    return args.out / f"{method}-{dataset_name(args)}-seed{args.seed}"


def dataset_name(args) -> str:
    return args.dataset or ("mnist" if args.data_root is not None else "digits")


def method_names(text: str) -> list[str]:
    """BayesNAS, then the ``--compare`` baselines, checked against the registry before anything trains."""
    from naslib_bayes.optimizers import registry

    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != BAYESNAS]
    for name in names:
        registry.get_spec(name, kind=registry.ONE_SHOT)  # the package's one-line error for a bad name
    return [BAYESNAS, *dict.fromkeys(names)]


def check_data(args) -> dict[str, Any]:
    """Load the dataset once up front, so a bad ``--data-root`` fails before any training.

    Returns the split description (sizes of train / val / test, image shape).
    """
    from naslib_bayes.data import load_dataset

    root = None if args.data_root is None else str(args.data_root)
    return load_dataset(dataset_name(args), root, seed=0).describe()  # the split of SearchConfig.data_seed 0


def search_config(args, optimizer: str):
    """One :class:`SearchConfig`; only the optimizer differs between the methods compared.

    The schedule is shared so every method trains for the same epochs; lambda and the curvature
    batches are BayesNAS's own (the baselines refuse hyper-parameters they do not have).
    """
    from naslib_bayes.training.search import SearchConfig

    hyper = {"warmup_epochs": args.warmup_epochs, "epochs": args.epochs, "rounds": 1}
    if optimizer == BAYESNAS:
        hyper.update(lambda_origin=args.lambda_, curvature_batches=args.curvature_batches)
    return SearchConfig(
        optimizer=optimizer, search_space=SEARCH_SPACE, dataset=dataset_name(args),
        data_root=None if args.data_root is None else str(args.data_root), seed=args.seed,
        channels=args.search_channels, cells=args.search_cells, batch_size=args.batch_size,
        search_images=args.search_images, hyperparameters={k: v for k, v in hyper.items() if v is not None},
    )


def train_config(args, genotype_json: dict[str, Any]):
    """A :class:`TrainConfig` for one genotype; the other settings are ``naslib-bayes train``'s defaults."""
    from naslib_bayes.training.evaluate import TrainConfig

    return TrainConfig(
        arch=json.dumps(genotype_json), dataset=dataset_name(args), epochs=args.train_epochs,
        data_root=None if args.data_root is None else str(args.data_root), seed=args.seed,
        channels=args.train_channels, cells=args.train_cells, batch_size=args.train_batch_size,
    )


# ---- search and training ---------------------------------------------------------------------------
def run_search(cfg) -> dict[str, Any]:
    """Run one search (no checkpoints) and return its ``result.json`` dict."""
    from naslib_bayes.training.search import run_oneshot_search

    print(f"searching: {cfg.optimizer} on {cfg.dataset}, DARTS supernet C={cfg.channels} with {cfg.cells} cells, "
          f"seed {cfg.seed} ...", flush=True)
    result = run_oneshot_search(cfg, out_dir=None)
    last, epochs = result["epoch_stats"][-1], len(result["epoch_stats"])
    print(f"  {epochs} epoch{'s' if epochs > 1 else ''} on {result['search_data']['search_images']} images in "
          f"{result['wall_time_s']:.1f} s; last-epoch train accuracy {last['train_accuracy']:.1f}%")
    return result


def train_from_scratch(args, method: str, genotype_json: dict[str, Any]) -> dict[str, Any]:
    """Train one genotype from scratch and return the training's ``result.json`` dict.

    ``run_training`` checkpoints into a folder; without ``--out`` that folder is temporary.
    """
    from naslib_bayes import results
    from naslib_bayes.training.evaluate import run_training

    cfg = train_config(args, genotype_json)
    print(f"training {method}'s genotype from scratch: {cfg.epochs} epoch{'s' if cfg.epochs > 1 else ''} ...",
          flush=True)
    if args.out is not None:
        folder = run_folder(args, method) / "train"
        result = run_training(cfg, folder)
        results.write_result(folder, result)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = run_training(cfg, folder)
    print(f"  test accuracy {result['test_accuracy']:.2f}% after {sum(result['epoch_times_s']):.1f} s of training")
    return result


def parameter_count(train_result: dict[str, Any]) -> int:
    """Parameters of the trained network without its auxiliary head (DARTS's convention).

    ``run_training`` records them in millions (``params_mb``); the count is an integer.
    """
    return round(train_result["params_mb"] * 1e6)


# ---- the genotype in readable form ---------------------------------------------------------------------
def input_name(node: int) -> str:
    """Cell inputs 0 and 1 are the outputs of the cells two and one back."""
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(node, f"node {node}")


def cell_nodes(genotype_json: dict[str, Any], cell_type: str) -> list[dict[str, Any]]:
    """Per intermediate node (2, 3, ...): its two ``(op, input node)`` pairs, as the genotype lists them."""
    edges = genotype_json[cell_type]
    return [{"node": 2 + i, "inputs": [tuple(edge) for edge in edges[2 * i:2 * i + 2]]}
            for i in range(len(edges) // 2)]


def print_cells(label: str, genotype_json: dict[str, Any]) -> None:
    for cell_type in CELL_TYPES:
        concat = ", ".join(str(n) for n in genotype_json[f"{cell_type}_concat"])
        print(f"\n{label} {cell_type} cell (output: concatenation of nodes {concat})")
        for node in cell_nodes(genotype_json, cell_type):
            terms = " + ".join(f"{op}({input_name(src)})" for op, src in node["inputs"])
            print(f"  node {node['node']} = {terms}")


# ---- the switch table ----------------------------------------------------------------------------------
def switch_tables(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per cell type, per edge: the parent switch, the 7 op switches and the op in the cell.

    Built from ``result["relevance"]`` (one entry per switch group of the last architecture
    update, every group stacked over the supernet's cells of that type). ``C`` there is per
    cell; the rows keep its mean. ``entropy_survivor`` is what the entropy criterion alone
    decided: a switch whose final state came from the repair step was flipped. ``chosen`` is
    the op the derived cell puts on the edge, None when the edge is not in the cell.
    """
    tables: dict[str, dict[int, dict[str, Any]]] = {}
    for entry in result["relevance"]:
        edges = tables.setdefault(entry["cell_type"], {})
        row = edges.setdefault(entry["edge"], {"edge": entry["edge"], "source": entry["source"],
                                               "target": entry["target"], "parent": None, "ops": []})
        stats = {key: entry[key] for key in ("op", "gamma", "entropy", "omega", "kept", "decision", "reason")}
        stats["C_mean"] = _mean(entry["C"])
        stats["entropy_survivor"] = entry["kept"] != (entry["decision"] == "repair")
        if entry["switch"] == "parent":
            row["parent"] = stats
        else:
            row["ops"].append(stats)
    for edges in tables.values():
        for row in edges.values():
            kept = [s["op"] for s in row["ops"] if s["kept"]]
            row["chosen"] = kept[0] if row["parent"]["kept"] and kept else None
    return {cell_type: [edges[e] for e in sorted(edges)] for cell_type, edges in tables.items()}


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def _gamma(value: float | None, mark: str = " ") -> str:
    """A 9-character column: the value, then the mark (so the mark reads as the value's)."""
    return f"{'-':>8} " if value is None else f"{value:>8.4f}{mark}"


def print_switch_table(cell_type: str, rows: list[dict[str, Any]]) -> None:
    from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD

    ops = [s["op"] for s in rows[0]["ops"]]
    print(f"\nBayesNAS {cell_type} cell: gamma of each switch at the last update "
          f"(pruned when gamma <= 1/(2 pi e) = {ENTROPY_THRESHOLD:.4f}; * = op in the cell)")
    print(f"{'edge':<6}{'(edge)':>8} " + "".join(f"{SHORT_OP_NAMES.get(op, op):>8} " for op in ops)
          + f" {'in cell':<14}edge decision")
    for row in rows:
        parent = row["parent"]
        gammas = "".join(_gamma(s["gamma"], "*" if s["op"] == row["chosen"] else " ") for s in row["ops"])
        reason = parent["reason"].removeprefix("repair: ")  # the repair reasons name their decision already
        print(f"{row['target']}<-{row['source']:<3}{_gamma(parent['gamma'])}{gammas} "
              f"{row['chosen'] or '-':<14}{parent['decision']}: {reason}")
    survivors = sum(s["entropy_survivor"] for row in rows for s in row["ops"])
    total = sum(len(row["ops"]) for row in rows)
    gammas = [s["gamma"] for row in rows for s in row["ops"] if s["gamma"] is not None]
    print(f"entropy criterion: {survivors} of {total} op switches survive (op gammas {min(gammas):.4g} .. "
          f"{max(gammas):.4g}); the derivation keeps 2 inputs per node, each with its largest-gamma op")


def print_switch_details(tables: dict[str, list[dict[str, Any]]]) -> None:
    """omega, mean posterior variance C and entropy of the switches that made it into the cells."""
    print("\nswitches in the cells: omega, mean posterior variance C over the supernet's cells, entropy")
    print(f"{'cell':<8}{'edge':<6}{'switch':<15}{'gamma':>9}{'omega':>9}{'mean C':>9}{'entropy':>9}  decision")
    for cell_type, rows in tables.items():
        for row in rows:
            if row["chosen"] is None:
                continue
            for stats in (row["parent"], next(s for s in row["ops"] if s["op"] == row["chosen"])):
                name = "(edge)" if stats["op"] is None else stats["op"]
                print(f"{cell_type:<8}{row['target']}<-{row['source']:<3}{name:<15}{_number(stats['gamma'])}"
                      f"{_number(stats['omega'])}{_number(stats['C_mean'])}{_number(stats['entropy'])}  "
                      f"{stats['decision']}")


def _number(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.4f}"


def print_repair_fraction(result: dict[str, Any]) -> None:
    decisions = result["relevance"]
    repairs = sum(entry["decision"] == "repair" for entry in decisions)
    print(f"\nrepair fraction (switch decisions the derivation changed): {result['repair_fraction']:.3f} "
          f"({repairs} of {len(decisions)})")


# ---- the comparison ----------------------------------------------------------------------------------
def print_summary(runs: dict[str, dict[str, Any]], test_images: int) -> None:
    print(f"\nfrom-scratch training, same network size, epochs and seed; test accuracy on {test_images} "
          "held-out images")
    print(f"{'method':<12}{'search_s':>9}{'train_s':>9}{'params':>10}{'test acc':>10}  parameter-free")
    for name, run in runs.items():
        print(f"{name:<12}{run['search_s']:>9.1f}{run['train_s']:>9.1f}{run['params']:>10,}"
              f"{run['test_accuracy']:>9.2f}%  {'yes' if run['parameter_free'] else 'no'}")


# ---- main -----------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv)
    from naslib_bayes.errors import exit_on_user_error
    from naslib_bayes.threads import torch_threads

    # small networks: one thread is fastest on a busy CPU; bad input: one line on stderr and
    # exit code 2, as the commands do
    with torch_threads(args.threads), exit_on_user_error():
        return run(args)


def run(args) -> dict:
    from naslib_bayes import results as result_files

    # bad input fails here, before minutes of training
    methods = method_names(args.compare)
    data = check_data(args)
    if args.out is not None:  # a file in the way fails here, not when the first result is written
        for name in methods:
            result_files.make_folder(run_folder(args, name), "--out")
    print(f"{data['dataset']}: images {data['image_shape']}, splits {data['sizes']}")

    searches = {name: run_search(search_config(args, name)) for name in methods}
    if args.out is not None:
        for name, result in searches.items():
            result_files.write_result(run_folder(args, name) / "search", result)
    bayesnas = searches[BAYESNAS]
    for name, result in searches.items():
        print_cells(name, result["final_architecture"])
    tables = switch_tables(bayesnas)
    for cell_type in CELL_TYPES:
        if cell_type in tables:
            print_switch_table(cell_type, tables[cell_type])
        else:  # fewer than 3 supernet cells: no reduction cell was searched
            print(f"\n(the supernet has no {cell_type} cell; the genotype copies the other cell type)")
    print_switch_details(tables)
    print_repair_fraction(bayesnas)

    print()
    started = time.perf_counter()
    trained = {name: train_from_scratch(args, name, result["final_architecture"]) for name, result in searches.items()}
    runs = {name: {"genotype": searches[name]["final_architecture"], "search_s": searches[name]["wall_time_s"],
                   "train_s": sum(trained[name]["epoch_times_s"]), "train_wall_s": trained[name]["wall_time_s"],
                   "params": parameter_count(trained[name]), "test_accuracy": trained[name]["test_accuracy"],
                   "parameter_free": searches[name]["parameter_free"]}
            for name in methods}
    print_summary(runs, trained[BAYESNAS]["config"]["test_images"])
    print(f"(training wall time, data loading included: {time.perf_counter() - started:.1f} s)")
    return {
        "dataset": bayesnas["dataset"],
        "seed": args.seed,
        "genotype": bayesnas["final_architecture"],
        "cells": {t: cell_nodes(bayesnas["final_architecture"], t) for t in CELL_TYPES},
        "switches": tables,
        "repair_fraction": bayesnas["repair_fraction"],
        "runs": runs,
        "searches": searches,
        "trained": trained,
    }


if __name__ == "__main__":
    main()
