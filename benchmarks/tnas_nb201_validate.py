"""Choose TNAS's BO settings without the test targets: meta-train on ONE dataset, search another.

The leave-one-dataset-out benchmark (``tnas_nb201.py``) meta-trains on two of cifar10, cifar100
and ImageNet16-120 and searches the third. A setting chosen by its results there has seen the
targets. This script measures settings on the meta-training side instead: a surrogate
meta-trained on one dataset A searches another dataset B, for every ordered pair. For the test
target T, only the two pairs with neither A nor B equal to T may inform a choice, e.g. for
ImageNet16-120: cifar10->cifar100 and cifar100->cifar10.

It prints, per pair and method, the median number of queries to B's best test accuracy and the
mean regret after 5, 10 and 20 queries; then, per test target, the sums over its two pairs of
the mean regret@10 and of the median queries (the selection criterion documented in
docs/tnas.md). Seed s searches with the surrogate of seed s; everything is cached in --cache.

Usage:
    python benchmarks/tnas_nb201_validate.py --benchmark PATH/nats_bench.csv --seeds 5 \\
        --methods "tnas,tnas prior-units" --jobs 2

Methods that change meta-training (``tnas robust``) use surrogates of their own, cached in
``surrogates_<setting>`` beside ``surrogates``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tnas_nb201  # noqa: E402  (the benchmark's methods, search unit and metrics)

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")


def parse_args(argv=None):
    from naslib_bayes.commands.common import non_negative_int, positive_int  # light: no torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file (e.g. nats_bench.csv)")
    parser.add_argument("--seeds", type=positive_int, default=5, help="how many seeds, one surrogate each (default 5)")
    parser.add_argument("--first-seed", type=non_negative_int, default=0,
                        help="seeds FIRST..FIRST+N-1 (default 0): fresh seeds judge a setting against a default "
                             "that was itself chosen on the lower ones")
    parser.add_argument("--budget", type=positive_int, default=50, help="queries per run (default 50; pi-BO's beta depends on it)")
    parser.add_argument("--methods", default="tnas", help="comma-separated methods of tnas_nb201.py (tnas variants)")
    parser.add_argument("--cache", type=Path, default=Path("runs/tnas_nb201_validate"), help="folder for surrogates and runs")
    parser.add_argument("--jobs", type=positive_int, default=1, help="parallel worker processes (each single-threaded)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    from naslib_bayes.comparison.grid import require_distinct
    from naslib_bayes.comparison.records import benchmark_fingerprint
    from naslib_bayes.errors import UserError

    benchmark = load_benchmark(args.benchmark)
    fingerprint = benchmark_fingerprint(benchmark)  # once, not per run
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in tnas_nb201.METHODS or tnas_nb201.METHODS[m][0] != "tnas"]
    if unknown:
        raise UserError(f"--methods: {unknown[0]!r} is not a tnas method of tnas_nb201.py")
    require_distinct("--methods", methods)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    path = str(args.benchmark)
    pairs = list(itertools.permutations(DATASETS, 2))
    # Methods that change meta-training (e.g. its output transform) get surrogates of their own.
    folders = {tnas_nb201.surrogate_folder(m): tnas_nb201.meta_settings(m) for m in methods}
    from naslib_bayes.comparison.processes import worker_pool  # torch: not for --help

    with tnas_nb201.exclusive_use(args.cache, "--cache"), worker_pool(max(1, args.jobs)) as pool:
        meta = [pool.submit(tnas_nb201.meta_train_unit, path, tuple(o for o in DATASETS if o != d), s,  # d alone
                            str(args.cache / folder / d / f"seed{s}"), settings, fingerprint)
                for folder, settings in folders.items() for d in DATASETS for s in seeds]
        for future in meta:
            future.result()
        runs = {(a, b, m, s): pool.submit(tnas_nb201.search_unit, path, b, m, s, args.budget,
                                          str(args.cache / tnas_nb201.surrogate_folder(m) / a / f"seed{s}" / "surrogate.pt"),
                                          str(args.cache / "runs" / f"budget{args.budget}" / f"{a}_to_{b}"
                                              / tnas_nb201.method_folder(m) / f"seed{s}.json"), fingerprint)
                for a, b in pairs for m in methods for s in seeds}
        records = {key: future.result() for key, future in runs.items()}
    table: dict[tuple[str, str, str], dict] = {}
    print(f"meta-train on A, search B: seeds {seeds.start}-{seeds.stop - 1} (one surrogate each), budget {args.budget}")
    print(f"{'A -> B':<28} {'method':<16} {'median q*':>9} {'regret@5':>9} {'@10':>7} {'@20':>7}  q* per seed")
    for a, b in pairs:
        for m in methods:
            best = benchmark.best(b, tnas_nb201.METRIC)
            summary = tnas_nb201.summarise([records[(a, b, m, s)] for s in seeds], best, args.budget)
            table[(a, b, m)] = summary
            r = summary["regret"]
            print(f"{a + ' -> ' + b:<28} {m:<16} {summary['median_queries']:>9.1f} {r[5]:>9.3f} {r[10]:>7.3f} {r[20]:>7.3f}  "
                  f"{summary['queries']}", flush=True)
    print("\nper test target, over the two pairs without it: sum of regret@10, sum of median q*")
    for t in DATASETS:
        allowed = [(a, b) for a, b in pairs if t not in (a, b)]
        cells = []
        for m in methods:
            regret = sum(table[(a, b, m)]["regret"][10] for a, b in allowed)
            queries = sum(table[(a, b, m)]["median_queries"] for a, b in allowed)
            cells.append(f"{m}: {regret:.3f}, {queries:.1f}")
        print(f"{t:<15} ({', '.join(f'{a}->{b}' for a, b in allowed)})  " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    from naslib_bayes.comparison.processes import run_script

    run_script(main)
