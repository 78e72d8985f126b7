"""NASLib interfaces without NASLib: the signature table, the NASLib-layout dataset_api, compat, messages.

These tests never import NASLib. ``tests/test_naslib_integration.py`` runs the same table
against NASLib itself when it is importable.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from naslib_interfaces import META_OPTIMIZER, META_OPTIMIZER_ATTRIBUTES, Call, Row, check_rows
from naslib_bayes.integration.dataset_api import NASLIB_DATASET_KEYS, NB201Data, curve_length, naslib_dataset_api
from naslib_bayes.optimizers import registry
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the signature table against the core classes ---------------------------------------
@pytest.mark.parametrize("name", registry.names())
def test_core_optimizers_match_naslib_meta_optimizer(name):
    """Every registered optimizer offers NASLib's MetaOptimizer methods for its kind."""
    spec = registry.get_spec(name)
    cls = spec.load()
    assert check_rows(cls, META_OPTIMIZER, kind=spec.kind) == []
    assert cls.using_step_function is META_OPTIMIZER_ATTRIBUTES["using_step_function"][spec.kind]


QUICK_HYPERPARAMETERS = {"tnas": {"meta_iterations": 3}}


@pytest.mark.parametrize("name", registry.names(registry.BLACK_BOX))
def test_core_black_box_optimizers_return_what_naslib_reads(name):
    from naslib_bayes.optimizers.blackbox import BlackBoxProblem

    cls = registry.get_spec(name).load()
    # transfer methods learn from the toy's cifar100 column; a few meta-training steps are enough here
    opt = cls(seed=0, **QUICK_HYPERPARAMETERS.get(name, {}))
    problem = BlackBoxProblem.from_benchmark(_toy_benchmark(n_cells=nb201.NUM_CELLS), "cifar10", "test_accuracy", budget=3)
    opt.adapt_search_space(problem.space, dataset_api=problem)  # NASLib's runner call form
    opt.before_training()
    for epoch in range(3):
        opt.new_epoch(epoch)
    stats = opt.train_statistics(True)  # NASLib's 4-tuple (train_acc, val_acc, test_acc, train_time)
    assert len(stats) == 4 and stats[1] == max(problem.objective.values)
    # what a checkpoint keeps is the run so far: the queried cells with their values, in order
    expected = list(zip(problem.objective.queried, problem.objective.values))
    assert len(expected) == 3 and opt.get_checkpointables()["history"] == expected


def test_the_table_catches_a_wrong_signature():
    class Wrong:
        using_step_function = False

        def adapt_search_space(self, search_space, dataset):  # no dataset_api: NASLib's runner call fails
            pass

        def train_statistics(self):  # NASLib passes report_incumbent
            pass

    problems = check_rows(Wrong, META_OPTIMIZER, kind="black-box")
    assert any(p.startswith("adapt_search_space") for p in problems)
    assert any(p.startswith("train_statistics('report_incumbent',)") for p in problems)
    assert any(p == "new_epoch: missing" for p in problems)
    assert check_rows(Wrong, (Row("step", (Call(("a", "b")),)),), kind="black-box") == ["step: missing"]


# ---- the NASLib-layout dataset_api ---------------------------------------------------------
def _toy_benchmark(with_val: bool = False, n_cells: int = 40) -> Benchmark:
    cells = list(nb201.all_cells())[:n_cells]
    rng = np.random.default_rng(0)
    test = rng.uniform(50, 90, size=len(cells))
    tables = {"cifar10": {"test_accuracy": test, "train_time": rng.uniform(1, 2, len(cells))},
              "cifar100": {"test_accuracy": test - 20}}
    if with_val:
        tables["cifar10"]["val_accuracy"] = test - 1.0
    return Benchmark(cells, tables, source="toy")


def naslib_style_query(api, arch_str, field, dataset, epoch=-1):
    """What NASLib's NasBench201SearchSpace.query does with a dataset_api (written from its docs)."""
    dataset = "cifar10-valid" if dataset == "cifar10" else dataset
    record = api["nb201_data"][arch_str][dataset]
    if field == "train_time":
        return record["cost_info"]["train_time"]
    return record[field][epoch]


