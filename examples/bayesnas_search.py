"""BayesNAS one-shot search on the NAS-Bench-201 cell space, run from Python.

What it shows: how to configure and run a BayesNAS search with
:func:`naslib_bayes.training.search.run_oneshot_search` (the function behind
``naslib-bayes search``), and how to read what it found: the derived cell, and per edge the
switch statistics the derivation decided on -- the HARD prior variance gamma of every candidate
op, its entropy ``0.5 log(2 pi e gamma)`` (pruned when <= 0), omega, the posterior variance C,
whether it was kept, and whether the entropy criterion or the repair step decided that.
Optionally the derived cell is looked up in a NAS-Bench-201 table (accuracy on every dataset of
the file and its rank among all 15,625 cells, no training), and first-order DARTS and the
random-cell baseline run on the same supernet, seed and search images for a fair head-to-head.

The search sees scikit-learn's bundled ``digits`` images by default (nothing to download), or
MNIST from ``--data-root DIR`` (its IDX files, gzipped or not). Defaults match
``naslib-bayes search --optimizer bayesnas --dataset digits``: about 10-20 s on one CPU core.

Usage:

    python examples/bayesnas_search.py
    python examples/bayesnas_search.py --benchmark PATH/nats_bench.csv --compare darts
    python examples/bayesnas_search.py --data-root PATH/mnist --search-images 2000 \\
        --benchmark PATH/nats_bench.csv --compare darts,random-cell --seed 1
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

BAYESNAS = "bayesnas"
REPORT_METRIC = "test_accuracy"


def parse_args(argv=None) -> argparse.Namespace:
    from naslib_bayes.commands.common import seed_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default=None,
                        help="images the search sees (default: mnist with --data-root, else digits)")
    parser.add_argument("--data-root", type=Path, help="folder of MNIST's IDX files")
    parser.add_argument("--benchmark", type=Path,
                        help="NAS-Bench-201 file or folder: look the derived cells up (accuracy, rank)")
    parser.add_argument("--compare", default="",
                        help="comma-separated one-shot baselines to run on the same supernet and data "
                             "(darts, random-cell; default: none)")
    parser.add_argument("--seed", type=seed_int, default=0, help="search seed (default 0)")
    parser.add_argument("--lambda", dest="lambda_", type=float, default=None,
                        help="BayesNAS sparsity weight lambda (default 0.01)")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="weight-only epochs first (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="joint epochs per round (default 1)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds, each ending in an architecture update (default 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--search-images", type=int, default=None,
                        help="search on a seeded subset of this many images (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return parser.parse_args(argv)


def baseline_names(text: str) -> list[str]:
    """The ``--compare`` list, checked against the registry before anything trains."""
    from naslib_bayes.optimizers import registry

    names = [n.strip() for n in text.split(",") if n.strip() and n.strip() != BAYESNAS]
    for name in names:
        registry.get_spec(name, kind=registry.ONE_SHOT)  # the package's one-line error for a bad name
    return list(dict.fromkeys(names))


def hyperparameters(args, optimizer: str) -> dict[str, Any]:
    """The optimizer's hyper-parameters; None keeps the optimizer's default.

    The schedule is shared so every method trains for the same epochs; lambda is BayesNAS's own
    (the baselines refuse unknown hyper-parameters).
    """
    shared = {"warmup_epochs": args.warmup_epochs, "epochs": args.epochs, "rounds": args.rounds}
    if optimizer == BAYESNAS:
        shared["lambda_origin"] = args.lambda_
    return {k: v for k, v in shared.items() if v is not None}


def search_config(args, optimizer: str):
    """One :class:`SearchConfig`; only the optimizer differs between the methods compared."""
    from naslib_bayes.training.search import SearchConfig

    dataset = args.dataset or ("mnist" if args.data_root is not None else "digits")
    return SearchConfig(
        optimizer=optimizer, search_space="nb201", dataset=dataset,
        data_root=None if args.data_root is None else str(args.data_root), seed=args.seed,
        batch_size=args.batch_size, search_images=args.search_images,
        hyperparameters=hyperparameters(args, optimizer),
    )


def run_search(cfg, benchmark) -> dict[str, Any]:
    """Run one search (no checkpoints written) and return its ``result.json`` dict."""
    from naslib_bayes.training.search import run_oneshot_search

    print(f"searching: {cfg.optimizer} on {cfg.dataset}, seed {cfg.seed} ...", flush=True)
    result = run_oneshot_search(cfg, out_dir=None, benchmark=benchmark)
    last = result["epoch_stats"][-1]
    print(f"  {len(result['epoch_stats'])} epochs on {result['search_data']['search_images']} images in "
          f"{result['wall_time_s']:.1f} s; last-epoch train accuracy {last['train_accuracy']:.1f}%")
    return result


# ---- the switch table ---------------------------------------------------------------------------
def switch_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per edge of the cell: its parent switch, its op switches and the op the derivation chose.

    Built from ``result["relevance"]`` (one entry per switch group of the last architecture
    update). ``C`` there is per cell of the supernet; the table keeps its mean over cells.
    An edge whose parent switch was not kept carries ``none``.
    """
    edges: dict[int, dict[str, Any]] = {}
    for entry in result["relevance"]:
        row = edges.setdefault(entry["edge"], {"edge": entry["edge"], "source": entry["source"],
                                               "target": entry["target"], "parent": None, "ops": []})
        stats = {key: entry[key] for key in ("op", "gamma", "entropy", "omega", "kept", "decision", "reason")}
        stats["C_mean"] = _mean(entry["C"])
        if entry["switch"] == "parent":
            row["parent"] = stats
        else:
            row["ops"].append(stats)
    for row in edges.values():
        kept = [s["op"] for s in row["ops"] if s["kept"]]
        row["chosen"] = kept[0] if row["parent"]["kept"] and kept else "none"
    return [edges[e] for e in sorted(edges)]


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_switch_table(rows: list[dict[str, Any]], repair_fraction: float | None) -> None:
    from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD

    print(f"\nBayesNAS switches of the last update (pruned when gamma <= 1/(2 pi e) = {ENTROPY_THRESHOLD:.4f}; "
          "* = op in the cell)")
    print(f"{'edge':<6}{'switch':<15}{'gamma':>9}{'entropy':>9}{'omega':>9}{'mean C':>9}  {'kept':<5}"
          f"{'decision':<9}reason")
    for row in rows:
        label = f"{row['target']}<-{row['source']}"
        for stats in [row["parent"], *row["ops"]]:
            name = "(edge)" if stats["op"] is None else stats["op"]
            mark = "*" if stats["op"] == row["chosen"] else " "
            print(f"{label:<6}{mark}{name:<14}{_number(stats['gamma'], 9, 4)}{_number(stats['entropy'], 9, 3)}"
                  f"{_number(stats['omega'], 9, 4)}{_number(stats['C_mean'], 9, 4)}  "
                  f"{'yes' if stats['kept'] else 'no':<5}{stats['decision']:<9}{stats['reason']}")
            label = ""
    if repair_fraction is not None:
        print(f"repair fraction (switch decisions the derivation changed): {repair_fraction:.3f}")


