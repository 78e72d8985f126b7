"""naslib-bayes inside NASLib: its Trainer, search spaces and benchmark queries.

Runs only when NASLib is importable (its Develop branch on PYTHONPATH, its dependencies
installed with ``pip install -e ".[naslib]"``); otherwise every test here is skipped with the
reason shown. ``NASLIB_BAYES_REQUIRE_NASLIB=1`` turns those skips into failures. The
compatibility fixes are applied in this process (by ``load_naslib``), as ``naslib-run`` does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from naslib_interfaces import META_OPTIMIZER, NB201_QUERY, PREDICTOR, PREDICTOR_DATA_REQS, TRAINER, check_rows
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

pytestmark = pytest.mark.naslib


@pytest.fixture(scope="module")
def api(naslib, nats_benchmark):
    from naslib_bayes.integration.dataset_api import naslib_dataset_api

    return naslib_dataset_api(nats_benchmark)


def _config(tmp_path, text: str, **kwargs):
    from naslib_bayes.integration.run import build_config

    path = tmp_path / "config.yaml"
    path.write_text(text)
    return build_config(path, tmp_path / "out", **kwargs)


# ---- the hand-written table against NASLib itself ---------------------------------------
def test_signature_table_matches_naslib(naslib):
    opts = naslib.optimizers
    for cls in (opts.RandomSearch, opts.RegularizedEvolution, opts.LocalSearch, opts.Bananas, opts.Npenas):
        assert check_rows(cls, META_OPTIMIZER, kind="black-box") == [], cls
        assert cls.using_step_function is False
    for cls in (opts.DARTSOptimizer, opts.GDASOptimizer, opts.DrNASOptimizer):
        problems = check_rows(cls, META_OPTIMIZER, kind="one-shot")
        # NASLib's one-shot optimizers take (ss, dataset, scope) only: the runner's dataset_api
        # keyword form is the one both kinds cannot share -- ours accept both.
        assert problems and all(p.startswith("adapt_search_space") and "dataset_api" in p for p in problems), problems
        assert cls.using_step_function is True
    assert check_rows(naslib.predictor.Predictor, PREDICTOR) == []
    assert set(naslib.predictor.Predictor().get_data_reqs()) == PREDICTOR_DATA_REQS
    assert check_rows(naslib.trainer.Trainer, TRAINER) == []
    assert check_rows(naslib.search_spaces.NasBench201SearchSpace, (NB201_QUERY,)) == []


# ---- the dataset_api through NASLib's own query -----------------------------------------
def test_naslib_queries_read_the_benchmark(naslib, api, nats_benchmark):
    from naslib.search_spaces.nasbench201.conversions import convert_op_indices_to_str

    Metric = naslib.query_metrics.Metric
    # NASLib's string of every cell is the key naslib-bayes serves it under
    for cell in nb201.all_cells():
        assert convert_op_indices_to_str(list(nb201.to_naslib(cell))) == nb201.to_string(cell)
    rng = np.random.default_rng(0)
    graph = naslib.search_spaces.NasBench201SearchSpace()
    graph.instantiate_model = False
    for index in rng.choice(nb201.NUM_CELLS, size=30, replace=False):
        cell = nats_benchmark.cell(int(index))
        graph.set_op_indices(list(nb201.to_naslib(cell)))
        for dataset in ("cifar10", "cifar100", "ImageNet16-120"):
            expected = nats_benchmark.query(cell, dataset)
            assert graph.query(Metric.VAL_ACCURACY, dataset, dataset_api=api) == expected
            assert graph.query(Metric.TEST_ACCURACY, dataset, dataset_api=api) == expected
            assert graph.query(Metric.TRAIN_ACCURACY, dataset, dataset_api=api) == -1
            assert graph.query(Metric.TRAIN_TIME, dataset, dataset_api=api) == -1
            assert graph.query(Metric.VAL_ACCURACY, dataset, epoch=-1, full_lc=True, dataset_api=api) == [expected]
            for metric in (Metric.PARAMETERS, Metric.FLOPS, Metric.LATENCY, Metric.VAL_TIME, Metric.EPOCH):
                assert graph.query(metric, dataset, dataset_api=api) == -1  # the CSV has no costs
        assert set(graph.query(Metric.RAW, "cifar10", dataset_api=api)) == {"cifar10-valid", "cifar100", "ImageNet16-120"}


def test_naslib_cost_queries_read_the_benchmarks_costs(naslib, zc_json):
    from naslib_bayes.integration.dataset_api import naslib_dataset_api
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    Metric = naslib.query_metrics.Metric
    benchmark = load_benchmark(zc_json)
    api = naslib_dataset_api(benchmark, warn=lambda message: None)
    cell = benchmark.cell(int(np.flatnonzero(np.isfinite(benchmark.query_all("cifar100", "params")))[0]))
    graph = naslib.search_spaces.NasBench201SearchSpace()
    graph.instantiate_model = False
    graph.set_op_indices(list(nb201.to_naslib(cell)))
    assert graph.query(Metric.PARAMETERS, "cifar100", dataset_api=api) == benchmark.query(cell, "cifar100", "params")
    assert graph.query(Metric.FLOPS, "cifar100", dataset_api=api) == benchmark.query(cell, "cifar100", "flops")
    assert graph.query(Metric.HP, "cifar100", dataset_api=api)["params"] == benchmark.query(cell, "cifar100", "params")


def test_parameter_counter_fix_matches_naslib(naslib):
    from naslib_bayes.integration.compat import count_parameters_in_mb

    graph = naslib.search_spaces.NasBench201SearchSpace()
    graph.set_op_indices([2, 2, 3, 0, 4, 1])
    graph.parse()
    original = naslib.utils.count_parameters_in_MB
    if original is count_parameters_in_mb:  # numpy >= 2.4: the fix rebound it
        pytest.skip("NASLib's own counter cannot run with this numpy; the fix replaced it")
    assert count_parameters_in_mb(graph) == pytest.approx(float(original(graph)), rel=1e-12)
    assert count_parameters_in_mb(graph) > 0


# ---- NASLib's optimizers through naslib-run's pieces ----------------------------------------
def test_config_takes_naslib_defaults_and_sets_what_the_trainer_reads(naslib, tmp_path):
    config = _config(tmp_path, "optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 2\n",
                     seed=4, overrides=[("search.batch_size", 32)])
    assert config.search.epochs == 2 and config.search.batch_size == 32
    assert config.search.arch_learning_rate == 0.0003  # from NASLib's darts_defaults.yaml
    assert config.seed == 4 and config.search.seed == 4 and config.save_arch_weights is False
    assert config.save == str(tmp_path / "out") and (tmp_path / "out" / "search").is_dir()
    bbo = _config(tmp_path, "optimizer: re\nsearch_space: nasbench201\ndataset: cifar100\n")
    assert bbo.search.population_size == 30 and bbo.search.sample_size == 10  # runners/bbo/discrete_config.yaml
    assert bbo.evaluation.epochs == 600


def test_config_numbers_of_the_other_kind_are_taken_as_naslib_takes_them(naslib, tmp_path):
    """NASLib reads a config file as written: ``train_portion: 1`` where its defaults say 0.5, or
    ``grad_clip: 5.0`` where they say 5, are numbers it runs with, not a type mismatch."""
    config = _config(tmp_path, "optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\n"
                     "search:\n  train_portion: 1\n  learning_rate_min: 0\nevaluation:\n  grad_clip: 5.0\n")
    assert (config.search.train_portion, config.search.learning_rate_min, config.evaluation.grad_clip) == (1, 0, 5.0)
    assert config.search.learning_rate == 0.025  # the keys not given keep NASLib's defaults


def test_an_empty_config_section_keeps_naslibs_defaults(naslib, tmp_path):
    config = _config(tmp_path, "optimizer: re\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\nevaluation:\n")
    assert config.search.population_size == 30 and config.search.epochs == 10 and config.evaluation.epochs == 600


@pytest.mark.parametrize("yaml_text, overrides, message", [
    ("optimizer: rs\nsearch: 5\n", [], "search is a section of NASLib's config, got 5"),
    ("optimizer: rs\nsearch:\n  fidelity: {epoch: 3}\n", [], "search.fidelity is a section here, NASLib's is 108"),
    ("optimizer: rs\n", [("search", 5)], "--set search: a section of NASLib's config, set its keys (search.KEY=VALUE)"),
])
def test_a_config_section_where_naslib_has_a_value_or_the_reverse_is_one_line(naslib, tmp_path, yaml_text, overrides,
                                                                               message):
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError) as error:
        _config(tmp_path, yaml_text, overrides=overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_null_is_refused_only_where_naslib_reads_it_as_it_is(naslib, tmp_path):
    from naslib_bayes.errors import UserError

    # the image loaders read a null data_size as every image; naslib-bayes's own optimizers fill a null in
    assert _config(tmp_path, "optimizer: darts\nsearch:\n  data_size: null\n").search.data_size is None
    assert _config(tmp_path, "optimizer: bayesnas\nsearch:\n  momentum: null\n").search.momentum is None
    with pytest.raises(UserError, match="search.momentum is null: NASLib's gdas reads it"):
        _config(tmp_path, "optimizer: gdas\nsearch:\n  momentum: null\n")


def test_darts_runs_through_the_trainer_on_digits(naslib, tmp_path, nats_benchmark):
    from naslib_bayes.integration.data import load_image_data
    from naslib_bayes.integration.run import run_experiment

    config = _config(tmp_path, "optimizer: darts\nsearch_space: nasbench201\ndataset: cifar100\nseed: 2\n"
                     "search:\n  epochs: 1\n  batch_size: 64\n  data_size: 192\n  train_portion: 0.5\n")
    result = run_experiment(config, benchmark=nats_benchmark, image_data=load_image_data("digits", seed=2))
    cell = nb201.from_string(result["final_architecture"])
    assert list(cell) == result["final_architecture_op_indices"]
    assert result["naslib"]["evaluation"] == nats_benchmark.query(cell, "cifar100")
    assert result["benchmark_accuracy"]["cifar100"] == result["naslib"]["evaluation"]
    # searched on digits, its final cell read on the benchmark's cifar100
    assert (result["dataset"], result["naslib"]["evaluation_dataset"], result["config"]["dataset"]) == \
        ("digits", "cifar100", "cifar100")
    assert len(result["naslib"]["train_acc"]) == 1 and 0 <= result["naslib"]["train_acc"][0] <= 100
    errors = json.loads((tmp_path / "out" / "errors.json").read_text())  # NASLib's own log
    assert errors[0]["optimizer"] == "darts" and len(errors[1]["train_acc"]) == 1
    assert (tmp_path / "out" / "search" / "model_final.pth").is_file()


#: NASLib's DARTS op classes by the genotype name of the op (FactorizedReduce: a skip that halves the resolution).
_NASLIB_DARTS_OP_NAMES = {"Identity": "skip_connect", "FactorizedReduce": "skip_connect", "MaxPool": "max_pool_3x3",
                          "AvgPool": "avg_pool_3x3", "SepConv3x3": "sep_conv_3x3", "SepConv5x5": "sep_conv_5x5",
                          "DilConv3x3": "dil_conv_3x3", "DilConv5x5": "dil_conv_5x5"}


def _naslib_darts_edges(graph) -> dict[str, set]:
    """Per cell type, the (node, input, op) of each edge of a NASLib DARTS graph, read off its ops and
    numbered as a genotype (NASLib's nodes 1 and 2 are the previous cells, 7 the output)."""
    edges = {}
    for node in graph.nodes:
        cell = graph.nodes[node].get("subgraph")
        if cell is not None:
            kind = "normal" if cell.name == "normal_cell" else "reduce"
            edges[kind] = {(j - 1, i - 1, _NASLIB_DARTS_OP_NAMES[cell.edges[i, j]["op"].get_op_name])
                           for i, j in cell.edges if j < 7}
    return edges


def _genotype_edges(genotype) -> dict[str, set]:
    return {kind: {(position // 2 + 2, source, op) for position, (op, source) in enumerate(getattr(genotype, kind))}
            for kind in ("normal", "reduce")}


def test_darts_genotype_of_naslibs_hash_has_the_ops_of_its_graph(naslib):
    import torch

    from naslib_bayes.integration.run import darts_genotype

    torch.manual_seed(0)
    space = naslib.search_spaces.NasBench301SearchSpace(n_classes=10, in_channels=1, auxiliary=False)
    opt = naslib.optimizers.DARTSOptimizer()
    opt.adapt_search_space(space, "cifar10")
    batch = (torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)))
    opt.step(batch, batch)
    final = opt.get_final_architecture()
    genotype = darts_genotype(final.get_hash())
    assert _genotype_edges(genotype) == _naslib_darts_edges(final)
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)
    assert len({op for op, _ in genotype.normal + genotype.reduce}) > 3  # several op indices were converted


