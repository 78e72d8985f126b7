"""One-shot comparisons: every (optimizer, seed) trains on the same data for the same epochs.

Each run is one ``naslib-bayes search`` of a one-shot optimizer on ``--dataset`` (its own
folder ``DIR/work/<run>/`` holds checkpoints), after which the derived NAS-Bench-201 cell is
looked up in the benchmark on every benchmark dataset and the result is written atomically to
``DIR/runs/<optimizer>-<dataset>-<seed>.json``, as black-box comparisons do. The summary
gives, per optimizer, the mean benchmark accuracy of the derived cells on each benchmark
dataset with a seeded bootstrap 95% interval, the number of distinct cells, and the search
time.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from naslib_bayes import results
from naslib_bayes.comparison import summary as bb_summary
from naslib_bayes.comparison.grid import RunSpec, require_distinct
from naslib_bayes.comparison.processes import run_in_workers, worker_benchmark
from naslib_bayes.comparison.records import (
    FINGERPRINT_KEY, RUNS_DIR, benchmark_fingerprint, load_run, read_record, refuse_other_settings, run_path,
)
from naslib_bayes.comparison.runner import holding, split_finished
from naslib_bayes.data import canonical_name
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.oneshot import OneShotOptimizer
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
from naslib_bayes.threads import torch_threads

WORK_DIR = "work"
REPORT_METRIC = "test_accuracy"
#: Key of the determinants in a run file, and the file holding them in a run's work folder.
DETERMINANTS_KEY = "comparison"
DETERMINANTS_FILE = "comparison.json"
#: Key of the determinants holding the SHA-256 of the data files the searches read.
DATA_FINGERPRINT_KEY = "data_sha256"
#: Joint epochs of a run when ``--epochs`` is not given: the one-shot optimizers' default.
DEFAULT_EPOCHS = OneShotOptimizer.common_defaults["epochs"]
#: ``search_fn(settings, spec, work_dir) -> result dict`` runs one one-shot search.
SearchFn = Callable[["OneShotSettings", RunSpec, Path], dict]


@dataclass
class OneShotSettings:
    """What a one-shot comparison runs (see ``naslib-bayes compare --oneshot``)."""

    benchmark: Path
    out: Path
    optimizers: list[str]
    dataset: str
    data_root: Path | None
    seeds: list[int]
    epochs: int | None = None
    jobs: int = 1
    #: SHA-256 of the data files the searches read (``data.loaders.data_fingerprint``; the command
    #: sets it); None for digits, which reads none, or when not hashed.
    data_sha256: str | None = None

    def __post_init__(self) -> None:
        require_distinct("optimizers", self.optimizers)
        require_distinct("seeds", self.seeds)
        for name in self.optimizers:
            registry.get_spec(name, registry.ONE_SHOT)  # the registry's one-line error
        # once here, not in every run's search after --out is made; and one spelling names the
        # run files, so a re-run typing MNIST reuses the runs made as mnist
        self.dataset = canonical_name(self.dataset)
        if self.epochs is None:  # named, so that a run is the same run whether --epochs 1 was typed or not
            self.epochs = DEFAULT_EPOCHS

    def runs(self) -> list[RunSpec]:
        return [RunSpec(o, self.dataset, s) for s in self.seeds for o in self.optimizers]

    def determinants(self, spec: RunSpec, fingerprint: str) -> dict[str, Any]:
        """What decides a run's outcome: a finished or half-done run is reused only if they match.
        The data files' contents are among them when hashed (absent for digits: its runs made
        before they were recorded stay reusable)."""
        data = {} if self.data_sha256 is None else {DATA_FINGERPRINT_KEY: self.data_sha256}
        return {"optimizer": spec.optimizer, "dataset": spec.dataset, "seed": spec.seed, "epochs": self.epochs,
                "data_root": None if self.data_root is None else str(Path(self.data_root).resolve()),
                FINGERPRINT_KEY: fingerprint, **data}


# ---- one run ---------------------------------------------------------------------------------
def search_via_cli(settings: OneShotSettings, spec: RunSpec, work: Path) -> dict:
    """One ``naslib-bayes search`` in this process; its ``result.json`` is the run's result."""
    from naslib_bayes.cli import run_command
    from naslib_bayes.training.checkpoint import CHECKPOINT_FILE

    done = work / results.RESULT_FILE
    if not done.exists():
        argv = ["search", "--optimizer", spec.optimizer, "--dataset", spec.dataset, "--seed", str(spec.seed),
                "--benchmark", str(settings.benchmark), "--out", str(work)]
        if (work / CHECKPOINT_FILE).exists():  # a search the comparison was stopped in: continue it
            argv.append("--resume")
        if settings.data_root is not None:
            argv += ["--data-root", str(settings.data_root)]
        if settings.epochs is not None:
            argv += ["--epochs", str(settings.epochs)]
        code = run_command(argv)  # Ctrl-C or SIGTERM stops the comparison too, which says so once
        if code != 0 or not done.exists():
            raise UserError(f"one-shot search {spec.name} failed (exit code {code}); see the error above")
    return json.loads(done.read_text())


