"""``naslib-bayes compare``: identical grids, resumable runs, parallel determinism, and summaries
that follow from the run files."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest
from scipy.special import gammaln

from naslib_bayes.comparison import grid, records, runner, summary
from naslib_bayes.comparison.plots import plot_regret
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer
from naslib_bayes.optimizers.random_search import RandomSearch
from cli_runner import run_cli

FAST_BANANAS = {"epochs": 20, "k": 3, "num_candidates": 30}
OPTIMIZERS = ["rs", "re", "ls", "bananas"]
DATASETS = ["cifar10", "ImageNet16-120"]
SEEDS = [0, 1, 2]
BUDGET = 12


def settings_for(nats_csv, out, jobs=1, budget=BUDGET, optimizers=OPTIMIZERS, seeds=SEEDS, datasets=DATASETS,
                 prepare_per="seed"):
    return grid.CompareSettings(benchmark=nats_csv, out=out, optimizers=list(optimizers), datasets=list(datasets),
                                seeds=list(seeds), budget=budget, jobs=jobs, prepare_per=prepare_per,
                                hyperparameters={"bananas": FAST_BANANAS} if "bananas" in optimizers else {})


def finish(settings, benchmark=None, **hooks):
    report = runner.run_comparison(settings, benchmark=benchmark, **hooks)
    result = summary.summarize(settings.out, settings.optimizers, settings.datasets, settings.seeds)
    summary.write_csv(result, settings.out / "summary.csv")
    summary.write_markdown(result, settings.out / "summary.md", (len(report.ran), len(report.skipped), report.elapsed_s))
    return report, result


def read_csv(path: Path, drop=summary.WALL_TIME_COLUMNS) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]


def markdown_without_wall_time(path: Path) -> str:
    return path.read_text().split("## Wall time")[0]


def trajectories(out: Path) -> dict[str, list[str]]:
    return {p.name: [q["architecture"] for q in json.loads(p.read_text())["trajectory"]]
            for p in sorted((out / records.RUNS_DIR).glob("*.json"))}


@pytest.fixture(scope="module")
def serial(nats_csv, nats_benchmark, tmp_path_factory):
    """The reference comparison, uninterrupted, in this process."""
    settings = settings_for(nats_csv, tmp_path_factory.mktemp("serial"))
    report, result = finish(settings, nats_benchmark)
    return settings, report, result


def test_every_run_spends_the_budget_on_distinct_cells(serial):
    import jsonschema

    from naslib_bayes import results

    settings, report, _ = serial
    assert len(report.ran) == len(OPTIMIZERS) * len(DATASETS) * len(SEEDS)
    for name, archs in trajectories(settings.out).items():
        assert len(archs) == BUDGET == len(set(archs)), name
    schema = results.load_schema()
    for path in (settings.out / records.RUNS_DIR).glob("*.json"):
        result = json.loads(path.read_text())
        jsonschema.validate(result, schema)  # each run file is a result.json
        assert result["command"] == "compare" and len(result["incumbent_report_accuracy"]) == BUDGET


def test_jobs_do_not_change_trajectories(serial, nats_csv, tmp_path):
    settings, _, _ = serial
    parallel = settings_for(nats_csv, tmp_path / "parallel", jobs=2)
    finish(parallel)
    assert trajectories(parallel.out) == trajectories(settings.out)
    assert read_csv(parallel.out / "summary.csv") == read_csv(settings.out / "summary.csv")


def test_jobs_do_not_change_model_based_trajectories(nats_csv, tmp_path):
    # tnas (meta-trained once per target, then shared), gp-bo and transfer-topk, briefly fitted.
    model_based = ["tnas", "gp-bo", "transfer-topk"]
    hyperparameters = {"tnas": {"meta_iterations": 3, "finetune_steps": 3}, "gp-bo": {"finetune_steps": 3}}
    runs = {}
    for jobs in (1, 2):
        settings = grid.CompareSettings(benchmark=nats_csv, out=tmp_path / f"jobs{jobs}", optimizers=model_based,
                                        datasets=["cifar100"], seeds=[0, 1], budget=8, jobs=jobs,
                                        hyperparameters=hyperparameters)
        finish(settings)
        runs[jobs] = trajectories(settings.out)
    assert runs[1] == runs[2] and len(runs[1]) == 6


def test_an_interrupted_compare_resumes_to_the_same_summary(serial, nats_csv, nats_benchmark, tmp_path):
    reference, _, _ = serial
    settings = settings_for(nats_csv, tmp_path / "killed")

    def interrupt_after_five(spec, done=[]):
        done.append(spec)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_comparison(settings, benchmark=nats_benchmark, on_run_done=interrupt_after_five)
    assert len(list((settings.out / records.RUNS_DIR).glob("*.json"))) == 5
    report, _ = finish(settings, nats_benchmark)
    assert len(report.skipped) == 5 and len(report.ran) == len(settings.runs()) - 5
    assert read_csv(settings.out / "summary.csv") == read_csv(reference.out / "summary.csv")
    assert markdown_without_wall_time(settings.out / "summary.md") == markdown_without_wall_time(reference.out / "summary.md")
    # Wall time is the one column allowed to differ, and it is present.
    assert all(float(row["wall_time_s_total"]) > 0 for row in read_csv(settings.out / "summary.csv", drop=()))


def test_a_rerun_skips_everything_and_other_settings_are_refused(serial, nats_benchmark):
    settings, _, result = serial
    report = runner.run_comparison(settings, benchmark=nats_benchmark)
    assert report.ran == [] and len(report.skipped) == len(settings.runs())
    other = grid.CompareSettings(**{**vars(settings), "budget": BUDGET + 1})
    with pytest.raises(Exception, match="budget=12, not 13"):
        runner.run_comparison(other, benchmark=nats_benchmark)


def test_the_order_seeds_are_given_in_does_not_change_the_summary(nats_csv, nats_benchmark, tmp_path):
    """The same runs give the same table: --seeds 7,6,...,0 resamples the seeds as --seeds 8 does."""
    settings = settings_for(nats_csv, tmp_path, budget=10, optimizers=["rs"], seeds=range(8), datasets=["cifar100"])
    _, result = finish(settings, nats_benchmark)
    reversed_seeds = summary.summarize(settings.out, settings.optimizers, settings.datasets, list(range(8))[::-1])
    assert summary.csv_rows(reversed_seeds) == summary.csv_rows(result)
    assert summary.markdown(reversed_seeds) == summary.markdown(result)


def test_summary_numbers_follow_from_the_run_files(serial, nats_benchmark):
    settings, _, _ = serial
    rows = {(r["optimizer"], r["dataset"]): r for r in read_csv(settings.out / "summary.csv", drop=())}
    for optimizer in OPTIMIZERS:
        for dataset in DATASETS:
            runs = [json.loads(records.run_path(settings.out, grid.RunSpec(optimizer, dataset, s)).read_text())
                    for s in SEEDS]
            # Independent route: search metric = report metric here, so regret is the optimum
            # minus the running maximum of the queried accuracies.
            best = nats_benchmark.best(dataset)
            regret = np.array([best - np.maximum.accumulate([q["accuracy"] for q in r["trajectory"]]) for r in runs])
            row = rows[optimizer, dataset]
            for t in (10, BUDGET):
                assert float(row[f"regret_{t}"]) == pytest.approx(regret[:, t - 1].mean(), abs=1e-6)
                assert float(row[f"regret_{t}_ci_low"]) <= float(row[f"regret_{t}"]) <= float(row[f"regret_{t}_ci_high"])
            hits = sorted(int(np.argmax(r <= 1e-9)) + 1 if (r <= 1e-9).any() else BUDGET + 1 for r in regret)
            assert float(row["median_queries_to_optimum"]) == hits[1]
            assert row["median_censored"] == str(hits[1] > BUDGET)
            sequences = {tuple(q["architecture"] for q in r["trajectory"]) for r in runs}
            assert int(row["distinct_trajectories"]) == len(sequences)
            assert float(row["wall_time_s_total"]) == pytest.approx(sum(r["wall_time_s"] for r in runs), abs=1e-5)


def expected_rs_regret(values: np.ndarray, budget: int) -> float:
    """Exact expected regret of uniform sampling without replacement after ``budget`` draws."""
    ordered = np.sort(values)
    n = len(ordered)
    i = np.arange(n)
    # P(max is the i-th smallest) = C(i, budget-1) / C(n, budget), in log space for stability.
    valid = i >= budget - 1
    log_p = np.full(n, -np.inf)
    k = i[valid]
    log_p[valid] = (gammaln(k + 1) - gammaln(budget) - gammaln(k - budget + 2)
                    - (gammaln(n + 1) - gammaln(budget + 1) - gammaln(n - budget + 1)))
    return float(ordered[-1] - (np.exp(log_p) * ordered).sum())


def test_twenty_seed_random_search_matches_its_expected_regret(nats_csv, nats_benchmark, tmp_path):
    settings = settings_for(nats_csv, tmp_path, budget=100, optimizers=["rs"], seeds=range(20),
                            datasets=["cifar10", "cifar100", "ImageNet16-120"])
    _, result = finish(settings, nats_benchmark)
    tolerance = {"cifar10": 0.10, "cifar100": 0.35, "ImageNet16-120": 0.30}  # two standard errors
    for dataset, tol in tolerance.items():
        expected = expected_rs_regret(nats_benchmark.query_all(dataset), 100)
        assert result.row("rs", dataset).at(100)[0] == pytest.approx(expected, abs=tol), dataset


class FakeTransfer(RandomSearch):
    """Random search that records what its preparation saw and checks it was handed the right one."""

    calls: list = []
    defaults = {"meta_iterations": 10}  # stands for the settings of a meta-training
    shared = False  # True: every seed must get seed 0's preparation (--prepare-per dataset)

    @classmethod
    def prepare(cls, source, dataset, directory, metric, seed=0, **hyperparameters):
        assert metric == "test_accuracy"
        cls.calls.append((dataset, seed, source.datasets))
        (directory / "artefact.json").write_text(json.dumps({"trained_on": list(source.datasets), "seed": seed}))
        return {"cells_seen": 15625}

    def setup(self):
        self.artefact = json.loads((self.problem.prepared / "artefact.json").read_text())
        assert self.problem.dataset not in self.artefact["trained_on"]
        assert self.artefact["seed"] == (grid.PREPARE_SEED if self.shared else self.seed)


@pytest.fixture
def fake_transfer(monkeypatch):
    spec = registry.OptimizerSpec("fake-transfer", registry.BLACK_BOX, f"{__name__}:FakeTransfer", "test double")
    monkeypatch.setattr(registry, "OPTIMIZERS", MappingProxyType({**registry.OPTIMIZERS, spec.name: spec}))
    monkeypatch.setattr(FakeTransfer, "calls", [])
    monkeypatch.setattr(FakeTransfer, "shared", False)
    return spec.name


def test_transfer_methods_prepare_once_per_dataset_and_seed_without_the_target(fake_transfer, nats_csv, nats_benchmark,
                                                                               tmp_path):
    assert FakeTransfer.has_preparation() and not BlackBoxOptimizer.has_preparation()
    datasets, seeds = ["cifar10", "cifar100", "ImageNet16-120"], [0, 1, 2]
    settings = settings_for(nats_csv, tmp_path, optimizers=["rs", fake_transfer], seeds=seeds, datasets=datasets)
    told = []
    finish(settings, nats_benchmark, on_prepared=lambda key, done, total: told.append((key, done, total)))
    assert sorted(FakeTransfer.calls) == sorted((d, s, tuple(x for x in datasets if x != d)) for d in datasets for s in seeds)
    assert sorted(key for key, _, _ in told) == sorted((fake_transfer, d, s) for d in datasets for s in seeds)
    assert [(done, total) for _, done, total in told] == [(i, 9) for i in range(1, 10)]
    for dataset in datasets:
        for seed in seeds:
            folder = records.prepared_dir(tmp_path, fake_transfer, dataset, seed)
            record = json.loads((folder / records.PREPARED_FILE).read_text())
            assert record["dataset"] == dataset and dataset not in record["source_datasets"] and record["seed"] == seed
            run = json.loads(records.run_path(tmp_path, grid.RunSpec(fake_transfer, dataset, seed)).read_text())
            assert run["config"][records.PREPARATION_SEED_KEY] == seed
    assert records.PREPARATION_SEED_KEY not in json.loads(records.run_path(tmp_path, grid.RunSpec("rs", "cifar10", 0)).read_text())["config"]
    rows = read_csv(tmp_path / "summary.csv", drop=())
    assert sorted((r["dataset"], r["preparation_seed"]) for r in rows if r["row"] == "meta-training") == \
        sorted((d, str(s)) for d in datasets for s in seeds)
    assert "| fake-transfer meta-training | 9 (3 datasets × 3 seeds) |" in (tmp_path / "summary.md").read_text()
    finish(settings, nats_benchmark)  # cached: not prepared again
    assert len(FakeTransfer.calls) == 9


def test_prepared_per_dataset_every_seed_gets_seed_0s_preparation(fake_transfer, nats_csv, nats_benchmark, tmp_path):
    FakeTransfer.shared = True
    settings = settings_for(nats_csv, tmp_path, optimizers=[fake_transfer], seeds=[0, 1, 2], datasets=["cifar10", "cifar100"],
                            prepare_per="dataset")
    finish(settings, nats_benchmark)
    assert sorted(FakeTransfer.calls) == [("cifar10", 0, ("cifar100", "ImageNet16-120")),
                                          ("cifar100", 0, ("cifar10", "ImageNet16-120"))]
    assert "| fake-transfer meta-training | 2 (2 datasets × 1 seed) |" in (tmp_path / "summary.md").read_text()
    per_seed = grid.CompareSettings(**{**vars(settings), "prepare_per": "seed"})
    with pytest.raises(UserError, match=r"fake-transfer-cifar10-1\.json was run with preparation_seed=0, not 1 "
                                        r"\(with --prepare-per dataset every seed uses seed 0's preparation\)"):
        runner.run_comparison(per_seed, benchmark=nats_benchmark)


def test_a_budget_no_run_can_spend_is_refused_before_any_preparation_or_run(fake_transfer, nats_csv, nats_benchmark,
                                                                             tmp_path):
    settings = settings_for(nats_csv, tmp_path / "out", optimizers=[fake_transfer, "rs"], budget=15626)
    with pytest.raises(UserError, match="a budget of 15626 queries exceeds the 15,625 cells"):
        runner.run_comparison(settings, benchmark=nats_benchmark)
    assert FakeTransfer.calls == [] and not (tmp_path / "out").exists()


def test_a_budget_beyond_a_partial_benchmark_is_refused_before_the_runs_that_could_spend_it(tmp_path):
    from partial_benchmark import write_partial_csv

    path = write_partial_csv(tmp_path / "partial.csv", 40)
    settings = settings_for(path, tmp_path / "out", optimizers=["re", "rs"], datasets=["cifar10"], budget=41)
    with pytest.raises(UserError, match="RandomSearch picks only among them: a budget of 41 queries exceeds them"):
        runner.run_comparison(settings)
    assert not (tmp_path / "out").exists()  # re's runs would have been spent before rs's failed


def test_a_comparison_from_before_per_seed_preparations_keeps_its_runs_and_surrogate(fake_transfer, nats_csv,
                                                                                      nats_benchmark, tmp_path):
    """Earlier versions kept one preparation (seed 0) in the optimizer's folder, and runs did not name it."""
    FakeTransfer.shared = True
    settings = settings_for(nats_csv, tmp_path, optimizers=[fake_transfer], seeds=[0, 1], datasets=["cifar10"],
                            prepare_per="dataset")
    finish(settings, nats_benchmark)
    folder = tmp_path / records.SURROGATES_DIR / "cifar10" / fake_transfer
    for path in (folder / "seed-0").iterdir():  # the old layout
        path.rename(folder / path.name)
    (folder / "seed-0").rmdir()
    for seed in (0, 1):
        path = records.run_path(tmp_path, grid.RunSpec(fake_transfer, "cifar10", seed))
        result = json.loads(path.read_text())
        del result["config"][records.PREPARATION_SEED_KEY]
        path.write_text(json.dumps(result))
    assert records.prepared_dir(tmp_path, fake_transfer, "cifar10", 0) == folder
    assert records.prepared_dir(tmp_path, fake_transfer, "cifar10", 1) == folder / "seed-1"
    report, result = finish(settings, nats_benchmark)
    assert (len(report.ran), len(report.skipped), len(FakeTransfer.calls)) == (0, 2, 1)
    assert [(p.dataset, p.seed) for p in result.prep_rows] == [("cifar10", 0)]
    (records.run_path(tmp_path, grid.RunSpec(fake_transfer, "cifar10", 1))).unlink()
    report, _ = finish(settings, nats_benchmark)  # run again on the old folder's surrogate
    assert (len(report.ran), len(FakeTransfer.calls)) == (1, 1)


