"""``naslib-bayes compare``: identical grids, resumable runs, parallel determinism, and summaries
that follow from the run files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from scipy.special import gammaln

from naslib_bayes.comparison import runner, summary
from naslib_bayes.comparison.plots import plot_regret
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer
from naslib_bayes.optimizers.random_search import RandomSearch
from cli_runner import run_cli

FAST_BANANAS = {"epochs": 20, "k": 3, "num_candidates": 30}
OPTIMIZERS = ["rs", "re", "ls", "bananas"]
DATASETS = ["cifar10", "ImageNet16-120"]
SEEDS = [0, 1, 2]
BUDGET = 12


def settings_for(nats_csv, out, jobs=1, budget=BUDGET, optimizers=OPTIMIZERS, seeds=SEEDS, datasets=DATASETS):
    return runner.CompareSettings(benchmark=nats_csv, out=out, optimizers=list(optimizers), datasets=list(datasets),
                                  seeds=list(seeds), budget=budget, jobs=jobs,
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
            for p in sorted((out / runner.RUNS_DIR).glob("*.json"))}


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
    for path in (settings.out / runner.RUNS_DIR).glob("*.json"):
        result = json.loads(path.read_text())
        jsonschema.validate(result, schema)  # each run file is a result.json
        assert result["command"] == "compare" and len(result["incumbent_report_accuracy"]) == BUDGET


def test_jobs_do_not_change_trajectories(serial, nats_csv, tmp_path):
    settings, _, _ = serial
    parallel = settings_for(nats_csv, tmp_path / "parallel", jobs=2)
    finish(parallel)
    assert trajectories(parallel.out) == trajectories(settings.out)
    assert read_csv(parallel.out / "summary.csv") == read_csv(settings.out / "summary.csv")


def test_an_interrupted_compare_resumes_to_the_same_summary(serial, nats_csv, nats_benchmark, tmp_path):
    reference, _, _ = serial
    settings = settings_for(nats_csv, tmp_path / "killed")

    def interrupt_after_five(spec, done=[]):
        done.append(spec)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_comparison(settings, benchmark=nats_benchmark, on_run_done=interrupt_after_five)
    assert len(list((settings.out / runner.RUNS_DIR).glob("*.json"))) == 5
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
    other = runner.CompareSettings(**{**vars(settings), "budget": BUDGET + 1})
    with pytest.raises(Exception, match="budget=12, not 13"):
        runner.run_comparison(other, benchmark=nats_benchmark)


def test_summary_numbers_follow_from_the_run_files(serial, nats_benchmark):
    settings, _, _ = serial
    rows = {(r["optimizer"], r["dataset"]): r for r in read_csv(settings.out / "summary.csv", drop=())}
    for optimizer in OPTIMIZERS:
        for dataset in DATASETS:
            runs = [json.loads(runner.run_path(settings.out, runner.RunSpec(optimizer, dataset, s)).read_text())
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
            assert int(row["median_queries_to_optimum"]) == hits[1]
            assert row["median_censored"] == str(hits[1] > BUDGET)
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
    """Random search that records what its per-dataset preparation saw."""

    calls: list = []

    @classmethod
    def prepare(cls, source, dataset, directory, metric, seed=0, **hyperparameters):
        assert metric == "test_accuracy"
        cls.calls.append((dataset, source.datasets))
        (directory / "artefact.json").write_text(json.dumps({"trained_on": list(source.datasets)}))
        return {"cells_seen": 15625}

    def setup(self):
        self.artefact = json.loads((self.problem.prepared / "artefact.json").read_text())
        assert self.problem.dataset not in self.artefact["trained_on"]


@pytest.fixture
def fake_transfer(monkeypatch):
    spec = registry.OptimizerSpec("fake-transfer", registry.BLACK_BOX, f"{__name__}:FakeTransfer", "test double")
    monkeypatch.setattr(registry, "OPTIMIZERS", MappingProxyType({**registry.OPTIMIZERS, spec.name: spec}))
    FakeTransfer.calls = []
    return spec.name


def test_transfer_methods_prepare_once_per_dataset_without_the_target(fake_transfer, nats_csv, nats_benchmark, tmp_path):
    assert FakeTransfer.has_preparation() and not BlackBoxOptimizer.has_preparation()
    datasets = ["cifar10", "cifar100", "ImageNet16-120"]
    settings = settings_for(nats_csv, tmp_path, optimizers=["rs", fake_transfer], seeds=range(4), datasets=datasets)
    finish(settings, nats_benchmark)
    assert sorted(FakeTransfer.calls) == sorted((d, tuple(x for x in datasets if x != d)) for d in datasets)
    for dataset in datasets:
        record = json.loads((runner.prepared_dir(tmp_path, fake_transfer, dataset) / runner.PREPARED_FILE).read_text())
        assert record["dataset"] == dataset and dataset not in record["source_datasets"]
    rows = read_csv(tmp_path / "summary.csv", drop=())
    assert sorted(r["dataset"] for r in rows if r["row"] == "meta-training") == sorted(datasets)
    assert "fake-transfer meta-training" in (tmp_path / "summary.md").read_text()
    finish(settings, nats_benchmark)  # cached: not prepared again
    assert len(FakeTransfer.calls) == 3


def test_censored_median_and_queries_to_optimum():
    assert summary.queries_to_optimum(np.array([3.0, 1.0, 0.0, 0.0])) == 3
    assert summary.queries_to_optimum(np.array([3.0, 1.0])) == 3  # never: budget + 1
    assert summary.censored_median([5, 101, 7, 101], 100) == (7, False)  # lower median
    assert summary.censored_median([5, 101, 101, 7, 101], 100) == (101, True)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(size=(20, 3))
    a = summary.bootstrap_mean(values, summary.bootstrap_seed("cifar10"))
    b = summary.bootstrap_mean(values, summary.bootstrap_seed("cifar10"))
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    mean, low, high = a
    assert (low < mean).all() and (mean < high).all()
    # About two standard errors either side for a normal sample.
    se = values.std(axis=0, ddof=1) / np.sqrt(20)
    np.testing.assert_allclose(high - low, 2 * 1.96 * se, rtol=0.25)


def test_regret_plot_is_written(serial, tmp_path):
    _, _, result = serial
    path = plot_regret(result, "cifar10", tmp_path / "regret.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- command line -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--optimizers", "rs,nope"], "unknown black-box optimizer 'nope'; valid: rs"),
        (["--oneshot", "darts", "--optimizers", "rs"], "--optimizers cannot be combined with --oneshot"),
        (["--oneshot", "darts", "--budget", "5"], "--budget cannot be combined with --oneshot"),
        ([], "give --optimizers (black-box comparison) or --oneshot"),
        (["--optimizers", "rs", "--epochs", "3"], "--epochs belongs to --oneshot"),
        (["--optimizers", "rs", "--datasets", "svhn"], "'svhn'"),
        (["--optimizers", "rs,rs"], "distinct"),
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
