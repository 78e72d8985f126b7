"""``naslib-bayes search``: one seeded search with any registered optimizer."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from naslib_bayes import results
from naslib_bayes.commands import common, meta_train
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
    bb.add_argument("--surrogate", type=Path,
                    help="tnas: a meta-trained surrogate.pt or its folder (default: meta-train on the benchmark's other datasets)")
    meta_train.add_surrogate_options(parser)
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
            hyperparameters={**_surrogate_hyperparameters(args), **dict(args.opt)}, progress=lambda n: bar.update(n - bar.n), warn=common.warn,
        )
    path = results.write_result(out, result)
    accuracy = result["benchmark_accuracy"].get(result["dataset"])
    print(f"{result['final_architecture']}  {result['report_metric']}={accuracy}  -> {path}")
    return 0


# --flag -> optimizer hyper-parameter, for optimizers that declare it (tnas)
_SURROGATE_FLAGS = {"surrogate": "surrogate", "dataset_encoder": "dataset_encoder", "image_root": "image_root",
                    "feature_extractor": "feature_extractor", "encoder_hidden": "encoder_hidden"}


def _surrogate_hyperparameters(args) -> dict:
    """Route the TNAS surrogate flags to the optimizer's hyper-parameters (refusing them elsewhere)."""
    from naslib_bayes.errors import UserError

    given = {key: getattr(args, flag) for flag, key in _SURROGATE_FLAGS.items() if getattr(args, flag) is not None}
    accepted = registry.get_spec(args.optimizer).load().defaults
    for key in given:
        if key not in accepted:
            raise UserError(f"--{key.replace('_', '-')} does not apply to --optimizer {args.optimizer}")
    if given.get("dataset_encoder") == "images" and "image_root" not in given:
        raise UserError("--dataset-encoder images needs --image-root")
    if given.get("surrogate") is not None and given.get("dataset_encoder") is not None:
        raise UserError("--dataset-encoder applies when meta-training here; a --surrogate file already has one")
    return {key: str(value) if isinstance(value, Path) else value for key, value in given.items()}


def _require(args, *names: str) -> None:
    from naslib_bayes.errors import UserError

    for name in names:
        if getattr(args, name) is None:
            raise UserError(f"--{name.replace('_', '-')} is required with --optimizer {args.optimizer}")