def test_censored_median_and_queries_to_optimum():
    assert summary.queries_to_optimum(np.array([3.0, 1.0, 0.0, 0.0])) == 3
    assert summary.queries_to_optimum(np.array([3.0, 1.0])) == 3  # never: budget + 1
    assert summary.censored_median([5, 9, 7, 101], 100) == (8.0, False)  # mean of the two middle values
    # Only the upper middle value is censored: the median is (7 + x) / 2 with x > 100, so at least
    # (7 + 101) / 2 = 54, not above the budget.
    assert summary.censored_median([5, 101, 7, 101], 100) == (54.0, True)
    assert summary.fmt_median(SimpleNamespace(budget=100, censored=True, median_queries=54.0)) == ">=54"
    assert summary.fmt_median(SimpleNamespace(budget=100, censored=True, median_queries=101)) == ">100"
    assert summary.censored_median([5, 101, 101, 101], 100) == (101, True)
    assert summary.censored_median([5, 101, 101, 7, 101], 100) == (101, True)
    assert summary.censored_median([5, 101, 7], 100) == (7.0, False)


def test_distinct_trajectories_counts_query_sequences():
    def run(*archs):
        return {"trajectory": [{"architecture": a} for a in archs]}

    assert summary.distinct_trajectories([run("a", "b"), run("a", "b"), run("b", "a")]) == 2
    assert summary.distinct_trajectories([run("a", "b")] * 20) == 1


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(size=(20, 3))
    a = summary.bootstrap_mean(values, summary.bootstrap_seed("cifar10"))
    b = summary.bootstrap_mean(values, summary.bootstrap_seed("cifar10"))
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    mean, low, high = a
    assert (low < mean).all() and (mean < high).all()
    # Resampled means of a sample have the plug-in (ddof=0) standard error and are nearly normal:
    # a 95% interval spans 2 * 1.96 of them (90% would span 2 * 1.645, 16% less); 5000
    # resamples estimate the span to about 2%.
    se = values.std(axis=0, ddof=0) / np.sqrt(20)
    np.testing.assert_allclose(high - low, 2 * 1.96 * se, rtol=0.05)


