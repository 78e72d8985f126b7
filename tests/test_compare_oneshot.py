"""``naslib-bayes compare --oneshot``: job grid, benchmark look-up of derived cells, resume and
summary, with a stand-in for the one-shot search itself (the search has its own tests)."""

from __future__ import annotations

import json
import random
from types import MappingProxyType

import numpy as np
import pytest

from naslib_bayes.comparison import oneshot
from naslib_bayes.comparison.grid import RunSpec
from naslib_bayes.comparison.records import RUNS_DIR, run_path
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

NAMES = ["fake-a", "fake-b"]


@pytest.fixture
def fake_oneshot(monkeypatch):
    specs = {n: registry.OptimizerSpec(n, registry.ONE_SHOT, "naslib_bayes.optimizers.random_search:RandomSearch", "stand-in")
             for n in NAMES}
    monkeypatch.setattr(registry, "OPTIMIZERS", MappingProxyType({**registry.OPTIMIZERS, **specs}))


def fake_search(calls):
    """A one-shot search stand-in: a seeded random cell, written like ``search`` writes it."""
    def search(settings, spec, work):
        calls.append(spec)
        cell = nb201.random_cell(random.Random(f"{spec.optimizer}-{spec.seed}"))
        form = {"final_architecture": nb201.to_string(cell)} if spec.optimizer == "fake-a" else \
               {"final_architecture_op_indices": list(cell), "final_architecture": None}
        return {"schema_version": "1.0", "command": "search", "optimizer": spec.optimizer, "search_space": "nasbench201",
                "dataset": spec.dataset, "seed": spec.seed, "wall_time_s": 1.5 + spec.seed, "config": {}, "versions": {},
                **form}
    return search


def test_oneshot_runs_look_up_derived_cells_and_resume(fake_oneshot, nats_csv, nats_benchmark, tmp_path):
    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES, dataset="mnist",
                                       data_root=tmp_path, seeds=[0, 1, 2, 3], epochs=2)
    calls = []
    stop = iter(range(100))

    def interrupt(spec):
        if next(stop) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls), on_run_done=interrupt)
    ran, done, _ = oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls))
    assert len(done) == 3 and len(ran) == 5 and len(calls) == 8  # nothing searched twice
    for spec in settings.runs():
        result = json.loads(run_path(tmp_path, spec).read_text())
        cell = tuple(result["final_architecture_op_indices"])
        assert result["final_architecture"] == nb201.to_string(cell)
        assert result["benchmark_accuracy"] == {d: nats_benchmark.query(cell, d) for d in nats_benchmark.datasets}
    rows = oneshot.summarize_oneshot(tmp_path, NAMES, "mnist", settings.seeds)
    oneshot.write_oneshot_summary(rows, "mnist", tmp_path, 2)
    for row in rows:
        accs = [json.loads(run_path(tmp_path, RunSpec(row.optimizer, "mnist", s)).read_text())["benchmark_accuracy"]
                for s in settings.seeds]
        for d, (mean, low, high) in row.accuracy.items():
            assert mean == pytest.approx(np.mean([a[d] for a in accs])) and low <= mean <= high
        assert row.search_time_total_s == pytest.approx(sum(1.5 + s for s in settings.seeds))
    text = (tmp_path / "summary.md").read_text()
    assert "| fake-a |" in text and "ImageNet16-120 accuracy" in text and "for 2 joint epochs after a warm-up epoch" in text
    assert "versions of the naslib-bayes code" not in text  # every run of one (unrecorded) code
    assert oneshot.DARTS_HALVES_NOTE not in text  # no DARTS among them
    path = run_path(tmp_path, RunSpec(NAMES[0], "mnist", 0))
    path.write_text(json.dumps({**json.loads(path.read_text()), "versions": {"naslib_bayes_source": "0123456789ab"}}))
    oneshot.write_oneshot_summary(oneshot.summarize_oneshot(tmp_path, NAMES, "mnist", settings.seeds), "mnist", tmp_path, 2)
    assert ("Note: the runs were made by 2 versions of the naslib-bayes code (source fingerprint "
            "0123456789ab: 1 run, not recorded: 7 runs)") in (tmp_path / "summary.md").read_text()