# ---- the benchmark lookup -----------------------------------------------------------------------
def benchmark_standing(benchmark, cell: str) -> dict[str, dict[str, float | int]]:
    """Per benchmark dataset: the cell's test accuracy and where it stands among all cells.

    ``rank`` is 1 + the number of cells with a higher accuracy (ties share a rank);
    ``percentile`` is the share of cells with a lower accuracy, in percent. Cells the file
    lacks (NaN) are not counted.
    """
    import numpy as np

    standing = {}
    for dataset in benchmark.datasets:
        if not benchmark.has_metric(dataset, REPORT_METRIC):
            continue
        accuracy = benchmark.query(cell, dataset, REPORT_METRIC)
        values = np.asarray(benchmark.query_all(dataset, REPORT_METRIC))  # (15625,), NaN where absent
        values = values[np.isfinite(values)]
        if math.isnan(accuracy) or values.size == 0:
            standing[dataset] = {"test_accuracy": None, "rank": None, "percentile": None, "cells": int(values.size)}
            continue
        standing[dataset] = {
            "test_accuracy": accuracy,
            "rank": 1 + int((values > accuracy).sum()),
            "percentile": 100.0 * float((values < accuracy).sum()) / values.size,
            "cells": int(values.size),
        }
    return standing


def print_standing(standing: dict[str, dict], source: str) -> None:
    print(f"\nderived cell in {source} ({REPORT_METRIC}; no training, the search never saw these datasets)")
    for dataset, s in standing.items():
        if s["test_accuracy"] is None:
            print(f"  {dataset:<15} not in the file")
            continue
        print(f"  {dataset:<15} {s['test_accuracy']:6.2f}%  rank {s['rank']:>5} of {s['cells']}"
              f"  (better than {s['percentile']:.1f}% of cells)")