def test_a_summary_row_follows_from_its_runs_by_hand():
    """Optimum 10, budget 3; incumbents (8, 10, 10), (None, 9, 10), (7, 7, 7), (10, 10, 10): regrets
    (2, 0, 0), (unknown, 1, 0), (3, 3, 3), (0, 0, 0); mean NaN at t=1 (one regret unknown), 1 at
    t=2, 0.75 at t=3. Queries to the optimum 2, 3, never (4), 1: median 2.5, three of four reach it."""
    def run(incumbents, archs, wall):
        return {"report_optimum": 10.0, "incumbent_report_accuracy": incumbents, "wall_time_s": wall,
                "trajectory": [{"architecture": a} for a in archs]}

    runs = [run([8.0, 10.0, 10.0], "abc", 1.0), run([None, 9.0, 10.0], "abc", 2.0),
            run([7.0, 7.0, 7.0], "abd", 3.0), run([10.0, 10.0, 10.0], "xyz", 4.0)]
    row = summary._row("rs", "cifar10", runs, budget=3)
    assert np.isnan(row.mean[0]) and row.mean[1:].tolist() == pytest.approx([1.0, 0.75])
    assert (row.median_queries, row.censored, row.reached, row.distinct) == (2.5, False, 3, 3)
    assert (row.runs, row.optimum, row.wall_total_s) == (4, 10.0, 10.0)
    assert row.low[2] <= 0.75 <= row.high[2]


