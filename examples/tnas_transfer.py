"""Transfer NAS from Python: TNAS against no-transfer and naive-transfer baselines on NAS-Bench-201.

What it shows, with the package's public functions:

1. meta-training a TNAS surrogate (``TNAS.prepare``) on the benchmark's datasets *other*
   than the target -- the target's accuracies are never seen -- into ``OUT/surrogate.pt``
   (read back with ``surrogate_io.load``); a later run with the same ``--out`` loads it
   instead of meta-training again, and so can the command line:
   ``naslib-bayes search --optimizer tnas --surrogate OUT ...``;
2. where the target's best cell sits in the surrogate's prior ranking (its posterior mean given
   the meta-training evidence alone), and the initial design TNAS takes from that ranking;
3. one search per method with ``run_blackbox_search`` (the function behind ``naslib-bayes
   search``), same seed and budget: ``tnas``, the model-free transfer baseline
   ``transfer-topk``, random search ``rs`` and, with ``--with-gp-bo``, the same GP and BO loop
   without transfer (``gp-bo``, slower);
4. per method, the incumbent's regret (the target's best accuracy minus the incumbent's) after
   1, 5, 10 and 20 queries, and the query at which the incumbent reached the target's best.

Usage:

    python examples/tnas_transfer.py --benchmark PATH/nats_bench.csv --target cifar100 --out runs/tnas-example
    python examples/tnas_transfer.py --benchmark PATH/nats_bench.csv --target ImageNet16-120 \\
        --budget 50 --with-gp-bo --out runs/tnas-example-in16

``--benchmark`` is any NAS-Bench-201 file naslib-bayes reads (the NATS-Bench CSV export holds all
15,625 cells for cifar10, cifar100 and ImageNet16-120). With the defaults it takes 1-3 minutes on
one CPU core, most of it meta-training (about 40 s of CPU time; none when ``--out`` already holds
the surrogate).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from naslib_bayes.commands.common import seed_int
from naslib_bayes.errors import UserError, exit_on_user_error
from naslib_bayes.experiment import run_blackbox_search
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxProblem
from naslib_bayes.optimizers.tnas import TNAS
from naslib_bayes.predictors import surrogate_io
from naslib_bayes.predictors.meta_train import MetaTrainConfig
from naslib_bayes.results import make_folder
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset, resolve_metrics
from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

REGRET_AT = (1, 5, 10, 20)
BASELINES = ("transfer-topk", "rs")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file or folder")
    parser.add_argument("--target", default="cifar100", help="dataset to search (default cifar100); "
                        "the surrogate is meta-trained on the benchmark's other datasets")
    parser.add_argument("--budget", type=int, default=20, help="queries per method (default 20)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of meta-training and of every search (default 0)")
    parser.add_argument("--out", type=Path, default=Path("runs/tnas-example"),
                        help="folder of surrogate.pt: written by meta-training, reused when present")
    parser.add_argument("--meta-iterations", type=int, default=MetaTrainConfig.iterations,
                        help=f"meta-training iterations at most (default {MetaTrainConfig.iterations}, the package's)")
    parser.add_argument("--with-gp-bo", action="store_true",
                        help="also run gp-bo, the deep-kernel GP BO without transfer (slower)")
    return parser.parse_args(argv)


# ---- the surrogate ----------------------------------------------------------------------------
def surrogate_file(benchmark, target: str, metric: str, args) -> tuple[Path, dict]:
    """``OUT/surrogate.pt``, meta-trained on every dataset but ``target`` unless already there.

    Returns the file and a summary: its meta-training datasets and whether it was trained now.
    """
    path = args.out / surrogate_io.FILE_NAME
    if path.exists():  # a file left by an earlier run: only one of this target, seed and budget
        _, info = surrogate_io.load(path)
        surrogate_io.refuse_other_meta_training(path, info, target, seed=args.seed, iterations=args.meta_iterations)
        meta_trained_now = False
    else:
        info = meta_train_and_save(benchmark, target, metric, args)
        meta_trained_now = True
    if not meta_trained_now:
        print(f"reusing {path} (meta-trained on {', '.join(info['meta_datasets'])})")
    return path, {"path": str(path), "meta_datasets": list(info["meta_datasets"]),
                  "meta_trained_now": meta_trained_now, "meta_iterations": info["meta_train"]["iterations"]}


def meta_train_and_save(benchmark, target: str, metric: str, args) -> dict:
    """Meta-train TNAS's surrogate leave-one-dataset-out into ``--out``; returns its stored info.

    ``TNAS.prepare`` is what a comparison runs for each target and seed: TNAS's own meta-training
    configuration, on a view of the benchmark without the target's column.
    """
    source = benchmark.without(target)
    make_folder(args.out, "--out")  # a file in the way fails here, not when the surrogate is saved
    print(f"meta-training on {', '.join(source.datasets)} (not {target}), "
          f"at most {args.meta_iterations} iterations ...", flush=True)
    start = time.process_time()
    TNAS.prepare(source, target, args.out, metric, seed=args.seed, meta_iterations=args.meta_iterations)
    _, info = surrogate_io.load(args.out)
    log = info["meta_train"]
    print(f"  {time.process_time() - start:.0f} s CPU, {log['iterations']} iterations, best validation NLL "
          f"{log['best_val_loss']:.3f} at iteration {log['best_iteration']} -> {args.out / surrogate_io.FILE_NAME}")
    return info


def prior_ranking(benchmark, target: str, metric: str, surrogate: Path, args) -> dict:
    """The rank (1 = first) of the target's best cell by the surrogate's prior, and the prior's top 5.

    The prior is TNAS's posterior mean over all cells given only the meta-training evidence.
    Binding a TNAS to the problem runs its setup (loading the surrogate, encoding all cells)
    and queries nothing; the target's accuracies are read here only to locate its optimum.
    """
    problem = BlackBoxProblem.from_benchmark(benchmark, target, metric, args.budget)
    tnas = registry.create("tnas", kind=registry.BLACK_BOX, seed=args.seed, surrogate=str(surrogate))
    tnas.adapt_search_space(problem.space, dataset_api=problem)
    prior = tnas.prior_mean()  # (15625,), in the order of tnas.cells
    accuracy = torch.as_tensor([benchmark.query(c, target, metric) for c in tnas.cells], dtype=torch.float64)
    optimum_prior = prior[accuracy == accuracy.max()].max()  # tied optima: the one ranked highest
    top = torch.argsort(prior, descending=True, stable=True)[:5]
    return {"rank": int((prior > optimum_prior).sum()) + 1, "of": len(tnas.cells),
            "top": [nb201.to_string(tnas.cells[i]) for i in top.tolist()]}


# ---- the searches -----------------------------------------------------------------------------
def run_methods(benchmark, target: str, surrogate: Path, args) -> dict[str, dict]:
    """One search per method, same seed and budget: the result dicts of ``run_blackbox_search``."""
    methods = {"tnas": {"surrogate": str(surrogate)}, **{name: {} for name in BASELINES}}
    if args.with_gp_bo:
        methods["gp-bo"] = {}
    notes: set[str] = set()  # the same metric note comes from every run: print it once
    results = {}
    for name, hyperparameters in methods.items():
        start = time.perf_counter()
        results[name] = run_blackbox_search(benchmark, name, target, args.budget, args.seed,
                                            hyperparameters=hyperparameters, warn=notes.add)
        print(f"  {name}: {args.budget} queries in {time.perf_counter() - start:.1f} s", flush=True)
    for note in sorted(notes):
        print(f"note: {note}")
    return results


def summarise(result: dict) -> dict:
    """Queried cells, their accuracies, and the incumbent's regret after each of ``REGRET_AT`` queries.

    Regret is the target's optimum minus the incumbent's report-metric accuracy;
    ``reached_optimum_at`` is the first query at which the incumbent matches the optimum (None: never).
    """
    optimum = result["report_optimum"]
    incumbent = result["incumbent_report_accuracy"]
    reached = next((i for i, value in enumerate(incumbent, start=1) if value >= optimum - 1e-9), None)
    return {
        "architectures": [q["architecture"] for q in result["trajectory"]],
        "accuracies": [q["accuracy"] for q in result["trajectory"]],
        "incumbent": list(incumbent),
        "regret": {k: optimum - incumbent[k - 1] for k in REGRET_AT if k <= len(incumbent)},
        "reached_optimum_at": reached,
    }


# ---- printing ---------------------------------------------------------------------------------
def print_prior(target: str, prior: dict, initial: list[str], benchmark, metric: str) -> None:
    print(f"\nthe surrogate's prior ranks {target}'s best cell {prior['rank']} of {prior['of']:,}")
    print(f"TNAS's initial design (the prior's top {len(initial)}) and its {target} accuracy:")
    for arch in initial:
        print(f"  {benchmark.query(arch, target, metric):6.2f}  {arch}")


def print_table(target: str, best: float, summaries: dict[str, dict], budget: int, seed: int) -> None:
    steps = [k for k in REGRET_AT if k <= budget]
    print(f"\n{target}: regret of the incumbent (best accuracy {best:.2f}), budget {budget}, seed {seed}")
    print(f"{'method':<14}" + "".join(f"{'@' + str(k):>8}" for k in steps) + "  reached best at query")
    for name, row in summaries.items():
        reached = row["reached_optimum_at"]
        print(f"{name:<14}" + "".join(f"{row['regret'][k]:>8.3f}" for k in steps)
              + f"  {reached if reached is not None else f'not within {budget}'}")


# ---- entry point ------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv)
    with exit_on_user_error():  # bad input: one line on stderr and exit code 2, as the commands do
        return run(args)


def run(args) -> dict:
    if args.budget < 1 or args.meta_iterations < 1:
        raise UserError("--budget and --meta-iterations must be at least 1")
    target = canonical_dataset(args.target)
    benchmark = load_benchmark(args.benchmark)
    metric, _, _ = resolve_metrics(benchmark, target, None, None)  # what the searches will query
    if not benchmark.without(target).datasets:
        raise UserError(f"{benchmark.source} holds no dataset besides {target} to transfer from")
    surrogate, surrogate_info = surrogate_file(benchmark, target, metric, args)
    prior = prior_ranking(benchmark, target, metric, surrogate, args)
    print(f"\nsearching {target} with each method (seed {args.seed}, budget {args.budget}):")
    results = run_methods(benchmark, target, surrogate, args)
    initial = results["tnas"]["initial_design"]["architectures"]
    print_prior(target, prior, initial, benchmark, metric)
    summaries = {name: summarise(result) for name, result in results.items()}
    best = results["tnas"]["report_optimum"]
    print_table(target, best, summaries, args.budget, args.seed)
    return {"target": target, "best": best, "metric": metric, "surrogate": surrogate_info,
            "prior_rank_of_optimum": prior["rank"], "prior_top": prior["top"], "initial_design": initial,
            "methods": summaries}


if __name__ == "__main__":
    main()
