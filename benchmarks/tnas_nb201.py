"""TNAS on NAS-Bench-201, leave one dataset out: meta-train on two datasets, search the third.

For each target dataset and seed this script meta-trains a surrogate on the other datasets
(cached under ``--cache``), then runs

* ``tnas``                 the default optimizer (initial design k=5, then BO);
* ``tnas k=1``             the same with an initial design of one cell;
* ``tnas init-only``       the surrogate's ranking alone (no fitting to the target);
* ``tnas no-prior``        plain EI after the initial design (the paper's loop, no pi-BO weight);
* ``transfer-topk``        cells by mean standardised accuracy on the other datasets;
* ``gp-bo``                the deep-kernel GP BO from scratch on the target (no transfer);

and prints, per target and method, the median number of queries to reach the dataset's best
test accuracy (either of tied cells counts; a run that never reaches it counts as budget+1),
the mean regret after 5, 10 and 20 queries, the number of distinct trajectories over the seeds,
and the timings (encoding all cells, one BO iteration, meta-training).

Usage:
    python benchmarks/tnas_nb201.py --benchmark PATH/nats_bench.csv --seeds 20 --budget 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# Use the checkout this script belongs to, whichever naslib-bayes is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = {
    "tnas": ("tnas", {}),
    "tnas k=1": ("tnas", {"initial_design": 1}),
    "tnas init-only": ("tnas", {"initial_design_only": True}),
    "tnas no-prior": ("tnas", {"prior_beta": 0}),
    "transfer-topk": ("transfer-topk", {}),
    "gp-bo": ("gp-bo", {}),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file (e.g. nats_bench.csv)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    parser.add_argument("--budget", type=int, default=50, help="queries per run (default 50)")
    parser.add_argument("--datasets", default="cifar10,cifar100,ImageNet16-120", help="target datasets")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    parser.add_argument("--surrogate-seeds", type=int, default=None,
                        help="meta-train this many surrogates per target and give seed s the one of seed s mod N "
                             "(default: one per seed)")
    parser.add_argument("--cache", type=Path, default=Path("runs/tnas_nb201"),
                        help="folder for surrogates and per-run results (reused when present)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (each single-threaded)")
    return parser.parse_args(argv)


# ---- work units (run in worker processes) ------------------------------------------------------
def meta_train_unit(benchmark_path: str, target: str, seed: int, out: str) -> dict:
    """Meta-train on every dataset but ``target``; returns timing (cached in ``out``)."""
    out_dir = Path(out)
    done = out_dir / "meta.json"
    if done.exists():
        return json.loads(done.read_text())
    import torch

    from naslib_bayes.predictors import surrogate_io
    from naslib_bayes.predictors.meta_train import MetaTrainConfig, meta_datasets_from_benchmark, meta_train
    from naslib_bayes.predictors.surrogate import SurrogateConfig
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    torch.set_num_threads(1)
    benchmark = load_benchmark(benchmark_path)
    source = benchmark.without(target)
    start, cpu = time.perf_counter(), time.process_time()
    surrogate, log = meta_train(meta_datasets_from_benchmark(source, source.datasets), SurrogateConfig(),
                                MetaTrainConfig(), seed=seed)
    record = {"target": target, "seed": seed, "meta_datasets": list(source.datasets),
              "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
              "iterations": log.iterations, "best_iteration": log.best_iteration, "best_val_loss": log.best_val_loss}
    out_dir.mkdir(parents=True, exist_ok=True)
    surrogate_io.save(surrogate, out_dir / "surrogate.pt", {"meta_datasets": list(source.datasets), "seed": seed,
                                                            "meta_train": log.to_dict()})
    done.write_text(json.dumps(record))
    return record


def search_unit(benchmark_path: str, target: str, method: str, seed: int, budget: int, surrogate: str | None,
                out: str) -> dict:
    """One search; returns the accuracies queried and the timings (cached in ``out``)."""
    path = Path(out)
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from naslib_bayes.experiment import run_blackbox_search
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    torch.set_num_threads(1)
    optimizer, hyperparameters = METHODS[method]
    hyperparameters = dict(hyperparameters)
    if optimizer == "tnas":
        hyperparameters["surrogate"] = surrogate
    benchmark = load_benchmark(benchmark_path)
    result = run_blackbox_search(benchmark, optimizer, target, budget, seed, hyperparameters=hyperparameters)
    record = {"target": target, "method": method, "seed": seed,
              "accuracies": [t["accuracy"] for t in result["trajectory"]],
              "architectures": [t["architecture"] for t in result["trajectory"]],
              "timing": result.get("timing"), "wall_s": result["wall_time_s"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


# ---- metrics -------------------------------------------------------------------------------------
def queries_to_best(accuracies: list[float], best: float, budget: int) -> int:
    """1-based index of the first query reaching ``best`` (budget + 1 if none does)."""
    for i, value in enumerate(accuracies, start=1):
        if value is not None and value >= best - 1e-9:
            return i
    return budget + 1


def regret_after(accuracies: list[float], best: float, k: int) -> float:
    seen = [v for v in accuracies[:k] if v is not None]
    return best - max(seen) if seen else float("nan")


def summarise(records: list[dict], best: float, budget: int) -> dict:
    q = [queries_to_best(r["accuracies"], best, budget) for r in records]
    return {
        "median_queries": float(np.median(q)),
        "queries": q,
        "regret": {k: float(np.mean([regret_after(r["accuracies"], best, k) for r in records])) for k in (5, 10, 20)},
        "final_regret": float(np.mean([regret_after(r["accuracies"], best, budget) for r in records])),
        "distinct": len({tuple(r["architectures"]) for r in records}),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    benchmark = load_benchmark(args.benchmark)
    targets = [canonical_dataset(d) for d in args.datasets.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    seeds = list(range(args.seeds))
    n_surrogates = args.surrogate_seeds or args.seeds
    path = str(args.benchmark)
    needs_surrogate = any(METHODS[m][0] == "tnas" for m in methods)
    started = time.perf_counter()

    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        meta = {}
        if needs_surrogate:
            futures = {(t, s): pool.submit(meta_train_unit, path, t, s, str(args.cache / "surrogates" / t / f"seed{s}"))
                       for t in targets for s in range(min(n_surrogates, args.seeds))}
            meta = {key: f.result() for key, f in futures.items()}
            _progress(f"meta-training done ({len(meta)} surrogates)", started)
        futures = {}
        for t in targets:
            for m in methods:
                for s in seeds:
                    surrogate = str(args.cache / "surrogates" / t / f"seed{s % n_surrogates}" / "surrogate.pt")
                    out = str(args.cache / "runs" / f"budget{args.budget}" / t / m.replace(" ", "_").replace("=", "") / f"seed{s}.json")
                    futures[(t, m, s)] = pool.submit(search_unit, path, t, m, s, args.budget, surrogate, out)
        runs = {key: f.result() for key, f in futures.items()}
    _progress("searches done", started)
    print_report(benchmark, targets, methods, seeds, runs, meta, args)
    return 0


def _progress(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {message}", file=sys.stderr, flush=True)


def print_report(benchmark, targets, methods, seeds, runs, meta, args) -> None:
    print(f"TNAS on NAS-Bench-201 ({args.benchmark.name}), leave one dataset out: {len(seeds)} seeds, budget {args.budget}")
    if meta:
        per_target = {t: len({k[1] for k in meta if k[0] == t}) for t in targets}
        print(f"surrogates: {', '.join(f'{t}: {n}' for t, n in per_target.items())} meta-trained "
              f"(seed s uses surrogate s mod {args.surrogate_seeds or args.seeds})")
    header = f"{'target':<15} {'method':<15} {'median q*':>9} {'regret@5':>9} {'@10':>7} {'@20':>7} {'@' + str(args.budget):>7} {'distinct':>8}"
    print(header)
    print("-" * len(header))
    for t in targets:
        best = benchmark.best(t)
        for m in methods:
            summary = summarise([runs[(t, m, s)] for s in seeds], best, args.budget)
            r = summary["regret"]
            print(f"{t:<15} {m:<15} {summary['median_queries']:>9.1f} {r[5]:>9.3f} {r[10]:>7.3f} {r[20]:>7.3f} "
                  f"{summary['final_regret']:>7.3f} {summary['distinct']:>5}/{len(seeds)}")
        if "tnas" in methods:
            per_seed = summarise([runs[(t, "tnas", s)] for s in seeds], best, args.budget)["queries"]
            print(f"{'':<15} best {best:.2f}; tnas queries to it per seed: {per_seed}")
    print_timings(targets, methods, seeds, runs, meta)


def print_timings(targets, methods, seeds, runs, meta) -> None:
    tnas = [r for (t, m, s), r in runs.items() if m == "tnas" and r.get("timing")]
    if tnas:
        enc = [r["timing"]["encode_all_cells_s"] for r in tnas]
        enc_cpu = [r["timing"].get("encode_all_cells_cpu_s") for r in tnas]
        it = [r["timing"]["bo_iteration_mean_s"] for r in tnas if r["timing"]["bo_iteration_mean_s"] is not None]
        it_max = [r["timing"]["bo_iteration_max_s"] for r in tnas if r["timing"]["bo_iteration_max_s"] is not None]
        it_cpu = [r["timing"].get("bo_iteration_mean_cpu_s") for r in tnas if r["timing"].get("bo_iteration_mean_cpu_s") is not None]
        print(f"encode all 15,625 cells (psi, hidden 64): median {np.median(enc):.2f} s wall, "
              f"{np.median([e for e in enc_cpu if e is not None]):.2f} s CPU")
        print(f"one TNAS BO iteration (fine-tune 50 steps + EI over all cells): mean {np.mean(it):.3f} s wall "
              f"(worst run's max {np.max(it_max):.2f} s), {np.mean(it_cpu):.3f} s CPU")
    gp = [r for (t, m, s), r in runs.items() if m == "gp-bo" and r.get("timing")]
    it = [r["timing"]["bo_iteration_mean_s"] for r in gp if r["timing"]["bo_iteration_mean_s"] is not None]
    if it:
        print(f"one gp-bo iteration (fit 100 steps from scratch + EI): mean {np.mean(it):.3f} s wall")
    if meta:
        wall = [m["wall_s"] for m in meta.values()]
        cpu = [m["cpu_s"] for m in meta.values()]
        its = [m["iterations"] for m in meta.values()]
        print(f"meta-training: median {np.median(wall):.0f} s wall (max {np.max(wall):.0f} s), median {np.median(cpu):.0f} s CPU, "
              f"{np.median(its):.0f} iterations (early stopping)")


if __name__ == "__main__":
    sys.exit(main())