def test_every_optimizer_on_a_dataset_resamples_the_same_seeds():
    """Paired intervals: the same runs under another optimizer's name give the same interval; on
    another dataset the draws, and so the interval, differ."""
    incumbents = np.random.default_rng(0).uniform(5.0, 10.0, size=(8, 2))
    runs = [{"report_optimum": 10.0, "incumbent_report_accuracy": list(row), "wall_time_s": 1.0,
             "trajectory": [{"architecture": str(i)}]} for i, row in enumerate(incumbents)]
    rows = [summary._row(optimizer, dataset, runs, budget=2)
            for optimizer, dataset in (("rs", "cifar10"), ("re", "cifar10"), ("rs", "cifar100"))]
    assert np.array_equal(rows[0].low, rows[1].low) and np.array_equal(rows[0].high, rows[1].high)
    assert not np.array_equal(rows[0].low, rows[2].low)


def test_regret_plot_is_written(serial, tmp_path):
    _, _, result = serial
    path = plot_regret(result, "cifar10", tmp_path / "regret.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_regret_plot_of_a_budget_of_one_query_warns_of_nothing(nats_csv, tmp_path):
    # --budget 1 printed matplotlib's warning of identical x limits, and its one point drew no line
    import warnings

    settings = settings_for(nats_csv, tmp_path / "out", budget=1, optimizers=["rs"], seeds=[0], datasets=["cifar10"])
    _, result = finish(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_regret(result, "cifar10", tmp_path / "regret.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "budget 1 query per run (initial designs included)" in (tmp_path / "out" / "summary.md").read_text()


def test_a_regret_plot_stopped_mid_write_leaves_the_previous_plot_whole(serial, tmp_path, monkeypatch):
    """Ctrl-C inside the PNG's write (the last files a comparison writes, beside a README it may
    rewrite) left a truncated image in place of the previous one."""
    import io

    from matplotlib.figure import Figure

    _, _, result = serial
    path = plot_regret(result, "cifar10", tmp_path / "regret.png")
    before = path.read_bytes()
    savefig = Figure.savefig

    def stopped_halfway(self, target, **kwargs):
        whole = io.BytesIO()
        savefig(self, whole, format="png", **{k: v for k, v in kwargs.items() if k != "format"})
        half = whole.getvalue()[: len(whole.getvalue()) // 2]
        if isinstance(target, (str, os.PathLike)):
            Path(target).write_bytes(half)
        else:
            target.write(half)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped_halfway)
    with pytest.raises(KeyboardInterrupt):
        plot_regret(result, "cifar10", path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["regret.png"]


# ---- command line -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--optimizers", "rs,nope"], "unknown black-box optimizer 'nope'; valid: rs"),
        (["--oneshot", "darts", "--optimizers", "rs"], "--optimizers cannot be combined with --oneshot"),
        (["--oneshot", "darts", "--budget", "5"], "--budget cannot be combined with --oneshot"),
        (["--oneshot", "darts", "--prepare-per", "dataset"], "--prepare-per cannot be combined with --oneshot"),
        (["--oneshot", "darts", "--report-metric", "val_accuracy"], "--report-metric cannot be combined with --oneshot"),
        (["--oneshot", "darts", "--readme", "README.md"], "--readme cannot be combined with --oneshot"),
        (["--optimizers", "tnas", "--prepare-per", "run"], "invalid choice: 'run'"),
        ([], "give --optimizers (black-box comparison) or --oneshot"),
        (["--optimizers", "rs", "--epochs", "3"], "--epochs belongs to --oneshot"),
        (["--optimizers", "rs", "--datasets", "svhn"], "'svhn'"),
        (["--optimizers", "rs,rs"], "distinct"),
        (["--optimizers", "rs", "--datasets", "cifar10,CIFAR10,cifar-10"], "cifar10, CIFAR10, cifar-10 all name cifar10"),
        (["--optimizers", "rs", "--opt", "re.population_size=5"], "OPTIMIZER one of rs"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, nats_csv, tmp_path, extra, message):
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--seeds", "2", "--out", tmp_path / "o", *extra)
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "o" / "runs").exists()


def test_cli_writes_summary_plots_and_readme_section(capsys, nats_csv, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n\n## Results\n<!-- results:start -->\nold text\n<!-- results:end -->\n\ntail\n")
    out = tmp_path / "docs" / "cmp"
    argv = ["compare", "--benchmark", nats_csv, "--datasets", "cifar100", "--optimizers", "rs,re",
            "--seeds", "3", "--budget", "20", "--out", out, "--readme", readme, "--opt", "re.population_size=8"]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"runs", "summary.csv", "summary.md", "regret_cifar100.png"}
    assert json.loads((out / "runs" / "re-cifar100-2.json").read_text())["config"]["population_size"] == 8
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n## Results\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\n\ntail\n")
    assert "old text" not in text and "](docs/cmp/regret_cifar100.png)" in text
    assert f"--benchmark {nats_csv.name} " in text and str(nats_csv.parent) not in text
    assert "regret @20" in text and "test accuracy only" in text
    # the same folder with another dataset: the summary is this grid's, and so are the plots (the
    # earlier grid's plot stayed beside a summary that no longer reported its runs)
    code, _, err = run_cli(capsys, *[("cifar10" if a == "cifar100" else a) for a in argv[:-4]])
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == ["regret_cifar10.png"]
    first = text
    code, stdout, _ = run_cli(capsys, *argv)  # regenerated from the same runs: same section
    assert code == 0 and "0 runs done, 6 reused" in stdout
    assert readme.read_text().split("### Wall time")[0] == first.split("### Wall time")[0]


def test_readme_without_markers_is_an_error(capsys, nats_csv, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "rs",
                           "--seeds", "1", "--budget", "3", "--out", tmp_path / "o", "--readme", readme)
    assert code == 2 and "results:start" in err


@pytest.mark.parametrize("body", [
    "<!-- results:start -->\nold one\n<!-- results:end -->\n\n<!-- results:start -->\nold two\n<!-- results:end -->\n",
    "<!-- results:start -->\nold one\n<!-- results:start -->\nold two\n<!-- results:end -->\n",
    "<!-- results:start -->\nold one\n<!-- results:end -->\nold two\n<!-- results:end -->\n",
])
def test_a_readme_with_a_marker_twice_is_refused_before_any_run(capsys, nats_csv, tmp_path, body):
    # only the first section was rewritten: a second one kept its old results beside the new ones,
    # or a stray marker was deleted with the text around it
    readme = tmp_path / "README.md"
    readme.write_text("# T\n" + body)
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "rs",
                           "--seeds", "1", "--budget", "3", "--out", tmp_path / "o", "--readme", readme)
    assert code == 2 and "2 times" in err and str(readme) in err and len(err.strip().splitlines()) == 1
    assert readme.read_text() == "# T\n" + body and not (tmp_path / "o").exists()



@pytest.mark.parametrize("make, cause", [
    (lambda path: path.mkdir(), "IsADirectoryError"),
    (lambda path: path.write_bytes(b"\xff\xfe not text"), "UnicodeDecodeError"),
])
def test_a_readme_that_cannot_be_read_as_text_is_one_line_before_any_run(capsys, nats_csv, tmp_path, make, cause):
    # a folder, or a binary file, given to --readme raised its traceback from read_text
    readme = tmp_path / "README.md"
    make(readme)
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "rs",
                           "--seeds", "1", "--budget", "3", "--out", tmp_path / "o", "--readme", readme)
    assert code == 2 and "Traceback" not in err
    assert err.strip().startswith(f"naslib-bayes: error: --readme {readme}: cannot read it as text ({cause}")
    assert not (tmp_path / "o").exists()

# ---- what a reused run must share with the current settings -------------------------------------
def run_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / records.RUNS_DIR).glob("*.json"))}