def derived_cell(result: dict) -> nb201.Cell:
    """The NAS-Bench-201 cell a one-shot search derived (op indices or benchmark string)."""
    ops = result.get("final_architecture_op_indices")
    arch = result.get("final_architecture")
    if ops is not None:
        return nb201.validate(ops)
    if isinstance(arch, str):
        return nb201.from_string(arch)
    raise UserError(f"{result.get('optimizer')} seed {result.get('seed')} derived no NAS-Bench-201 cell "
                    "(a DARTS genotype cannot be looked up in the benchmark)")


def with_benchmark_accuracy(result: dict, benchmark: Benchmark) -> dict:
    """The result with its derived cell's benchmark accuracy on every benchmark dataset."""
    cell = derived_cell(result)
    return {**result, "command": "compare", "report_metric": REPORT_METRIC,
            "final_architecture": nb201.to_string(cell), "final_architecture_op_indices": list(cell),
            "benchmark_accuracy": benchmark.query_everywhere(cell, REPORT_METRIC)}


def _execute(settings: OneShotSettings, spec: RunSpec, search_fn: SearchFn, fingerprint: str,
             benchmark: Benchmark | None = None) -> RunSpec:
    work = Path(settings.out) / WORK_DIR / spec.name
    determinants = settings.determinants(spec, fingerprint)
    _claim_work_folder(work, determinants)
    result = with_benchmark_accuracy(search_fn(settings, spec, work), worker_benchmark(benchmark))
    results.atomic_write_json(run_path(settings.out, spec), {**result, DETERMINANTS_KEY: determinants})
    return spec


def refuse_other_data(path: Path, recorded: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a run file or work folder made on other data files, or made before their contents
    were recorded (it cannot be shown to match them), naming the data; then any other setting."""
    key = DATA_FINGERPRINT_KEY
    if key in expected and recorded.get(key) != expected[key]:
        if recorded.get(key) is None:
            raise UserError(f"{path} does not record its data files' contents ({key}), so it cannot be shown "
                            "to match these; use another --out")
        raise UserError(f"{path} was run on other data files ({key} {recorded[key][:12]}; these have "
                        f"{expected[key][:12]}); use another --out")
    refuse_other_settings(path, recorded, expected)


def _claim_work_folder(work: Path, determinants: dict[str, Any]) -> None:
    """A run's work folder continues only a search made with the same settings."""
    record = work / DETERMINANTS_FILE
    if work.is_dir():  # a kill inside the write of the record leaves only its temporary: no search yet
        results.remove_killed_writes(work)
    recorded = read_record(record, "record of the run's settings", "delete the run's folder to run it again")
    if recorded is not None:
        refuse_other_data(record, with_default_epochs(recorded), determinants)
    elif work.exists() and any(work.iterdir()):
        raise UserError(f"{work} holds a search that does not record its settings ({DETERMINANTS_FILE}); "
                        "use another --out")
    results.atomic_write_json(record, determinants)


def with_default_epochs(recorded: dict[str, Any]) -> dict[str, Any]:
    """Recorded determinants, with the epochs of a run made without ``--epochs`` before they were
    recorded as :data:`DEFAULT_EPOCHS` (such files say None) read as the default it searched for."""
    if "epochs" in recorded and recorded["epochs"] is None:
        return {**recorded, "epochs": DEFAULT_EPOCHS}
    return recorded


def plan_oneshot(settings: OneShotSettings, fingerprint: str) -> tuple[list[RunSpec], list[RunSpec]]:
    """Runs to do and runs done; a run file made with other settings is refused before anything runs."""

    def check(spec: RunSpec, result: dict[str, Any]) -> None:
        refuse_other_data(run_path(settings.out, spec), with_default_epochs(result.get(DETERMINANTS_KEY) or {}),
                          settings.determinants(spec, fingerprint))

    return split_finished(settings.out, settings.runs(), check)


# ---- the grid --------------------------------------------------------------------------------
def run_oneshot_comparison(settings: OneShotSettings, benchmark: Benchmark | None = None,
                           search_fn: SearchFn = search_via_cli,
                           on_run_done: Callable[[RunSpec], None] | None = None,
                           held: contextlib.ExitStack | None = None) -> tuple[list[RunSpec], list[RunSpec], float]:
    """Run the missing runs; returns (runs done now, runs reused, elapsed seconds).

    ``held``: where the lock on ``settings.out`` goes (see :func:`results.exclusive_use`), for a
    caller that writes there afterwards too; by default it is released on return.
    """
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    start = time.perf_counter()
    benchmark = benchmark or load_benchmark(settings.benchmark)
    require_report_metric(benchmark)
    fingerprint = benchmark_fingerprint(benchmark)
    todo, done = plan_oneshot(settings, fingerprint)
    with holding(settings.out, held):  # made after every check: refused settings leave no folder
        Path(settings.out, RUNS_DIR).mkdir(parents=True, exist_ok=True)
        results.remove_killed_writes(Path(settings.out, RUNS_DIR))  # a killed write's temporary: no write under way
        ran = _run_missing(settings, todo, search_fn, fingerprint, benchmark, on_run_done)
    return ran, done, time.perf_counter() - start


def require_report_metric(benchmark: Benchmark) -> None:
    """Refuse a benchmark on which no derived cell could be scored (a zero-cost proxy file), before
    --out is made: every search would make its folder, then fail on it."""
    if not any(benchmark.has_metric(d, REPORT_METRIC) for d in benchmark.datasets):
        raise UserError(f"{benchmark.source} has no {REPORT_METRIC} for any dataset: a one-shot comparison "
                        "scores the derived cells by it; give a NAS-Bench-201 file that has it")


def _run_missing(settings: OneShotSettings, todo: list[RunSpec], search_fn: SearchFn, fingerprint: str,
                 benchmark: Benchmark, on_run_done: Callable[[RunSpec], None] | None) -> list[RunSpec]:
    ran: list[RunSpec] = []
    if settings.jobs == 1:
        with torch_threads(1):  # as a worker would have
            for spec in todo:
                ran.append(_execute(settings, spec, search_fn, fingerprint, benchmark))
                if on_run_done:
                    on_run_done(spec)
    else:
        def on_result(_tag, spec: RunSpec) -> None:
            ran.append(spec)
            if on_run_done:
                on_run_done(spec)

        tasks = [(spec, _execute, (settings, spec, search_fn, fingerprint)) for spec in todo]
        run_in_workers(settings.jobs, settings.benchmark, settings.out, [tasks], on_result)
    return ran


# ---- summary ---------------------------------------------------------------------------------
@dataclass
class OneShotRow:
    optimizer: str
    runs: int
    accuracy: dict[str, tuple[float, float, float]]  # dataset -> (mean, low, high)
    distinct_cells: int
    search_time_mean_s: float
    search_time_total_s: float
    cells: list[str] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)  # the code of each run (summary.source_of)


