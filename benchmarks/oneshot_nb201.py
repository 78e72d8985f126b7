"""BayesNAS vs DARTS vs random-cell on the NAS-Bench-201 space: a proxy search on MNIST scored by CIFAR truth.

Every method runs the same one-shot search (same supernet, trainer, search images, epochs,
batch size and SGD weight optimiser) on the MNIST images of the seeded 8,000/2,000 split of
the MNIST test file (the 8,000; the 2,000 are not used), for each seed. Each derived cell is
then looked up in a NAS-Bench-201 table (e.g. the NATS-Bench CSV export) for its CIFAR-10,
CIFAR-100 and ImageNet16-120 test accuracy. No CIFAR image is seen: this measures how well a
cheap MNIST search transfers, not the methods' CIFAR-search results (the published 54.30 for
DARTS comes from a CIFAR-10 search and is not comparable).

Printed: the shared training configuration; per run the method, seed, derived cell, op counts,
benchmark accuracies, search time and mean epoch time, wall clock and CPU time of the process
(BayesNAS: architecture update included); per method the means with 95% t-intervals; BayesNAS's repair fraction; the ratio
of BayesNAS's mean epoch time to DARTS's, paired per seed (same process, interleaved runs);
and the targets.

    python benchmarks/oneshot_nb201.py --data-root MNIST_DIR --benchmark nats_bench.csv [--seeds 5] [--out DIR]

With ``--out`` each run checkpoints in ``DIR/<method>-<seed>/`` and writes its result.json there:
the same command run again continues a killed run from its last checkpoint and reads a finished
one back (a folder holding a run of other settings is refused, naming the setting).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from pathlib import Path

import torch
from scipy import stats

from naslib_bayes import results
from naslib_bayes.commands.common import key_value, positive_float, positive_int
from naslib_bayes.comparison.grid import require_distinct
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
from naslib_bayes.optimizers.darts import DARTS
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark
from naslib_bayes.optimizers import registry
from naslib_bayes.training.oneshot import steps_per_epoch
from naslib_bayes.training.search import SearchConfig, check_search_config, run_oneshot_search

METHODS = ("bayesnas", "darts", "random-cell")
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
SHORT = {"skip_connect": "skip", "nor_conv_1x1": "c1", "nor_conv_3x3": "c3", "avg_pool_3x3": "pool", "none": "none"}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan for fewer than 2 values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def fmt(mean: float, half: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} +- {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True, help="folder with the MNIST IDX files")
    p.add_argument("--benchmark", required=True, help="NAS-Bench-201 table (file or folder) to score cells")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})")
    p.add_argument("--channels", type=positive_int, default=8, help="supernet C (default 8)")
    p.add_argument("--cells", type=positive_int, default=1, help="supernet cells per stage N (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--lambda", dest="lambda_", type=positive_float,
                   help="BayesNAS lambda (default: the optimizer's, 0.01)")
    p.add_argument("--opt", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="extra hyper-parameter for every method (e.g. lr=0.1), repeatable")
    p.add_argument("--out", type=Path, help="also checkpoint each run and write its result.json under "
                                            "DIR/<method>-<seed>/; the same command again resumes")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = one_shot_methods(args.methods)
    bench = load_benchmark(args.benchmark)
    # every derived cell is scored on all three datasets: say before hours of searches, not after
    lacking = [d for d in DATASETS if not bench.has_metric(d, "test_accuracy") or not bench.is_complete(d, "test_accuracy")]
    if lacking:  # refused as a bad argument is: usage line, one error line, exit code 2
        build_parser().error(f"{bench.source} lacks test accuracy of some or all cells on {', '.join(lacking)}; "
                             "this benchmark needs a complete NAS-Bench-201 file (e.g. the NATS-Bench CSV)")
    shared = dict(args.opt)
    # BayesNAS's own lambda, printed with the shared settings whichever method runs first
    bayesnas_lambda = args.lambda_ if args.lambda_ is not None else shared.get("lambda_origin", BayesNAS.defaults["lambda_origin"])
    darts = {key: shared.get(key, default) for key, default in DARTS.defaults.items()}  # its Adam on alpha, as searched
    configs = {(method, seed): run_config(args, method, seed, shared, bayesnas_lambda)
               for seed in range(args.seeds) for method in methods}
    for cfg in configs.values():
        check_search_config(cfg)  # a bad setting is refused before any search, not after the first
    started = time.perf_counter()
    with contextlib.ExitStack() as held:
        if args.out is not None:
            held.enter_context(results.exclusive_use(args.out, "--out"))
        runs = run_all(args, bench, configs, methods_settings(methods, bayesnas_lambda, darts))
    report(runs, methods)
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    return 0


def one_shot_methods(text: str) -> list[str]:
    """The comma-separated one-shot optimizers of ``--methods``, each known and named once."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods names no optimizer")
    for method in methods:
        registry.get_spec(method, kind=registry.ONE_SHOT)
    require_distinct("--methods", methods)  # twice, it would run twice in one folder
    return methods