def test_naslib_run_on_darts_records_the_cell_train_reads(naslib, tmp_path, capsys):
    import jsonschema

    from naslib_bayes.results import load_schema
    from naslib_bayes.training.evaluate import parse_arch

    config = tmp_path / "darts.yaml"
    config.write_text("optimizer: darts\nsearch_space: darts\ndataset: cifar10\nseed: 0\n"
                      "search:\n  epochs: 1\n  batch_size: 32\n  data_size: 64\n  auxiliary: false\n"
                      "evaluation:\n  epochs: 1\n  batch_size: 32\n  data_size: 32\n")
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--search-data", "digits",
                              "--out", str(tmp_path / "darts"))
    assert code == 0, err
    path = tmp_path / "darts" / "result.json"
    result = json.loads(path.read_text())
    jsonschema.validate(result, load_schema())
    assert result["dataset"] == result["naslib"]["evaluation_dataset"] == "digits"  # searched and retrained on
    kind, genotype = parse_arch(str(path))  # what train --arch reads from the result
    assert kind == "darts" and parse_arch(out.split("  evaluation=")[0]) == (kind, genotype)
    graph = naslib.search_spaces.NasBench301SearchSpace()  # NASLib's own graph of the hash it recorded
    graph.set_compact(naslib.search_spaces.nasbench301.conversions.make_compact_immutable(
        result["naslib"]["final_architecture_hash"]))
    assert _genotype_edges(genotype) == _naslib_darts_edges(graph)


def _run_cli(capsys, *argv):
    from naslib_bayes.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_naslib_run_rs_end_to_end(naslib, tmp_path, capsys, nats_csv, nats_benchmark):
    config = tmp_path / "rs.yaml"
    config.write_text("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 8\n")
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--seed", "3", "--out", str(tmp_path / "rs"))
    assert code == 0, err
    assert "same number" in err  # the one warning: NASLib's default fidelity falls back to -1 without one
    assert "fidelity" not in err
    result = json.loads((tmp_path / "rs" / "result.json").read_text())
    incumbents = result["naslib"]["incumbent_valid_acc"]
    assert len(incumbents) == 8 and incumbents == sorted(incumbents)  # the incumbent never gets worse
    assert result["naslib"]["evaluation"] == incumbents[-1] == nats_benchmark.query(result["final_architecture"], "cifar10")
    assert result["seed"] == 3 and result["budget"] == 8
    assert result["dataset"] == result["naslib"]["evaluation_dataset"] == "cifar10"


@pytest.mark.parametrize("fidelity, curve, served", [(0, 1, -1), (5, 1, -1), (-1, 1, -1), (0, 200, 0), (199, 200, 199),
                                                     (200, 200, -1), (-200, 200, -200)])
def test_search_fidelity_is_kept_only_where_the_curves_hold_that_epoch(naslib, api, tmp_path, fidelity, curve, served):
    """search.fidelity is the epoch NASLib's random search reads. A naslib-bayes dataset_api's curves
    hold the final value only: epoch 0 there is not the accuracy after one epoch, so only -1 is kept."""
    from naslib_bayes.integration.run import _clamp_fidelity

    config = _config(tmp_path, f"optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  fidelity: {fidelity}\n")
    naslib_pickle = {"nb201_data": {"|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": {
        "cifar10-valid": {"eval_acc1es": [10.0] * 200}}}}
    warnings = []
    _clamp_fidelity(config, api if curve == 1 else naslib_pickle, warnings.append)
    assert config.search.fidelity == served
    assert bool(warnings) == (served != fidelity)
    assert all(f"search.fidelity {fidelity} " in w and "using -1 (final)" in w for w in warnings)


def test_naslibs_default_fidelity_falls_back_to_the_final_value_without_a_warning(naslib, api, tmp_path):
    """NASLib's black-box default search.fidelity is 108, an NB101 epoch no user asked for: every run on a
    naslib-bayes benchmark warned of it. Another fidelity the curves lack still is warned of."""
    from naslib_bayes.integration.run import _clamp_fidelity

    config = _config(tmp_path, "optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\n")
    warnings = []
    _clamp_fidelity(config, api, warnings.append)
    assert (config.search.fidelity, warnings) == (-1, [])
    config = _config(tmp_path, "optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  fidelity: 50\n")
    _clamp_fidelity(config, api, warnings.append)
    assert config.search.fidelity == -1 and len(warnings) == 1 and "search.fidelity 50 " in warnings[0]


def test_naslib_run_bananas_end_to_end(naslib, tmp_path, capsys, nats_csv, nats_benchmark):
    import jsonschema

    from naslib_bayes.results import load_schema

    config = tmp_path / "bananas.yaml"
    config.write_text(
        "optimizer: bananas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 1\n"
        "search:\n  epochs: 12\n  num_init: 10\n  k: 2\n  num_ensemble: 1\n  predictor_type: bananas\n"
        "  encoding_type: path\n  acq_fn_type: its\n  acq_fn_optimization: mutation\n  num_candidates: 10\n"
    )
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--out", str(tmp_path / "bananas"))
    assert code == 0, err
    result = json.loads((tmp_path / "bananas" / "result.json").read_text())
    jsonschema.validate(result, load_schema())
    assert result["optimizer"] == "bananas" and result["naslib"]["origin"] == "naslib"
    incumbents = result["naslib"]["incumbent_valid_acc"]
    assert len(incumbents) == 12 and incumbents == sorted(incumbents)
    assert result["naslib"]["evaluation"] == nats_benchmark.query(result["final_architecture"], "cifar10") == incumbents[-1]
    assert result["final_architecture"] in out