def compare_re(capsys, benchmark, out, *extra):
    return run_cli(capsys, "compare", "--benchmark", benchmark, "--datasets", "cifar10", "--optimizers", "re",
                   "--seeds", "0,1", "--budget", "15", "--out", out, *extra)


def one_error_line(err: str) -> str:
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def test_runs_made_with_other_hyperparameters_or_another_benchmark_are_refused(capsys, nats_csv, tmp_path):
    out = tmp_path / "cmp"
    code, _, err = compare_re(capsys, nats_csv, out)
    assert code == 0, err
    before = run_files(out)
    assert all(json.loads(text)["config"][records.FINGERPRINT_KEY] for text in before.values())

    code, _, err = compare_re(capsys, nats_csv, out, "--opt", "re.population_size=5", "--opt", "re.sample_size=2")
    assert code == 2 and "re-cifar10-0.json was run with re.population_size=20, not 5" in one_error_line(err)

    edited = tmp_path / "edited.csv"  # the same file name and cells, one accuracy changed
    text = nats_csv.read_text()
    first_value = text.splitlines()[1].split(",")[0]
    edited.write_text(text.replace(first_value, str(float(first_value) - 1.0), 1))
    code, _, err = compare_re(capsys, edited, out)
    assert code == 2 and "was run on another benchmark (nats_bench.csv, benchmark_sha256" in one_error_line(err)
    assert run_files(out) == before  # refused, never overwritten

    moved = tmp_path / "moved.csv"  # the same contents elsewhere: the same benchmark
    moved.write_bytes(nats_csv.read_bytes())
    code, stdout, err = compare_re(capsys, moved, out)
    assert code == 0 and "0 runs done, 2 reused" in stdout, err


@pytest.mark.parametrize("content, held", [("[]", "a list"), ("null", "null"), ('"done"', "a str")])
def test_a_run_file_that_holds_no_result_is_one_line_and_kept(capsys, nats_csv, tmp_path, content, held):
    """A run file of valid JSON that is not a result (edited, or written by another tool) is refused
    in one line naming it, and left as it is: read as a result it was a traceback (a list), or taken
    for a run not yet made and overwritten (null)."""
    out = tmp_path / "cmp"
    code, _, err = compare_re(capsys, nats_csv, out)
    assert code == 0, err
    broken = out / records.RUNS_DIR / "re-cifar10-0.json"
    broken.write_text(content)
    code, _, err = compare_re(capsys, nats_csv, out)
    assert code == 2, err
    assert one_error_line(err).endswith(f"{broken}: not a run file (holds {held}); delete it to run it again")
    assert broken.read_text() == content


def test_a_preparation_record_that_holds_no_record_is_one_line(fake_transfer, nats_csv, nats_benchmark, tmp_path):
    made = settings_for(nats_csv, tmp_path, optimizers=[fake_transfer], seeds=[0], datasets=["cifar10"])
    runner._execute_preparation(made, (fake_transfer, "cifar10", 0), nats_benchmark)
    record = records.prepared_dir(tmp_path, fake_transfer, "cifar10", 0) / records.PREPARED_FILE
    record.write_text("[1, 2]")
    with pytest.raises(UserError, match=r"prepared\.json: not a preparation record \(holds a list\); delete its "
                                        r"folder to prepare it again$"):
        runner.run_comparison(made, benchmark=nats_benchmark)


def test_a_preparation_made_with_other_settings_is_refused(fake_transfer, nats_csv, nats_benchmark, tmp_path):
    made = settings_for(nats_csv, tmp_path, optimizers=[fake_transfer], seeds=[0], datasets=["cifar10"])
    runner._execute_preparation(made, (fake_transfer, "cifar10", 0), nats_benchmark)
    finish(made, nats_benchmark)  # reused as it is
    assert len(FakeTransfer.calls) == 1
    other = grid.CompareSettings(**{**vars(made), "seeds": [0, 1], "hyperparameters": {fake_transfer: {"meta_iterations": 3}}})
    (tmp_path / records.RUNS_DIR / f"{fake_transfer}-cifar10-0.json").unlink()  # only the preparation is left to check
    with pytest.raises(UserError, match=r"prepared\.json was prepared with fake-transfer\.meta_iterations=10, not 3"):
        runner.run_comparison(other, benchmark=nats_benchmark)
    assert len(FakeTransfer.calls) == 1


def test_aliases_of_one_dataset_are_refused_before_any_run(nats_csv, tmp_path):
    with pytest.raises(UserError, match="datasets: cifar10, CIFAR10, cifar-10 all name cifar10; give each once"):
        settings_for(nats_csv, tmp_path, datasets=["cifar10", "CIFAR10", "cifar-10"])
    with pytest.raises(UserError, match="seeds: 1 is given 2 times"):
        settings_for(nats_csv, tmp_path, seeds=[1, 2, 1])
    with pytest.raises(UserError, match="optimizers: rs is given 2 times"):
        settings_for(nats_csv, tmp_path, optimizers=["rs", "re", "rs"])