def run_config(args, method: str, seed: int, shared: dict, bayesnas_lambda) -> SearchConfig:
    """The search settings of one run: the same for every method but BayesNAS's lambda."""
    hyper = dict(shared)
    if method == "bayesnas":
        hyper["lambda_origin"] = bayesnas_lambda
    return SearchConfig(optimizer=method, search_space="nb201", dataset="mnist", data_root=args.data_root,
                        seed=seed, channels=args.channels, cells=args.cells, batch_size=args.batch_size,
                        hyperparameters=hyper)


#: What the search trains on: the count of search images is in the shared-settings line.
MNIST_SEARCH_IMAGES = "its training files where present, else 8,000 of the seeded 8,000/2,000 split of the test file"


def run_all(args, bench, configs: dict, own_settings: list[str]) -> list[dict]:
    """Run (or, with ``--out``, resume or read back) every search, printing a line per run
    (``own_settings``: the settings of single methods, from :func:`methods_settings`)."""
    runs: list[dict] = []
    print(f"# one-shot NB201 benchmark: search on MNIST ({MNIST_SEARCH_IMAGES}), cells scored by {bench.source}",
          flush=True)
    for (method, seed), cfg in configs.items():
        folder = None if args.out is None else args.out / f"{method}-{seed}"
        result = run_oneshot_search(cfg, out_dir=folder, resume=folder is not None, benchmark=bench)
        result["search_time_s"] = result["wall_time_s"]  # a resumed run's earlier processes included
        if folder is not None:
            results.write_result(folder, result)
        if not runs:
            print_shared_settings(result, own_settings, darts_runs=any(m == "darts" for m, _ in configs))
        runs.append(result)
        print_run(result)
    return runs


def methods_settings(methods: list[str], bayesnas_lambda, darts: dict) -> list[str]:
    """The settings of DARTS and BayesNAS that the other methods do not share, for those that run."""
    own = []
    if "darts" in methods:
        own.append(f"DARTS: same weight optimiser on half the images, Adam(lr {darts['arch_lr']:g}, betas "
                   f"({darts['arch_beta1']:g}, {darts['arch_beta2']:g}), wd {darts['arch_weight_decay']:g}) "
                   "on alpha with the other half")
    if "bayesnas" in methods:
        own.append(f"BayesNAS: lambda {bayesnas_lambda}, switches in the SGD optimiser without weight decay")
    return own


def print_shared_settings(result: dict, own_settings: list[str], darts_runs: bool) -> None:
    """The training settings every run shares, read from the first run's record, the settings of
    single methods (``own_settings``) and the table's head."""
    c = result["config"]
    oc = c["optimizer_config"]
    # the first run's own steps are DARTS's when it runs first: give both splits' steps
    images = result["search_data"]["search_images"]
    steps_all, steps_half = (steps_per_epoch(images, c["batch_size"], halves) for halves in (False, True))
    darts_steps = f" (DARTS {steps_half}, on each half)" if darts_runs else ""
    print(f"# shared training: {c['lr_schedule']}, weight decay {oc['weight_decay']}, grad clip "
          f"{oc['grad_clip']}, batch {c['batch_size']}, {c['total_epochs']} epochs "
          f"({oc['warmup_epochs']} warm-up + {oc['rounds']} x {oc['epochs']}), {steps_all} "
          f"steps/epoch{darts_steps}, augmentation {c['augmentation']}, supernet C={c['channels']} N={c['cells']}, "
          f"{result['search_data']['search_images']} search images, {torch.get_num_threads()} thread(s)",
          flush=True)
    if own_settings:
        print("# " + "; ".join(own_settings), flush=True)
    print(f"{'method':<12} {'seed':>4}  {'cell':<88} {'ops':<28} {'C10':>6} {'C100':>6} {'IN16':>6} "
          f"{'search_s':>8} {'epoch_s':>7} {'cpu_s':>6}", flush=True)


def print_run(result: dict) -> None:
    """One run's line: its cell, op counts, benchmark accuracies and times."""
    method, seed = result["optimizer"], result["seed"]
    cell = result["final_architecture"]
    counts = " ".join(f"{SHORT[k]}:{v}" for k, v in result["op_counts"].items() if v)
    acc = result["benchmark_accuracy"]
    mean_epoch = statistics.fmean(result["epoch_times_s"])
    mean_cpu = statistics.fmean(result["epoch_cpu_times_s"])
    print(f"{method:<12} {seed:>4}  {cell:<88} {counts:<28} {acc['cifar10']:6.2f} {acc['cifar100']:6.2f} "
          f"{acc['ImageNet16-120']:6.2f} {result['search_time_s']:8.1f} {mean_epoch:7.1f} {mean_cpu:6.1f}", flush=True)


