"""``naslib-bayes search``: one seeded search with any registered optimizer."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from naslib_bayes.commands import common, meta_train
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="run one architecture search")
    parser.add_argument("--optimizer", required=True, help="optimizer name (see 'naslib-bayes list')")
    parser.add_argument("--dataset", required=True,
                        help="data the search sees: benchmark dataset (black-box) or image dataset (one-shot)")
    parser.add_argument("--benchmark", type=Path,
                        help="NAS-Bench-201 benchmark file or folder (one-shot: scores the derived cell)")
    bb = parser.add_argument_group("black-box search")
    bb.add_argument("--budget", type=common.positive_int, help="number of benchmark queries (initial design included)")
    bb.add_argument("--search-metric", help="metric the search maximises (default: validation accuracy if every "
                                            "cell has it, else test accuracy)")
    # Read by both kinds of search (one-shot: the derived cell's score on --benchmark), so not in a group.
    parser.add_argument("--report-metric", help="metric reported for the final cell (default: test accuracy)")
    parser.add_argument("--opt", type=common.key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="optimizer hyper-parameter, repeatable (e.g. --opt population_size=20; one-shot: "
                             "--opt curvature_batches=4)")
    bb.add_argument("--surrogate", type=Path,
                    help="tnas: a meta-trained surrogate.pt or its folder (default: meta-train on the benchmark's other datasets)")
    meta_train.add_surrogate_options(parser)
    os_ = parser.add_argument_group("one-shot search (bayesnas, darts, random-cell)")
    os_.add_argument("--search-space", help="nb201 (default) or darts")
    os_.add_argument("--data-root", type=Path, help="folder of the dataset's files (digits needs none)")
    os_.add_argument("--lambda", dest="lambda_", type=common.positive_float, metavar="L",
                     help="BayesNAS sparsity weight lambda_origin, also lambda_child unless --lambda-child (default 0.01)")
    os_.add_argument("--lambda-child", type=common.positive_float, metavar="L", help="BayesNAS lambda_child")
    os_.add_argument("--warmup-epochs", type=common.non_negative_int, help="weight-only epochs first (default 1)")
    os_.add_argument("--epochs", type=common.positive_int, help="joint epochs per round (default 1)")
    os_.add_argument("--rounds", type=common.positive_int, help="rounds, each ending in an architecture update (default 1)")
    os_.add_argument("--channels", type=common.positive_int, help="supernet channels C (default nb201: 8, darts: 16)")
    os_.add_argument("--cells", type=common.positive_int,
                     help="nb201: cells per stage N (default 1); darts: cells in all (default 8)")
    os_.add_argument("--batch-size", type=common.positive_int, help="images per step (default 64)")
    os_.add_argument("--lr", type=common.positive_float, help="SGD learning rate of weights and switches (default 0.05)")
    os_.add_argument("--search-images", type=common.positive_int, help="search on a seeded subset of this many images")
    os_.add_argument("--no-augment", action="store_true", help="no crop/flip augmentation of search batches")
    os_.add_argument("--checkpoint-every", type=common.non_negative_int, metavar="K",
                     help="checkpoint every K steps besides every epoch (default 50; 0: epochs only)")
    os_.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    common.add_device(os_, default=None, threads=None)
    common.add_seed(parser)
    common.add_out(parser)
    parser.set_defaults(run=run)


# Options that only one kind of search reads, as (dest, flag): given to the other kind they would be
# silently ignored, so they are refused.
_ONE_SHOT_ONLY = (("search_space", "--search-space"), ("data_root", "--data-root"), ("lambda_", "--lambda"),
                  ("lambda_child", "--lambda-child"), ("warmup_epochs", "--warmup-epochs"), ("epochs", "--epochs"),
                  ("rounds", "--rounds"), ("channels", "--channels"), ("cells", "--cells"),
                  ("batch_size", "--batch-size"), ("lr", "--lr"), ("search_images", "--search-images"),
                  ("no_augment", "--no-augment"), ("checkpoint_every", "--checkpoint-every"), ("resume", "--resume"),
                  ("device", "--device"), ("threads", "--threads"))  # black-box: --opt threads=N (_opt_hint)
_BLACK_BOX_ONLY = (("budget", "--budget"), ("search_metric", "--search-metric"), ("surrogate", "--surrogate"),
                   ("dataset_encoder", "--dataset-encoder"), ("image_root", "--image-root"),
                   ("feature_extractor", "--feature-extractor"), ("encoder_hidden", "--encoder-hidden"))
ONE_SHOT_DEFAULTS = {"search_space": "nb201", "batch_size": 64, "checkpoint_every": 50, "device": "cpu", "threads": 1}


def run(args) -> int:
    spec = registry.get_spec(args.optimizer)
    if spec.kind not in (registry.BLACK_BOX, registry.ONE_SHOT):
        raise AssertionError(f"no search runner for kind {spec.kind}")
    _refuse_options_of_the_other_kind(args, spec.kind)
    if "seed" in dict(args.opt):  # the optimizers take it as an argument of their own
        raise UserError("--opt seed: the seed is not a hyper-parameter; give it with --seed")
    if spec.kind == registry.BLACK_BOX:
        return run_black_box(args)
    for dest, default in ONE_SHOT_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    return run_one_shot(args)


def _refuse_options_of_the_other_kind(args, kind: str) -> None:
    foreign = _ONE_SHOT_ONLY if kind == registry.BLACK_BOX else _BLACK_BOX_ONLY
    given = [flag for dest, flag in foreign if getattr(args, dest) not in (None, False)]
    if given:
        other = "one-shot" if kind == registry.BLACK_BOX else "black-box"
        raise UserError(f"{given[0]} applies to {other} search, not to --optimizer {args.optimizer} ({kind})"
                        + _opt_hint(args, given[0]))


def _opt_hint(args, flag: str) -> str:
    """Where a black-box optimizer takes the refused ``--threads`` as a hyper-parameter (bananas,
    gp-bo, tnas), how to give it: without this, the refusal read as if its threads were fixed."""
    if flag != "--threads" or "threads" not in registry.get_spec(args.optimizer).load().defaults:
        return ""
    return f"; give it as --opt threads={args.threads}"


def run_one_shot(args) -> int:
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark
    from naslib_bayes.training.search import (SearchConfig, canonical_space, check_search_config, load_search_data,
                                              run_oneshot_search)

    import torch

    torch.set_num_threads(args.threads)
    space = canonical_space(args.search_space)
    hyper = _one_shot_hyperparameters(args)
    benchmark = None
    if args.benchmark is not None:
        if space != "nasbench201":
            raise UserError("--benchmark scores NAS-Bench-201 cells; it needs --search-space nb201")
        benchmark = load_benchmark(args.benchmark)
    report_metric = _one_shot_report_metric(benchmark, args.report_metric)
    cfg = SearchConfig(
        optimizer=args.optimizer, search_space=args.search_space, dataset=args.dataset,
        data_root=None if args.data_root is None else str(args.data_root), seed=args.seed,
        channels=args.channels, cells=args.cells, batch_size=args.batch_size, search_images=args.search_images,
        augment=not args.no_augment, checkpoint_every=args.checkpoint_every, device=args.device, hyperparameters=hyper,
    )
    check_search_config(cfg)
    data = load_search_data(cfg)  # before --out is made: data it cannot read leaves no folder behind
    out = common.prepare_resumable_out(args.out, args.overwrite, args.resume, args.held_folders)
    if args.resume and benchmark is None:
        _refuse_unscored_resume_of_a_scored_run(out)
    bar, progress = common.step_bar(f"{args.optimizer} {args.dataset}")

    with bar:
        result = run_oneshot_search(cfg, out_dir=out, resume=args.resume, benchmark=benchmark, progress=progress,
                                    report_metric=report_metric, data=data)
    path = common.write_final_result(out, result, writes_checkpoints=True)
    accuracy = (result.get("benchmark_accuracy") or {}).get("cifar10")
    print(common.architecture_text(result["final_architecture"]) + (f"  cifar10 {report_metric}={accuracy}" if accuracy is not None else "") + f"  -> {path}")
    return 0


def _one_shot_hyperparameters(args) -> dict:
    """The optimizer's hyper-parameters given as flags or ``--opt`` (one of the two for each)."""
    hyper = {"lambda_origin": args.lambda_, "lambda_child": args.lambda_child, "warmup_epochs": args.warmup_epochs,
             "epochs": args.epochs, "rounds": args.rounds, "lr": args.lr}
    if args.optimizer != "bayesnas":
        given = [_flag(k) for k in ("lambda_origin", "lambda_child") if hyper[k] is not None]
        if given:
            raise UserError(f"{given[0]} only applies to --optimizer bayesnas")
        hyper.pop("lambda_origin")
        hyper.pop("lambda_child")
    hyper = {k: v for k, v in hyper.items() if v is not None}
    _refuse_set_twice(hyper, dict(args.opt), _flag)
    hyper.update(dict(args.opt))  # e.g. --opt curvature_batches=4 --opt curvature_reduction=dataset
    return hyper