@pytest.fixture(scope="module")
def val_on_cifar10_only(nats_benchmark, tmp_path_factory):
    """A benchmark with validation accuracy for cifar10 and test accuracy only for cifar100."""
    from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
    from naslib_bayes.search_spaces.nasbench201.loaders import save_npz

    cells = [tuple(c) for c in nats_benchmark.cells]
    test10, test100 = nats_benchmark.query_all("cifar10"), nats_benchmark.query_all("cifar100")
    noise = np.random.default_rng(0).normal(scale=0.5, size=len(cells))
    tables = {"cifar10": {"test_accuracy": test10, "val_accuracy": test10 + noise}, "cifar100": {"test_accuracy": test100}}
    path = tmp_path_factory.mktemp("mixed") / "mixed.npz"
    save_npz(Benchmark(cells, tables, source="mixed.npz"), path)
    return path


def test_a_default_search_metric_that_differs_between_datasets_is_refused_before_any_run(capsys, val_on_cifar10_only, tmp_path):
    argv = ["compare", "--benchmark", val_on_cifar10_only, "--datasets", "cifar10,cifar100", "--optimizers", "rs",
            "--seeds", "2", "--budget", "5", "--out", tmp_path / "o"]
    code, _, err = run_cli(capsys, *argv)
    line = one_error_line(err)
    assert code == 2 and "cifar10: val_accuracy, cifar100: test_accuracy" in line and "--search-metric" in line
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(capsys, *argv, "--search-metric", "test_accuracy")
    assert code == 0, err


def test_the_summary_names_the_true_reason_for_searching_on_the_scored_metric(capsys, serial, val_on_cifar10_only, tmp_path):
    settings, _, _ = serial  # the CSV: test accuracy only, so the search fell back to it
    text = (settings.out / "summary.md").read_text()
    assert "maximises `test_accuracy`, the metric it is scored on**: the benchmark file has no validation accuracy" in text
    code, _, err = run_cli(capsys, "compare", "--benchmark", val_on_cifar10_only, "--datasets", "cifar10",
                           "--optimizers", "rs", "--seeds", "2", "--budget", "5", "--out", tmp_path,
                           "--search-metric", "val_accuracy", "--report-metric", "val_accuracy")
    assert code == 0, err
    text = (tmp_path / "summary.md").read_text()
    assert "**The search maximises `val_accuracy`, the metric it is scored on**, so absolute regrets are optimistic" in text
    assert "no validation accuracy" not in text and "test accuracy" not in text


# ---- a surrogate the user gives ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar100_surrogate(nats_benchmark, tmp_path_factory):
    """A TNAS surrogate meta-trained (briefly) on cifar100 only."""
    from naslib_bayes.optimizers.tnas import TNAS

    folder = tmp_path_factory.mktemp("surrogate")
    TNAS.prepare(nats_benchmark.without("cifar10", "ImageNet16-120"), "cifar10", folder, "test_accuracy",
                 meta_iterations=3)
    return folder


def test_a_given_surrogate_is_used_without_meta_training(capsys, nats_csv, cifar100_surrogate, tmp_path):
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "tnas",
                           "--opt", f"tnas.surrogate={cifar100_surrogate}", "--seeds", "1", "--budget", "6",
                           "--out", tmp_path)
    assert code == 0, err
    assert not (tmp_path / records.SURROGATES_DIR).exists()  # nothing prepared
    used = json.loads((tmp_path / records.RUNS_DIR / "tnas-cifar10-0.json").read_text())["surrogate"]
    assert used["path"] == str(cifar100_surrogate / "surrogate.pt") and not used["meta_trained_here"]
    assert used["meta_datasets"] == ["cifar100"]


@pytest.mark.parametrize("opt", ["tnas.meta_iterations=100", "tnas.encoder_hidden=512", "tnas.dataset_encoder=learned"])
def test_meta_training_settings_beside_a_given_surrogate_are_refused(capsys, nats_csv, cifar100_surrogate, tmp_path,
                                                                      opt):
    # as in search: the file fixed them, so they would be ignored yet recorded in every run's config
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "tnas",
                           "--opt", f"tnas.surrogate={cifar100_surrogate}", "--opt", opt, "--seeds", "1",
                           "--budget", "6", "--out", tmp_path / "out")
    assert code == 2
    key = opt.split("=")[0]
    assert f"--opt {key} applies when meta-training here; a surrogate file already has one" in one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_runs_of_a_given_surrogate_are_not_reused_once_that_file_is_meta_trained_anew(capsys, nats_benchmark, nats_csv,
                                                                                    cifar100_surrogate, tmp_path):
    import shutil

    from naslib_bayes.optimizers.tnas import TNAS

    folder = tmp_path / "surrogate"
    shutil.copytree(cifar100_surrogate, folder)
    argv = ("compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "tnas", "--opt",
            f"tnas.surrogate={folder}", "--seeds", "1", "--budget", "6", "--out", tmp_path / "o")
    assert run_cli(capsys, *argv)[0] == 0
    run_file = tmp_path / "o" / records.RUNS_DIR / "tnas-cifar10-0.json"
    written = run_file.read_bytes()
    assert run_cli(capsys, *argv)[0] == 0 and run_file.read_bytes() == written  # same file: reused
    TNAS.prepare(nats_benchmark.without("cifar10", "ImageNet16-120"), "cifar10", folder, "test_accuracy",
                 meta_iterations=4, seed=1)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "was run with tnas.surrogate_sha256=" in one_error_line(err)
    assert run_file.read_bytes() == written


def test_a_given_surrogate_that_saw_a_target_is_refused(capsys, nats_csv, cifar100_surrogate, tmp_path):
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10,cifar100",
                           "--optimizers", "rs,tnas", "--opt", f"tnas.surrogate={cifar100_surrogate}",
                           "--seeds", "1", "--budget", "6", "--out", tmp_path / "o")
    line = one_error_line(err)
    assert code == 2 and f"tnas.surrogate={cifar100_surrogate} was meta-trained on cifar100, a target" in line
    assert not (tmp_path / "o").exists()


def test_tnas_seeds_are_independent_repetitions_unless_they_share_one_surrogate(capsys, nats_csv, tmp_path):
    """TNAS's search has no randomness of its own here (a ranked initial design, no ties): its
    seeds differ through their surrogates, so sharing one surrogate repeats one trajectory."""
    def compare(out, *extra):
        code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "tnas",
                               "--opt", "tnas.meta_iterations=3", "--seeds", "2", "--budget", "6", "--out", out, *extra)
        assert code == 0, err
        assert "tnas: meta-trained for cifar10, seed 0 (" in err  # workers finish in either order
        runs = [json.loads(records.run_path(out, grid.RunSpec("tnas", "cifar10", s)).read_text()) for s in (0, 1)]
        return runs, summary.distinct_trajectories(runs)

    runs, distinct = compare(tmp_path / "per-seed", "--jobs", "2")  # workers: each run waits for its own surrogate
    assert distinct == 2 and [r["surrogate"]["seed"] for r in runs] == [0, 1]
    assert [Path(r["surrogate"]["path"]).parent.name for r in runs] == ["seed-0", "seed-1"]
    runs, distinct = compare(tmp_path / "shared", "--prepare-per", "dataset")
    assert distinct == 1 and [r["surrogate"]["seed"] for r in runs] == [0, 0]


