"""TNAS's deep-kernel GP as a NASLib-style performance predictor, with and without meta-learning.

What it shows: :class:`naslib_bayes.predictors.naslib_predictor.TNASPredictor`, which follows
NASLib's ``Predictor`` contract,

    predictor = TNASPredictor(surrogate="runs/tnas-example")     # or surrogate=None
    predictor.fit(xtrain, ytrain)                                # architectures, accuracies
    mean = predictor.query(xtest)                                # predicted accuracies, (n,)
    mean, std = predictor.predict_dist(xtest)                    # and their std, (n,) each

fitted on ``--train-size`` random cells of the target dataset and scored on ``--test-size``
other cells: Spearman and Kendall rank correlation between predicted and true accuracy, and the
fraction of held-out cells whose true accuracy lies within the predicted mean +- 2 std (the
std of a measured accuracy: the GP's latent uncertainty plus its fitted observation noise; a
calibrated predictor holds about 95% of the cells inside). Two predictors are compared on the
same cells:

* ``meta-learned``: the surrogate meta-trained on the benchmark's *other* datasets (never the
  target): ``--surrogate`` (a ``surrogate.pt`` or its folder, e.g. the one ``tnas_transfer.py``
  or ``naslib-bayes meta-train`` wrote), or else meta-trained here and saved to ``--out``
  (reused by later runs with the same ``--out``);
* ``no meta-learning``: ``TNASPredictor(surrogate=None)``, the same GP with an untrained cell
  encoder, fitted on the same cells.

Architectures are passed as NAS-Bench-201 benchmark strings
(``|nor_conv_3x3~0|+|...|``); op-index tuples such as ``(3, 3, 1, 2, 0, 4)`` work as well.

Usage:

    python examples/tnas_predictor.py --benchmark PATH/nats_bench.csv --target cifar100 --out runs/tnas-predictor
    python examples/tnas_predictor.py --benchmark PATH/nats_bench.csv --surrogate runs/tnas-example --train-size 20

With the defaults it takes about a minute on one CPU core, most of it meta-training (none with
``--surrogate``, or when ``--out`` already holds the surrogate).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import stats

from naslib_bayes.commands.common import seed_int
from naslib_bayes.errors import UserError, exit_on_user_error
from naslib_bayes.optimizers.tnas import TNAS
from naslib_bayes.predictors import surrogate_io
from naslib_bayes.predictors.meta_train import MetaTrainConfig
from naslib_bayes.predictors.naslib_predictor import TNASPredictor
from naslib_bayes.results import make_folder
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset, resolve_metrics
from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

BAND = 2.0  # the predictive band is mean +- BAND * std


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file or folder")
    parser.add_argument("--target", default="cifar100", help="dataset whose accuracies are predicted (default cifar100)")
    parser.add_argument("--train-size", type=int, default=50, help="random cells the predictors are fitted on (default 50)")
    parser.add_argument("--test-size", type=int, default=1000,
                        help="other random cells they are scored on (default 1000)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the cell sample, meta-training and the "
                        "untrained predictor (default 0)")
    parser.add_argument("--surrogate", type=Path, default=None,
                        help="a meta-trained surrogate.pt or its folder (default: meta-train into --out)")
    parser.add_argument("--out", type=Path, default=Path("runs/tnas-predictor-example"),
                        help="folder of the surrogate meta-trained here, reused when present")
    parser.add_argument("--meta-iterations", type=int, default=MetaTrainConfig.iterations,
                        help=f"meta-training iterations at most (default {MetaTrainConfig.iterations}, the package's)")
    return parser.parse_args(argv)


# ---- data -------------------------------------------------------------------------------------
def split_cells(benchmark, target: str, metric: str, train_size: int, test_size: int, seed: int):
    """Disjoint random train and test cells of ``target`` (benchmark strings) with their accuracies.

    Returns ``(xtrain, ytrain, xtest, ytest)``: lists of ``train_size`` / ``test_size`` strings
    and arrays of shape (train_size,) / (test_size,). Only cells the file has a value for are drawn.
    """
    accuracy = benchmark.query_all(target, metric)  # (15625,), benchmark index order
    available = np.flatnonzero(np.isfinite(accuracy))
    if train_size < 2 or test_size < 2 or train_size + test_size > available.size:
        raise UserError(f"--train-size and --test-size must be at least 2 and together at most {available.size}, "
                        f"the cells with a {target} {metric}")
    chosen = np.random.default_rng(seed).permutation(available)[: train_size + test_size]
    train, test = chosen[:train_size], chosen[train_size:]
    return arch_strings(benchmark, train), accuracy[train], arch_strings(benchmark, test), accuracy[test]


def arch_strings(benchmark, indices: np.ndarray) -> list[str]:
    """Benchmark strings of the cells at ``indices`` (benchmark index order)."""
    return [nb201.to_string(benchmark.cell(int(i))) for i in indices]


def surrogate_path(benchmark, target: str, metric: str, args) -> tuple[Path, list[str]]:
    """``--surrogate``, or ``OUT/surrogate.pt`` meta-trained on every dataset but ``target`` unless there.

    Returns the file and its meta-training datasets; a surrogate that has seen the target is refused.
    """
    path = surrogate_io.resolve(args.surrogate) if args.surrogate is not None else args.out / surrogate_io.FILE_NAME
    if path.exists() or args.surrogate is not None:  # a missing --surrogate is load()'s one-line error
        _, info = surrogate_io.load(path)
        # a given --surrogate is the user's choice; one left in --out must be of this seed and budget
        expected = {} if args.surrogate is not None else {"seed": args.seed, "iterations": args.meta_iterations}
        option = "--surrogate" if args.surrogate is not None else "--out"
        surrogate_io.refuse_other_meta_training(path, info, target, option, **expected)
        print(f"using {path} (meta-trained on {', '.join(info['meta_datasets'])})")
    else:
        info = meta_train_and_save(benchmark, target, metric, args)
    return path, list(info["meta_datasets"])


def meta_train_and_save(benchmark, target: str, metric: str, args) -> dict:
    """Meta-train TNAS's surrogate leave-one-dataset-out into ``--out`` (``TNAS.prepare``); returns its info."""
    source = benchmark.without(target)
    if not source.datasets:
        raise UserError(f"{benchmark.source} holds no dataset besides {target} to meta-train on")
    make_folder(args.out, "--out")  # a file in the way fails here, not when the surrogate is saved
    print(f"meta-training on {', '.join(source.datasets)} (not {target}), "
          f"at most {args.meta_iterations} iterations ...", flush=True)
    start = time.process_time()
    TNAS.prepare(source, target, args.out, metric, seed=args.seed, meta_iterations=args.meta_iterations)
    _, info = surrogate_io.load(args.out)
    print(f"  {time.process_time() - start:.0f} s CPU, {info['meta_train']['iterations']} iterations "
          f"-> {args.out / surrogate_io.FILE_NAME}")
    return info


