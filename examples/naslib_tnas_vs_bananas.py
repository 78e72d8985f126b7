"""TNAS against NASLib's own BANANAS, both inside NASLib's Trainer on NAS-Bench-201.

What it shows: naslib-bayes's TNAS as a NASLib-native ``MetaOptimizer``
(:class:`naslib_bayes.integration.tnas.TNASOptimizer`) run side by side with NASLib's
``Bananas`` -- same NASLib config, search space, benchmark queries, Trainer and seeds -- so the
comparison is NASLib's own. The benchmark file is served to NASLib as its ``dataset_api``; TNAS's
surrogate is meta-trained on the benchmark's other datasets (never the target), one per seed, as
``naslib-bayes compare`` does: the seed drives meta-training, and TNAS's search draws nothing at
random, so seeds sharing one surrogate would repeat one trajectory. ``--surrogate FILE`` gives
every seed the same one.

Needs NASLib importable: its ``Develop`` branch on ``PYTHONPATH`` and its runtime dependencies
(``pip install -c constraints.txt -e ".[naslib]"``; see the README). Usage:

    PYTHONPATH=/path/to/NASLib python examples/naslib_tnas_vs_bananas.py \\
        --benchmark PATH/nats_bench.csv --dataset cifar100 --seeds 0,1,2 --budget 30 --out runs/naslib-example

NASLib's BANANAS fits an ensemble of MLPs every few queries: about 1.5 minutes per seed at
budget 30 on one CPU core; TNAS's meta-training takes about 40 s per seed, its 30 queries about
10 s. On cifar100, seeds 0 and 1 (each with its own surrogate, one torch thread), TNAS reached
the best cell at query 2 and query 4 and BANANAS not within 30 queries (mean regret 2.11 after 30).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = """\
search_space: nasbench201
dataset: {dataset}
search:
  epochs: {budget}
  # NASLib's BANANAS defaults (runners/bbo/discrete_config.yaml), kept small for a CPU
  num_init: 10
  k: 10
  num_ensemble: 3
  num_candidates: 50
  num_arches_to_mutate: 2
  predictor_type: bananas
  acq_fn_type: its
  acq_fn_optimization: mutation
  encoding_type: path
