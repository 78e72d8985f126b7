"""``naslib-bayes search``: one seeded search with any registered optimizer."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from naslib_bayes import results
from naslib_bayes.commands import common
from naslib_bayes.optimizers import registry


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="run one architecture search")
    parser.add_argument("--optimizer", required=True, help="optimizer name (see 'naslib-bayes list')")
    parser.add_argument("--dataset", required=True, help="data the search sees (benchmark dataset for black-box search)")
    parser.add_argument("--benchmark", type=Path, help="NAS-Bench-201 benchmark file or folder")
    bb = parser.add_argument_group("black-box search")
    bb.add_argument("--budget", type=common.positive_int, help="number of benchmark queries (initial design included)")
    bb.add_argument("--search-metric", help="metric the search maximises (default: validation accuracy if present)")
    bb.add_argument("--report-metric", help="metric reported for the final cell (default: test accuracy)")
    bb.add_argument("--opt", type=common.key_value, action="append", default=[], metavar="KEY=VALUE",
                    help="optimizer hyper-parameter, repeatable (e.g. --opt population_size=20)")
    common.add_seed(parser)
    common.add_out(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    spec = registry.get_spec(args.optimizer)
    if spec.kind == registry.BLACK_BOX:
        return run_black_box(args)
    raise AssertionError(f"no search runner for kind {spec.kind}")


def run_black_box(args) -> int:
    from naslib_bayes.experiment import run_blackbox_search
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    _require(args, "benchmark", "budget")
    benchmark = load_benchmark(args.benchmark)
    benchmark.metrics(args.dataset)  # a missing dataset is an error before anything is written
    out = common.prepare_out(args.out, args.overwrite)
    with tqdm(total=args.budget, desc=f"{args.optimizer} {args.dataset}", unit="query", disable=None) as bar:
        result = run_blackbox_search(
            benchmark, args.optimizer, args.dataset, args.budget, args.seed,
            search_metric=args.search_metric, report_metric=args.report_metric,
            hyperparameters=dict(args.opt), progress=lambda n: bar.update(n - bar.n), warn=common.warn,
        )
    path = results.write_result(out, result)
    accuracy = result["benchmark_accuracy"].get(result["dataset"])
    print(f"{result['final_architecture']}  {result['report_metric']}={accuracy}  -> {path}")
    return 0


def _require(args, *names: str) -> None:
    from naslib_bayes.errors import UserError

    for name in names:
        if getattr(args, name) is None:
            raise UserError(f"--{name.replace('_', '-')} is required with --optimizer {args.optimizer}")