def summarize_oneshot(out: Path, optimizers: Sequence[str], dataset: str, seeds: Sequence[int]) -> list[OneShotRow]:
    """Per optimizer: benchmark accuracy of the derived cells (mean [95% CI]) and search time.

    Seeds are taken in increasing order, as :func:`~naslib_bayes.comparison.summary.summarize`
    takes them, so the same runs get the same interval whatever order the seeds were given in.
    """
    rows = []
    for optimizer in optimizers:
        runs = []
        for seed in sorted(seeds):
            result = load_run(out, RunSpec(optimizer, dataset, seed))
            if result is None:
                raise UserError(f"{run_path(out, RunSpec(optimizer, dataset, seed))} is missing: run the comparison to finish it")
            runs.append(result)
        accuracy = {}
        for bench_dataset in runs[0]["benchmark_accuracy"]:
            values = np.array([[r["benchmark_accuracy"].get(bench_dataset, math.nan)] for r in runs], dtype=float)
            mean, low, high = bb_summary.bootstrap_mean(values, bb_summary.bootstrap_seed("oneshot", bench_dataset))
            accuracy[bench_dataset] = (float(mean[0]), float(low[0]), float(high[0]))
        times = [float(r["wall_time_s"]) for r in runs]
        cells = [r["final_architecture"] for r in runs]
        rows.append(OneShotRow(optimizer, len(runs), accuracy, len(set(cells)), sum(times) / len(times), sum(times), cells,
                               [bb_summary.source_of(r) for r in runs]))
    return rows


def write_oneshot_summary(rows: list[OneShotRow], dataset: str, out: Path, epochs: int | None) -> None:
    """``summary.csv`` (one row per optimizer) and ``summary.md``."""
    import csv

    datasets = list(rows[0].accuracy) if rows else []
    records = []
    for r in rows:
        record: dict[str, Any] = {"optimizer": r.optimizer, "search_dataset": dataset, "runs": r.runs}
        for d, (mean, low, high) in r.accuracy.items():
            record.update({f"{d}_accuracy": round(mean, 6), f"{d}_ci_low": round(low, 6), f"{d}_ci_high": round(high, 6)})
        record.update(distinct_cells=r.distinct_cells, wall_time_s_mean=round(r.search_time_mean_s, 6),
                      wall_time_s_total=round(r.search_time_total_s, 6))
        records.append(record)
    tmp = out / "summary.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["optimizer"])
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(out / "summary.csv")
    (out / "summary.md.tmp").write_text(oneshot_markdown(rows, dataset, datasets, epochs))
    (out / "summary.md.tmp").replace(out / "summary.md")