def test_dataset_api_answers_naslib_queries_from_the_csv(nats_benchmark):
    messages = []
    api = naslib_dataset_api(nats_benchmark, warn=messages.append)
    data = api["nb201_data"]
    assert isinstance(data, NB201Data) and len(data) == nb201.NUM_CELLS and curve_length(api) == 1
    rng = np.random.default_rng(3)
    for index in rng.choice(nb201.NUM_CELLS, size=50, replace=False):
        cell = nats_benchmark.cell(int(index))
        arch = nb201.to_string(cell)
        for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
            expected = nats_benchmark.query(cell, dataset)
            assert naslib_style_query(api, arch, "eval_acc1es", dataset) == expected
            assert naslib_style_query(api, arch, "train_acc1es", dataset) == -1  # the CSV has no train accuracy
            assert naslib_style_query(api, arch, "train_time", dataset) == -1
            assert data[arch][NASLIB_DATASET_KEYS[dataset]]["cost_info"] == {"flops": -1, "params": -1, "latency": -1, "train_time": -1}
    assert set(data[arch]) == {"cifar10-valid", "cifar100", "ImageNet16-120"}
    best = nb201.to_string(nats_benchmark.cell(int(np.nanargmax(nats_benchmark.query_all("cifar10")))))
    assert naslib_style_query(api, best, "eval_acc1es", "cifar10") == pytest.approx(94.37, abs=0.01)
    # one warning line, naming the datasets whose validation value is the test accuracy
    assert len(messages) == 1 and "same number" in messages[0] and "cifar10, cifar100, ImageNet16-120" in messages[0]


def test_dataset_api_keys_are_benchmark_strings_and_unknown_ones_raise_keyerror(nats_benchmark):
    data = naslib_dataset_api(nats_benchmark)["nb201_data"]
    keys = list(data)
    assert len(keys) == len(set(keys)) == nb201.NUM_CELLS
    assert keys[0] == nb201.to_string(nats_benchmark.cell(0))  # the file's index order
    assert all(nb201.to_string(nb201.from_string(k)) == k for k in keys[:200])
    with pytest.raises(KeyError):
        data["|bogus~0|+|+|"]
    with pytest.raises(KeyError):
        data[(0, 1, 2, 3, 4, 0)]
    assert "|bogus~0|" not in data and keys[5] in data


def test_dataset_api_serves_validation_where_the_benchmark_has_it_and_fills_missing_fields():
    bench = _toy_benchmark(with_val=True)
    messages = []
    api = naslib_dataset_api(bench, warn=messages.append)
    cell = bench.cell(7)
    record = api["nb201_data"][nb201.to_string(cell)]
    assert record["cifar10-valid"]["eval_acc1es"] == [bench.query(cell, "cifar10", "val_accuracy")]
    assert record["cifar10-valid"]["eval_acc1es"] != [bench.query(cell, "cifar10", "test_accuracy")]
    assert record["cifar10-valid"]["cost_info"]["train_time"] == bench.query(cell, "cifar10", "train_time")
    assert record["cifar100"]["eval_acc1es"] == [bench.query(cell, "cifar100")]
    assert record["cifar100"]["train_losses"] == [-1] and record["cifar100"]["eval_losses"] == [-1]
    assert "ImageNet16-120" not in record
    # only cifar100 serves test accuracy as validation
    assert len(messages) == 1 and "for cifar100 (" in messages[0]
    # cells the file lacks are absent, as in NASLib's pickles
    absent = nb201.to_string(bench.cell(100))
    assert math.isnan(bench.query(absent, "cifar10")) and absent not in api["nb201_data"]
    assert len(api["nb201_data"]) == 40


def test_dataset_api_from_the_zero_cost_json_has_no_warning(zc_json):
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    bench = load_benchmark(zc_json)
    messages = []
    data = naslib_dataset_api(bench, warn=messages.append)["nb201_data"]
    assert messages == [] and len(data) == bench.num_in_file
    arch = next(iter(data))
    record = data[arch]["cifar10-valid"]
    assert record["eval_acc1es"] == [bench.query(arch, "cifar10", "val_accuracy")]
    assert record["cost_info"]["params"] == bench.query(arch, "cifar10", "params")