def test_the_order_seeds_are_given_in_does_not_change_the_summary(fake_oneshot, nats_csv, nats_benchmark, tmp_path):
    """The same runs give the same intervals: --seeds 7,6,...,0 resamples the seeds as --seeds 8 does."""
    seeds = list(range(8))
    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES, dataset="mnist",
                                       data_root=None, seeds=seeds, epochs=1)
    oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search([]))
    in_order = oneshot.summarize_oneshot(tmp_path, NAMES, "mnist", seeds)
    reversed_seeds = oneshot.summarize_oneshot(tmp_path, NAMES, "mnist", seeds[::-1])
    assert [row.accuracy for row in reversed_seeds] == [row.accuracy for row in in_order]


def test_runs_made_without_epochs_are_the_runs_of_the_default_epochs(fake_oneshot, nats_csv, nats_benchmark, tmp_path):
    """--epochs 1, the default typed out, reuses the runs made without --epochs, those of files that
    recorded no epochs (epochs None) included, and the summary says how long every run searched."""
    calls = []
    implicit = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES[:1], dataset="mnist",
                                       data_root=None, seeds=[0, 1], epochs=None)
    oneshot.run_oneshot_comparison(implicit, nats_benchmark, fake_search(calls))
    spec = RunSpec(NAMES[0], "mnist", 1)
    recorded_without_epochs = [run_path(tmp_path, spec), tmp_path / oneshot.WORK_DIR / spec.name / oneshot.DETERMINANTS_FILE]
    for path in recorded_without_epochs:
        record = json.loads(path.read_text())
        determinants = record.get(oneshot.DETERMINANTS_KEY, record)
        determinants["epochs"] = None
        path.write_text(json.dumps(record))
    explicit = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES[:1], dataset="mnist",
                                       data_root=None, seeds=[0, 1], epochs=1)
    ran, done, _ = oneshot.run_oneshot_comparison(explicit, nats_benchmark, fake_search(calls))
    assert (len(ran), len(done), len(calls)) == (0, 2, 2)
    recorded_without_epochs[0].unlink()  # its work folder, which recorded no epochs, is continued
    ran, done, _ = oneshot.run_oneshot_comparison(explicit, nats_benchmark, fake_search(calls))
    assert (ran, len(done), len(calls)) == ([spec], 1, 3)
    oneshot.write_oneshot_summary(oneshot.summarize_oneshot(tmp_path, NAMES[:1], "mnist", [0, 1]), "mnist", tmp_path,
                                  implicit.epochs)
    assert "for 1 joint epoch after a warm-up epoch with" in (tmp_path / "summary.md").read_text()


def test_another_spelling_of_the_dataset_reuses_its_runs(fake_oneshot, nats_csv, nats_benchmark, tmp_path):
    calls = []
    for spelling in ("mnist", "MNIST"):
        settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES[:1], dataset=spelling,
                                           data_root=None, seeds=[0], epochs=1)
        ran, done, _ = oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls))
    assert (ran, done, len(calls)) == ([], [RunSpec(NAMES[0], "mnist", 0)], 1)


def test_runs_and_work_folders_of_other_settings_are_refused(fake_oneshot, nats_csv, nats_benchmark, tmp_path):
    from naslib_bayes.errors import UserError

    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES[:1], dataset="mnist",
                                       data_root=None, seeds=[0], epochs=2)
    calls = []
    oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls))
    path = run_path(tmp_path, RunSpec(NAMES[0], "mnist", 0))
    finished = path.read_text()
    longer = oneshot.OneShotSettings(**{**vars(settings), "epochs": 3})
    with pytest.raises(UserError, match=f"{path} was run with epochs=2, not 3; use another --out"):
        oneshot.run_oneshot_comparison(longer, nats_benchmark, fake_search(calls))
    elsewhere = oneshot.OneShotSettings(**{**vars(settings), "data_root": tmp_path / "other"})
    with pytest.raises(UserError, match="was run with data_root=None"):
        oneshot.run_oneshot_comparison(elsewhere, nats_benchmark, fake_search(calls))
    assert path.read_text() == finished and len(calls) == 1
    # A search stopped before its run file was written continues only under the same settings.
    path.unlink()
    with pytest.raises(UserError, match="comparison.json was run with epochs=2, not 3"):
        oneshot.run_oneshot_comparison(longer, nats_benchmark, fake_search(calls))
    assert len(calls) == 1
    ran, _, _ = oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls))
    assert len(ran) == 1 and json.loads(path.read_text())["comparison"]["epochs"] == 2


