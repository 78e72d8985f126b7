"""TNAS on NAS-Bench-201, leave one dataset out: meta-train on two datasets, search the third.

For each target dataset and seed this script meta-trains a surrogate on the other datasets
(cached under ``--cache``), then runs

* ``tnas``                 the default optimizer (initial design k=5, then BO);
* ``tnas k=1``             the same with an initial design of one cell;
* ``tnas init-only``       the surrogate's ranking alone (no fitting to the target);
* ``tnas global``          EI over every unqueried cell (no trust region, as the paper);
* ``tnas no-prior``        plain EI after the initial design (no pi-BO weight);
* ``tnas prior-units``     the target's observations in the meta-learned units with the prior in
                           the GP's mean (``target_units=prior``), plain EI (no pi-BO weight);
* ``tnas robust``          the default loop on surrogates meta-trained with the ``robust`` output
                           transform (median/IQR standardisation, low tail clipped) instead of
                           the copula; these surrogates are cached apart (``surrogates_robust``);
                           run only when named in ``--methods``;
* ``tnas learned``         the default loop on surrogates meta-trained with a learned context
                           vector per meta-training dataset (``dataset_encoder=learned``; the
                           target's starts at their mean and is fine-tuned on its observations),
                           cached in ``surrogates_learned``; run only when named in ``--methods``;
* ``tnas meta=3000``       the default loop on surrogates meta-trained until early stopping ends it
                           (cap 3000 iterations instead of 800), cached in ``surrogates_3000``;
                           run only when named in ``--methods``;
* ``tnas beta=2.5``, ``tnas beta=10``  the pi-BO weight at half and twice its default
                           (budget / 10 = 5 at budget 50), for the validation of
                           ``tnas_nb201_validate.py``; run only when named in ``--methods``;
* ``transfer-topk``        cells by mean standardised accuracy on the other datasets;
* ``gp-bo``                the deep-kernel GP BO from scratch on the target (no transfer);

and prints, per target and method, the median number of queries to reach the dataset's best
test accuracy (either of tied cells counts; a run that never reaches it counts as budget+1),
the mean regret after 5, 10, 20 queries and the whole budget, the number of distinct trajectories over the seeds,
and the timings (encoding all cells, one BO iteration, meta-training).

Usage:
    python benchmarks/tnas_nb201.py --benchmark PATH/nats_bench.csv --seeds 20 --budget 50
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

# Use the checkout this script belongs to, whichever naslib-bayes is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naslib_bayes.results import exclusive_use, read_json_record  # noqa: E402  (light: no torch)


#: The benchmark scripts: their own logic is code a cached run depends on, beside the package's.
SCRIPTS = tuple(sorted(Path(__file__).resolve().parent.glob("*.py")))

METHODS = {
    "tnas": ("tnas", {}),
    "tnas k=1": ("tnas", {"initial_design": 1}),
    "tnas init-only": ("tnas", {"initial_design_only": True}),
    "tnas no-prior": ("tnas", {"prior_beta": 0}),
    "tnas beta=2.5": ("tnas", {"prior_beta": 2.5}),
    "tnas beta=10": ("tnas", {"prior_beta": 10}),
    "tnas prior-units": ("tnas", {"target_units": "prior", "prior_beta": 0}),
    "tnas robust": ("tnas", {"meta_output_transform": "robust"}),
    "tnas learned": ("tnas", {"dataset_encoder": "learned"}),
    "tnas meta=3000": ("tnas", {"meta_iterations": 3000}),
    "tnas steps=0": ("tnas", {"finetune_steps": 0}),
    "tnas steps=200": ("tnas", {"finetune_steps": 200}),
    "tnas lr=0.04": ("tnas", {"finetune_lr": 0.04}),
    "tnas evidence=200": ("tnas", {"meta_evidence_top": 200}),
    "tnas evidence=50": ("tnas", {"meta_evidence_top": 50}),
    "tnas top=5": ("tnas", {"prior_form": "top", "prior_top": 5}),
    "tnas top=100": ("tnas", {"prior_form": "top", "prior_top": 100}),
    "tnas global": ("tnas", {"local_radius": 0}),
    "tnas local=1": ("tnas", {"local_radius": 1, "local_centres": 1}),
    "tnas local=2": ("tnas", {"local_radius": 2, "local_centres": 1}),
    "tnas local=1x3": ("tnas", {"local_radius": 1, "local_centres": 3}),
    "tnas ucb": ("tnas", {"acquisition": "ucb"}),
    "tnas ucb=0.5": ("tnas", {"acquisition": "ucb", "ucb_beta": 0.5}),
    # The paper's encoder size alone, and every departure of docs/tnas.md undone that is an option
    # (all but the dataset encoder, which needs images): what the departures are worth.
    "tnas h512": ("tnas", {"encoder_hidden": 512}),
    "tnas h512 lr=0.003": ("tnas", {"encoder_hidden": 512, "meta_lr": 0.003}),  # 512 does not learn at 0.01
    "tnas paper": ("tnas", {"encoder_hidden": 512, "meta_outer": "reptile", "meta_lr": 0.1,
                            "meta_output_transform": "standardise", "prior_beta": 0, "local_radius": 0}),
    "transfer-topk": ("transfer-topk", {}),
    "gp-bo": ("gp-bo", {}),
}
#: Methods run without ``--methods``; the others (validation variants, and those that meta-train
#: anew) run only when named.
DEFAULT_METHODS = ("tnas", "tnas k=1", "tnas init-only", "tnas global", "tnas no-prior", "tnas prior-units",
                   "transfer-topk", "gp-bo")


def parse_args(argv=None):
    from naslib_bayes.commands.common import positive_int  # light: no torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", type=Path, required=True, help="NAS-Bench-201 benchmark file (e.g. nats_bench.csv)")
    parser.add_argument("--seeds", type=positive_int, default=20, help="seeds 0..N-1 (default 20)")
    parser.add_argument("--budget", type=positive_int, default=50, help="queries per run (default 50)")
    parser.add_argument("--datasets", default="cifar10,cifar100,ImageNet16-120", help="target datasets")
    default = ",".join(DEFAULT_METHODS)
    parser.add_argument("--methods", default=default,
                        help="comma-separated subset of: " + ", ".join(METHODS) + f" (default: {default})")
    parser.add_argument("--surrogate-seeds", type=positive_int, default=None,
                        help="meta-train this many surrogates per target and give seed s the one of seed s mod N "
                             "(default: one per seed)")
    parser.add_argument("--cache", type=Path, default=Path("runs/tnas_nb201"),
                        help="folder for surrogates and per-run results (reused when present)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="parallel worker processes (each single-threaded)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: print the table from the runs already in --cache (seeds counted per row)")
    return parser.parse_args(argv)


# Hyper-parameters that change meta-training: methods setting them need surrogates of their own.
#: The one metric meta-training, the searches and the regrets use. The NATS-Bench CSV has test
#: accuracy only; a file that also has validation accuracy is searched on test accuracy too, so
#: that every regret is measured against the optimum of the metric searched.
METRIC = "test_accuracy"

#: TNAS's hyper-parameters that decide the surrogate it meta-trains (what ``meta_train_surrogate`` reads).
META_KEYS = ("dataset_encoder", "image_root", "feature_extractor", "encoder_hidden", "meta_outer", "meta_iterations",
             "meta_lr", "meta_outer_step", "meta_output_transform", "meta_evidence_top")


def meta_settings(method: str) -> dict:
    """The meta-training hyper-parameters ``method`` sets away from TNAS's defaults."""
    from naslib_bayes.optimizers.tnas import TNAS

    optimizer, hyperparameters = METHODS[method]
    if optimizer != "tnas":
        return {}
    return {k: v for k, v in hyperparameters.items() if k in META_KEYS and v != TNAS.defaults[k]}