def test_graph_clone_fix_lets_darts_space_final_architecture_be_derived(naslib):
    import torch

    torch.manual_seed(0)
    space = naslib.search_spaces.NasBench301SearchSpace(n_classes=10, in_channels=1)  # auxiliary head on
    opt = naslib.optimizers.DARTSOptimizer()
    opt.adapt_search_space(space, "cifar10")
    batch = (torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)))
    opt.step(batch, batch)
    stored = opt.graph.graph["out_from_12"]
    assert stored.grad_fn is not None  # what NASLib leaves behind after a training step
    with pytest.raises(RuntimeError, match="deepcopy"):
        naslib.graph.Graph.clone.__wrapped__(opt.graph)  # NASLib's own clone
    final = opt.get_final_architecture()  # clones the graph
    assert opt.graph.graph["out_from_12"].grad_fn is None
    assert torch.equal(opt.graph.graph["out_from_12"], stored.detach())
    assert final is not opt.graph and final.get_hash() is not None


def _on_digits(setting: str, message: str) -> tuple[str, list[str], str]:
    """A DARTS naslib-run on digits with one image-loader ``--set``, and the one line it must give."""
    return ("optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\n",
            ["--search-data", "digits", "--set", setting], message)


@pytest.mark.parametrize(
    "yaml_text, extra, message",
    [
        ("optimizer: nope\n", [], "unknown optimizer 'nope' for naslib-run; valid: darts, gdas, drnas, rs, re, ls, bananas, npenas"),
        ("optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\n", [], "pass --search-data"),
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: svhn\n", [], "'svhn' is not a NAS-Bench-201 dataset"),
        ("optimizer: rs\nsearch_space: nasbench101\ndataset: cifar10\n", [], "black-box optimizer rs runs on nasbench201"),
        ("optimizer: darts\nsearch_space: nasbench101\ndataset: cifar10\n", ["--search-data", "digits"],
         "search_space 'nasbench101' is not supported"),
        ("optimizer: [unclosed\n", [], "not a NASLib config file"),
        ("optimizer: rs\nsearch:\n  epochs: [1, 2]\n", [], "does not fit NASLib's defaults"),
        ("optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\n", ["--search-data", "svhn"], "unknown dataset 'svhn'"),
        # what NASLib's Trainer counts with: a traceback after the search (or a ZeroDivisionError) otherwise
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 0\n", [],
         "search.epochs must be a whole number of at least 1, got 0"),
        ("optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: -2\n",
         ["--search-data", "digits"], "search.epochs must be a whole number of at least 1, got -2"),
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\n", ["--set", "search.epochs=abc"],
         "--set search.epochs='abc': NASLib's search.epochs is a number (10)"),
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nseed: -1\n", [],
         "seed must be a whole number from 0 to 4294967295, got -1"),
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\n", ["--set", "search.checkpoint_freq=0"],
         "search.checkpoint_freq must be a whole number of at least 1, got 0"),
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\n", ["--set", "search.fidelity=abc"],
         "--set search.fidelity='abc': NASLib's search.fidelity is a number (108)"),
        ("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\n", ["--set", "search.fidelity=1.5"],
         "search.fidelity must be a whole number (an epoch; -1: final), got 1.5"),
        # what the image loaders are built with: a traceback from torch or int() otherwise
        _on_digits("search.batch_size=0", "search.batch_size must be a whole number of at least 1, got 0"),
        _on_digits("search.batch_size=abc", "--set search.batch_size='abc': NASLib's search.batch_size is a number (64)"),
        _on_digits("evaluation.batch_size=32.5", "evaluation.batch_size must be a whole number of at least 1, got 32.5"),
        _on_digits("search.data_size=abc", "--set search.data_size='abc': NASLib's search.data_size is a number (25000)"),
        _on_digits("search.train_portion=abc", "--set search.train_portion='abc': NASLib's search.train_portion is a number (0.5)"),
        _on_digits("search.train_portion=0", "search.train_portion must be a number above 0 and at most 1, got 0"),
        # --set is checked against NASLib's defaults as a config file is: NASLib's optimizer raised a TypeError
        _on_digits("search.learning_rate=abc", "--set search.learning_rate='abc': NASLib's search.learning_rate "
                   "is a number (0.025)"),
        _on_digits("search.momentum=[0.9]", "--set search.momentum=[0.9]: NASLib's search.momentum is a number (0.9)"),
        # null for a key NASLib's own optimizer reads: torch's TypeError after --out was made (darts), or a
        # TypeError once bananas' initial queries were made
        ("optimizer: darts\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  learning_rate: null\n",
         ["--search-data", "digits"], "bad.yaml: search.learning_rate is null: NASLib's darts reads it as it is; "
         "give a value, or leave it out for NASLib's default (0.025)"),
        ("optimizer: bananas\nsearch_space: nasbench201\ndataset: cifar10\n", ["--set", "search.k=null"],
         "--set search.k=null: NASLib's bananas reads it as it is; give a value, or leave it out for NASLib's default (10)"),
        ("optimizer: bananas\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  k: ~\n", [],
         "search.k is null: NASLib's bananas reads it"),
        # an optimizer's hyper-parameters are a mapping under its name: a TypeError traceback otherwise
        ("optimizer: naslib-bayes:rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  rs: [1, 2]\n", [],
         "search.rs must be a mapping of rs's hyper-parameters (search: {rs: {NAME: VALUE}}), got [1, 2]"),
        ("optimizer: tnas\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  tnas: 5\n", [],
         "search.tnas must be a mapping of tnas's hyper-parameters (search: {tnas: {NAME: VALUE}}), got 5"),
        ("optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  bayesnas: [0.01]\n",
         ["--search-data", "digits"],
         "search.bayesnas must be a mapping of bayesnas's hyper-parameters (search: {bayesnas: {NAME: VALUE}}), got [0.01]"),
        # what naslib-bayes's optimizers refuse when they are built or set up: refused before --out too
        ("optimizer: tnas\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  tnas:\n    initial_desing: 3\n", [],
         "TNAS: unknown hyper-parameter 'initial_desing'"),
        ("optimizer: naslib-bayes:re\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 20000\n", [],
         "a budget of 20000 queries exceeds the 15,625 cells"),
        ("optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  bayesnas:\n    lambda_origin: -1\n",
         ["--search-data", "digits"], "lambda must be positive"),
    ],
)
def test_naslib_run_reports_bad_input_in_one_line(naslib, tmp_path, capsys, nats_csv, yaml_text, extra, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--out", str(tmp_path / "out"), *extra)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("naslib-bayes: error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "out").exists()  # refused before --out is made: no empty folder tree left behind


