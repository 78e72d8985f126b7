"""Summaries of a comparison, recomputed from its run files alone.

Regret after t queries = the dataset's best report-metric value minus the report-metric value
of the incumbent after t queries, where the incumbent is the best cell so far *by the search
metric*. Both numbers are in each run file (``report_optimum``, ``incumbent_report_accuracy``),
so a summary never needs the benchmark, and anyone can recompute it from ``DIR/runs``.

Intervals are percentile bootstrap 95% intervals of the mean over seeds, from a numpy Generator
seeded by the dataset's name: the same runs always give the same interval, whatever else is in
the table, and all optimizers on a dataset are resampled with the same seed draws (paired, as
their runs share seeds). "Queries to the optimum" is the first t at which regret is zero; a run
that never gets there counts as budget + 1, and the median is the usual one (the mean of the
two middle values for an even number of seeds) unless a middle value is censored: then only a
bound is known, printed as ">budget" when every middle value is censored and as ">=m" when only
the upper one is (m the mean of the lower one and budget + 1), instead of averaging a censored
value into a number. "Distinct trajectories" counts the different query sequences among the seeds: a method
whose seeds cannot change its queries (a deterministic ranking, one shared surrogate) has one,
and then its interval says nothing about the variation between seeds.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from naslib_bayes.comparison.grid import PREPARE_SEED, RunSpec
from naslib_bayes.comparison.records import (PREPARATION_SEED_KEY, PREPARED_FILE, RUNS_DIR, load_run, prepared_dir,
                                              run_path)
from naslib_bayes.errors import UserError
from naslib_bayes.results import SOURCE_KEY
from naslib_bayes.search_spaces.nasbench201.loaders import CSV_NOTE

CHECKPOINTS = (10, 20, 50, 100)
BOOTSTRAP_SAMPLES = 5000
BOOTSTRAP_SEED = 20240607
CONFIDENCE = 0.95
#: Regret at or below this counts as having found the optimum (values come from one table).
OPTIMUM_TOLERANCE = 1e-9


# ---- statistics ------------------------------------------------------------------------------
def regret_curve(result: Mapping[str, Any]) -> np.ndarray:
    """Regret after each query of one run, shape (budget,); NaN where the value is unknown."""
    optimum = result.get("report_optimum")
    values = result.get("incumbent_report_accuracy")
    if optimum is None or values is None:
        raise UserError(f"run {result.get('optimizer')}-{result.get('dataset')}-{result.get('seed')} "
                        "has no report_optimum/incumbent_report_accuracy; re-run it")
    return optimum - np.array([np.nan if v is None else v for v in values], dtype=float)


def checkpoints(budget: int) -> list[int]:
    """Query counts the table reports: 10, 20, 50, 100 up to the budget, and the budget itself."""
    points = [t for t in CHECKPOINTS if t <= budget]
    return points if budget in points else points + [budget]


def bootstrap_seed(*names: str) -> np.random.Generator:
    """A Generator seeded by names, so an interval depends only on the runs it summarises."""
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32("/".join(names).encode())])


def bootstrap_mean(values: np.ndarray, rng: np.random.Generator,
                   samples: int = BOOTSTRAP_SAMPLES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over rows of ``values`` (seeds, T) with percentile bootstrap intervals per column.

    Resampling seeds with replacement is done as multinomial counts times the data, which
    keeps (samples, T) in memory instead of (samples, seeds, T).
    """
    n = values.shape[0]
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=samples)  # (samples, n)
    means = counts @ values / n  # (samples, T)
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return values.mean(axis=0), low, high


def queries_to_optimum(curve: np.ndarray) -> int:
    """First query count with zero regret; ``len(curve) + 1`` when the run never reached it."""
    hits = np.flatnonzero(curve <= OPTIMUM_TOLERANCE)
    return int(hits[0]) + 1 if hits.size else len(curve) + 1


def censored_median(values: Sequence[int], budget: int) -> tuple[float, bool]:
    """Median of ``values`` and whether it is censored (a middle value is above the budget).

    A censored median is returned as the least it can be, counting every censored value as
    budget + 1: budget + 1 when every middle value is censored ("more than the budget"), the
    mean of the lower middle value and budget + 1 when only the upper one is.
    """
    ordered = sorted(values)
    middle = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    censored = middle[-1] > budget
    middle = [min(v, budget + 1) for v in middle]
    return sum(middle) / len(middle), censored


def distinct_trajectories(results: Iterable[Mapping[str, Any]]) -> int:
    """How many different query sequences the runs made."""
    return len({tuple(step["architecture"] for step in r["trajectory"]) for r in results})


