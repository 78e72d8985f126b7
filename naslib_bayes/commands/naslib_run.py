"""``naslib-bayes naslib-run``: one NASLib experiment (search, then evaluate) from a NASLib config file.

Runs NASLib's own optimizers (rs, re, ls, bananas, npenas; darts, gdas, drnas) and
naslib-bayes's (its black-box optimizers, tnas among them, and bayesnas on NASLib's own search
graphs) with NASLib's Trainer, search spaces and benchmark queries. NASLib must be
importable (see the README, "Using NASLib"); the compatibility fixes of
:mod:`naslib_bayes.integration.compat` are applied here, and only here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from naslib_bayes.commands import common
from naslib_bayes.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "naslib-run", help="run a NASLib experiment (NASLib's or naslib-bayes's optimizer) from a NASLib config file"
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE.yaml",
                        help="NASLib config (keys missing from it take NASLib's defaults)")
    parser.add_argument("--optimizer", help="overrides the config's 'optimizer'")
    parser.add_argument("--seed", type=common.seed_int, help="overrides the config's 'seed'")
    parser.add_argument("--benchmark", type=Path,
                        help="NAS-Bench-201 benchmark file or folder served to NASLib as its dataset_api "
                             "(default: NASLib's own nb201 pickles)")
    parser.add_argument("--search-data", metavar="DATASET",
                        help="images a one-shot optimizer trains its supernet on and retraining uses: "
                             "digits (bundled with scikit-learn), mnist, cifar10, cifar100, ImageNet16-120")
    parser.add_argument("--data-root", type=Path, help="folder holding the --search-data files (not needed for digits)")
    parser.add_argument("--surrogate", type=Path, metavar="PATH",
                        help="tnas: a surrogate.pt (or its folder) from naslib-bayes meta-train; without it, tnas "
                             "meta-trains leave-one-dataset-out on the --benchmark's other datasets")
    parser.add_argument("--set", dest="overrides", type=common.naslib_key_value, action="append", default=[],
                        metavar="KEY=VALUE", help="config override, repeatable (e.g. --set search.epochs=20)")
    common.add_out(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from naslib_bayes.integration import load_naslib

    benchmark = _refuse_before_naslib(args)  # one line, not below the lines of NASLib's set-up
    compat_logger = logging.getLogger("naslib_bayes.integration.compat")
    compat_logger.setLevel(logging.INFO)  # each applied fix is shown, even without --verbose
    load_naslib(announce=False)  # NaslibUnavailable (a UserError) names what to install; fixes are logged

    from naslib_bayes.integration.data import load_image_data
    from naslib_bayes.integration.run import build_config, make_output_folders, plan_experiment, run_experiment

    overrides = list(args.overrides)
    if args.surrogate is not None:
        overrides.append(("search.surrogate", str(args.surrogate)))
    # the config and the data are checked before --out is made: a refusal leaves no folder behind
    config = build_config(args.config, args.out, optimizer=args.optimizer, seed=args.seed, overrides=overrides,
                          make_folders=False)
    _refuse_unread_options(args, config.optimizer)
    image_data = None
    if args.search_data is not None:
        image_data = load_image_data(args.search_data, args.data_root, seed=int(config.seed))
    plan = plan_experiment(config, benchmark=benchmark, image_data=image_data, warn=common.warn)
    out = common.prepare_out(args.out, args.overwrite, args.held_folders)
    make_output_folders(config)
    result = run_experiment(config, benchmark=benchmark, image_data=image_data, warn=common.warn, plan=plan)
    path = common.write_final_result(out, result, writes_checkpoints=False)
    evaluation = result["naslib"]["evaluation"]
    print(f"{common.architecture_text(result['final_architecture'])}  evaluation={evaluation}  -> {path}")
    return 0


def _refuse_before_naslib(args):
    """Refuse what is decided without NASLib (options, --search-data's name, --benchmark); returns
    the benchmark (None: NASLib's own data)."""
    from naslib_bayes.data.loaders import canonical_name
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    if args.surrogate is not None and not args.surrogate.exists():
        raise UserError(f"--surrogate {args.surrogate}: no such file or folder")
    if args.data_root is not None and args.search_data is None:
        raise UserError("--data-root: it holds the --search-data files; no --search-data is given")
    if args.search_data is not None:
        canonical_name(args.search_data)  # its images are read once the config gives their seed
    return load_benchmark(args.benchmark) if args.benchmark is not None else None


def _refuse_unread_options(args, name: str) -> None:
    """Refuse an option optimizer ``name`` never reads: the run would ignore it while result.json records it."""
    from naslib_bayes.integration.run import BLACK_BOX, get_optimizer

    if args.surrogate is not None and name != "tnas":
        raise UserError(f"--surrogate: {name} reads no surrogate (only tnas does)")
    if args.search_data is not None and get_optimizer(name).kind == BLACK_BOX:
        raise UserError(f"--search-data: {name} is a black-box optimizer; "
                        "it queries the benchmark and trains on no images")