@pytest.mark.parametrize("optimizer, extra, message", [
    ("rs", ["--surrogate", "{config}"], "--surrogate: rs reads no surrogate (only tnas does)"),
    ("naslib-bayes:re", ["--surrogate", "{config}"], "--surrogate: naslib-bayes:re reads no surrogate (only tnas does)"),
    ("bananas", ["--search-data", "digits"],
     "--search-data: bananas is a black-box optimizer; it queries the benchmark and trains on no images"),
    ("tnas", ["--search-data", "digits"],
     "--search-data: tnas is a black-box optimizer; it queries the benchmark and trains on no images"),
    ("rs", ["--data-root", "{config}"], "--data-root: it holds the --search-data files; no --search-data is given"),
])
def test_naslib_run_refuses_an_option_the_run_would_ignore(naslib, tmp_path, capsys, nats_csv, optimizer, extra,
                                                           message):
    """An option the optimizer never reads was ignored while result.json recorded it (search_data: digits
    for a random search, a surrogate in its config): the run did not do what its record says."""
    config = tmp_path / "run.yaml"
    config.write_text(f"optimizer: {optimizer}\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 3\n")
    extra = [arg.format(config=config) for arg in extra]
    code, _, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                            "--out", str(tmp_path / "out"), *extra)
    errors = [line for line in err.splitlines() if line.startswith("naslib-bayes: error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "out" / "result.json").exists()


def test_naslib_run_refuses_a_file_that_is_no_surrogate_before_out_is_made(naslib, tmp_path, capsys, nats_csv):
    """tnas reads its surrogate when it is set up, after naslib-run had made --out: the refusal left
    an empty folder tree behind, unlike every other refusal of the command."""
    config = tmp_path / "tnas.yaml"
    config.write_text("optimizer: tnas\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 3\n")
    code, _, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                            "--surrogate", str(config), "--out", str(tmp_path / "out"))
    errors = [line for line in err.splitlines() if line.startswith("naslib-bayes: error:")]
    assert code == 2 and len(errors) == 1 and "not a readable surrogate file" in errors[0], err
    assert not (tmp_path / "out").exists()


def test_naslib_run_without_benchmark_uses_naslibs_data_or_says_what_is_missing(naslib, tmp_path, capsys):
    from pathlib import Path

    pickles = list(Path(naslib.utils.get_project_root(), "data").glob("nb201_cifar10_full_training.pickle"))
    if pickles:
        pytest.skip("this NASLib checkout has its own NB201 pickles")
    config = tmp_path / "rs.yaml"
    config.write_text("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 2\n")
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 2 and "pass --benchmark PATH" in err and len(err.strip().splitlines()) == 1


def test_importing_the_naslib_classes_says_that_naslib_was_patched(naslib):
    import subprocess
    import sys

    script = ("import warnings; warnings.simplefilter('always')\n"
              "from naslib_bayes.integration.tnas import DeepKernelGPPredictor\n"
              "from naslib_bayes.integration.bayesnas import BayesNASOptimizer\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "NaslibPatchedWarning" in line]
    assert len(lines) == 1 and "graph_clone" in lines[0] and "rmse_metric" in lines[0]  # once, naming the fixes


@pytest.mark.parametrize("optimizer", ["rs", "naslib-bayes:rs"])
def test_naslib_run_refuses_a_partial_benchmark_before_naslib_starts(naslib, tmp_path, capsys, zc_json, optimizer):
    config = tmp_path / "rs.yaml"
    config.write_text(f"optimizer: {optimizer}\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 10\n")
    code, _, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(zc_json),
                            "--out", str(tmp_path / "out"))
    errors = [line for line in err.splitlines() if line.startswith("naslib-bayes: error:")]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1 and "has cifar10 val_accuracy for 491 of 15,625 cells only" in errors[0]
    assert not (tmp_path / "out" / "result.json").exists()


# ---- naslib-bayes's black-box optimizers inside NASLib's Trainer -----------------------------
def test_naslib_bayes_black_box_runs_in_naslibs_trainer_like_its_own_search(naslib, tmp_path, capsys, nats_csv,
                                                                            nats_benchmark):
    from naslib_bayes.experiment import run_blackbox_search

    config = tmp_path / "rs.yaml"
    config.write_text("optimizer: naslib-bayes:rs\nsearch_space: nasbench201\ndataset: cifar100\nseed: 5\n"
                      "search:\n  epochs: 20\n")
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--out", str(tmp_path / "run"))
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["naslib"]["origin"] == "naslib-bayes" and result["budget"] == 20
    queried = [q["architecture"] for q in result["trajectory"]]
    assert len(queried) == len(set(queried)) == 20
    # every value the optimizer saw came through NASLib's query and equals the benchmark's
    assert [q["accuracy"] for q in result["trajectory"]] == [nats_benchmark.query(a, "cifar100") for a in queried]
    # NASLib's Trainer logged the incumbent after each query, as naslib-bayes's objective did
    assert result["naslib"]["incumbent_valid_acc"] == [q["incumbent_accuracy"] for q in result["trajectory"]]
    assert result["naslib"]["evaluation"] == max(q["accuracy"] for q in result["trajectory"])
    # the same seed and budget in naslib-bayes's own loop query the same cells: one implementation
    own = run_blackbox_search(nats_benchmark, "rs", "cifar100", 20, seed=5)
    assert [q["architecture"] for q in own["trajectory"]] == queried


def test_naslib_bayes_black_box_accepts_both_adapt_forms(naslib, api, tmp_path):
    from naslib_bayes.integration.blackbox import NaslibBlackBox

    config = _config(tmp_path, "optimizer: naslib-bayes:rs\nsearch_space: nasbench201\ndataset: cifar10\nseed: 1\n"
                     "search:\n  epochs: 3\n")
    space = naslib.search_spaces.NasBench201SearchSpace()
    runner_form = NaslibBlackBox(config, optimizer="rs")
    runner_form.adapt_search_space(space, dataset_api=api)  # naslib/runners/bbo/runner.py
    positional = NaslibBlackBox(config, optimizer="rs")
    positional.adapt_search_space(space, "cifar10", None, dataset_api=api)  # (ss, dataset, scope)
    for opt in (runner_form, positional):
        for epoch in range(3):
            opt.new_epoch(epoch)
        train, val, test, train_time = opt.train_statistics(True)
        assert val == test == max(m.accuracy for m in opt.history) and train == -1
        assert len(opt.history) == 3 and opt.get_checkpointables()["model"] is opt.history
        final = opt.get_final_architecture()
        assert final.get_hash() == max(opt.history, key=lambda m: m.accuracy).arch_hash
    assert [m.arch_hash for m in runner_form.history] == [m.arch_hash for m in positional.history]
    with pytest.raises(Exception, match="NAS-Bench-201"):
        NaslibBlackBox(config, optimizer="rs").adapt_search_space(naslib.search_spaces.NasBench301SearchSpace())


def test_naslib_bayes_black_box_resumed_by_naslibs_trainer_goes_on_where_it_stopped(naslib, api, tmp_path):
    """NASLib's Trainer.search(resume_from=...) starts at the epoch after the checkpoint's with a fresh
    optimizer (the checkpointed history holds no tensors, so nothing of it is loaded): the wrapper
    replays the earlier epochs, so the resumed search queries what the uninterrupted one did."""
    from naslib_bayes.errors import UserError
    from naslib_bayes.integration.blackbox import NaslibBlackBox

    config = _config(tmp_path, "optimizer: naslib-bayes:re\nsearch_space: nasbench201\ndataset: cifar10\nseed: 3\n"
                     "search:\n  epochs: 12\n  checkpoint_freq: 1\n")
    settings = {"population_size": 4, "sample_size": 2}

    def search(resume_from=""):
        naslib.utils.set_seed(3)
        optimizer = NaslibBlackBox(config, optimizer="re", **settings)
        optimizer.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=api)
        trainer = naslib.trainer.Trainer(optimizer, config, lightweight_output=True)
        trainer.search(resume_from=resume_from, summary_writer=None, report_incumbent=True)
        return optimizer

    whole = search()
    stopped_at = tmp_path / "out" / "search" / "model_0000005.pth"
    assert stopped_at.exists()
    (tmp_path / "out" / "search" / "last_checkpoint").write_text(stopped_at.name)
    resumed = search(resume_from=str(stopped_at))
    assert [m.arch_hash for m in resumed.history] == [m.arch_hash for m in whole.history]
    assert len(resumed.history) == 12 and len(set(m.arch_hash for m in resumed.history)) == 12
    assert resumed.trajectory() == whole.trajectory()
    assert resumed.get_final_architecture().get_hash() == whole.get_final_architecture().get_hash()
    with pytest.raises(UserError, match="epoch 3 was run already"):
        resumed.new_epoch(3)


def test_naslib_bayes_black_box_evaluates_a_search_checkpoint_in_a_fresh_optimizer(naslib, api, tmp_path):
    """Trainer.evaluate(search_model=...) with an optimizer that has not searched (a later process) loads
    the search's checkpoint: the wrapper replays the queries it counts, so the final architecture is the
    search's, as BayesNAS's wrapper derives its search's from the loaded gammas."""
    from naslib_bayes.integration.blackbox import NaslibBlackBox

    config = _config(tmp_path, "optimizer: naslib-bayes:re\nsearch_space: nasbench201\ndataset: cifar10\nseed: 4\n"
                     "search:\n  epochs: 9\n")

    def adapted():
        optimizer = NaslibBlackBox(config, optimizer="re", population_size=4, sample_size=2)
        optimizer.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=api)
        return optimizer

    searched = adapted()
    trainer = naslib.trainer.Trainer(searched, config, lightweight_output=True)
    trainer.search(resume_from="", summary_writer=None, report_incumbent=True)
    evaluation = trainer.evaluate(resume_from="", dataset_api=api, metric=None)
    fresh = adapted()
    evaluator = naslib.trainer.Trainer(fresh, config, lightweight_output=True)
    again = evaluator.evaluate(search_model=str(tmp_path / "out" / "search" / "model_final.pth"), dataset_api=api)
    assert again == evaluation
    assert [m.arch_hash for m in fresh.history] == [m.arch_hash for m in searched.history]
    assert fresh.get_final_architecture().get_hash() == searched.get_final_architecture().get_hash()


def test_naslib_bayes_black_box_on_a_partial_api_picks_cells_with_a_value(naslib, zc_json, tmp_path):
    from naslib_bayes.integration.blackbox import NaslibBlackBox
    from naslib_bayes.integration.dataset_api import naslib_dataset_api
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    config = _config(tmp_path, "optimizer: naslib-bayes:rs\nsearch_space: nasbench201\ndataset: cifar10\nseed: 1\n"
                     "search:\n  epochs: 5\n")
    opt = NaslibBlackBox(config, optimizer="rs")
    opt.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(),
                           dataset_api=naslib_dataset_api(load_benchmark(zc_json)))
    assert len(opt.problem.objective.domain) == 491
    for epoch in range(5):  # random search draws from the 491 cells with a value: no KeyError
        opt.new_epoch(epoch)
    assert len(opt.history) == 5 and all(np.isfinite(m.accuracy) for m in opt.history)