# ---- rows ------------------------------------------------------------------------------------
@dataclass
class Row:
    """Summary of one optimizer on one dataset."""

    optimizer: str
    dataset: str
    runs: int
    budget: int
    optimum: float
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    median_queries: float
    censored: bool
    reached: int
    distinct: int
    wall_total_s: float

    def at(self, t: int) -> tuple[float, float, float]:
        return float(self.mean[t - 1]), float(self.low[t - 1]), float(self.high[t - 1])

    @property
    def wall_mean_s(self) -> float:
        return self.wall_total_s / self.runs


@dataclass
class PrepRow:
    """One preparation (meta-training) of a transfer optimizer, for one dataset and seed."""

    optimizer: str
    dataset: str
    seed: int
    wall_time_s: float


@dataclass
class Summary:
    optimizers: list[str]
    datasets: list[str]
    seeds: list[int]
    budget: int
    search_metric: str
    report_metric: str
    benchmark: str
    rows: list[Row]
    prep_rows: list[PrepRow]
    notes: list[str] = field(default_factory=list)
    code_note: str | None = None  # see code_versions_note

    def row(self, optimizer: str, dataset: str) -> Row:
        return next(r for r in self.rows if (r.optimizer, r.dataset) == (optimizer, dataset))


def summarize(out: Path, optimizers: Sequence[str], datasets: Sequence[str], seeds: Sequence[int]) -> Summary:
    """Summary of the comparison in ``out`` over the given grid (every run must be finished).

    Seeds are taken in increasing order whatever order they were given in: the bootstrap pairs
    its draws with row positions, so the same runs in another order would get another interval.
    """
    seeds = sorted(seeds)
    runs = {}
    for dataset in datasets:
        for optimizer in optimizers:
            runs[optimizer, dataset] = [_require_run(out, RunSpec(optimizer, dataset, s)) for s in seeds]
    every = [r for rs in runs.values() for r in rs]
    budget = _single(every, "budget")
    rows = [_row(o, d, rs, budget) for (o, d), rs in runs.items()]
    return Summary(
        optimizers=list(optimizers), datasets=list(datasets), seeds=list(seeds), budget=budget,
        search_metric=_single(every, "search_metric"), report_metric=_single(every, "report_metric"),
        benchmark=Path(str(every[0]["config"].get("benchmark", "?"))).name,
        rows=rows, prep_rows=_prep_rows(out, runs), notes=_notes(every),
        code_note=code_versions_note(map(source_of, every)),
    )


def runs_left_out(out: Path, optimizers: Sequence[str], datasets: Sequence[str], seeds: Sequence[int]) -> str | None:
    """One line naming the runs in ``out`` that a summary of this grid leaves out (None: none).

    A re-run with a narrower grid rewrites the summary for its own grid, so the rows of a wider
    one disappear while its runs stay: the user is told, rather than the rows kept, because a
    summary describes the grid of its command (and its seeds, the same for every optimizer).
    """
    grid = {RunSpec(o, d, s).name for o in optimizers for d in datasets for s in seeds}
    outside = [path for path in sorted(Path(out, RUNS_DIR).glob("*.json")) if path.stem not in grid]
    if not outside:
        return None
    records = [_run_fields(path) for path in outside]
    dropped = [f"{axis} {', '.join(values)}" for axis, values in (
        ("optimizers", _unlisted(records, "optimizer", optimizers)), ("datasets", _unlisted(records, "dataset", datasets)),
        ("seeds", _unlisted(records, "seed", seeds))) if values]
    return (f"summary.md and summary.csv cover this grid only; {counted(len(outside), 'run')} in {Path(out, RUNS_DIR)} "
            f"{'is' if len(outside) == 1 else 'are'} left out ({'; '.join(dropped) or 'unreadable'}): "
            "name them in the grid to summarise them")


def note_runs_left_out(out: Path, optimizers: Sequence[str], datasets: Sequence[str], seeds: Sequence[int]) -> None:
    """Print :func:`runs_left_out`'s line, if any, as a note on stderr."""
    left_out = runs_left_out(out, optimizers, datasets, seeds)
    if left_out:
        print(f"note: {left_out}", file=sys.stderr)