def surrogate_folder(method: str) -> str:
    """Cache folder name of ``method``'s surrogates: ``surrogates`` for default meta-training."""
    settings = meta_settings(method)
    return "surrogates" + "".join(f"_{v}" for _, v in sorted(settings.items()))


# ---- work units (run in worker processes) ------------------------------------------------------
def meta_train_unit(benchmark_path: str, target: str | tuple[str, ...], seed: int, out: str,
                    settings: dict | None = None, benchmark_sha256: str | None = None) -> dict:
    """Meta-train on every dataset but ``target`` (one dataset or several); returns timing (cached in ``out``).

    ``settings``: meta-training hyper-parameters over TNAS's defaults (see ``meta_settings``).
    ``benchmark_sha256``: the benchmark's fingerprint, if the caller has it (else computed here);
    a cached surrogate is reused only if this code meta-trained it on a benchmark of that content.
    """
    from naslib_bayes.results import atomic_write_json, source_fingerprint
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    code = source_fingerprint(*SCRIPTS)
    benchmark, benchmark_sha256 = _fingerprint(benchmark_path, benchmark_sha256)
    out_dir = Path(out)
    done = out_dir / "meta.json"
    record = read_json_record(done)
    if record is not None:  # one meta-trained by other code, on other data or with other settings is made again
        made_for = {"code": code, "benchmark_sha256": benchmark_sha256, "target": target, "settings": settings or {}}
        if all(record.get(key) == value for key, value in json.loads(json.dumps(made_for)).items()):
            return record
    import torch

    from naslib_bayes.optimizers.tnas import TNAS, meta_train_surrogate
    from naslib_bayes.predictors import surrogate_io

    torch.set_num_threads(1)
    benchmark = benchmark or load_benchmark(benchmark_path)
    source = benchmark.without(*((target,) if isinstance(target, str) else target))
    start, cpu = time.perf_counter(), time.process_time()
    # exactly what tnas meta-trains with its default hyper-parameters (and the method's settings)
    surrogate, info = meta_train_surrogate(source, METRIC, {**TNAS.defaults, **(settings or {})}, seed)
    log = info["meta_train"]
    record = {"target": target, "seed": seed, "settings": settings or {}, "meta_datasets": list(source.datasets),
              "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
              "iterations": log["iterations"], "best_iteration": log["best_iteration"],
              "best_val_loss": log["best_val_loss"], "code": code, "benchmark_sha256": benchmark_sha256}
    out_dir.mkdir(parents=True, exist_ok=True)
    surrogate_io.save(surrogate, out_dir / "surrogate.pt", {**info, "seed": seed})
    atomic_write_json(done, record)  # last: a record means a finished surrogate
    return record