def test_naslib_bayes_black_box_refuses_a_budget_beyond_the_space_at_setup(naslib, api, tmp_path):
    """No cell is queried twice, so 15,626 queries cannot be spent: refused before the first query, as
    naslib-bayes's own search does, not after 15,625 NASLib epochs."""
    from naslib_bayes.errors import UserError
    from naslib_bayes.integration.blackbox import NaslibBlackBox

    config = _config(tmp_path, "optimizer: naslib-bayes:rs\nsearch_space: nasbench201\ndataset: cifar10\n"
                     f"search:\n  epochs: {nb201.NUM_CELLS + 1}\n")
    opt = NaslibBlackBox(config, optimizer="rs")
    with pytest.raises(UserError, match="a budget of 15626 queries exceeds the 15,625 cells of the search space"):
        opt.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=api)


def test_naslib_bayes_mutation_on_a_partial_api_queries_cells_without_a_value_like_its_own_search(naslib, zc_json,
                                                                                                  tmp_path):
    """A mutant the partial file has no value for costs a query and reads NaN, as in naslib-bayes's own loop,
    instead of NASLib's query raising a KeyError; NASLib's Trainer hooks keep working on such a cell."""
    from naslib_bayes.experiment import run_blackbox_search
    from naslib_bayes.integration.blackbox import NaslibBlackBox
    from naslib_bayes.integration.dataset_api import naslib_dataset_api
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    benchmark = load_benchmark(zc_json)
    config = _config(tmp_path, "optimizer: naslib-bayes:re\nsearch_space: nasbench201\ndataset: cifar10\nseed: 1\n"
                     "search:\n  epochs: 30\n")
    settings = {"population_size": 5, "sample_size": 2}
    opt = NaslibBlackBox(config, optimizer="re", **settings)
    opt.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(),
                           dataset_api=naslib_dataset_api(benchmark, warn=lambda message: None))
    for epoch in range(30):
        opt.new_epoch(epoch)
        last = opt.train_statistics(report_incumbent=False)  # NASLib's bbo runner reports the last cell
        assert np.isnan(last[1]) == np.isnan(opt.history[-1].accuracy)
        assert np.isfinite(opt.train_statistics(report_incumbent=True)[1])
        opt.test_statistics()
    accuracies = [m.accuracy for m in opt.history]
    assert np.isnan(accuracies).any()  # mutants outside the file's 491 cells were queried
    own = run_blackbox_search(benchmark, "re", "cifar10", 30, seed=1, search_metric="val_accuracy",
                              report_metric="val_accuracy", hyperparameters=settings)
    assert [nb201.to_string(nb201.from_naslib(m.arch_hash)) for m in opt.history] == \
        [q["architecture"] for q in own["trajectory"]]
    assert [None if np.isnan(a) else a for a in accuracies] == [q["accuracy"] for q in own["trajectory"]]
    assert opt.get_final_architecture().get_hash() == nb201.to_naslib(nb201.from_string(own["final_architecture"]))


def test_unparse_fix_keeps_the_darts_space_settings_for_retraining(naslib):
    import torch

    torch.manual_seed(0)
    space = naslib.search_spaces.NasBench301SearchSpace(n_classes=7, in_channels=1, auxiliary=False)
    lost = naslib.graph.Graph.unparse.__wrapped__(space.clone())  # NASLib's own unparse
    assert (lost.num_classes, lost.auxiliary_output) == (10, True)
    opt = naslib.optimizers.DARTSOptimizer()
    opt.adapt_search_space(space, "cifar10")
    batch = (torch.randn(4, 1, 28, 28), torch.randint(0, 7, (4,)))
    opt.step(batch, batch)
    final = opt.get_final_architecture()  # unparse + prepare_evaluation (the retraining network)
    assert (final.num_classes, final.in_channels, final.auxiliary_output) == (7, 1, False)
    final.train()
    assert final(batch[0]).shape == (4, 7)


# ---- naslib-bayes's NASLib-native classes: BayesNAS, TNAS, the deep-kernel GP predictor -------------
def test_native_classes_match_naslibs_interfaces(naslib):
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer
    from naslib_bayes.integration.tnas import DeepKernelGPPredictor, TNASOptimizer

    assert issubclass(BayesNASOptimizer, naslib.metaclasses.MetaOptimizer) and BayesNASOptimizer.using_step_function
    assert check_rows(BayesNASOptimizer, META_OPTIMIZER, kind="one-shot") == []
    assert issubclass(TNASOptimizer, naslib.metaclasses.MetaOptimizer) and not TNASOptimizer.using_step_function
    assert check_rows(TNASOptimizer, META_OPTIMIZER, kind="black-box") == []
    assert issubclass(DeepKernelGPPredictor, naslib.predictor.Predictor)
    assert check_rows(DeepKernelGPPredictor, PREDICTOR) == []
    assert set(DeepKernelGPPredictor().get_data_reqs()) == PREDICTOR_DATA_REQS


def _param_call_order(model, x, skip):
    """Modules holding parameters, in the order a forward pass first calls them (``skip`` left out)."""
    import torch

    order, seen, hooks = [], set(), []

    def hook(module, inputs, output):
        if id(module) not in seen and id(module) not in skip:
            order.append(module)
            seen.add(id(module))

    for module in model.modules():
        if list(module.parameters(recurse=False)):
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return order


def _copy_parameters(source, target):
    import torch

    src, dst = list(source.parameters()), list(target.parameters())
    assert [p.shape for p in src] == [p.shape for p in dst]
    with torch.no_grad():
        for p, q in zip(src, dst):
            q.copy_(p)


def test_bayesnas_on_naslibs_graph_gives_the_projects_gammas(naslib):
    """Same weights, same switches, one seeded batch: NASLib's graph and naslib-bayes's supernet
    give the same curvature and the same gammas after the HARD update."""
    import torch

    from naslib_bayes.integration.bayesnas import BayesNASMixedOp, BayesNASOptimizer
    from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
    from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet, SuperCell

    torch.manual_seed(0)
    ours = BayesNAS(seed=0)
    ours.adapt_search_space(NB201SuperNet(C=16, N=5, num_classes=10, in_channels=1))
    native = BayesNASOptimizer(epochs=2, seed=0)
    native.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(n_classes=10, in_channels=1), "cifar10")
    # the per-edge state lives in the edge data; each edge's mixed op scales its ops by the switches
    edges = []
    native.graph.update_edges(lambda edge: edges.append((edge.data.bayesnas_cell, edge.data.bayesnas_edge, edge.data.op)),
                              scope=native.scope, private_edge_data=True)
    assert len(edges) == 15 * 6 and all(isinstance(op, BayesNASMixedOp) for _, _, op in edges)
    assert sorted((c, e) for c, e, _ in edges) == [(c, e) for c in range(15) for e in range(6)]
    assert not any(p is s for p in native.graph.parameters() for s in native.architectural_weights)

    # the same weights: cell ops by (cell, edge, op), the rest in call order
    cells = {b.index: b for b in ours.model.net.cells if isinstance(b, SuperCell)}
    skip_ours, skip_native = set(), set()
    for c, e, mixed in edges:
        for k, primitive in enumerate(mixed.primitives):
            _copy_parameters(cells[c].edges[e][k], primitive)
            skip_ours |= {id(m) for m in cells[c].edges[e][k].modules()}
            skip_native |= {id(m) for m in primitive.modules()}
    x = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    rest_ours = _param_call_order(ours.model, x, skip_ours)
    rest_native = _param_call_order(native.core.model, x, skip_native)
    assert len(rest_ours) == len(rest_native) == 14  # stem, 2 residual blocks, last BN, classifier
    for a, b in zip(rest_ours, rest_native):
        _copy_parameters(a, b)
    with torch.no_grad():  # some switches away from 1, identically in both
        for bank in (ours.bank, native.bank):
            bank.child["normal"].copy_(torch.linspace(0.5, 1.5, 15 * 6 * 4).reshape(15, 6, 4))
    ours.model.train()
    native.core.model.train()
    assert torch.allclose(ours.model(x), native.core.model(x), atol=1e-5)

    curvature_ours, curvature_native = ours.compute_curvature([x]), native.core.compute_curvature([x])
    for part in (0, 1):
        assert torch.allclose(curvature_ours["normal"][part], curvature_native["normal"][part], rtol=1e-6, atol=1e-12)
    ours.bank.update(curvature_ours, 0.01, 0.01)
    native.bank.update(curvature_native, 0.01, 0.01)
    (gp_ours, gc_ours), (gp_native, gc_native) = ours.bank.gammas("normal"), native.gammas()["normal"]
    assert torch.allclose(gp_ours, gp_native, rtol=1e-6) and torch.allclose(gc_ours, gc_native, rtol=1e-6)
    assert gc_native.std() > 0.01 * gc_native.mean()  # the gammas tell the ops apart
    assert ours.derive()["architecture"] == native.core.derive()["architecture"]