def _refuse_set_twice(flags: dict, opts: dict, flag_of) -> None:
    """A setting given both as a flag (``flag_of(key)`` names it) and as ``--opt``: one would
    silently win over the other."""
    twice = sorted(set(flags) & set(opts))
    if twice:
        raise UserError(f"{flag_of(twice[0])} and --opt {twice[0]} both set {twice[0]}; give one")


def _flag(hyperparameter: str) -> str:
    """The option that sets a one-shot hyper-parameter (``lambda_origin`` -> ``--lambda``)."""
    return f"--{hyperparameter.replace('_origin', '').replace('_', '-')}"


def _refuse_unscored_resume_of_a_scored_run(out: Path) -> None:
    """A run begun with --benchmark resumed without it would end in a result.json without the cell's score."""
    from naslib_bayes.training import checkpoint as ckpt
    from naslib_bayes.training.search import SCORED_BY

    path = out / ckpt.CHECKPOINT_FILE
    run = ckpt.load(path).get("run")
    if isinstance(run, dict) and run.get(SCORED_BY) is not None:
        raise UserError(f"{path}: the run scores its derived cell by {run[SCORED_BY]} on a benchmark; resume with "
                        "--benchmark (the file may have moved)")


def _one_shot_report_metric(benchmark, report_metric: str | None) -> str:
    """The metric that scores the derived cell: test accuracy unless named; checked before any training."""
    from naslib_bayes.search_spaces.nasbench201.benchmark import COST_METRICS, require_accuracy_like

    if benchmark is None:
        if report_metric is not None:
            raise UserError("--report-metric scores the derived cell on --benchmark; give --benchmark too")
        return "test_accuracy"
    metric = "test_accuracy" if report_metric is None else report_metric  # "" is an error, not the default
    require_accuracy_like("report", metric)
    if not any(benchmark.has_metric(d, metric) for d in benchmark.datasets):
        available = sorted({m for d in benchmark.datasets for m in benchmark.metrics(d)} - set(COST_METRICS))
        raise UserError(f"{benchmark.source} has no {metric!r} for any dataset: choose --report-metric among "
                        f"{', '.join(available)}")
    return metric