# ---- nothing happens on import; compat fixes only when called -----------------------------
def _python(code: str, extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, extra_path) if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_import_naslib_bayes_imports_no_naslib_and_patches_nothing(tmp_path):
    # A NASLib lookalike on the path, so that an accidental import would be seen.
    fake = tmp_path / "naslib"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('naslib was imported')\n")
    proc = _python("""
        import collections, sys
        import naslib_bayes, naslib_bayes.cli, naslib_bayes.integration, naslib_bayes.integration.dataset_api
        import naslib_bayes.integration.compat, naslib_bayes.integration.data
        from naslib_bayes.cli import build_parser
        build_parser()
        assert "naslib" not in sys.modules, "naslib imported"
        assert not hasattr(collections, "Iterable"), "collections patched"
        assert "tensorwatch" not in sys.modules and "torchvision" not in sys.modules
        from naslib_bayes.integration import compat
        assert compat.APPLIED == {}
        print("clean")
    """, extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"


def test_compat_fixes_apply_once_log_and_give_usable_placeholders():
    proc = _python("""
        import collections, logging, sys
        logging.basicConfig(level=logging.INFO, format="%(name)s|%(message)s", stream=sys.stdout)
        sys.modules["tensorwatch"] = None      # as if not installed
        sys.modules["torchvision"] = None      # as if not installed (or broken)
        from naslib_bayes.integration import compat
        assert compat.fix_collections_abc_aliases() is True
        assert collections.Iterable is collections.abc.Iterable
        assert compat.fix_collections_abc_aliases() is False
        assert compat.fix_torchvision() is True and compat.fix_torchvision() is False
        import torchvision.transforms as T
        from torchvision.transforms import functional as F
        import torchvision.datasets as dset
        class MyCompose(T.Compose):    # NASLib subclasses transforms at import time
            pass
        for thing in (lambda: MyCompose([]), lambda: F.resize(None, 3), lambda: dset.CIFAR10(root=".")):
            try:
                thing()
                raise SystemExit("placeholder did not raise")
            except ImportError as exc:
                assert "torchvision is unavailable" in str(exc), exc
        assert compat.fix_tensorwatch() is True and compat.fix_tensorwatch() is False
        import tensorwatch as tw
        annotation = tw.ModelStats     # used in a signature at import time
        print("applied:", sorted(compat.APPLIED))
    """)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = [l for l in proc.stdout.splitlines() if l.startswith("naslib_bayes.integration.compat|")]
    assert len(lines) == 3  # one log line per fix, none for the repeated calls
    assert "applied: ['collections_abc_aliases', 'tensorwatch', 'torchvision']" in proc.stdout


def test_parameter_counter_replacement_counts_like_naslib():
    import torch

    from naslib_bayes.integration.compat import count_parameters_in_mb

    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Linear(20, 3))
    model.auxiliary = torch.nn.Linear(5, 5)  # NASLib's counter leaves out auxiliary heads
    assert count_parameters_in_mb(model) == (10 * 20 + 20 + 20 * 3 + 3) / 1e6


# ---- messages when NASLib is missing or too old -------------------------------------------
def test_missing_naslib_names_what_to_install(tmp_path):
    proc = _python("""
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "naslib" else real(name, *a)
        from naslib_bayes.cli import main
        sys.exit(main(["naslib-run", "--config", "x.yaml", "--out", %r]))
    """ % str(tmp_path / "out"))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("naslib-bayes: error: NASLib is not importable")
    assert "git clone -b Develop https://github.com/automl/NASLib" in err[0] and 'pip install -e ".[naslib]"' in err[0]


def test_too_old_naslib_is_reported(tmp_path):
    fake = tmp_path / "naslib"
    (fake / "search_spaces").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "search_spaces" / "__init__.py").write_text("class NasBench201SearchSpace: pass\n")
    proc = _python("""
        from naslib_bayes.integration import naslib_available
        ok, reason = naslib_available()
        assert not ok
        print(reason)
    """, extra_path=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "too old" in proc.stdout and "Develop" in proc.stdout


def test_rmse_view_of_sklearn_metrics_accepts_squared_like_old_sklearn():
    import math

    from sklearn import metrics

    from naslib_bayes.integration import compat

    view = compat._metrics_with_squared()
    y, p = [1.0, 2.0, 4.0], [1.5, 2.0, 3.0]
    mse = metrics.mean_squared_error(y, p)
    assert view.mean_squared_error(y, p) == mse
    assert math.isclose(view.mean_squared_error(y, p, squared=False), math.sqrt(mse))
    assert view.r2_score is metrics.r2_score  # everything else is scikit-learn's own
    assert not hasattr(metrics, "__naslib_bayes_fix__")  # scikit-learn itself is untouched