def test_bayesnas_curvature_names_an_unsupported_module_type(naslib):
    import torch.nn as nn

    from naslib_bayes.errors import UserError
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer, check_curvature_support

    with pytest.raises(UserError, match=r"module type\(s\) GELU "):
        check_curvature_support(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()))
    space = naslib.search_spaces.NasBench201SearchSpace(n_classes=10, in_channels=1)
    space.edges[1, 2].op.seq.append(nn.SiLU())  # the stem gains a module the curvature has no rule for
    with pytest.raises(UserError, match=r"does not support the module type\(s\) SiLU"):
        BayesNASOptimizer(epochs=2).adapt_search_space(space, "cifar10")


def test_bayesnas_runs_in_naslibs_trainer_on_mnist(naslib, api, nats_benchmark, mnist_dir, tmp_path):
    import torch

    from naslib_bayes.integration import data as image_loaders
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer
    from naslib_bayes.integration.trainer import LoaderTrainer

    config = _config(tmp_path, "optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 0\n"
                     "search:\n  epochs: 2\n  batch_size: 32\n  data_size: 128\n  train_portion: 0.5\n"
                     "  bayesnas:\n    curvature_batches: 2\n")
    images = image_loaders.load_image_data("mnist", mnist_dir, seed=0)
    loaders = image_loaders.search_loaders(images, 32, 0.5, 0, 128)
    naslib.utils.set_seed(0)
    optimizer = BayesNASOptimizer(config)
    assert optimizer.core.config["warmup_epochs"] == 1 and optimizer.core.total_epochs == 2
    optimizer.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(n_classes=10, in_channels=1),
                                 config.dataset, dataset_api=api)
    trainer = LoaderTrainer(optimizer, config, lightweight_output=True, search_loaders=loaders)
    trainer.search(resume_from="", summary_writer=None, report_incumbent=True)
    assert int(optimizer.bank.num_updates) == 1 and optimizer.core.rounds_done == 1
    gamma_parent, gamma_child = optimizer.gammas()["normal"]
    assert not torch.allclose(gamma_child, torch.ones_like(gamma_child))  # the HARD update moved them
    assert len(trainer.search_trajectory.train_acc) == 2
    assert all(0 <= a <= 100 for a in trainer.search_trajectory.train_acc + trainer.search_trajectory.valid_acc)
    assert (tmp_path / "out" / "search" / "model_final.pth").is_file()

    final = optimizer.get_final_architecture()
    derived = optimizer.core.last_derivation["architecture"]
    assert nb201.from_naslib(final.get_hash()) == derived
    evaluation = trainer.evaluate(resume_from="", dataset_api=api, metric=None)  # loads model_final.pth
    assert evaluation == nats_benchmark.query(derived, "cifar10")
    assert optimizer.get_model_size() > 0 and "model" in optimizer.get_checkpointables()
    gammas = optimizer.gammas()["normal"]

    # a fresh optimizer evaluating the search's checkpoint (NASLib saves it before the last
    # round's architecture update) derives the same architecture from the same gammas
    fresh = BayesNASOptimizer(config)
    fresh.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(n_classes=10, in_channels=1),
                             config.dataset, dataset_api=api)
    assert fresh.core.last_derivation is None
    evaluator = LoaderTrainer(fresh, config, lightweight_output=True, search_loaders=loaders)
    again = evaluator.evaluate(search_model=str(tmp_path / "out" / "search" / "model_final.pth"), dataset_api=api)
    assert again == evaluation and fresh.core.last_derivation["architecture"] == derived
    for ours, theirs in zip(fresh.gammas()["normal"], gammas):
        assert torch.allclose(ours, theirs)


def test_bayesnas_resumed_by_naslibs_trainer_knows_the_rounds_its_checkpoint_has_done(naslib, api, tmp_path):
    """NASLib's Trainer.search(resume_from=...) restores the switches and gammas; the rounds done come
    with them, so the last round's update is the final one (no pruning, numbered 2), as without the stop."""
    from naslib_bayes.integration import data as image_loaders
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer
    from naslib_bayes.integration.trainer import LoaderTrainer

    config = _config(tmp_path, "optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 0\n"
                     "search:\n  epochs: 3\n  checkpoint_freq: 1\n  batch_size: 32\n  data_size: 96\n"
                     "  train_portion: 0.5\n  bayesnas:\n    warmup_epochs: 1\n    epochs: 1\n    rounds: 2\n"
                     "    curvature_batches: 1\n")
    loaders = image_loaders.search_loaders(image_loaders.load_image_data("digits", seed=0), 32, 0.5, 0, 96)

    def search(resume_from=""):
        naslib.utils.set_seed(0)
        optimizer = BayesNASOptimizer(config)
        optimizer.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(n_classes=10, in_channels=1),
                                     config.dataset, dataset_api=api)
        trainer = LoaderTrainer(optimizer, config, lightweight_output=True, search_loaders=loaders)
        trainer.search(resume_from=resume_from, summary_writer=None, report_incumbent=True)
        return optimizer

    whole = search()
    assert [(u["round"], bool(u["pruned_ops"])) for u in whole.core.updates] == [(1, True), (2, False)]
    # a search stopped after round one: its last checkpoint is the one of epoch 1 (fvcore resumes from that)
    (tmp_path / "out" / "search" / "last_checkpoint").write_text("model_0000001.pth")
    resumed = search(resume_from=str(tmp_path / "out" / "search" / "model_0000001.pth"))
    assert resumed.core.epoch == 2
    assert resumed.core.rounds_done == 2 and int(resumed.bank.num_updates) == 2
    assert [(u["round"], bool(u["pruned_ops"])) for u in resumed.core.updates] == [(2, False)]


def test_bayesnas_on_the_darts_graph_and_both_adapt_forms(naslib):
    import torch

    from naslib_bayes.integration.bayesnas import BayesNASOptimizer

    torch.manual_seed(0)
    space = naslib.search_spaces.NasBench301SearchSpace(n_classes=10, in_channels=1, auxiliary=False)
    optimizer = BayesNASOptimizer(epochs=1, seed=0)
    optimizer.adapt_search_space(space, dataset_api=None)  # the runners' keyword form
    assert {name: t.num_cells for name, t in optimizer.bank.topologies.items()} == {"normal": 6, "reduce": 2}
    assert optimizer.bank.topologies["normal"].num_edges == 14 and optimizer.bank.topologies["normal"].num_ops == 7
    batch = (torch.randn(4, 1, 16, 16), torch.randint(0, 10, (4,)))
    optimizer.new_epoch(0)
    logits, logits_val, loss, val_loss = optimizer.step(batch, batch)
    assert logits.shape == logits_val.shape == (4, 10) and loss.dim() == val_loss.dim() == 0
    optimizer.after_training()
    genotype = optimizer.core.last_derivation["architecture"]
    final = optimizer.get_final_architecture()
    naslib_ops = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                  "dil_conv_5x5")  # NASLib's DARTS hash order
    normal_hash = final.get_hash()[0]
    assert [(naslib_ops[op], src) for src, op in normal_hash] == [tuple(edge) for edge in genotype.normal]
    final.train()
    assert final(batch[0]).shape == (4, 10)
    positional = BayesNASOptimizer(epochs=1, seed=0)
    positional.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(n_classes=10, in_channels=1), "cifar10", None)
    assert positional.bank.topologies["normal"].num_cells == 15


def _tnas_config(tmp_path, budget: int, seed: int = 0, extra: str = ""):
    return _config(tmp_path, f"optimizer: tnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: {seed}\n"
                   f"search:\n  epochs: {budget}\n  tnas:\n    meta_iterations: 10\n    initial_design: 3\n{extra}")


def test_tnas_runs_in_naslibs_trainer_on_nb201_like_its_own_search(naslib, api, nats_benchmark, tmp_path, monkeypatch):
    from naslib_bayes.experiment import run_blackbox_search
    from naslib_bayes.integration.tnas import TNASOptimizer
    from naslib_bayes.integration.trainer import LoaderTrainer

    config = _tnas_config(tmp_path, 20, seed=2)
    optimizer = TNASOptimizer(config)
    optimizer.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=api)
    assert optimizer.core.surrogate_info["meta_datasets"] == ["cifar100", "ImageNet16-120"]  # target left out
    graph_cls = type(optimizer.search_space)
    clones = []
    original_clone = graph_cls.clone
    monkeypatch.setattr(graph_cls, "clone", lambda self: clones.append(1) or original_clone(self))
    trainer = LoaderTrainer(optimizer, config, lightweight_output=True)
    trainer.search(resume_from="", summary_writer=None, report_incumbent=True)
    assert len(clones) == 20  # one graph per query: the chosen architecture, never the candidates
    monkeypatch.undo()
    hashes = [m.arch_hash for m in optimizer.history]
    assert len(optimizer.history) == len(set(hashes)) == 20
    assert [m.arch.get_hash() for m in optimizer.history] == hashes
    values = [m.accuracy for m in optimizer.history]
    assert values == [nats_benchmark.query(nb201.from_naslib(h), "cifar10") for h in hashes]
    incumbents = trainer.search_trajectory.valid_acc
    assert incumbents == [max(values[: i + 1]) for i in range(20)]
    assert trainer.search_trajectory.test_acc == incumbents  # NASLib reads both from eval_acc1es
    train_acc, val_acc, test_acc, train_time = optimizer.train_statistics(True)
    assert val_acc == max(values) and train_acc == -1
    assert trainer.evaluate(resume_from="", dataset_api=api, metric=None) == max(values)
    # naslib-bayes's own loop, same seed and hyper-parameters, queries the same cells
    own = run_blackbox_search(nats_benchmark, "tnas", "cifar10", 20, seed=2, search_metric="test_accuracy",
                              hyperparameters={"meta_iterations": 10, "initial_design": 3})
    assert [q["architecture"] for q in own["trajectory"]] == [nb201.to_string(nb201.from_naslib(h)) for h in hashes]