def test_unknown_oneshot_optimizer_is_the_registry_error(nats_csv, tmp_path, capsys):
    from naslib_bayes.cli import main

    code = main(["compare", "--oneshot", "nope", "--dataset", "mnist", "--benchmark", str(nats_csv), "--seeds", "1",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown one-shot optimizer 'nope'; valid:" in err and err.count("\n") == 1


def test_a_seed_or_optimizer_given_twice_is_refused(fake_oneshot, nats_csv, tmp_path):
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match="seeds: 1 is given 2 times"):
        oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES, dataset="mnist", data_root=None,
                                seeds=[0, 1, 1])
    with pytest.raises(UserError, match="optimizers: fake-a is given 2 times"):
        oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=["fake-a", "fake-a"], dataset="mnist",
                                data_root=None, seeds=[0])


@pytest.mark.parametrize("stopped, code, said", [("KeyboardInterrupt", 130, "interrupted"), ("Terminated", 143, "terminated")])
def test_a_search_stopped_by_a_signal_stops_the_comparison_which_says_so_once(monkeypatch, nats_csv, tmp_path, capsys,
                                                                               stopped, code, said):
    """Not "search failed (exit code 143)": the comparison unwinds as its search did, and the line
    saying why is written once (the search and the comparison each wrote it)."""
    from naslib_bayes import cli
    from naslib_bayes.commands import search

    signal_raised = {"KeyboardInterrupt": KeyboardInterrupt, "Terminated": cli.Terminated}[stopped]

    def stopped_search(args):
        raise signal_raised()

    monkeypatch.setattr(search, "run", stopped_search)
    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=["darts"], dataset="digits",
                                       data_root=None, seeds=[0])
    with pytest.raises(KeyboardInterrupt) as raised:
        oneshot.search_via_cli(settings, RunSpec("darts", "digits", 0), tmp_path / "work")
    assert type(raised.value) is signal_raised
    assert cli.main(["compare", "--oneshot", "darts", "--dataset", "digits", "--benchmark", str(nats_csv),
                     "--seeds", "1", "--out", str(tmp_path / "out")]) == code
    assert capsys.readouterr().err.count(f"naslib-bayes: {said}") == 1


@pytest.mark.parametrize("data, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'; known: "),
    (["--dataset", "mnist"], "dataset mnist needs the folder holding its files: --data-root DIR"),
    # digits reads no folder: the runs recorded one they never read
    (["--dataset", "digits", "--data-root", "somewhere"], "--data-root somewhere: dataset digits comes with scikit-learn"),
])
def test_data_the_searches_cannot_load_is_one_line_before_any_run(nats_csv, tmp_path, capsys, data, message):
    # each run's search refused it in its own error line, followed by the comparison's, after --out was made
    from naslib_bayes.cli import main

    code = main(["compare", "--oneshot", "bayesnas", *data, "--benchmark", str(nats_csv), "--seeds", "2",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"naslib-bayes: error: {message}" in err, err
    assert not (tmp_path / "out").exists()


def test_a_benchmark_without_test_accuracy_is_one_line_before_any_run(zc_json, tmp_path, capsys):
    # the first run's search refused it after --out and the run's work folder were made, pointing
    # at a --report-metric that compare --oneshot does not take, followed by the comparison's line
    from naslib_bayes.cli import main

    code = main(["compare", "--oneshot", "bayesnas", "--dataset", "digits", "--benchmark", str(zc_json),
                 "--seeds", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{zc_json.name} has no test_accuracy for any dataset" in err and "--report-metric" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("root, message", [("missing", "data folder for mnist does not exist"),
                                           ("empty", "no t10k-images-idx3-ubyte.gz or")])
def test_a_data_root_without_the_dataset_is_one_line_before_any_run(nats_csv, tmp_path, capsys, root, message):
    # the first run's search refused it after --out and the run's work folder were made, in a line of
    # its own followed by the comparison's
    from naslib_bayes.cli import main

    (tmp_path / "empty").mkdir()
    code = main(["compare", "--oneshot", "bayesnas", "--dataset", "mnist", "--data-root", str(tmp_path / root),
                 "--benchmark", str(nats_csv), "--seeds", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_run_made_on_other_images_in_the_same_folder_is_refused_for_reuse(fake_oneshot, nats_csv, mnist_dir, tmp_path,
                                                                           capsys, monkeypatch):
    # runs were told apart by the --data-root path only: other labels in the same folder reused them
    import functools
    import gzip
    import shutil

    from naslib_bayes.cli import main

    calls = []
    monkeypatch.setattr(oneshot, "run_oneshot_comparison",
                        functools.partial(oneshot.run_oneshot_comparison, search_fn=fake_search(calls)))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", data)
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    argv = ["compare", "--oneshot", "fake-a", "--dataset", "mnist", "--data-root", str(data),
            "--benchmark", str(nats_csv), "--seeds", "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0 and main(argv) == 0 and len(calls) == 1  # the same files: reused
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]))
    capsys.readouterr()
    assert main(argv) == 2 and len(calls) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fake-a-mnist-0.json was run on other data files (data_sha256 " in err, err
    run = run_path(tmp_path / "out", RunSpec("fake-a", "mnist", 0))
    recorded = json.loads(run.read_text())
    del recorded[oneshot.DETERMINANTS_KEY][oneshot.DATA_FINGERPRINT_KEY]  # a run made before the files were hashed
    run.write_text(json.dumps(recorded))
    assert main(argv) == 2 and len(calls) == 1
    assert "fake-a-mnist-0.json does not record its data files' contents (data_sha256)" in capsys.readouterr().err


def test_a_run_killed_while_recording_its_settings_is_run_on_re_running(fake_oneshot, nats_csv, nats_benchmark, tmp_path):
    """A kill inside the atomic write of comparison.json leaves only its temporary in the run's work
    folder: the folder holds no search yet, so the re-run searches there instead of refusing it."""
    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES[:1], dataset="mnist",
                                       data_root=None, seeds=[0], epochs=1)
    spec = RunSpec(NAMES[0], "mnist", 0)
    work = tmp_path / oneshot.WORK_DIR / spec.name
    work.mkdir(parents=True)
    (work / f".{oneshot.DETERMINANTS_FILE}.k1ll3d00.tmp").write_text('{"optimizer": "fa')
    runs = tmp_path / RUNS_DIR
    runs.mkdir()
    (runs / f".{spec.name}.json.k1ll3d00.tmp").write_text('{"optimizer"')  # a run record's write, killed too
    calls = []
    ran, _, _ = oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls))
    assert ran == [spec] and calls == [spec] and run_path(tmp_path, spec).exists()
    assert sorted(p.name for p in work.iterdir()) == [oneshot.DETERMINANTS_FILE]
    assert not list(runs.glob(".*.tmp"))