#: How DARTS's training differs from the others' on the same supernet, said wherever they are compared.
DARTS_HALVES_NOTE = ("DARTS trains its weights on one half of the search images and its architecture on the other, "
                     "so in the joint epochs its weights take half as many steps as the others'.")


def _epochs_text(epochs: int | None) -> str:
    if not epochs:
        return ""
    return f" for {bb_summary.counted(epochs, 'joint epoch')} after a warm-up epoch"


def oneshot_markdown(rows: list[OneShotRow], dataset: str, datasets: list[str], epochs: int | None) -> str:
    seeds = rows[0].runs if rows else 0
    lines = ["# One-shot comparison", "",
             f"Each optimizer searched on `{dataset}`{_epochs_text(epochs)} with {bb_summary.counted(seeds, 'seed')}; "
             f"the derived NAS-Bench-201 cell of each run is looked up in the benchmark ({REPORT_METRIC}). "
             f"Cells: {bb_summary.cells_text(seeds)}."
             + (f" {DARTS_HALVES_NOTE}" if any(r.optimizer == "darts" for r in rows) else ""), "",
             "| optimizer | " + " | ".join(f"{d} accuracy" for d in datasets) + " | distinct cells |",
             "|---|" + "---:|" * (len(datasets) + 1)]
    for r in rows:
        lines.append(f"| {r.optimizer} | " + " | ".join(bb_summary.fmt_regret(*r.accuracy[d], r.runs) for d in datasets)
                     + f" | {r.distinct_cells}/{r.runs} |")
    code_note = oneshot_code_note(rows)
    if code_note:
        lines += ["", f"Note: {code_note}."]
    lines += ["", "## Wall time", "", "| optimizer | runs | total search time (s) | mean per run (s) |", "|---|---:|---:|---:|"]
    lines += [f"| {r.optimizer} | {r.runs} | {r.search_time_total_s:.1f} | {r.search_time_mean_s:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def oneshot_code_note(rows: list[OneShotRow]) -> str | None:
    """The summary's note when the runs were made by more than one version of the code."""
    return bb_summary.code_versions_note(source for r in rows for source in r.sources)


def run_command(args) -> int:
    """``naslib-bayes compare --oneshot ...`` (arguments already checked by the command)."""
    from tqdm import tqdm

    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    settings = OneShotSettings(benchmark=args.benchmark, out=args.out, optimizers=args.oneshot,
                               dataset=_required(args, "dataset"), data_root=args.data_root, seeds=args.seeds,
                               epochs=args.epochs, jobs=args.jobs)
    check_search_data(settings)
    benchmark = load_benchmark(args.benchmark)
    with tqdm(desc="compare --oneshot", unit="run", total=len(settings.runs()), disable=None) as bar:
        ran, done, elapsed = run_oneshot_comparison(settings, benchmark=benchmark, on_run_done=lambda _: bar.update(),
                                                   held=args.held_folders)
    rows = summarize_oneshot(args.out, settings.optimizers, settings.dataset, settings.seeds)
    write_oneshot_summary(rows, settings.dataset, Path(args.out), settings.epochs)
    bb_summary.note_runs_left_out(args.out, settings.optimizers, [settings.dataset], settings.seeds)
    code_note = oneshot_code_note(rows)
    if code_note:
        print(f"warning: {code_note}", file=sys.stderr)
    print(f"{len(ran)} runs done, {len(done)} reused, {elapsed:.0f} s -> {Path(args.out) / 'summary.md'}")
    return 0


def check_search_data(settings: OneShotSettings) -> None:
    """Load the data once as every run's search would: data they cannot read is one error before
    --out is made, not one per search after its folder and the comparison's were made. Then hash
    the files read (searches in this process reuse the digest for their checkpoints; a worker of
    --jobs 2 hashes them once more): a run made on other files in the same folder is not reused."""
    from naslib_bayes.data import load_dataset
    from naslib_bayes.data.loaders import data_fingerprint
    from naslib_bayes.training.search import SearchConfig

    load_dataset(settings.dataset, settings.data_root, seed=SearchConfig.data_seed)
    settings.data_sha256 = data_fingerprint(settings.dataset, settings.data_root)


def _required(args, name: str):
    value = getattr(args, name)
    if value is None:
        raise UserError(f"--{name.replace('_', '-')} is required with --oneshot")
    return value