def run_black_box(args) -> int:
    from naslib_bayes.experiment import plan_blackbox_search
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    _require(args, "benchmark", "budget")
    benchmark = load_benchmark(args.benchmark)
    benchmark.metrics(args.dataset)  # a missing dataset is an error before anything is written
    hyperparameters = {**_surrogate_hyperparameters(args), **dict(args.opt)}
    search = plan_blackbox_search(benchmark, args.optimizer, args.dataset, args.budget, args.seed,
                                  search_metric=args.search_metric, report_metric=args.report_metric,
                                  hyperparameters=hyperparameters)
    search.optimizer.check_inputs(search.problem)  # files its setup reads (tnas: surrogate, images), read now
    out = common.prepare_out(args.out, args.overwrite, args.held_folders)  # after every check of the arguments
    for message in search.warnings:
        common.warn(message)
    with tqdm(total=args.budget, desc=f"{args.optimizer} {args.dataset}", unit="query", disable=None) as bar:
        result = search.run(progress=lambda n: bar.update(n - bar.n))
    path = common.write_final_result(out, result, writes_checkpoints=False)
    accuracy = result["benchmark_accuracy"].get(result["dataset"])
    print(f"{result['final_architecture']}  {result['report_metric']}={accuracy}  -> {path}")
    return 0