def test_tnas_accepts_both_adapt_forms_and_needs_a_surrogate_or_other_datasets(naslib, api, nats_benchmark, tmp_path):
    from naslib_bayes.errors import UserError
    from naslib_bayes.integration.tnas import TNASOptimizer

    config = _tnas_config(tmp_path, 4, seed=1)
    runner_form = TNASOptimizer(config)
    runner_form.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=api)
    positional = TNASOptimizer(config)
    positional.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), "cifar10", None, dataset_api=api)
    for opt in (runner_form, positional):
        for epoch in range(4):
            opt.new_epoch(epoch)
    assert [m.arch_hash for m in runner_form.history] == [m.arch_hash for m in positional.history]
    only_target = {"nb201_data": {}}  # NASLib's own pickles: no other datasets known here
    with pytest.raises(UserError, match="surrogate file"):
        TNASOptimizer(config).adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), dataset_api=only_target)


@pytest.fixture(scope="module")
def tiny_surrogate(tmp_path_factory, nats_benchmark):
    """A surrogate meta-trained briefly on cifar100 and ImageNet16-120 (not cifar10)."""
    from naslib_bayes.predictors import surrogate_io
    from naslib_bayes.predictors.meta_train import MetaTrainConfig, meta_datasets_from_benchmark, meta_train
    from naslib_bayes.predictors.surrogate import SurrogateConfig

    source = nats_benchmark.without("cifar10")
    datasets = meta_datasets_from_benchmark(source, source.datasets, "test_accuracy")
    surrogate, log = meta_train(datasets, SurrogateConfig(encoder_hidden=16), MetaTrainConfig(iterations=100), seed=0)
    return surrogate_io.save(surrogate, tmp_path_factory.mktemp("surrogate") / "surrogate.pt",
                             {"meta_datasets": list(source.datasets)})


def _evaluate_in_naslib(naslib, api, predictor, tmp_path, train_size: int, test_size: int,
                        max_hpo_time: float = 0) -> dict:
    """The scores of NASLib's PredictorEvaluator for ``predictor``: one fit on ``train_size`` random
    NB201 cells of CIFAR-10 (final accuracies), tested on ``test_size`` others; ``max_hpo_time``
    as NASLib's config gives it (above 0, NASLib asks the predictor whether to tune it first)."""
    from fvcore.common.config import CfgNode
    from naslib.defaults.predictor_evaluator import PredictorEvaluator

    config = CfgNode(dict(experiment_type="single", test_size=test_size, train_size_single=train_size,
                          train_size_list=[train_size], fidelity_single=-1, fidelity_list=[-1], max_hpo_time=max_hpo_time,
                          dataset="cifar10", uniform_random=1, save=str(tmp_path / "pe"), seed=0,
                          search_space="nasbench201"))
    naslib.utils.set_seed(0)
    evaluator = PredictorEvaluator(predictor, config=config)
    evaluator.adapt_search_space(naslib.search_spaces.NasBench201SearchSpace(), load_labeled=False, dataset_api=api)
    return evaluator.evaluate()[-1]


def test_gp_predictor_through_naslibs_predictor_evaluator(naslib, api, nats_benchmark, tiny_surrogate, tmp_path):
    from naslib.search_spaces.nasbench201.conversions import convert_op_indices_to_str

    from naslib_bayes.integration.tnas import DeepKernelGPPredictor

    predictor = DeepKernelGPPredictor(surrogate=tiny_surrogate)
    scores = _evaluate_in_naslib(naslib, api, predictor, tmp_path, train_size=30, test_size=40)
    assert scores["train_size"] == 30 and np.isfinite(scores["mae"])
    assert scores["spearman"] > 0.7, scores  # the meta-learned GP ranks unseen architectures
    # graphs, strings and NASLib op-index tuples are the same architectures to it
    graphs = []
    for _ in range(12):
        g = naslib.search_spaces.NasBench201SearchSpace()
        g.instantiate_model = False
        g.sample_random_architecture(dataset_api=api)
        graphs.append(g)
    y = [g.query(naslib.query_metrics.Metric.VAL_ACCURACY, "cifar10", dataset_api=api) for g in graphs]
    predictor.fit(graphs[:8], y[:8])
    by_graph = predictor.query(graphs[8:])
    assert np.allclose(by_graph, predictor.query([convert_op_indices_to_str(g.get_hash()) for g in graphs[8:]]))
    assert np.allclose(by_graph, predictor.query([g.get_hash() for g in graphs[8:]]))
    # an encoding as a tensor or array is read in NASLib's op order too, like a tuple
    assert np.allclose(by_graph, predictor.query([torch.tensor(g.get_hash()) for g in graphs[8:]]))
    assert np.allclose(by_graph, predictor.query([np.asarray(g.get_hash()) for g in graphs[8:]]))
    mean, std = predictor.predict_dist(graphs[8:])
    assert np.allclose(mean, by_graph) and (std > 0).all()
    with pytest.raises(Exception, match="op indices in 0..4"):
        predictor.query([(9, 9, 9, 9, 9, 9)])
    whole = np.asarray(graphs[8].get_hash(), dtype=float)
    assert np.allclose(predictor.query([whole]), by_graph[:1])
    with pytest.raises(Exception, match="integer op indices"):
        predictor.query([whole + 0.5])  # read as NASLib's op indices, never truncated


def test_gp_predictor_keeps_its_fine_tuning_settings_through_naslibs_predictor_evaluator(naslib, api, tiny_surrogate,
                                                                                         tmp_path):
    """NASLib's PredictorEvaluator calls reset_hyperparams() before every fit: the settings the predictor
    was made with are its defaults, as for NASLib's own predictors, not the class's 50 steps at lr 0.01."""
    from naslib_bayes.integration.tnas import DeepKernelGPPredictor

    predictor = DeepKernelGPPredictor(surrogate=tiny_surrogate, finetune_steps=3, lr=0.05)
    scores = _evaluate_in_naslib(naslib, api, predictor, tmp_path, train_size=10, test_size=10)
    assert (scores["hp_finetune_steps"], scores["hp_lr"]) == (3, 0.05)
    predictor.set_hyperparams({"finetune_steps": 7})
    predictor.reset_hyperparams()
    assert predictor.get_hyperparams() == {"finetune_steps": 3, "lr": 0.05}


@pytest.mark.parametrize("predictor_class", ["TNASPredictor", "DeepKernelGPPredictor"])
def test_gp_predictors_run_in_naslibs_predictor_evaluator_when_its_config_allows_tuning(naslib, api, tiny_surrogate,
                                                                                       tmp_path, predictor_class):
    """With max_hpo_time > 0 and 10 or more training cells, NASLib's PredictorEvaluator asks
    get_hpo_wrapper() whether to tune the predictor by cross-validation; TNASPredictor had no such
    method (NASLib's Predictor base class has it) and the evaluation died in an AttributeError. The
    GP tunes itself in fit, so NASLib's tuning is declined and the settings given stay."""
    from naslib_bayes.integration.tnas import DeepKernelGPPredictor
    from naslib_bayes.predictors.naslib_predictor import TNASPredictor

    cls = {"TNASPredictor": TNASPredictor, "DeepKernelGPPredictor": DeepKernelGPPredictor}[predictor_class]
    predictor = cls(surrogate=tiny_surrogate, finetune_steps=3, lr=0.05)
    assert not predictor.get_hpo_wrapper()
    scores = _evaluate_in_naslib(naslib, api, predictor, tmp_path, train_size=12, test_size=12, max_hpo_time=1)
    assert scores["train_size"] == 12 and np.isfinite(scores["mae"]) and scores["cv_score"] == 0
    assert (scores["hp_finetune_steps"], scores["hp_lr"]) == (3, 0.05)


