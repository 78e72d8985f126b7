"""``naslib-bayes compare``: head-to-head comparison of optimizers with identical budgets and seeds.

Black-box mode (``--optimizers``) runs every (optimizer, dataset, seed) on a tabular benchmark;
one-shot mode (``--oneshot``) trains every (optimizer, seed) on ``--dataset`` and looks the
derived cells up in the benchmark. Both write ``DIR/runs/*.json``, ``summary.csv`` and
``summary.md`` and skip runs already written; black-box mode can rewrite a README's results
section.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from naslib_bayes import results
from naslib_bayes.commands import common
from naslib_bayes.errors import UserError

DEFAULT_DATASETS = "cifar10,cifar100,ImageNet16-120"


def register(subparsers) -> None:
    parser = subparsers.add_parser("compare", help="compare optimizers with identical budgets and seeds")
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file or folder")
    bb = parser.add_argument_group("black-box comparison")
    bb.add_argument("--optimizers", type=_names, help="comma-separated black-box optimizers")
    bb.add_argument("--datasets", type=_names, help=f"comma-separated benchmark datasets (default {DEFAULT_DATASETS})")
    bb.add_argument("--budget", type=common.positive_int, help="queries per run, initial design included (default 100)")
    bb.add_argument("--search-metric", help="metric the searches maximise (default: validation accuracy if every cell "
                                            "has it, else test accuracy)")
    bb.add_argument("--report-metric", help="metric regret is measured on (default: test accuracy)")
    bb.add_argument("--opt", type=common.key_value, action="append", default=[], metavar="OPTIMIZER.KEY=VALUE",
                    help="hyper-parameter of one optimizer, repeatable (e.g. --opt re.population_size=10)")
    bb.add_argument("--prepare-per", choices=("seed", "dataset"),
                    help="meta-train transfer methods (tnas) once per target dataset and seed (default: seeds are "
                         "independent repetitions) or once per dataset, shared by its seeds (the paper's protocol, "
                         "1/seeds of the cost)")
    one = parser.add_argument_group("one-shot comparison")
    one.add_argument("--oneshot", type=_names, help="comma-separated one-shot optimizers")
    one.add_argument("--dataset", help="training data of the one-shot searches (e.g. mnist)")
    one.add_argument("--data-root", type=Path, help="folder holding the training data")
    one.add_argument("--epochs", type=common.positive_int, help="joint epochs of each one-shot run, after its warm-up epoch (default 1)")
    parser.add_argument("--seeds", type=common.parse_seeds, default=common.parse_seeds("20"),
                        help="seed count N (0..N-1) or list, the same for every optimizer (default 20)")
    parser.add_argument("--jobs", type=common.positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--out", type=common.out_folder, required=True, help="output folder; re-running resumes it")
    parser.add_argument("--readme", type=Path, help="rewrite this README's results section from the summary")
    parser.set_defaults(run=run)


def _names(text: str) -> list[str]:
    names = [tok.strip() for tok in text.split(",") if tok.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated names, got {text!r}")
    return names


def run(args) -> int:
    _check_mode(args)
    if args.oneshot is not None:
        return run_oneshot(args)
    return run_black_box(args)


def _check_mode(args) -> None:
    """Black-box and one-shot options do not mix: say which one is out of place."""
    if args.oneshot is not None:
        clash = [f for f, v in (("--optimizers", args.optimizers), ("--budget", args.budget),
                                ("--datasets", args.datasets), ("--opt", args.opt or None),
                                ("--prepare-per", args.prepare_per), ("--search-metric", args.search_metric),
                                ("--report-metric", args.report_metric), ("--readme", args.readme)) if v is not None]
        if clash:
            raise UserError(f"{clash[0]} cannot be combined with --oneshot (one-shot runs train on --dataset for --epochs)")
    else:
        if args.optimizers is None:
            raise UserError("give --optimizers (black-box comparison) or --oneshot (one-shot comparison)")
        clash = [f for f, v in (("--dataset", args.dataset), ("--data-root", args.data_root), ("--epochs", args.epochs))
                 if v is not None]
        if clash:
            raise UserError(f"{clash[0]} belongs to --oneshot comparisons; black-box ones take --datasets")


def _hyperparameters(pairs, optimizers) -> dict[str, dict]:
    """``[("re.population_size", 10)]`` -> ``{"re": {"population_size": 10}}``."""
    found: dict[str, dict] = {}
    for key, value in pairs:
        optimizer, dot, name = key.rpartition(".")
        if not dot or not optimizer or optimizer not in optimizers:
            raise UserError(f"--opt {key}: expected OPTIMIZER.KEY=VALUE with OPTIMIZER one of {', '.join(optimizers)}")
        if name == "seed":  # the optimizers take it as an argument of their own
            raise UserError(f"--opt {key}: the seed is not a hyper-parameter; give seeds with --seeds")
        found.setdefault(optimizer, {})[name] = value
    for optimizer, hyperparameters in found.items():
        common.refuse_meta_training_beside_a_surrogate(hyperparameters, f"{optimizer}.")
    return found


def _command_line(args) -> str:
    """The command as a user would type it (benchmark named by its file name)."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    words = ["naslib-bayes"]
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word == "--benchmark" and i + 1 < len(argv):
            words += [word, Path(argv[i + 1]).name]
            skip = True
        elif word.startswith("--benchmark="):
            words.append(f"--benchmark={Path(word.split('=', 1)[1]).name}")
        else:
            words.append(word)
    return shlex.join(words)