@pytest.mark.parametrize("content, message", [
    ('{"optimizer": "fa', r"comparison\.json: unreadable record of the run's settings \(.*\); delete the run's "
                          r"folder to run it again$"),
    ("[]", r"comparison\.json: not a record of the run's settings \(holds a list\); delete the run's folder to run "
           r"it again$"),
])
def test_a_work_folder_whose_settings_record_is_broken_is_one_line_and_kept(fake_oneshot, nats_csv, nats_benchmark,
                                                                            tmp_path, content, message):
    """comparison.json torn or edited: one line naming it (a traceback before), the search left as it is."""
    from naslib_bayes.errors import UserError

    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path, optimizers=NAMES[:1], dataset="mnist",
                                       data_root=None, seeds=[0], epochs=1)
    work = tmp_path / oneshot.WORK_DIR / RunSpec(NAMES[0], "mnist", 0).name
    work.mkdir(parents=True)
    (work / oneshot.DETERMINANTS_FILE).write_text(content)
    calls = []
    with pytest.raises(UserError, match=message):
        oneshot.run_oneshot_comparison(settings, nats_benchmark, fake_search(calls))
    assert calls == [] and (work / oneshot.DETERMINANTS_FILE).read_text() == content


def test_a_link_of_another_name_to_files_already_hashed_is_fingerprinted_by_its_own_name(mnist_dir, tmp_path):
    """The fingerprint hashes each file's name with its bytes: a mirror-named link to files this
    process has hashed is another fingerprint, not the first one served again from memory."""
    from naslib_bayes.data import loaders

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for path in loaders.mnist_files(mnist_dir):
        (mirror / path.name.replace("-idx", ".idx")).symlink_to(path.resolve())
    first = loaders.data_fingerprint("mnist", mnist_dir)
    assert loaders.data_fingerprint("mnist", mirror) == loaders.files_fingerprint(loaders.mnist_files(mirror)) != first