# --flag -> optimizer hyper-parameter, for optimizers that declare it (tnas)
_SURROGATE_FLAGS = {"surrogate": "surrogate", "dataset_encoder": "dataset_encoder", "image_root": "image_root",
                    "feature_extractor": "feature_extractor", "encoder_hidden": "encoder_hidden"}


def _surrogate_hyperparameters(args) -> dict:
    """Route the TNAS surrogate flags to the optimizer's hyper-parameters (refusing them elsewhere)."""
    given = {key: getattr(args, flag) for flag, key in _SURROGATE_FLAGS.items() if getattr(args, flag) is not None}
    accepted = registry.get_spec(args.optimizer).load().defaults
    for key in given:
        if key not in accepted:
            raise UserError(f"--{key.replace('_', '-')} does not apply to --optimizer {args.optimizer}")
    opts = dict(args.opt)
    _refuse_set_twice(given, opts, lambda key: f"--{key.replace('_', '-')}")
    chosen = {**opts, **given}  # what the search uses, however given (no key both ways: refused above)
    surrogate = chosen.get("surrogate")
    if surrogate is None:  # meta-trained here, with the encoder and images chosen
        encoder = chosen.get("dataset_encoder") or "off"
        common.check_image_options(encoder, chosen.get("image_root"), chosen.get("feature_extractor"))
    else:
        from naslib_bayes.predictors.surrogate_io import existing

        existing(surrogate)  # before any warning is printed or folder made
        # What a meta-trained file already fixes would be ignored (and recorded as if used);
        # --opt feature_extractor stays allowed: it names the extractor a file's is trusted as.
        for key in ("dataset_encoder", "encoder_hidden", "feature_extractor"):
            if given.get(key) is not None:
                raise UserError(f"--{key.replace('_', '-')} applies when meta-training here; "
                                "a --surrogate file already has one")
    common.refuse_meta_training_beside_a_surrogate({**opts, "surrogate": surrogate})
    if surrogate is not None:  # the file is read last: the settings above are refused whatever it holds
        _check_image_settings_for(surrogate, chosen.get("image_root"), chosen.get("feature_extractor"))
    return {key: str(value) if isinstance(value, Path) else value for key, value in given.items()}


def _check_image_settings_for(surrogate: Path, image_root, feature_extractor) -> None:
    """A surrogate that encodes datasets by their images needs the target's images; any other
    would ignore an image root (and record it as if used). An extractor named beside the file
    is the one its own is trusted as: another would be ignored as well."""
    from naslib_bayes.predictors.surrogate_io import read_config, resolve

    config = read_config(surrogate)
    encoder = config.dataset_encoder
    if encoder == "images" and image_root is None:
        raise UserError(f"{resolve(surrogate)} encodes a dataset by its images: give the target's with --image-root")
    if encoder != "images" and image_root is not None:
        raise UserError(f"--image-root: {resolve(surrogate)} has the {encoder} dataset encoder, which reads no images")
    if feature_extractor is None:
        return
    if encoder != "images":
        raise UserError(f"--opt feature_extractor={feature_extractor}: {resolve(surrogate)} has the {encoder} "
                        "dataset encoder, which reads no images")
    if feature_extractor != config.feature_extractor:
        raise UserError(f"--opt feature_extractor={feature_extractor}: {resolve(surrogate)} has the feature "
                        f"extractor {config.feature_extractor!r}")


def _require(args, *names: str) -> None:
    for name in names:
        if getattr(args, name) is None:
            raise UserError(f"--{name.replace('_', '-')} is required with --optimizer {args.optimizer}")