def test_gp_predictor_loads_a_surrogate_whose_feature_extractor_the_user_trusts(naslib, tmp_path, monkeypatch):
    """The refusal of a surrogate file naming a user's feature extractor says to pass
    trust_feature_extractor=True: the NASLib predictor takes it, as TNASPredictor does."""
    from naslib_bayes.errors import UserError
    from naslib_bayes.integration.tnas import DeepKernelGPPredictor
    from naslib_bayes.predictors import surrogate_io
    from naslib_bayes.predictors.surrogate import SurrogateConfig, TNASSurrogate

    module = "user_extractor_for_naslib_predictor_tests"
    (tmp_path / f"{module}.py").write_text("from naslib_bayes.predictors.encoders.set_transformer import PixelFeatures\n"
                                           "def make():\n    return PixelFeatures(4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = SurrogateConfig(dataset_encoder="images", feature_extractor=f"{module}:make", meta_datasets=("cifar100",))
    path = surrogate_io.save(TNASSurrogate(config, generator=torch.Generator().manual_seed(0)), tmp_path / "s.pt")
    with pytest.raises(UserError, match="trust_feature_extractor=True"):
        DeepKernelGPPredictor(surrogate=path, dataset="digits")
    predictor = DeepKernelGPPredictor(surrogate=path, dataset="digits", trust_feature_extractor=True)
    assert predictor.surrogate.config.feature_extractor == f"{module}:make" and predictor.context is not None


def test_naslib_run_bayesnas_end_to_end_on_digits(naslib, tmp_path, capsys, nats_csv, nats_benchmark):
    import jsonschema

    from naslib_bayes.results import load_schema

    config = tmp_path / "bayesnas.yaml"
    config.write_text("optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar100\nseed: 1\n"
                      "search:\n  epochs: 2\n  batch_size: 32\n  data_size: 96\n  train_portion: 0.5\n")
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--search-data", "digits", "--out", str(tmp_path / "bn"))
    assert code == 0, err
    result = json.loads((tmp_path / "bn" / "result.json").read_text())
    jsonschema.validate(result, load_schema())
    assert result["optimizer"] == "bayesnas" and result["naslib"]["origin"] == "naslib-bayes"
    assert result["naslib"]["kind"] == "one-shot" and len(result["naslib"]["train_acc"]) == 2
    cell = nb201.from_string(result["final_architecture"])
    assert result["naslib"]["evaluation"] == nats_benchmark.query(cell, "cifar100")
    assert result["architecture_updates"][0]["architecture"] == result["final_architecture"]
    assert len(result["relevance"]) == 6 * 5  # per edge: the parent switch and 4 op switches
    assert result["final_architecture"] in out


def test_naslib_run_tnas_end_to_end_meta_training_or_with_a_surrogate_file(naslib, tmp_path, capsys, nats_csv,
                                                                           nats_benchmark, tiny_surrogate):
    import jsonschema

    from naslib_bayes.results import load_schema

    config = tmp_path / "tnas.yaml"
    config.write_text("optimizer: tnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 0\n"
                      "search:\n  epochs: 8\n  tnas:\n    meta_iterations: 10\n    initial_design: 3\n")
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--out", str(tmp_path / "meta"))
    assert code == 0, err
    assert "meta-training leave-one-dataset-out on cifar100, ImageNet16-120" in err
    meta = json.loads((tmp_path / "meta" / "result.json").read_text())
    jsonschema.validate(meta, load_schema())
    assert meta["optimizer"] == "tnas" and meta["surrogate"]["meta_trained_here"] is True
    assert meta["surrogate"]["meta_datasets"] == ["cifar100", "ImageNet16-120"]
    incumbents = meta["naslib"]["incumbent_valid_acc"]
    assert len(incumbents) == 8 and incumbents == sorted(incumbents)
    assert meta["naslib"]["evaluation"] == incumbents[-1] == nats_benchmark.query(meta["final_architecture"], "cifar10")

    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--surrogate", str(tiny_surrogate), "--out", str(tmp_path / "file"))
    assert code == 0, err
    assert "meta-training" not in err
    with_file = json.loads((tmp_path / "file" / "result.json").read_text())
    assert with_file["surrogate"]["meta_trained_here"] is False
    assert with_file["surrogate"]["path"] == str(tiny_surrogate)
    assert len(with_file["trajectory"]) == 8
    code, out, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv),
                              "--surrogate", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "bad"))
    assert code == 2 and "no such file" in err


@pytest.mark.parametrize("bayesnas, expected", [
    ("    rounds: null\n", (1, 1, 3)),  # YAML's "no value": the count is filled in as if left out
    ("    rounds: null\n    warmup_epochs: 2\n", (2, 1, 2)),
    ("    epochs: null\n    rounds: 2\n", (2, 2, 1)),
])
def test_a_bayesnas_schedule_count_given_as_null_is_filled_in_as_if_left_out(naslib, tmp_path, bayesnas, expected):
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer

    config = _config(tmp_path, "optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 0\n"
                     f"search:\n  epochs: 4\n  bayesnas:\n{bayesnas}")
    core = BayesNASOptimizer(config).core.config
    assert (core["warmup_epochs"], core["rounds"], core["epochs"]) == expected


def test_bayesnas_takes_the_same_hyper_parameters_from_the_config_and_from_its_search_section(naslib, tmp_path):
    """BayesNASOptimizer(config) and BayesNASOptimizer(**config.search) are the same optimizer: a
    search.bayesnas value of a name NASLib also uses (momentum, weight_decay, grad_clip) lost to
    NASLib's default in the second form, and a BayesNAS name given beside NASLib's keys was read only there."""
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer

    config = _config(tmp_path, "optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 0\n"
                     "search:\n  epochs: 3\n  lambda_origin: 0.005\n"
                     "  bayesnas: {weight_decay: 0.0, momentum: 0.5, grad_clip: 1.0, lr: 0.1}\n")
    from_config = BayesNASOptimizer(config).core.config
    from_search = BayesNASOptimizer(**config.search).core.config
    assert from_config == from_search
    assert (from_config["weight_decay"], from_config["momentum"], from_config["grad_clip"], from_config["lr"],
            from_config["lambda_origin"]) == (0.0, 0.5, 1.0, 0.1, 0.005)
    assert BayesNASOptimizer(config, momentum=0.7).core.config["momentum"] == 0.7  # a keyword overrides the config


def test_bayesnas_refuses_an_lr_min_of_its_own_that_naslibs_trainer_would_not_anneal_to(naslib, tmp_path):
    """NASLib's Trainer builds the cosine schedule itself, down to search.learning_rate_min: a
    search.bayesnas.lr_min was recorded in the optimizer's config but never took effect."""
    from naslib_bayes.errors import UserError
    from naslib_bayes.integration.bayesnas import BayesNASOptimizer

    text = ("optimizer: bayesnas\nsearch_space: nasbench201\ndataset: cifar10\nseed: 0\n"
            "search:\n  epochs: 3\n  learning_rate_min: 0.001\n  bayesnas: {lr_min: %s}\n")
    with pytest.raises(UserError, match=r"^search\.bayesnas\.lr_min=0\.01: NASLib's Trainer anneals the learning "
                                        r"rate to search\.learning_rate_min \(0\.001\); set that instead$"):
        BayesNASOptimizer(_config(tmp_path, text % "0.01"))
    assert BayesNASOptimizer(_config(tmp_path, text % "0.001")).core.config["lr_min"] == 0.001


@pytest.mark.parametrize("with_validation", [False, True])
def test_naslib_run_records_the_metric_naslibs_validation_query_read(naslib, tmp_path, nats_benchmark, with_validation):
    """NASLib's validation-accuracy query reads a naslib-bayes benchmark's validation accuracy where
    the file has it, else its test accuracy; search_metric names the one the search selected on,
    as ``naslib-bayes search`` names it for the same file, not always val_accuracy."""
    from naslib_bayes.integration.run import run_experiment
    from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark

    benchmark = nats_benchmark
    if with_validation:
        cells = [nats_benchmark.cell(i) for i in range(nb201.NUM_CELLS)]
        test = nats_benchmark.query_all("cifar10")
        benchmark = Benchmark(cells, {"cifar10": {"test_accuracy": test, "val_accuracy": test - 1.0}}, source="with-val")
    config = _config(tmp_path, "optimizer: naslib-bayes:rs\nsearch_space: nasbench201\ndataset: cifar10\nseed: 2\n"
                     "search:\n  epochs: 5\n")
    result = run_experiment(config, benchmark=benchmark, warn=lambda message: None)
    assert result["search_metric"] == ("val_accuracy" if with_validation else "test_accuracy")
    assert [q["accuracy"] for q in result["trajectory"]] == \
        [benchmark.query(q["architecture"], "cifar10", result["search_metric"]) for q in result["trajectory"]]


def test_an_overwrite_by_another_command_retires_what_naslibs_trainer_wrote(naslib, tmp_path, capsys, nats_csv):
    """search/, eval/ and errors.json of a naslib-run stayed beside a later search's result."""
    config, out = tmp_path / "rs.yaml", tmp_path / "out"
    config.write_text("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\nsearch:\n  epochs: 3\n")
    code, _, err = _run_cli(capsys, "naslib-run", "--config", str(config), "--benchmark", str(nats_csv), "--out", str(out))
    assert code == 0, err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.name.startswith("."))
    # what test_cli_options' _naslib_run_leftovers stands for
    assert written == ["errors.json", "eval", "result.json", "search", "search/last_checkpoint",
                       "search/model_final.pth"], written
    code, _, err = _run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", str(nats_csv), "--dataset", "cifar10",
                            "--budget", "2", "--overwrite", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["result.json"]