# ---- black-box ------------------------------------------------------------------------------
def run_black_box(args) -> int:
    from naslib_bayes.comparison import runner
    from naslib_bayes.comparison.grid import CompareSettings
    from naslib_bayes.comparison.records import grid_metrics
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    datasets = args.datasets or _names(DEFAULT_DATASETS)
    settings = CompareSettings(
        benchmark=args.benchmark, out=args.out, optimizers=args.optimizers, datasets=datasets,
        seeds=args.seeds, budget=args.budget or 100, search_metric=args.search_metric,
        report_metric=args.report_metric, hyperparameters=_hyperparameters(args.opt, args.optimizers), jobs=args.jobs,
        prepare_per=args.prepare_per or "seed",
    )
    benchmark = load_benchmark(args.benchmark)
    grid_metrics(benchmark, settings)  # a missing dataset or metric, or mixed defaults: before any run
    results.check_folder(args.out, "--out")  # made only once the runs start
    if args.readme is not None:
        from naslib_bayes.comparison.readme import check_readme

        check_readme(args.readme)  # before hours of runs, not after
    with tqdm(desc="compare", unit="run", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        def prepared(key, done: int, total: int) -> None:
            optimizer, dataset, seed = key
            bar.write(f"{optimizer}: meta-trained for {dataset}, seed {seed} ({done} of {total})", file=sys.stderr)

        report = runner.run_comparison(settings, benchmark=benchmark, on_progress=progress, on_prepared=prepared,
                                       held=args.held_folders)
    result = _write_reports(args, settings, report)
    if result.code_note:
        print(f"warning: {result.code_note}", file=sys.stderr)
    print(f"{len(report.ran)} runs done, {len(report.skipped)} reused, {report.elapsed_s:.0f} s -> {args.out / 'summary.md'}")
    return 0


def _write_reports(args, settings, report):
    """summary.csv, summary.md, one regret plot per dataset and the README section of the grid's runs."""
    from naslib_bayes.comparison import plots, summary

    result = summary.summarize(args.out, settings.optimizers, settings.datasets, settings.seeds)
    summary.write_csv(result, args.out / "summary.csv")
    summary.write_markdown(result, args.out / "summary.md", (len(report.ran), len(report.skipped), report.elapsed_s))
    _remove_other_plots(args.out, settings.datasets)
    for dataset in settings.datasets:
        plots.plot_regret(result, dataset, args.out / f"regret_{dataset}.png")
    if args.readme is not None:
        _update_readme(args, result)
    summary.note_runs_left_out(args.out, settings.optimizers, settings.datasets, settings.seeds)
    return result


def _remove_other_plots(out: Path, datasets) -> None:
    """Remove the regret plots of datasets an earlier grid in ``out`` had and this one has not: the
    summary is rewritten for this grid, and a plot left beside it would show runs it no longer reports."""
    wanted = {f"regret_{dataset}.png" for dataset in datasets}
    for plot in out.glob("regret_*.png"):
        if plot.name not in wanted:
            plot.unlink()


def _update_readme(args, result) -> None:
    from naslib_bayes.comparison.readme import results_section, update_readme

    update_readme(args.readme, results_section(result, args.out, args.readme, _command_line(args)))


# ---- one-shot -------------------------------------------------------------------------------
def run_oneshot(args) -> int:
    from naslib_bayes.comparison import oneshot

    return oneshot.run_command(args)