"""
OPTIMIZERS = ("tnas", "bananas")
REPORT_AT = (5, 10, 20, 30, 50, 100)


def seed_list(text: str) -> list[int]:
    """``--seeds``: distinct comma-separated seeds (``"3"`` is seed 3, not three seeds)."""
    from naslib_bayes.commands.common import seed_int

    try:
        seeds = [seed_int(s) for s in text.split(",")]
    except argparse.ArgumentTypeError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated seeds such as 0,1,2, got {text!r}")
    return seeds


def parse_args(argv=None) -> argparse.Namespace:
    from naslib_bayes.commands.common import positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 file naslib-bayes reads")
    parser.add_argument("--dataset", default="cifar100", help="target dataset (default cifar100)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--budget", type=positive_int, default=30, help="queries per run (default 30)")
    parser.add_argument("--surrogate", type=Path, default=None,
                        help="a surrogate.pt from `naslib-bayes meta-train` for every seed (default: meta-train "
                             "one per seed here)")
    parser.add_argument("--meta-iterations", type=positive_int, default=None, help="meta-training iterations (default TNAS's)")
    parser.add_argument("--out", type=Path, default=Path("runs/naslib-example"), help="output folder")
    return parser.parse_args(argv)


def naslib_config(args, optimizer: str, seed: int):
    """NASLib's CfgNode for one run: the config above merged onto NASLib's black-box defaults."""
    from naslib_bayes.integration.run import build_config

    config_file = args.out / "config.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(DEFAULT_CONFIG.format(dataset=args.dataset, budget=args.budget))
    return build_config(config_file, args.out / f"{optimizer}-seed{seed}", optimizer=optimizer, seed=seed)


def tnas_surrogate(args, benchmark, seed: int) -> Path:
    """The surrogate TNAS's run with ``seed`` starts from: ``--surrogate``, or meta-trained with
    ``seed`` on the other datasets (kept in ``--out`` and reused by a later invocation)."""
    from naslib_bayes.optimizers.tnas import TNAS
    from naslib_bayes.predictors import surrogate_io

    if args.surrogate is not None:
        _, info = surrogate_io.load(args.surrogate)
        surrogate_io.refuse_other_meta_training(args.surrogate, info, args.dataset, "--surrogate")
        return args.surrogate
    directory = args.out / f"surrogate-{args.dataset}-seed{seed}"  # one per target: it must never see it
    if (directory / "surrogate.pt").exists():
        _, info = surrogate_io.load(directory)
        # without --meta-iterations this run would meta-train with TNAS's default cap: only that one is reused
        iterations = args.meta_iterations if args.meta_iterations is not None else TNAS.defaults["meta_iterations"]
        surrogate_io.refuse_other_meta_training(directory, info, args.dataset, seed=seed, iterations=iterations)
    else:
        settings = {} if args.meta_iterations is None else {"meta_iterations": args.meta_iterations}
        print(f"meta-training TNAS's surrogate for seed {seed} on {', '.join(benchmark.without(args.dataset).datasets)} "
              f"(not {args.dataset}) ...", flush=True)
        TNAS.prepare(benchmark.without(args.dataset), args.dataset, directory, "test_accuracy", seed=seed, **settings)
    return directory


def search(naslib, optimizer_name: str, config, dataset_api, surrogate: Path | None) -> list[float]:
    """One NASLib search; the incumbent's test accuracy after each query, as NASLib's Trainer records it."""
    from naslib_bayes.integration.tnas import TNASOptimizer
    from naslib_bayes.integration.trainer import LoaderTrainer

    naslib.utils.set_seed(config.seed)
    if optimizer_name == "tnas":
        optimizer = TNASOptimizer(config, surrogate=surrogate)
    else:
        optimizer = naslib.optimizers.Bananas(config)
    optimizer.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=dataset_api)
    # NASLib's Trainer; this subclass only refuses to download image data a black-box search never needs
    trainer = LoaderTrainer(optimizer, config, lightweight_output=True)
    trainer.search(resume_from="", summary_writer=None, report_incumbent=True)
    return [float(v) for v in trainer.search_trajectory.test_acc]


def summarise(trajectories: dict[str, list[list[float]]], best: float, budget: int) -> dict[str, dict]:
    """Per optimizer: mean regret of the incumbent at a few query counts, and queries to the optimum."""
    summary = {}
    for name, runs in trajectories.items():
        regret = {t: sum(best - run[t - 1] for run in runs) / len(runs) for t in REPORT_AT if t <= budget}
        to_best = [next((i + 1 for i, v in enumerate(run) if v >= best - 1e-9), budget + 1) for run in runs]
        summary[name] = {"regret": regret, "queries_to_optimum": to_best}
    return summary


def print_summary(summary: dict[str, dict], dataset: str, best: float, budget: int) -> None:
    steps = [t for t in REPORT_AT if t <= budget]
    print(f"\n{dataset}: mean regret of the incumbent (best {best:.2f}), NASLib Trainer, budget {budget}")
    print(f"{'optimizer':<10}" + "".join(f"{'@' + str(t):>8}" for t in steps) + "  queries to optimum per seed")
    for name, row in summary.items():
        reached = [q if q <= budget else f">{budget}" for q in row["queries_to_optimum"]]
        print(f"{name:<10}" + "".join(f"{row['regret'][t]:>8.2f}" for t in steps) + f"  {reached}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    from naslib_bayes.errors import exit_on_user_error

    with exit_on_user_error():  # bad input: one line on stderr and exit code 2, as the commands do
        return run(args)


def run(args) -> dict:
    from naslib_bayes.integration import load_naslib
    from naslib_bayes.integration.dataset_api import naslib_dataset_api
    from naslib_bayes.results import make_folder
    from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    naslib = load_naslib()  # applies naslib-bayes's runtime fixes for NASLib on current Python
    make_folder(args.out, "--out")  # a file in the way: one line, not a traceback from writing config.yaml
    benchmark = load_benchmark(args.benchmark)
    args.dataset = canonical_dataset(args.dataset)
    benchmark.metrics(args.dataset)  # a one-line error if the file lacks the target
    dataset_api = naslib_dataset_api(benchmark, warn=lambda message: print(f"note: {message}"))
    seeds = args.seeds

    def surrogate(name: str, seed: int) -> Path | None:
        return tnas_surrogate(args, benchmark, seed) if name == "tnas" else None

    trajectories = {name: [search(naslib, name, naslib_config(args, name, seed), dataset_api, surrogate(name, seed))
                           for seed in seeds] for name in OPTIMIZERS}
    best = benchmark.best(args.dataset)
    summary = summarise(trajectories, best, args.budget)
    print_summary(summary, args.dataset, best, args.budget)
    return {"dataset": args.dataset, "best": best, "seeds": seeds, "trajectories": trajectories, "summary": summary}


if __name__ == "__main__":
    main()