# ---- SIGTERM -------------------------------------------------------------------------------------
def process_table() -> dict[int, int]:
    """``{pid: parent pid}`` of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        try:
            table[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # not a process, or one that just ended
    return table


def grandchildren(pid: int) -> list[int]:
    """The pool's workers: children of the forkserver (or of spawn's helpers) that ``pid`` started."""
    table = process_table()
    children = {p for p, parent in table.items() if parent == pid}
    return [p for p, parent in table.items() if parent in children]


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left


def wait_for(condition, timeout_s: float, step_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return False


def test_stopping_the_workers_also_ends_the_pools_manager_thread():
    """Left running, the thread races the interpreter's exit hook, which then writes to a closed pipe."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from naslib_bayes.comparison.processes import stop_workers

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    for _ in range(3):  # unstopped, the thread is still alive here more often than not
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context(method)) as pool:
            futures = [pool.submit(time.sleep, 60) for _ in range(2)]
            assert wait_for(lambda: len(pool._processes or {}) == 2 and all(f.running() for f in futures), timeout_s=60)
            processes, manager = list(pool._processes.values()), pool._executor_manager_thread
            stop_workers(pool)
            assert not any(p.is_alive() for p in processes) and not manager.is_alive()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
@contextlib.contextmanager
def runs_in_flight(nats_csv, out: Path):
    """A two-worker comparison whose runs are under way: (its process, its workers' pids). Any of
    them still running at the end is killed, so a failed test leaves no process behind."""
    # BANANAS runs take seconds each, so runs are in flight when the test acts.
    command = [sys.executable, "-m", "naslib_bayes", "compare", "--benchmark", str(nats_csv), "--datasets", "cifar10",
               "--optimizers", "bananas", "--seeds", "12", "--budget", "30", "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        assert wait_for(lambda: len(grandchildren(proc.pid)) >= 2, timeout_s=60), "the workers never started"
        time.sleep(1.0)  # they load the benchmark and start a run
        workers = grandchildren(proc.pid)
        yield proc, workers
    finally:
        for pid in [proc.pid, *workers]:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


def test_sigterm_stops_every_worker_and_leaves_no_partial_file(nats_csv, tmp_path):
    out = tmp_path / "cmp"
    with runs_in_flight(nats_csv, out) as (proc, workers):
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and err.strip().splitlines()[-1] == "naslib-bayes: terminated", err
        assert wait_for(lambda: not any(is_running(p) for p in workers), timeout_s=5), "a worker outlived the command"
    written = run_files(out)
    time.sleep(1.0)
    assert run_files(out) == written  # nobody writes after the command has gone
    assert not [p.name for p in (out / records.RUNS_DIR).iterdir() if p.name.startswith(".")]  # no partial file
    for text in written.values():
        json.loads(text)  # every run file is whole


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_ctrl_c_early_in_a_comparison_prints_one_line_and_the_rerun_finishes_it(nats_csv, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group; the workers, still loading the benchmark,
    printed a KeyboardInterrupt traceback of their own beside the command's line."""
    out = tmp_path / "cmp"
    command = [sys.executable, "-m", "naslib_bayes", "compare", "--benchmark", str(nats_csv), "--datasets", "cifar10",
               "--optimizers", "rs", "--seeds", "4", "--budget", "5", "--jobs", "2", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own group, as a terminal's job is
    workers: list[int] = []
    try:
        assert wait_for(lambda: len(grandchildren(proc.pid)) >= 2, timeout_s=60), "the workers never started"
        workers = grandchildren(proc.pid)
        for pid in workers:  # the workers may see the Ctrl-C before the command does
            os.kill(pid, signal.SIGINT)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert (proc.returncode, err) == (130, "naslib-bayes: interrupted\n")
        assert wait_for(lambda: not any(is_running(p) for p in workers), timeout_s=5), "a worker outlived the command"
    finally:  # a failed test leaves no process of its own behind
        for pid in [proc.pid, *workers]:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0 and rerun.stdout.startswith("4 runs done, 0 reused"), rerun.stderr
    assert len(run_files(out)) == 4


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_a_comparison_killed_by_sigkill_leaves_no_worker_running(nats_csv, tmp_path):
    """SIGKILL (the out-of-memory killer, a scheduler) gives the command no chance to stop its
    workers: orphaned, they went on with the runs queued for them, holding a one-shot run's
    folder against the re-run, and then waited for work for good."""
    with runs_in_flight(nats_csv, tmp_path / "cmp") as (proc, workers):
        proc.kill()
        proc.wait(timeout=60)  # not communicate(): the dying workers hold its pipes a moment longer
        assert wait_for(lambda: not any(is_running(p) for p in workers), timeout_s=5), "a worker outlived the command"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_a_benchmark_script_killed_by_sigkill_leaves_no_worker_running():
    """The benchmark scripts' pool (processes.worker_pool) likewise."""
    script = ("import time\nfrom naslib_bayes.comparison.processes import worker_pool\n"
              "with worker_pool(2) as pool:\n    futures = [pool.submit(time.sleep, 60) for _ in range(4)]\n"
              "    [f.result() for f in futures]\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        def children() -> list[int]:
            return [p for p, parent in process_table().items() if parent == proc.pid]

        assert wait_for(lambda: len(children()) >= 2, timeout_s=60), "the workers never started"
        workers = children()
        proc.kill()
        proc.wait(timeout=60)
        assert wait_for(lambda: not any(is_running(p) for p in workers), timeout_s=5), "a worker outlived the script"
    finally:
        for pid in workers:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_readme_results_are_reused_by_the_readme_command(nats_csv, nats_benchmark):
    # Where the README's run files are present (after its command ran), they must be what that
    # command makes with this code: a default changed without regenerating them is caught here.
    readme = Path(__file__).resolve().parents[1] / "README.md"
    command = re.search(r"^naslib-bayes compare (.*--readme README.md)$", readme.read_text(), re.M).group(1).split()
    options = dict(zip(command[::2], command[1::2]))
    settings = grid.CompareSettings(
        benchmark=nats_csv, out=readme.parent / options["--out"], optimizers=options["--optimizers"].split(","),
        datasets=options["--datasets"].split(","), seeds=list(range(int(options["--seeds"]))),
        budget=int(options["--budget"]), jobs=1, prepare_per=options.get("--prepare-per", "seed"))
    if not (settings.out / records.RUNS_DIR).is_dir():
        pytest.skip("the README's run files are not in this checkout (they are regenerated, not committed)")
    todo, done, missing = runner.plan(settings, nats_benchmark)
    assert not todo and not missing and len(done) == len(settings.runs())


# ---- which code made the runs ---------------------------------------------------------------------
def test_runs_record_their_code_and_a_summary_of_mixed_code_says_so(capsys, nats_csv, tmp_path):
    from naslib_bayes.results import SOURCE_KEY, source_fingerprint

    out = tmp_path / "cmp"
    argv = ["compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "rs",
            "--seeds", "4", "--budget", "5", "--out", out]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    files = sorted((out / records.RUNS_DIR).glob("*.json"))
    assert [json.loads(p.read_text())["versions"][SOURCE_KEY] for p in files] == [source_fingerprint()] * 4
    assert "versions of the naslib-bayes code" not in (out / "summary.md").read_text() + err
    table = read_csv(out / "summary.csv")
    # Two runs as if made by older code, one from before the fingerprint was recorded.
    for path, code_id in zip(files[:3], ("0123456789ab", "0123456789ab", None)):
        result = json.loads(path.read_text())
        if code_id is None:
            del result["versions"][SOURCE_KEY]
        else:
            result["versions"][SOURCE_KEY] = code_id
        path.write_text(json.dumps(result))
    before = run_files(out)
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0 and "0 runs done, 4 reused" in stdout
    note = (f"the runs were made by 3 versions of the naslib-bayes code (source fingerprint 0123456789ab: 2 runs, "
            f"{source_fingerprint()}: 1 run, not recorded: 1 run)")
    assert note in (out / "summary.md").read_text() and f"warning: {note}" in err
    assert run_files(out) == before and read_csv(out / "summary.csv") == table  # reused, not changed


@pytest.mark.parametrize("seeds, text", [([5], "1 seed (5)"), ([0, 1, 2], "3 seeds (0–2)"), ([0, 3, 7], "3 seeds (0, 3, 7)")])
def test_the_summary_names_the_seeds_it_averages(nats_csv, tmp_path, seeds, text):
    settings = settings_for(nats_csv, tmp_path, optimizers=["rs"], datasets=["cifar10"], seeds=seeds, budget=2)
    _, result = finish(settings)
    assert f"budget 2 queries per run (initial designs included); {text}, the same for every optimizer" in \
        (tmp_path / "summary.md").read_text()


def test_an_unknown_prepare_per_is_refused_naming_it_and_the_choices(nats_csv, tmp_path):
    with pytest.raises(UserError, match=r"^--prepare-per 'trial': expected one of seed, dataset$"):
        settings_for(nats_csv, tmp_path, prepare_per="trial")
    assert not tmp_path.joinpath("runs").exists()


def test_one_seed_prints_its_value_without_an_interval(nats_csv, nats_benchmark, tmp_path):
    """With --seeds 1 every cell read '0.80 [0.80, 0.80]': a bootstrap of one value, which looked like certainty."""
    settings = settings_for(nats_csv, tmp_path, optimizers=["rs"], seeds=[4], datasets=["cifar10"])
    _, result = finish(settings, nats_benchmark)
    text = (tmp_path / "summary.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| rs |"))
    mean = result.row("rs", "cifar10").at(BUDGET)[0]
    assert f"| {mean:.2f} |" in row and "[" not in row, row
    assert "no interval (n=1)" in text and "bootstrap interval" not in text
    csv_row = read_csv(tmp_path / "summary.csv")[0]  # the CSV's fields keep their meaning: the bounds of one value
    assert csv_row[f"regret_{BUDGET}_ci_low"] == csv_row[f"regret_{BUDGET}_ci_high"] == csv_row[f"regret_{BUDGET}"]
    # two seeds (the first one reused) have an interval, and the text says so
    finish(settings_for(nats_csv, tmp_path, optimizers=["rs"], seeds=[4, 5], datasets=["cifar10"]), nats_benchmark)
    text = (tmp_path / "summary.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| rs |"))
    assert "[" in row and "bootstrap interval" in text and "no interval" not in text, text


def test_a_rerun_with_a_narrower_grid_says_which_runs_its_summary_leaves_out(capsys, nats_csv, tmp_path):
    """Re-run into the same folder with fewer seeds or optimizers, compare rewrote summary.md for the
    narrower grid without a word: the wider grid's rows were gone, and its runs still lay in runs/."""
    out = tmp_path / "out"
    wide = ["compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--budget", "5", "--out", out]
    code, _, err = run_cli(capsys, *wide, "--optimizers", "rs,re", "--seeds", "0,1")
    assert code == 0 and "left out" not in err, err
    code, _, err = run_cli(capsys, *wide, "--optimizers", "rs", "--seeds", "1")  # seed 0
    assert code == 0, err
    notes = [line for line in err.splitlines() if "left out" in line]
    assert notes == [f"note: summary.md and summary.csv cover this grid only; 3 runs in {out / 'runs'} are left out "
                     "(optimizers re; seeds 1): name them in the grid to summarise them"], err
    assert [row["runs"] for row in read_csv(out / "summary.csv")] == ["1"]
    assert len(list((out / "runs").glob("*.json"))) == 4  # every run is kept


def test_the_left_out_note_lists_seeds_in_numeric_order(tmp_path):
    """Seeds 2 and 10 left out read "seeds 2, 10", not the text order "10, 2"."""
    runs = tmp_path / records.RUNS_DIR
    runs.mkdir()
    for seed in (0, 2, 10):
        spec = grid.RunSpec("rs", "cifar10", seed)
        (runs / f"{spec.name}.json").write_text(json.dumps({"optimizer": "rs", "dataset": "cifar10", "seed": seed}))
    note = summary.runs_left_out(tmp_path, ["rs"], ["cifar10"], [0])
    assert note is not None and "(seeds 2, 10)" in note, note


def test_the_left_out_note_names_a_damaged_runs_values_rather_than_failing(tmp_path):
    """A run file edited by hand, its seed a list, is named in the note as text: the note came
    after the summary was written, and a TypeError there ended the comparison in a traceback."""
    runs = tmp_path / records.RUNS_DIR
    runs.mkdir()
    (runs / "rs-cifar10-0.json").write_text(json.dumps({"optimizer": "rs", "dataset": "cifar10", "seed": 0}))
    for name, seed in (("rs-cifar10-x", [3]), ("rs-cifar10-y", [3]), ("rs-cifar10-2", 2)):
        (runs / f"{name}.json").write_text(json.dumps({"optimizer": "rs", "dataset": "cifar10", "seed": seed}))
    note = summary.runs_left_out(tmp_path, ["rs"], ["cifar10"], [0])
    assert note is not None and "3 runs" in note and "(seeds 2, [3])" in note, note