def report(runs: list[dict], methods: list[str]) -> None:
    """Per-method means with 95% t-intervals, BayesNAS's diagnostics, the epoch-time ratio and the targets."""
    print()
    print(f"{'method':<12} {'CIFAR-10':>16} {'CIFAR-100':>16} {'ImageNet16-120':>16} {'search_s':>14} "
          f"{'param-free':>10}")
    by_method = {m: [r for r in runs if r["optimizer"] == m] for m in methods}
    means = {}
    for method, rs in by_method.items():
        cols = [interval([r["benchmark_accuracy"][d] for r in rs]) for d in DATASETS]
        means[method] = cols[0][0]
        search = interval([r["search_time_s"] for r in rs])
        free = sum(r["parameter_free"] for r in rs)
        print(f"{method:<12} {fmt(*cols[0]):>16} {fmt(*cols[1]):>16} {fmt(*cols[2]):>16} {fmt(*search, 1):>14} "
              f"{free:>4}/{len(rs)}")
    print("(means over seeds +- half-width of the 95% t-interval)")
    bayes, darts = by_method.get("bayesnas", []), by_method.get("darts", [])
    if bayes:
        repair = interval([r["repair_fraction"] for r in bayes])
        print(f"BayesNAS repair fraction (switch decisions changed by the derivation): {fmt(*repair, 3)}")
        upd = interval([statistics.fmean(r["architecture_update_times_s"]) for r in bayes])
        print(f"BayesNAS architecture update time: {fmt(*upd, 1)} s")
        pruned = [sum(e["gamma"] is not None and e["entropy"] is not None and e["entropy"] <= 0 or e["gamma"] == 0
                      for e in r["relevance"] if e["op"] is not None) for r in bayes]
        gammas = [e["gamma"] for r in bayes for e in r["relevance"] if e["op"] is not None and e["gamma"] is not None]
        lam = bayes[0]["config"]["optimizer_config"]["lambda_child"]
        curv = statistics.fmean(r["architecture_updates"][-1]["mean_curvature"]["normal"][1] for r in bayes)
        print(f"BayesNAS entropy criterion: {statistics.fmean(pruned):.1f} of 24 op switches pruned per run on "
              f"average; op gammas {min(gammas):.3g} .. {max(gammas):.3g} (median {statistics.median(gammas):.3g}, "
              f"threshold 1/(2 pi e) = 0.0585); mean op-switch curvature H = {curv:.3g}, H/lambda = {curv / lam:.3g}")
    ratio = None
    if bayes and darts:
        paired = [statistics.fmean(b["epoch_times_s"]) / statistics.fmean(d["epoch_times_s"])
                  for b, d in zip(sorted(bayes, key=lambda r: r["seed"]), sorted(darts, key=lambda r: r["seed"]))]
        ratio = interval(paired)
        pooled = (statistics.fmean(t for r in bayes for t in r["epoch_times_s"])
                  / statistics.fmean(t for r in darts for t in r["epoch_times_s"]))
        print(f"epoch time BayesNAS / DARTS (update included), wall clock: {fmt(*ratio, 3)} paired per seed, "
              f"{pooled:.3f} pooled")
        cpu = interval([statistics.fmean(b["epoch_cpu_times_s"]) / statistics.fmean(d["epoch_cpu_times_s"])
                        for b, d in zip(sorted(bayes, key=lambda r: r["seed"]), sorted(darts, key=lambda r: r["seed"]))])
        print(f"epoch time BayesNAS / DARTS (update included), CPU time of the process: {fmt(*cpu, 3)} paired per seed")
    print()
    print("targets:")
    if ratio is not None:
        print(f"  BayesNAS epoch time <= 1.3 x DARTS's: {'met' if ratio[0] <= 1.3 else 'MISSED'} "
              f"(wall {ratio[0]:.3f}, CPU {cpu[0]:.3f})")
    if bayes:
        free = [nb201.to_string(nb201.from_string(r["final_architecture"])) for r in bayes if r["parameter_free"]]
        print(f"  no parameter-free BayesNAS cell: {'met' if not free else 'MISSED'} ({len(free)} of {len(bayes)})")
        for other in ("darts", "random-cell"):
            if other in means:
                ok = means["bayesnas"] > means[other]
                print(f"  BayesNAS mean CIFAR-10 above {other}'s: {'met' if ok else 'MISSED'} "
                      f"({means['bayesnas']:.2f} vs {means[other]:.2f})")
        print(f"  aspiration: BayesNAS mean CIFAR-10 >= 93.0: {'met' if means['bayesnas'] >= 93.0 else 'missed'} "
              f"({means['bayesnas']:.2f})")


if __name__ == "__main__":
    from naslib_bayes.comparison.processes import run_script

    run_script(main)