def test_the_data_files_are_hashed_once_for_the_comparison_and_its_searches(nats_csv, mnist_dir, tmp_path,
                                                                            monkeypatch):
    """Each search's checkpoint settings hashed the files the comparison had just hashed (CIFAR-10:
    170 MB per search); files rewritten since are hashed anew."""
    import shutil

    from naslib_bayes.data import loaders
    from naslib_bayes.training import checkpoint

    hashed = []
    monkeypatch.setattr(loaders, "files_fingerprint", lambda paths, real=loaders.files_fingerprint:
                        hashed.append(len(paths)) or real(paths))
    data = shutil.copytree(mnist_dir, tmp_path / "data")
    settings = oneshot.OneShotSettings(benchmark=nats_csv, out=tmp_path / "out", optimizers=["darts"], dataset="mnist",
                                       data_root=data, seeds=[0])
    oneshot.check_search_data(settings)
    for _ in range(2):  # two searches
        assert checkpoint.data_setting("mnist", data) == {checkpoint.DATA_KEY: f"sha256:{settings.data_sha256[:16]}"}
    assert hashed == [2]
    labels = data / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-1])
    assert checkpoint.data_setting("mnist", data) != {checkpoint.DATA_KEY: f"sha256:{settings.data_sha256[:16]}"}
    assert hashed == [2, 2]


def test_a_summary_with_darts_says_its_weights_take_half_the_steps():
    """DARTS's weights train on one half of the images: a reader of the table must know its runs
    made half the weight steps of the others' (same supernet, data and epochs otherwise)."""
    row = oneshot.OneShotRow("darts", 2, {"cifar10": (90.0, 89.0, 91.0)}, 2, 1.0, 2.0)
    text = oneshot.oneshot_markdown([row], "mnist", ["cifar10"], 3)
    assert "for 3 joint epochs after a warm-up epoch" in text and oneshot.DARTS_HALVES_NOTE in text


@pytest.mark.parametrize("runs, said", [(1, "with 1 seed;"), (3, "with 3 seeds;")])
def test_a_summary_counts_its_seeds_in_the_singular_for_one(runs, said):
    """A one-seed comparison (a quick check) reads 'with 1 seed', as '1 joint epoch' does."""
    row = oneshot.OneShotRow("bayesnas", runs, {"cifar10": (90.0, 89.0, 91.0)}, 1, 1.0, 2.0)
    assert said in oneshot.oneshot_markdown([row], "mnist", ["cifar10"], 1)


def test_a_one_seed_oneshot_summary_prints_the_value_without_an_interval():
    row = oneshot.OneShotRow("bayesnas", 1, {"cifar10": (90.0, 90.0, 90.0)}, 1, 1.0, 1.0)
    text = oneshot.oneshot_markdown([row], "mnist", ["cifar10"], 1)
    assert "| bayesnas | 90.00 | 1/1 |" in text and "no interval (n=1)" in text and "bootstrap" not in text
    two = oneshot.OneShotRow("bayesnas", 2, {"cifar10": (90.0, 89.0, 91.0)}, 1, 1.0, 2.0)
    text = oneshot.oneshot_markdown([two], "mnist", ["cifar10"], 1)
    assert "| bayesnas | 90.00 [89.00, 91.00] | 1/2 |" in text
    assert "Cells: mean over seeds [95% bootstrap interval]." in text and "no interval" not in text


def test_a_oneshot_rerun_with_a_narrower_grid_says_which_runs_its_summary_leaves_out(fake_oneshot, nats_csv, tmp_path,
                                                                                    capsys, monkeypatch):
    """As the black-box comparison: a re-run into the same folder with fewer optimizers or seeds
    rewrote summary.md for its own grid, and the wider grid's rows went without a word."""
    import functools

    from naslib_bayes.cli import main

    calls = []
    monkeypatch.setattr(oneshot, "run_oneshot_comparison",
                        functools.partial(oneshot.run_oneshot_comparison, search_fn=fake_search(calls)))
    out = tmp_path / "out"
    argv = ["compare", "--dataset", "digits", "--benchmark", str(nats_csv), "--out", str(out)]
    assert main([*argv, "--oneshot", "fake-a,fake-b", "--seeds", "2"]) == 0
    assert "left out" not in capsys.readouterr().err
    assert main([*argv, "--oneshot", "fake-a", "--seeds", "2"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "left out" in line]
    assert notes == [f"note: summary.md and summary.csv cover this grid only; 2 runs in {out / RUNS_DIR} are left out "
                     "(optimizers fake-b): name them in the grid to summarise them"]
    assert len(calls) == 4 and len(list((out / RUNS_DIR).glob("*.json"))) == 4  # nothing run again, nothing lost