def _fingerprint(benchmark_path: str, benchmark_sha256: str | None):
    """``(benchmark, fingerprint)``: the fingerprint as given, or (None given) computed from the
    file, which is then handed back so that the caller need not read it again (else None)."""
    if benchmark_sha256 is not None:
        return None, benchmark_sha256
    from naslib_bayes.comparison.records import benchmark_fingerprint
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    benchmark = load_benchmark(benchmark_path)
    return benchmark, benchmark_fingerprint(benchmark)


def run_settings(method: str, benchmark_sha256: str) -> dict:
    """What decides a run besides its target, seed, budget and surrogate, none of which the package's
    code fingerprint covers: the method's row of :data:`METHODS`, the metric and the benchmark's content."""
    optimizer, hyperparameters = METHODS[method]
    settings = {"optimizer": optimizer, "hyperparameters": hyperparameters, "metric": METRIC,
                "benchmark_sha256": benchmark_sha256}
    return json.loads(json.dumps(settings))  # as read back from a record


def search_unit(benchmark_path: str, target: str, method: str, seed: int, budget: int, surrogate: str | None,
                out: str, benchmark_sha256: str | None = None) -> dict:
    """One search; returns the accuracies queried and the timings (cached in ``out``).

    A cached run is reused only if it searched with the same surrogate (runs are cached per
    seed, and the surrogate of a seed changes with ``--surrogate-seeds``), with the same
    :func:`run_settings` and was made by the same code. ``benchmark_sha256``: the benchmark's
    fingerprint, if the caller has it (else the file is read to compute it).
    """
    from naslib_bayes.results import atomic_write_json, source_fingerprint
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    code = source_fingerprint(*SCRIPTS)
    path = Path(out)
    benchmark, benchmark_sha256 = _fingerprint(benchmark_path, benchmark_sha256)
    settings = run_settings(method, benchmark_sha256)
    cached = cached_run(path, surrogate, code=code, settings=settings)
    if cached is not None:
        return cached
    import torch

    from naslib_bayes.experiment import run_blackbox_search

    torch.set_num_threads(1)
    optimizer, hyperparameters = METHODS[method]
    hyperparameters = dict(hyperparameters)
    if optimizer == "tnas":
        hyperparameters["surrogate"] = surrogate
    benchmark = benchmark or load_benchmark(benchmark_path)
    start, cpu = time.perf_counter(), time.process_time()
    result = run_blackbox_search(benchmark, optimizer, target, budget, seed, search_metric=METRIC, report_metric=METRIC,
                                 hyperparameters=hyperparameters)
    run_wall, run_cpu = time.perf_counter() - start, time.process_time() - cpu
    record = {"target": target, "method": method, "seed": seed, "surrogate": surrogate_id(surrogate),
              "accuracies": [t["accuracy"] for t in result["trajectory"]],
              "architectures": [t["architecture"] for t in result["trajectory"]],
              "timing": result.get("timing"), "wall_s": result["wall_time_s"],
              "run_wall_s": run_wall, "run_cpu_s": run_cpu, "code": code, "settings": settings}
    atomic_write_json(path, record)
    return record