# ---- fitting and scoring ----------------------------------------------------------------------
def evaluate(predictor: TNASPredictor, xtrain, ytrain, xtest, ytest: np.ndarray) -> dict:
    """Fit on (xtrain, ytrain), predict xtest; rank correlations and +-2 std coverage against ytest (n,)."""
    start = time.process_time()
    loss = predictor.fit(xtrain, ytrain)
    prediction = predictor.query(xtest)  # (n,): what NASLib's code calls
    mean, std = predictor.predict_dist(xtest)  # (n,), (n,)
    cpu_s = time.process_time() - start
    return {
        "query": prediction, "mean": mean, "std": std, "fit_loss": loss, "cpu_s": cpu_s,
        "spearman": float(stats.spearmanr(prediction, ytest).statistic),
        "kendall": float(stats.kendalltau(prediction, ytest).statistic),
        "coverage": float(np.mean(np.abs(ytest - mean) <= BAND * std)),
    }


def print_table(target: str, metric: str, scores: dict[str, dict], n_train: int, n_test: int) -> None:
    print(f"\n{target} {metric}: fitted on {n_train} random cells, scored on {n_test} other cells")
    print(f"{'predictor':<18}{'Spearman':>9}{'Kendall':>9}{'in +-2 std':>12}{'mean std':>10}{'CPU s':>7}")
    for name, row in scores.items():
        print(f"{name:<18}{row['spearman']:>9.3f}{row['kendall']:>9.3f}{row['coverage']:>12.1%}"
              f"{float(np.mean(row['std'])):>10.2f}{row['cpu_s']:>7.1f}")


# ---- entry point ------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv)
    with exit_on_user_error():  # bad input: one line on stderr and exit code 2, as the commands do
        return run(args)


def run(args) -> dict:
    if args.meta_iterations < 1:
        raise UserError("--meta-iterations must be at least 1")
    target = canonical_dataset(args.target)
    benchmark = load_benchmark(args.benchmark)
    metric, _, _ = resolve_metrics(benchmark, target, None, None)  # the metric a search would use
    xtrain, ytrain, xtest, ytest = split_cells(benchmark, target, metric, args.train_size, args.test_size, args.seed)
    surrogate, meta_datasets = surrogate_path(benchmark, target, metric, args)
    predictors = {
        "meta-learned": TNASPredictor(surrogate=surrogate),
        "no meta-learning": TNASPredictor(surrogate=None, seed=args.seed),
    }
    scores = {name: evaluate(p, xtrain, ytrain, xtest, ytest) for name, p in predictors.items()}
    print_table(target, metric, scores, len(xtrain), len(xtest))
    return {"target": target, "metric": metric, "surrogate": str(surrogate), "meta_datasets": meta_datasets,
            "xtrain": xtrain, "ytrain": ytrain, "xtest": xtest, "ytest": ytest, "predictors": scores}


if __name__ == "__main__":
    main()