def _run_fields(path: Path) -> dict[str, Any]:
    """A run file's record, or nothing where it cannot be read (the note still counts it)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _unlisted(records: Iterable[Mapping[str, Any]], key: str, listed: Sequence) -> list[str]:
    """The values of ``key`` in ``records`` that ``listed`` lacks, as text, in order (numbers
    numerically: seeds 2, 10; a value of another type, from a damaged record, after them)."""
    # keyed by text: a damaged record's value may be a list, which a set cannot hold
    values = {str(r[key]): r[key] for r in records if key in r and r[key] not in listed}
    return sorted(values, key=lambda text: _numbers_first(values[text]))


def _numbers_first(value: Any) -> tuple:
    """Sort key: numbers by value, then anything else by its text."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (not number, value if number else 0, str(value))


def _require_run(out: Path, spec: RunSpec) -> dict[str, Any]:
    result = load_run(out, spec)
    if result is None:
        raise UserError(f"{run_path(out, spec)} is missing: run the comparison to finish it")
    return result


def _single(results: Iterable[Mapping[str, Any]], key: str):
    values = {r.get(key) for r in results}
    if len(values) != 1:
        raise UserError(f"the runs disagree on {key}: {sorted(map(str, values))}; they cannot be compared")
    return values.pop()


def _row(optimizer: str, dataset: str, results: list[dict[str, Any]], budget: int) -> Row:
    curves = np.stack([regret_curve(r) for r in results])  # (seeds, budget)
    mean, low, high = bootstrap_mean(curves, bootstrap_seed(dataset))
    hits = [queries_to_optimum(c) for c in curves]
    median, censored = censored_median(hits, budget)
    return Row(optimizer=optimizer, dataset=dataset, runs=len(results), budget=budget,
               optimum=float(results[0]["report_optimum"]), mean=mean, low=low, high=high,
               median_queries=median, censored=censored, reached=sum(h <= budget for h in hits),
               distinct=distinct_trajectories(results),
               wall_total_s=float(sum(r["wall_time_s"] for r in results)))


def _prep_rows(out: Path, runs: Mapping[tuple[str, str], list[dict[str, Any]]]) -> list[PrepRow]:
    """The preparations the runs used (a run file from before preparations were per seed used seed 0's)."""
    rows = []
    for (optimizer, dataset), results in runs.items():
        seeds = sorted({int((r.get("config") or {}).get(PREPARATION_SEED_KEY, PREPARE_SEED)) for r in results})
        for seed in seeds:
            path = prepared_dir(out, optimizer, dataset, seed) / PREPARED_FILE
            if path.exists():
                rows.append(PrepRow(optimizer, dataset, seed, float(json.loads(path.read_text())["wall_time_s"])))
    return rows