def cached_run(path: Path, surrogate: str | None, code: str | None = None, settings: dict | None = None) -> dict | None:
    """The run cached in ``path`` if it searched with ``surrogate`` and, when ``code`` and ``settings``
    are given, was made by the code of that fingerprint with those :func:`run_settings` (None: absent,
    another surrogate's, other code's or other settings')."""
    record = read_json_record(path)
    if record is None:
        return None
    if record.get("surrogate") != surrogate_id(surrogate) or (code is not None and record.get("code") != code):
        return None
    if settings is not None and record.get("settings") != settings:
        return None
    return record


def other_code(records: list[dict], benchmark_sha256: str | None = None) -> int:
    """How many of the cached ``records`` were made by other code than this (or before it was recorded),
    or, given the benchmark's fingerprint, runs made with other :func:`run_settings`."""
    from naslib_bayes.results import source_fingerprint

    current = source_fingerprint(*SCRIPTS)

    def other_settings(record: dict) -> bool:
        method = record.get("method")  # meta-training records have none
        return (benchmark_sha256 is not None and method is not None
                and record.get("settings") != run_settings(method, benchmark_sha256))

    return sum(1 for record in records if record.get("code") != current or other_settings(record))


def surrogate_id(surrogate: str | None) -> str | None:
    """``surrogates/<target>/seed<k>@<hash of its meta.json>`` (None for methods without a surrogate).

    The hash tells a surrogate meta-trained again in the same folder (its record differs, if
    only in the wall time) from the one a cached run searched with.
    """
    if surrogate is None:
        return None
    folder = Path(surrogate).parent
    record = folder / "meta.json"
    digest = hashlib.sha256(record.read_bytes()).hexdigest()[:12] if record.exists() else "no-record"
    return "/".join(folder.parts[-3:]) + "@" + digest


# ---- metrics -------------------------------------------------------------------------------------
def queries_to_best(accuracies: list[float], best: float, budget: int) -> int:
    """1-based index of the first query reaching ``best`` (budget + 1 if none does)."""
    for i, value in enumerate(accuracies, start=1):
        if value is not None and value >= best - 1e-9:
            return i
    return budget + 1


def regret_after(accuracies: list[float], best: float, k: int) -> float:
    seen = [v for v in accuracies[:k] if v is not None]
    return best - max(seen) if seen else float("nan")


