"""``naslib-bayes meta-train``: meta-train a TNAS surrogate on a benchmark's datasets.

Writes ``DIR/surrogate.pt`` (versioned, loads with ``torch.load(weights_only=True)``) and
``DIR/result.json`` (the meta-training log). ``search --optimizer tnas --surrogate DIR`` uses it.
"""

from __future__ import annotations

import time
from pathlib import Path

from naslib_bayes import results
from naslib_bayes.commands import common
from naslib_bayes.errors import UserError

DATASET_ENCODER_HELP = ("dataset encoding fed to the kernel: off (none; the NB201 datasets come without images "
                        "here), learned (a learned context vector per dataset), images (a Set Transformer over "
                        "--image-root's images)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("meta-train", help="meta-train a TNAS surrogate on other datasets' evaluations")
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file or folder")
    parser.add_argument("--datasets", required=True, help="comma-separated meta-training datasets, e.g. cifar100,ImageNet16-120 (used "
                             "in the benchmark's order, whatever the order given)")
    parser.add_argument("--metric", default="test_accuracy", help="benchmark metric to learn from (default: test_accuracy)")
    add_surrogate_options(parser)
    mt = parser.add_argument_group("meta-training")
    # The defaults are MetaTrainConfig's (a test keeps them equal; importing it here would load
    # torch for every command): a surrogate from `meta-train` is the one `search` would meta-train.
    mt.add_argument("--outer", choices=("reptile", "joint"), default="joint",
                    help="outer update: REPTILE (the paper) or joint training over tasks (the public code; default)")
    mt.add_argument("--iterations", type=common.positive_int, default=800,
                    help="maximum outer iterations; early stopping may end it sooner (default 800)")
    mt.add_argument("--lr", type=common.positive_float, default=0.01, help="Adam learning rate (default 0.01)")
    # None: not given, which --outer joint (that never reads them) needs to tell apart (reptile_settings)
    mt.add_argument("--outer-step", type=common.non_negative_float, help="REPTILE outer step size (default 0.1)")
    mt.add_argument("--inner-steps", type=common.positive_int, help="REPTILE inner Adam steps per task (default 5)")
    mt.add_argument("--output-transform", choices=("standardise", "copula", "robust"), default="copula",
                    help="accuracies to GP units: per-dataset standardisation, normal quantiles of ranks (default), "
                         "or median/IQR standardisation with the low tail clipped")
    mt.add_argument("--evidence-top", type=common.positive_int, default=1000,
                    help="best cells of each dataset the surrogate keeps as evidence for its prior (default 1000)")
    mt.add_argument("--threads", type=common.positive_int, default=1, help="torch threads (default 1)")
    common.add_seed(parser)
    common.add_out(parser)
    parser.set_defaults(run=run)


def add_surrogate_options(parser) -> None:
    """Options shared by ``meta-train`` and ``search --optimizer tnas``."""
    group = parser.add_argument_group("TNAS surrogate")
    group.add_argument("--dataset-encoder", choices=("off", "learned", "images"), default=None, help=DATASET_ENCODER_HELP)
    group.add_argument("--image-root", type=Path, help="folder of the datasets' images (--dataset-encoder images)")
    group.add_argument("--feature-extractor", default=None,
                       help="images mode: random-conv (default), pixels, or module:factory returning your extractor")
    group.add_argument("--encoder-hidden", type=common.positive_int, default=None,
                       help="GRU size of the architecture encoder (default 64; the paper's is 512)")


def reptile_settings(args) -> tuple[float, int]:
    """``(outer_step, inner_steps)``, MetaTrainConfig's defaults where not given; given beside
    ``--outer joint``, which never reads them, they are refused (result.json would record them as used)."""
    from naslib_bayes.predictors.meta_train import MetaTrainConfig

    if args.outer != "reptile":
        for flag, value in (("--outer-step", args.outer_step), ("--inner-steps", args.inner_steps)):
            if value is not None:
                raise UserError(f"{flag} applies with --outer reptile, not {args.outer}")
    return (MetaTrainConfig.outer_step if args.outer_step is None else args.outer_step,
            MetaTrainConfig.inner_steps if args.inner_steps is None else args.inner_steps)


def run(args) -> int:
    from naslib_bayes.predictors.meta_train import MetaTrainConfig, meta_train
    from naslib_bayes.predictors.surrogate import SurrogateConfig
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    benchmark = load_benchmark(args.benchmark)
    names = _dataset_names(args.datasets, benchmark, args.metric)
    encoder = args.dataset_encoder or "off"
    common.check_image_options(encoder, args.image_root, args.feature_extractor)
    outer_step, inner_steps = reptile_settings(args)
    config = MetaTrainConfig(outer=args.outer, iterations=args.iterations, lr=args.lr, outer_step=outer_step,
                             inner_steps=inner_steps, output_transform=args.output_transform,
                             evidence_top=args.evidence_top, threads=args.threads)
    start = time.perf_counter()
    surrogate_config = SurrogateConfig(encoder_hidden=args.encoder_hidden or 64, dataset_encoder=encoder,
                                       feature_extractor=args.feature_extractor or "random-conv")
    datasets = _read_datasets(benchmark, names, args, surrogate_config)
    out = common.prepare_out(args.out, args.overwrite, args.held_folders)
    common.logger.info("meta-training on %s", ", ".join(names))
    surrogate, log = meta_train(datasets, surrogate_config, config, seed=args.seed,
                                progress=lambda i, v: common.logger.info("iteration %d: validation NLL %.4f", i, v))
    path, written = _write_surrogate_and_result(out, args, benchmark, datasets, config, surrogate, log,
                                                wall_time_s=time.perf_counter() - start)
    print(f"meta-trained on {', '.join(names)} in {log.wall_time_s:.0f} s "
          f"(best validation NLL {log.best_val_loss:.3f} at iteration {log.best_iteration}) -> {path}, {written}")
    return 0


def _dataset_names(text: str, benchmark, metric: str) -> list[str]:
    """The canonical names of ``--datasets``, each distinct and holding ``metric`` in ``benchmark``,
    in the benchmark's order: task sampling and held-out splits follow the list, so the set of
    datasets, not the order it was typed in, defines the surrogate (the one ``search`` meta-trains)."""
    from naslib_bayes.comparison.grid import require_distinct
    from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset

    given = [n.strip() for n in text.split(",") if n.strip()]
    if not given:
        raise UserError("--datasets names no dataset")
    names = [canonical_dataset(n) for n in given]
    # aliases too (cifar100, CIFAR-100): the same evaluations twice would weigh that dataset double
    require_distinct("--datasets", given, names)
    for name in names:
        benchmark.query_all(name, metric)  # a missing dataset or metric is an error before writing
    return [name for name in benchmark.datasets if name in names]


def _read_datasets(benchmark, names: list[str], args, surrogate_config) -> list:
    """The meta-training datasets, with their images and the feature extractor read: before --out is
    made, since a dataset missing from --image-root, an extractor that cannot be built or a dataset
    with too few evaluated cells would otherwise leave a folder holding no run."""
    from naslib_bayes.predictors.meta_train import evaluated_cells, meta_datasets_from_benchmark

    encoder = surrogate_config.dataset_encoder
    datasets = meta_datasets_from_benchmark(benchmark, names, args.metric, encoder, args.image_root,
                                            surrogate_config.images_per_class, surrogate_config.max_classes)
    for dataset in datasets:  # too few to split into training and held-out cells
        evaluated_cells(dataset)
    if encoder == "images":
        from naslib_bayes.predictors.dataset_context import build_feature_extractor

        build_feature_extractor(surrogate_config.feature_extractor)
    return datasets


def _write_surrogate_and_result(out: Path, args, benchmark, datasets, config, surrogate, log,
                                wall_time_s: float) -> tuple[Path, Path]:
    """Write ``surrogate.pt`` and ``result.json``; their paths."""
    from naslib_bayes.predictors import surrogate_io
    from naslib_bayes.predictors.meta_train import learned_from

    names = [dataset.name for dataset in datasets]
    encoder = surrogate.config.dataset_encoder
    metrics = learned_from(datasets)
    # resolved, as the images were read: the record repeats the run from any folder
    image_root = None if args.image_root is None else str(args.image_root.expanduser().resolve())
    info = {"meta_datasets": names, "meta_metrics": metrics, "seed": args.seed, "benchmark": benchmark.source,
            "metric": args.metric, "image_root": image_root, "meta_train_config": config.to_dict(),
            "meta_train": log.to_dict()}
    surrogate_io.require_finite(surrogate)  # refused by save() too, but only after the earlier run's result went
    results.retire_result(out)
    path = surrogate_io.save(surrogate, out / surrogate_io.FILE_NAME, info)
    result = results.new_result(
        "meta-train", search_space="nasbench201", seed=args.seed, wall_time_s=wall_time_s,
        config={"benchmark": benchmark.source, "metric": args.metric, "image_root": image_root, **config.to_dict(),
                "surrogate_config": surrogate.config.to_dict()},
        meta_datasets=names, meta_metrics=metrics, meta_train=log.to_dict(),
        surrogate={"path": str(path), "format_version": surrogate_io.FORMAT_VERSION, "meta_datasets": names,
                   "meta_metrics": metrics},
        dataset_encoder={"mode": encoder, **({"feature_extractor": surrogate.config.feature_extractor}
                                             if encoder == "images" else {})},
        notes=list(benchmark.notes),
    )
    written = common.write_final_result(out, result, writes_checkpoints=False)
    return path, written