def _notes(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Distinct notes of the runs, with the benchmark's path shortened to its file name."""
    notes: dict[str, None] = {}
    for result in results:
        source = str(result.get("config", {}).get("benchmark", ""))
        for note in result.get("notes") or []:
            notes.setdefault(note.replace(source, Path(source).name) if source else note)
    return list(notes)


def source_of(result: Mapping[str, Any]) -> str | None:
    """The fingerprint of the code that made a run (``versions.naslib_bayes_source``; None if unrecorded)."""
    return (result.get("versions") or {}).get(SOURCE_KEY)


def code_versions_note(sources: Iterable[str | None]) -> str | None:
    """A note when the runs were made by more than one version of naslib-bayes's code (None otherwise).

    ``sources``: each run's :func:`source_of`. Run files are reused by their settings, so a
    comparison continued after the code changed mixes results of both. Runs from before the
    fingerprint was recorded count as one group, "not recorded".
    """
    counts = Counter(sources)
    if len(counts) < 2:
        return None
    groups = sorted(counts.items(), key=lambda kv: (kv[0] is None, -kv[1], str(kv[0])))
    listed = ", ".join(f"{code or 'not recorded'}: {counted(n, 'run')}" for code, n in groups)
    return (f"the runs were made by {len(counts)} versions of the naslib-bayes code (source fingerprint {listed}), "
            "so differences between rows may come from the code as well as from the methods")


def _split_notes(summary: "Summary") -> tuple[list[str], dict[str, list[str]]]:
    """Notes naming no dataset (said once), and notes naming one dataset (said under it)."""
    general, by_dataset = [], {d: [] for d in summary.datasets}
    for note in summary.notes:
        named = [d for d in summary.datasets if f" {d}:" in note or note.endswith(f" {d}")]
        (by_dataset[named[0]] if len(named) == 1 else general).append(note)
    return general, by_dataset


# ---- writers -----------------------------------------------------------------------------------
WALL_TIME_COLUMNS = ("wall_time_s_total", "wall_time_s_mean")


def csv_rows(summary: Summary) -> list[dict[str, Any]]:
    """One dict per CSV row: a row per (optimizer, dataset), then one per preparation."""
    points = checkpoints(summary.budget)
    rows = []
    for r in summary.rows:
        row: dict[str, Any] = {"optimizer": r.optimizer, "dataset": r.dataset, "row": "search", "runs": r.runs,
                               "budget": r.budget, "optimum": _num(r.optimum)}
        for t in points:
            mean, low, high = r.at(t)
            row.update({f"regret_{t}": _num(mean), f"regret_{t}_ci_low": _num(low), f"regret_{t}_ci_high": _num(high)})
        row.update(median_queries_to_optimum=_num(r.median_queries), median_censored=r.censored,
                   runs_reaching_optimum=r.reached, distinct_trajectories=r.distinct,
                   wall_time_s_total=_num(r.wall_total_s),
                   wall_time_s_mean=_num(r.wall_mean_s))
        rows.append(row)
    for p in summary.prep_rows:
        rows.append({"optimizer": p.optimizer, "dataset": p.dataset, "row": "meta-training", "preparation_seed": p.seed,
                     "wall_time_s_total": _num(p.wall_time_s), "wall_time_s_mean": _num(p.wall_time_s)})
    return rows


def write_csv(summary: Summary, path: Path) -> Path:
    rows = csv_rows(summary)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    tmp = Path(f"{path}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def _num(value: float) -> float | str:
    return "" if value is None or not math.isfinite(value) else round(float(value), 6)


def fmt_regret(mean: float, low: float, high: float, runs: int) -> str:
    """``mean [low, high]``; the value alone for one run, whose "interval" is the value itself
    and would read as certainty (:func:`cells_text` says so)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.2f}" if runs < 2 else f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def cells_text(runs: int) -> str:
    """What a table's cells hold, as :func:`fmt_regret` writes them for ``runs`` seeds."""
    if runs < 2:
        return "the one seed's value, no interval (n=1)"
    return f"mean over seeds [{CONFIDENCE:.0%} bootstrap interval]"


def fmt_median(row: Row) -> str:
    """The median, a censored one as the bound known of it (">100" for a budget of 100, ">=54")."""
    if not row.censored:
        return f"{row.median_queries:g}"
    return f">{row.budget}" if row.median_queries > row.budget else f">={row.median_queries:g}"


def markdown(summary: Summary, plot_dir: str | None = None, heading: str = "##") -> str:
    """The summary as Markdown: method, one table and plot per dataset, then wall time.

    ``plot_dir`` is the path prefix of the ``regret_<dataset>.png`` links (None: no images).
    Wall time is confined to the last section, the only part that differs between two runs of
    the same comparison.
    """
    general, by_dataset = _split_notes(summary)
    lines = [*_method_lines(summary, general + ([summary.code_note] if summary.code_note else [])), ""]
    points = checkpoints(summary.budget)
    for dataset in summary.datasets:
        rows = sorted((r for r in summary.rows if r.dataset == dataset), key=lambda r: (r.mean[-1], r.optimizer))
        optimum = rows[0].optimum if rows else float("nan")
        lines += [f"{heading} {dataset} (optimum {summary.report_metric} {optimum:.2f})", ""]
        lines.append("| optimizer | " + " | ".join(f"regret @{t}" for t in points)
                     + " | median queries to optimum | distinct trajectories |")
        lines.append("|---|" + "---:|" * (len(points) + 2))
        notes = [f"_{note}_" for note in by_dataset[dataset]]
        for r in rows:
            cells = [fmt_regret(*r.at(t), r.runs) for t in points]
            lines.append(f"| {r.optimizer} | " + " | ".join(cells)
                         + f" | {fmt_median(r)} ({r.reached}/{r.runs} reach it) | {r.distinct}/{r.runs} |")
        if notes:
            lines += ["", "Note: " + "; ".join(notes)]
        if plot_dir is not None:
            lines += ["", f"![regret on {dataset}]({plot_dir.rstrip('/') + '/' if plot_dir else ''}regret_{dataset}.png)"]
        lines.append("")
    lines += wall_time_lines(summary, heading)
    return "\n".join(lines).rstrip() + "\n"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 seed``, ``3 seeds``: ``n`` and ``noun`` in its number (``plural`` where an s is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _seeds_text(seeds: list[int]) -> str:
    """``1 seed (5)``, ``5 seeds (0–4)``, ``3 seeds (0, 3, 7)``."""
    if len(seeds) == 1:
        listed = str(seeds[0])
    elif seeds == list(range(seeds[0], seeds[-1] + 1)):
        listed = f"{seeds[0]}–{seeds[-1]}"
    else:
        listed = ", ".join(map(str, seeds))
    return f"{counted(len(seeds), 'seed')} ({listed})"


def _method_lines(summary: Summary, notes: list[str]) -> list[str]:
    seeds = summary.seeds
    lines = [
        f"Benchmark `{summary.benchmark}`; budget {counted(summary.budget, 'query', 'queries')} per run "
        "(initial designs included); "
        f"{_seeds_text(seeds)}, the same for every optimizer; search metric `{summary.search_metric}`, "
        f"report metric `{summary.report_metric}`.",
        "",
        f"Regret after t queries = best `{summary.report_metric}` on the dataset − `{summary.report_metric}` of the "
        f"incumbent after t queries; the incumbent is the best cell so far by the search metric. Cells: "
        f"{cells_text(len(seeds))}. Queries to optimum: median over seeds of the first query "
        f"with zero regret; runs that never reach it count as {summary.budget + 1}, so a censored median prints as "
        f">{summary.budget} (>=m where only the upper of the two middle runs never reaches it, m counting it as "
        f"{summary.budget + 1}). Distinct trajectories: different query sequences among the seeds; where there are fewer "
        f"than seeds (a deterministic ranking, or one meta-trained surrogate shared by all seeds), the interval does "
        f"not measure the variation between seeds.",
    ]
    if summary.search_metric == summary.report_metric:
        lines += ["", same_metric_sentence(summary)]
    if notes:
        lines += ["", "Notes from the runs: " + "; ".join(notes) + "."]
    return lines


#: Words of the note a run gets when its search fell back to test accuracy for want of
#: validation accuracy (``resolve_metrics``); the runs' notes are all a summary may read.
NO_VALIDATION_NOTE = "has no validation accuracy"


def same_metric_sentence(summary: Summary) -> str:
    """Why searching on the scored metric is optimistic, with the reason only where it is the reason."""
    metric = summary.search_metric
    lead = f"**The search maximises `{metric}`, the metric it is scored on**"
    consequence = "absolute regrets are optimistic, for all methods alike."
    if metric == "test_accuracy" and any(NO_VALIDATION_NOTE in note for note in summary.notes):
        source = " (the NATS-Bench CSV holds test accuracy only)" if CSV_NOTE in summary.notes else ""
        return (f"{lead}: the benchmark file has no validation accuracy{source}, so every method searches on "
                f"test accuracy and {consequence}")
    return f"{lead}, so {consequence}"


def wall_time_lines(summary: Summary, heading: str = "##") -> list[str]:
    lines = [f"{heading} Wall time", "", "| optimizer | runs | total (s) | mean per run (s) |", "|---|---:|---:|---:|"]
    for optimizer in summary.optimizers:
        rows = [r for r in summary.rows if r.optimizer == optimizer]
        runs, total = sum(r.runs for r in rows), sum(r.wall_total_s for r in rows)
        lines.append(f"| {optimizer} | {runs} | {total:.1f} | {total / runs:.2f} |")
    for optimizer in dict.fromkeys(p.optimizer for p in summary.prep_rows):
        preps = [p for p in summary.prep_rows if p.optimizer == optimizer]
        total = sum(p.wall_time_s for p in preps)
        lines.append(f"| {optimizer} meta-training | {_preparation_count(preps)} | {total:.1f} | "
                     f"{total / len(preps):.2f} each |")
    return lines


def _preparation_count(preps: Sequence[PrepRow]) -> str:
    """``"60 (3 datasets × 20 seeds)"``; ``"3 (3 datasets × 1 seed)"`` when the seeds share one."""
    datasets, seeds = len({p.dataset for p in preps}), len({p.seed for p in preps})
    return f"{len(preps)} ({datasets} dataset{'s' * (datasets > 1)} × {seeds} seed{'s' * (seeds > 1)})"


def write_markdown(summary: Summary, path: Path, invocation: tuple[int, int, float] | None = None) -> Path:
    """Write ``summary.md``; ``invocation`` = (runs done now, runs reused, elapsed seconds)."""
    text = "# Black-box comparison\n\n" + markdown(summary, plot_dir="")
    if invocation is not None:
        ran, reused, elapsed = invocation
        text += f"\nThe invocation that wrote this summary ran {ran} runs in {elapsed:.0f} s ({reused} reused from earlier ones).\n"
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