def summarise(records: list[dict], best: float, budget: int) -> dict:
    q = [queries_to_best(r["accuracies"], best, budget) for r in records]
    return {
        "median_queries": float(np.median(q)),
        "queries": q,
        "regret": {k: float(np.mean([regret_after(r["accuracies"], best, k) for r in records])) for k in (5, 10, 20)},
        "final_regret": float(np.mean([regret_after(r["accuracies"], best, budget) for r in records])),
        "distinct": len({tuple(r["architectures"]) for r in records}),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from naslib_bayes.search_spaces.nasbench201.benchmark import canonical_dataset
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    from naslib_bayes.comparison.grid import require_distinct
    from naslib_bayes.comparison.records import benchmark_fingerprint
    from naslib_bayes.errors import UserError

    benchmark = load_benchmark(args.benchmark)
    args.benchmark_sha256 = benchmark_fingerprint(benchmark)  # once, not per run
    targets = [canonical_dataset(d) for d in args.datasets.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    # a row given twice would be searched twice into the same cache files by concurrent workers
    require_distinct("--methods", methods)
    require_distinct("--datasets", args.datasets.split(","), targets)
    seeds = list(range(args.seeds))
    n_surrogates = args.surrogate_seeds or args.seeds
    path = str(args.benchmark)
    folders = {surrogate_folder(m): meta_settings(m) for m in methods if METHODS[m][0] == "tnas"}
    started = time.perf_counter()
    if args.report_only:
        meta, runs = load_cache(args, targets, methods, seeds, n_surrogates)
        print_report(benchmark, targets, methods, seeds, runs, meta, args)
        return 0

    from naslib_bayes.comparison.processes import worker_pool  # torch: not for --help

    # one benchmark per cache: two would meta-train and search the same units over each other's files
    with exclusive_use(args.cache, "--cache"), worker_pool(max(1, args.jobs)) as pool:
        meta = {}
        if folders:
            futures = {(t, s, folder): pool.submit(meta_train_unit, path, t, s, str(args.cache / folder / t / f"seed{s}"),
                                                   settings, args.benchmark_sha256)
                       for folder, settings in folders.items()
                       for t in targets for s in range(min(n_surrogates, args.seeds))}
            meta = {key: f.result() for key, f in futures.items()}
            _progress(f"meta-training done ({len(meta)} surrogates)", started)
        # Methods in the order given, each over every target: with few workers an interrupted run
        # has the first methods complete (the cache keeps every finished run; --report-only prints them).
        futures = {}
        for m in methods:
            for t in targets:
                for s in seeds:
                    futures[(t, m, s)] = pool.submit(search_unit, path, t, m, s, args.budget,
                                                     method_surrogate(args, t, s, n_surrogates, m),
                                                     str(run_path(args, t, m, s, n_surrogates)),
                                                     args.benchmark_sha256)
        runs = {}
        for key, f in futures.items():
            runs[key] = f.result()
            _progress(f"{len(runs)}/{len(futures)} {key[1]} {key[0]} seed {key[2]}", started)
    _progress("searches done", started)
    print_report(benchmark, targets, methods, seeds, runs, meta, args)
    return 0


def surrogate_path(args, target: str, seed: int, n_surrogates: int, method: str = "tnas") -> Path:
    return args.cache / surrogate_folder(method) / target / f"seed{seed % n_surrogates}" / "surrogate.pt"


def method_surrogate(args, target: str, seed: int, n_surrogates: int, method: str) -> str | None:
    """The surrogate file a run of ``method`` searches with (None: the method meta-trains nothing)."""
    return str(surrogate_path(args, target, seed, n_surrogates, method)) if METHODS[method][0] == "tnas" else None


def run_path(args, target: str, method: str, seed: int, n_surrogates: int) -> Path:
    """A run's cache file; a seed searching with another seed's surrogate says which, so that
    benchmarks with different ``--surrogate-seeds`` keep their runs apart."""
    shared = METHODS[method][0] == "tnas" and seed % n_surrogates != seed
    name = f"seed{seed}-surrogate{seed % n_surrogates}.json" if shared else f"seed{seed}.json"
    return args.cache / "runs" / f"budget{args.budget}" / target / method_folder(method) / name


def method_folder(method: str) -> str:
    """A method's name as a folder name (``tnas k=1`` -> ``tnas_k1``)."""
    return method.replace(" ", "_").replace("=", "")


def load_cache(args, targets, methods, seeds, n_surrogates) -> tuple[dict, dict]:
    """The meta-training records and runs already in the cache (missing ones are left out)."""
    meta, runs = {}, {}
    for folder in sorted({surrogate_folder(m) for m in methods if METHODS[m][0] == "tnas"}):
        for t in targets:
            for s in range(min(n_surrogates, args.seeds)):
                record = read_json_record(args.cache / folder / t / f"seed{s}" / "meta.json")
                if record is not None:
                    meta[(t, s, folder)] = record
    for t in targets:
        for m in methods:
            for s in seeds:
                surrogate = method_surrogate(args, t, s, n_surrogates, m)
                record = cached_run(run_path(args, t, m, s, n_surrogates), surrogate)
                if record is not None:
                    runs[(t, m, s)] = record
    return meta, runs


def _progress(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.0f} s] {message}", file=sys.stderr, flush=True)


def print_report(benchmark, targets, methods, seeds, runs, meta, args) -> None:
    print(f"TNAS on NAS-Bench-201 ({args.benchmark.name}), leave one dataset out: {len(seeds)} seeds, budget {args.budget}")
    stale = other_code(list(runs.values()) + list(meta.values()), args.benchmark_sha256)
    if stale:
        print(f"note: {stale} of these runs and surrogates were made by other code than this, or (runs) with "
              "other method settings or benchmark contents (a cache read with --report-only is printed as it is; "
              "without it they are made again)")
    if meta:
        per_target = {t: len({k[1:] for k in meta if k[0] == t}) for t in targets}
        print(f"surrogates: {', '.join(f'{t}: {n}' for t, n in per_target.items())} meta-trained "
              f"(seed s uses surrogate s mod {args.surrogate_seeds or args.seeds})")
    header = (f"{'target':<15} {'method':<16} {'median q*':>9} {'regret@5':>9} {'@10':>7} {'@20':>7} "
              f"{'@' + str(args.budget):>7} {'distinct':>8} {'run wall s':>10} {'run CPU s':>9}")
    print(header)
    print("-" * len(header))
    for t in targets:
        best = benchmark.best(t, METRIC)
        for m in methods:
            records = [runs[(t, m, s)] for s in seeds if (t, m, s) in runs]
            if not records:
                print(f"{t:<15} {m:<16} {'(no runs yet)':>9}")
                continue
            summary = summarise(records, best, args.budget)
            r = summary["regret"]
            wall = np.mean([x.get("run_wall_s", x["wall_s"]) for x in records])
            cpu = [x["run_cpu_s"] for x in records if "run_cpu_s" in x]
            cpu_text = f"{np.mean(cpu):>9.1f}" if cpu else f"{'-':>9}"
            print(f"{t:<15} {m:<16} {summary['median_queries']:>9.1f} {r[5]:>9.3f} {r[10]:>7.3f} {r[20]:>7.3f} "
                  f"{summary['final_regret']:>7.3f} {summary['distinct']:>5}/{len(records)} {wall:>10.1f} {cpu_text}")
        if "tnas" in methods:
            records = [runs[(t, "tnas", s)] for s in seeds if (t, "tnas", s) in runs]
            if records:
                per_seed = summarise(records, best, args.budget)["queries"]
                print(f"{'':<15} best {best:.2f}; tnas queries to it per seed: {per_seed}")
    print_timings(targets, methods, seeds, runs, meta)


def print_timings(targets, methods, seeds, runs, meta) -> None:
    tnas = [r for (t, m, s), r in runs.items() if m == "tnas" and r.get("timing")]
    if tnas:
        enc = [r["timing"]["encode_all_cells_s"] for r in tnas]
        enc_cpu = [r["timing"].get("encode_all_cells_cpu_s") for r in tnas]
        print(f"encode all 15,625 cells (psi, hidden 64): median {np.median(enc):.2f} s wall, "
              f"{np.median([e for e in enc_cpu if e is not None]):.2f} s CPU")
    print_iteration_times("one TNAS BO iteration (fine-tune 50 steps + EI over the candidate cells)", tnas)
    print_iteration_times("one gp-bo iteration (fit 100 steps from scratch + EI)",
                          [r for (t, m, s), r in runs.items() if m == "gp-bo" and r.get("timing")])
    for folder in sorted({key[2] for key in meta}):
        print_meta_training_times(folder, [record for key, record in meta.items() if key[2] == folder])


def print_iteration_times(what: str, records: list[dict]) -> None:
    """Mean wall and CPU time of a BO iteration over ``records`` (runs within their initial design have none)."""
    timings = [r["timing"] for r in records if r["timing"].get("bo_iteration_mean_s") is not None]
    if not timings:
        return
    print(f"{what}: mean {np.mean([t['bo_iteration_mean_s'] for t in timings]):.3f} s wall "
          f"(worst run's max {np.max([t['bo_iteration_max_s'] for t in timings]):.2f} s), "
          f"{np.mean([t['bo_iteration_mean_cpu_s'] for t in timings]):.3f} s CPU")


def print_meta_training_times(folder: str, records: list[dict]) -> None:
    """Meta-training times of the surrogates of one folder, early stops counted against their own cap."""
    from naslib_bayes.optimizers.tnas import TNAS

    wall = [m["wall_s"] for m in records]
    cpu = [m["cpu_s"] for m in records]
    best_its = [m["best_iteration"] for m in records]
    cap = [m.get("settings", {}).get("meta_iterations", TNAS.defaults["meta_iterations"]) for m in records]
    early = sum(m["iterations"] < c for m, c in zip(records, cap))
    caps = sorted(set(cap))
    print(f"meta-training ({folder}): median {np.median(wall):.0f} s wall (max {np.max(wall):.0f} s), median "
          f"{np.median(cpu):.0f} s CPU (max {np.max(cpu):.0f} s); {early} of {len(records)} stopped early (cap "
          f"{'/'.join(map(str, caps))} iterations), best weights at iteration {np.min(best_its):.0f}-{np.max(best_its):.0f}")


if __name__ == "__main__":
    from naslib_bayes.comparison.processes import run_script

    run_script(main)