def print_comparison(runs: dict[str, dict], datasets: list[str]) -> None:
    """One row per method: its cell and, with a benchmark, accuracy and percentile per dataset."""
    print("\nsame supernet, seed, search images and epochs:")
    width = max(len(run["cell"]) for run in runs.values())
    header = f"{'method':<12}{'search_s':>9}  {'cell':<{width}}"
    print(header + "".join(f"{d:>17}" for d in datasets))
    for name, run in runs.items():
        columns = []
        for dataset in datasets:
            s = (run["benchmark"] or {}).get(dataset, {})
            text = "-" if s.get("test_accuracy") is None else f"{s['test_accuracy']:.2f} (p{s['percentile']:.1f})"
            columns.append(f"{text:>17}")
        print(f"{name:<12}{run['wall_time_s']:>9.1f}  {run['cell']:<{width}}" + "".join(columns))
    if datasets:
        print("(pN: better than N% of the benchmark's cells)")


# ---- main -----------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv)
    from naslib_bayes.errors import exit_on_user_error
    from naslib_bayes.threads import torch_threads

    # small networks: one thread is fastest on a shared CPU; bad input: one line on stderr and
    # exit code 2, as the commands do
    with torch_threads(args.threads), exit_on_user_error():
        return run(args)


def run(args) -> dict:
    from naslib_bayes.errors import UserError
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    # bad input fails here, before minutes of training
    baselines = baseline_names(args.compare)
    benchmark = None if args.benchmark is None else load_benchmark(args.benchmark)
    if benchmark is not None and not any(benchmark.has_metric(d, REPORT_METRIC) for d in benchmark.datasets):
        held = sorted({m for d in benchmark.datasets for m in benchmark.metrics(d)})
        raise UserError(f"{benchmark.source} has no {REPORT_METRIC} for any dataset to rank the derived cell by "
                        f"(it holds {', '.join(held) or 'no metric'})")

    results = {name: run_search(search_config(args, name), benchmark) for name in [BAYESNAS, *baselines]}
    bayesnas = results[BAYESNAS]
    runs = {name: {"cell": r["final_architecture"], "wall_time_s": r["wall_time_s"],
                   "benchmark": None if benchmark is None else benchmark_standing(benchmark, r["final_architecture"])}
            for name, r in results.items()}

    print(f"\nBayesNAS derived cell: {bayesnas['final_architecture']}")
    table = switch_table(bayesnas)
    print_switch_table(table, bayesnas["repair_fraction"])
    if benchmark is not None:
        print_standing(runs[BAYESNAS]["benchmark"], benchmark.source)
    if baselines:
        print_comparison(runs, [] if benchmark is None else list(runs[BAYESNAS]["benchmark"]))
    data_root = "" if args.data_root is None else f" --data-root {args.data_root}"
    print(f"\ntrain it from scratch: naslib-bayes train --arch '{bayesnas['final_architecture']}' "
          f"--dataset {bayesnas['dataset']}{data_root} --epochs 30 --out runs/bayesnas-cell")
    return {
        "dataset": bayesnas["dataset"],
        "seed": args.seed,
        "cell": bayesnas["final_architecture"],
        "edges": table,
        "repair_fraction": bayesnas["repair_fraction"],
        "benchmark": runs[BAYESNAS]["benchmark"],
        "runs": runs,
        "results": results,
    }


if __name__ == "__main__":
    main()
