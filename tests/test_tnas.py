"""TNAS, gp-bo and transfer-topk as black-box optimizers, and the meta-train / search CLI."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.experiment import run_blackbox_search
from naslib_bayes.optimizers import acquisition
from naslib_bayes.optimizers.blackbox import BlackBoxProblem, Objective, run_black_box
from naslib_bayes.optimizers.gp_bo import GPBO
from naslib_bayes.optimizers.tnas import TNAS
from naslib_bayes.optimizers.transfer_topk import TransferTopK, transfer_scores
from naslib_bayes.predictors import surrogate_io
from naslib_bayes.predictors.meta_train import MetaTrainConfig, meta_datasets_from_benchmark, meta_train
from naslib_bayes.predictors.surrogate import SurrogateConfig
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark
from cli_runner import run_cli, run_cli_stopped_before_its_result
from partial_benchmark import write_partial_csv
from strict_objective import StrictObjective

TINY_META = {"meta_iterations": 12}
TINY = MetaTrainConfig(iterations=12, eval_every=6, val_tasks=1, val_support=20, val_query=30, tasks_per_step=1,
                       task_size=(20, 40), evidence_top=150, evidence_random=50, output_transform="copula")



@pytest.fixture(scope="module")
def surrogate_file(nats_benchmark, tmp_path_factory):
    """A tiny surrogate meta-trained on cifar100 and ImageNet16-120 (cifar10 never seen)."""
    datasets = meta_datasets_from_benchmark(nats_benchmark.without("cifar10"), ["cifar100", "ImageNet16-120"])
    surrogate, log = meta_train(datasets, SurrogateConfig(), TINY, seed=0)
    path = tmp_path_factory.mktemp("surrogate") / "surrogate.pt"
    surrogate_io.save(surrogate, path, {"meta_datasets": ["cifar100", "ImageNet16-120"], "meta_train": log.to_dict()})
    return path


# ---- the strict objective -------------------------------------------------------------------
def strict_problem(benchmark, dataset, budget):
    source = benchmark.without(dataset)
    return BlackBoxProblem(StrictObjective(benchmark, dataset, "test_accuracy", budget), source=source)


def test_the_guard_catches_a_column_read(nats_benchmark):
    problem = strict_problem(nats_benchmark, "cifar10", 3)
    with pytest.raises(AssertionError):
        problem.objective._values.mean()
    with pytest.raises(AssertionError):
        problem.objective._values[0]
    assert problem.objective((3,) * 6) == nats_benchmark.query((3,) * 6, "cifar10")


def test_tnas_reads_only_the_cells_it_queries(nats_benchmark):
    """Meta-training at setup, initial design and BO, all through the guarded target column."""
    problem = strict_problem(nats_benchmark, "cifar100", budget=9)
    opt = TNAS(seed=0, initial_design=3, finetune_steps=5, **TINY_META)
    run_black_box(opt, problem)
    assert len(problem.objective._values.reads) == 9 == len(set(problem.objective.queried))
    assert opt.surrogate_info["meta_trained_here"]
    assert set(opt.surrogate.config.meta_datasets) == {"cifar10", "ImageNet16-120"}
    assert len(opt.iteration_times) == 6  # 9 queries - 3 initial


def test_prepare_meta_trains_once_from_the_other_datasets_and_searches_reuse_it(nats_benchmark, tmp_path):
    """What a comparison does: one surrogate per target, built without the target, shared by seeds."""
    source = nats_benchmark.without("cifar10")
    folder = tmp_path / "not-yet-made"  # prepare() writes into a folder it creates
    facts = TNAS.prepare(source, "cifar10", folder, "test_accuracy", seed=0, **TINY_META)
    assert facts["meta_datasets"] == ["cifar100", "ImageNet16-120"]
    assert (folder / "surrogate.pt").is_file()
    surrogate, _ = surrogate_io.load(folder)
    assert set(surrogate.config.meta_datasets) == {"cifar100", "ImageNet16-120"}
    problem = strict_problem(nats_benchmark, "cifar10", budget=6)
    problem.prepared = folder
    opt = run_black_box(TNAS(seed=1, initial_design=3, finetune_steps=3), problem)
    assert not opt.surrogate_info["meta_trained_here"]
    assert opt.surrogate_info["path"] == str(folder / "surrogate.pt")
    assert len(problem.objective._values.reads) == 6 == len(set(problem.objective.queried))


def test_a_surrogate_saved_with_numpy_numbers_in_its_info_loads_them_back_as_python_numbers(nats_benchmark, tmp_path):
    # prepare() records the seed it was given; torch.load(weights_only=True) refuses numpy scalars
    TNAS.prepare(nats_benchmark.without("cifar10"), "cifar10", tmp_path, "test_accuracy", seed=np.int64(0),
                 meta_iterations=2)
    _, info = surrogate_io.load(tmp_path)
    assert info["seed"] == 0 and type(info["seed"]) is int
    surrogate, _ = surrogate_io.load(tmp_path)
    surrogate_io.save(surrogate, tmp_path / "again.pt", {"run": {"lr": np.float32(0.5), "sizes": [np.int64(3)]}})
    _, info = surrogate_io.load(tmp_path / "again.pt")
    assert info == {"run": {"lr": 0.5, "sizes": [3]}} and type(info["run"]["lr"]) is float

# ---- TNAS behaviour ----------------------------------------------------------------------------
def _run(benchmark, dataset, budget, seed, **hp):
    problem = BlackBoxProblem.from_benchmark(benchmark, dataset, "test_accuracy", budget)
    return run_black_box(TNAS(seed=seed, **hp), problem), problem


def test_initial_design_is_the_top_of_the_surrogate_ranking(nats_benchmark, surrogate_file):
    opt, problem = _run(nats_benchmark, "cifar10", 7, 0, surrogate=str(surrogate_file), finetune_steps=3)
    prior = opt.prior  # computed at setup from the meta-learned state
    first = [opt.cells.index(c) for c in problem.objective.queried[:5]]
    assert [float(prior[i]) for i in first] == sorted((float(prior[i]) for i in first), reverse=True)
    assert float(prior[first[-1]]) >= float(torch.sort(prior, descending=True).values[4]) - 1e-12
    # ... and not the meta-training table's top cells: the surrogate ranks, the table does not.
    table = np.argsort(-transfer_scores(nats_benchmark.without("cifar10")), kind="stable")[:5]
    assert opt.surrogate_info["path"] == str(surrogate_file)
    assert len(first) == 5 and not np.array_equal(np.asarray(first), table)


def test_the_prior_is_the_posterior_given_every_evidence_row(nats_benchmark, surrogate_file):
    """The prior merges a cell's rows from several datasets into their mean with noise scale 1/count;
    conditioning on every row on its own, at noise scale 1, must give the same posterior."""
    from naslib_bayes.predictors.surrogate import cell_index

    opt, _ = _run(nats_benchmark, "cifar10", 5, 0, surrogate=str(surrogate_file))  # the initial design only
    evidence = opt.surrogate.evidence
    rows = cell_index(evidence.cells)
    assert rows.unique().numel() < rows.numel()  # some cells carry both datasets' values
    with torch.no_grad():
        opt.surrogate.gp.condition_on(opt.encodings[rows], evidence.values)
        mean, _ = opt.surrogate.gp.posterior(opt.encodings)
    torch.testing.assert_close(opt.prior, mean, rtol=0, atol=1e-8)


def test_an_initial_design_larger_than_the_budget_records_what_was_queried(nats_benchmark, surrogate_file):
    opt, problem = _run(nats_benchmark, "cifar10", 3, 0, surrogate=str(surrogate_file), initial_design=8)
    design = opt.result_extras()["initial_design"]
    assert design["k"] == 3 and design["architectures"] == [nb201.to_string(c) for c in problem.objective.queried]


def test_a_gp_bo_initial_design_larger_than_the_budget_records_what_was_queried(nats_benchmark):
    objective = Objective(nats_benchmark, "cifar10", "test_accuracy", 4)
    opt = run_black_box(registry_create("gp-bo", 0), BlackBoxProblem(objective, source=None))  # 10 initial cells
    assert opt.result_extras()["initial_design"]["k"] == 4 == objective.num_queries


def test_the_initial_design_takes_the_prior_ranking_of_the_cells_with_a_value(surrogate_file, tmp_path):
    partial = load_benchmark(write_partial_csv(tmp_path / "partial.csv", 40))
    problem = BlackBoxProblem.from_benchmark(partial, "cifar10", "test_accuracy", 7)
    opt = run_black_box(TNAS(seed=0, surrogate=str(surrogate_file), finetune_steps=2), problem)
    ranked = acquisition.ranking(opt.prior, opt.priority)
    with_value = [i for i in ranked.tolist() if bool(opt.in_domain[i])]
    assert [opt.cells.index(c) for c in problem.objective.queried[:5]] == with_value[:5]
    assert all(math.isfinite(v) for v in problem.objective.values)
    with pytest.raises(UserError, match="a budget of 41 queries exceeds them"):
        run_black_box(TNAS(seed=0, surrogate=str(surrogate_file)),
                      BlackBoxProblem.from_benchmark(partial, "cifar10", "test_accuracy", 41))


def test_initial_design_only_records_the_whole_budget_as_its_design(nats_benchmark, surrogate_file):
    opt, problem = _run(nats_benchmark, "cifar10", 7, 0, surrogate=str(surrogate_file), initial_design_only=True)
    design = opt.result_extras()["initial_design"]
    assert design["k"] == 7 and design["architectures"] == [nb201.to_string(c) for c in problem.objective.queried]


@pytest.mark.parametrize("beta", [-1, "high", True])
def test_prior_beta_must_be_a_non_negative_number(nats_benchmark, surrogate_file, beta):
    with pytest.raises(UserError, match="prior_beta"):
        _run(nats_benchmark, "cifar10", 3, 0, surrogate=str(surrogate_file), prior_beta=beta)


def test_an_unreadable_surrogate_file_is_one_short_line(tmp_path):
    bad = tmp_path / "surrogate.pt"
    bad.write_bytes(b"\x80\x04garbage" * 50)
    with pytest.raises(UserError) as info:
        surrogate_io.load(bad)
    message = str(info.value)
    assert message.startswith(str(bad)) and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("damage", ["encoder_size", "no_state_dict", "short_evidence", "cells_a_list",
                                    "values_a_number", "evidence_a_list", "config_a_list", "info_a_list",
                                    "state_dict_a_list", "meta_phi_a_list", "op_index_negative",
                                    "op_index_too_large", "dataset_index_too_large",
                                    "values_integers", "output_transform_unknown"])
def test_a_damaged_surrogate_file_is_one_line_not_a_traceback(surrogate_file, tmp_path, damage):
    payload = torch.load(surrogate_file, weights_only=True)
    if damage == "encoder_size":
        payload["surrogate_config"]["encoder_hidden"] += 1
    elif damage == "no_state_dict":
        del payload["state_dict"]
    elif damage == "short_evidence":
        payload["evidence"]["cells"] = payload["evidence"]["cells"][:-3]
    elif damage == "cells_a_list":
        payload["evidence"]["cells"] = payload["evidence"]["cells"].tolist()
    elif damage == "values_a_number":
        payload["evidence"]["values"] = 1.5
    elif damage == "evidence_a_list":
        payload["evidence"] = [1, 2, 3]
    elif damage == "config_a_list":
        payload["surrogate_config"] = ["encoder_hidden", 64]
    elif damage == "info_a_list":
        payload["info"] = [1, 2]
    elif damage == "state_dict_a_list":
        payload["state_dict"] = [1, 2]
    elif damage.startswith("op_index"):  # -1 would index the last cell's encoding, 5 past the end
        payload["evidence"]["cells"][3, 2] = -1 if damage == "op_index_negative" else 5
    elif damage == "dataset_index_too_large":  # two meta-training datasets: indices 0 and 1
        payload["evidence"]["dataset"][0] = 2
    elif damage == "output_transform_unknown":  # else the search fails at its first BO step, budget spent
        payload["surrogate_config"]["output_transform"] = "ranks"
    elif damage == "values_integers":  # GP units are real numbers
        payload["evidence"]["values"] = payload["evidence"]["values"].round().long()
    else:
        payload["meta_phi"] = [[0.0]]
    bad = tmp_path / "surrogate.pt"
    torch.save(payload, bad)
    with pytest.raises(UserError) as info:
        surrogate_io.load(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: a damaged surrogate file") and "\n" not in message


def _with_one_value(surrogate_file, folder, group: str, key: str, value: float):
    """A copy of ``surrogate_file`` in ``folder`` whose tensor ``payload[group][key]`` has ``value`` first."""
    payload = torch.load(surrogate_file, weights_only=True)
    payload[group][key] = payload[group][key].clone()
    payload[group][key].view(-1)[0] = value
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(payload, folder / "surrogate.pt")
    return folder / "surrogate.pt"


@pytest.mark.parametrize("group, key, value", [
    ("state_dict", "arch_encoder.forward_gru.bias_hh", float("nan")),
    ("state_dict", "gp.covar_module.base_kernel.raw_lengthscale", float("inf")),
    ("state_dict", "gp.likelihood.noise_covar.raw_noise_constraint.upper_bound", float("nan")),
    ("evidence", "values", -float("inf")),  # one makes the prior NaN for every cell
])
def test_a_surrogate_file_holding_nan_or_inf_is_refused_naming_the_tensor(surrogate_file, tmp_path, group, key, value):
    """Such a file loaded, and its first GP fit ended in torch's LinAlgError traceback."""
    bad = _with_one_value(surrogate_file, tmp_path, group, key, value)
    for read in (surrogate_io.load, surrogate_io.read_config):
        with pytest.raises(UserError) as info:
            read(bad)
        message = str(info.value)
        assert message.startswith(f"{bad}: {group}[{key!r}] holds NaN or infinite values") and "\n" not in message


def test_a_one_sided_constraint_keeps_its_infinite_bound_in_a_surrogate_file(surrogate_file):
    bound = torch.load(surrogate_file, weights_only=True)["state_dict"]["gp.covar_module.raw_outputscale_constraint.upper_bound"]
    assert float(bound) == math.inf
    assert surrogate_io.load(surrogate_file)[0].gp.covar_module.raw_outputscale_constraint.upper_bound == math.inf


def test_search_refuses_a_surrogate_file_holding_nan_before_making_out(capsys, surrogate_file, tmp_path, nats_csv):
    bad = _with_one_value(surrogate_file, tmp_path / "bad", "state_dict", "gp.mlp.net.0.weight", float("nan"))
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--surrogate", bad, "--benchmark", nats_csv,
                           "--dataset", "cifar10", "--budget", 6, "--out", tmp_path / "s")
    assert code == 2 and err.count("\n") == 1 and "state_dict['gp.mlp.net.0.weight'] holds NaN" in err, err
    assert not (tmp_path / "s").exists()


def test_a_surrogate_holding_nan_is_never_saved(surrogate_file, tmp_path):
    surrogate, _ = surrogate_io.load(surrogate_file)
    with torch.no_grad():
        surrogate.gp.mlp.net[0].weight[0, 0] = math.nan
    with pytest.raises(UserError, match=r"state_dict\['gp.mlp.net.0.weight'\] holds NaN or infinite values"):
        surrogate_io.save(surrogate, tmp_path / "surrogate.pt")
    assert list(tmp_path.iterdir()) == []


def test_meta_train_ending_with_nan_weights_keeps_the_run_it_would_overwrite(capsys, tmp_path, nats_csv, monkeypatch):
    """It wrote the NaN surrogate over the earlier one and said it had meta-trained."""
    import naslib_bayes.predictors.meta_train as mt

    argv = ["meta-train", "--benchmark", nats_csv, "--datasets", "cifar100", "--iterations", 3,
            "--encoder-hidden", 8, "--out", tmp_path / "mt"]
    assert run_cli(capsys, *argv, "--seed", 1)[0] == 0
    before = {path.name: path.read_bytes() for path in (tmp_path / "mt").iterdir()}
    trained = mt.meta_train

    def diverged(*args, **kwargs):
        surrogate, log = trained(*args, **kwargs)
        with torch.no_grad():
            surrogate.gp.covar_module.raw_outputscale.fill_(math.inf)
        return surrogate, log

    monkeypatch.setattr(mt, "meta_train", diverged)
    code, out, err = run_cli(capsys, *argv, "--seed", 2, "--overwrite")
    assert code == 2 and out == "" and "raw_outputscale'] holds NaN or infinite values (meta-training diverged)" in err
    assert {path.name: path.read_bytes() for path in (tmp_path / "mt").iterdir()} == before


@pytest.fixture
def user_extractor_file(tmp_path, monkeypatch):
    """An ``images``-mode surrogate file whose feature extractor is a user ``module:factory``
    (which counts its calls), the extractor's name, and its module's call list."""
    import importlib
    import sys

    module = "user_extractor_for_surrogate_tests"
    (tmp_path / f"{module}.py").write_text(
        "from naslib_bayes.predictors.encoders.set_transformer import PixelFeatures\n"
        "CALLS = []\n"
        "def make():\n"
        "    CALLS.append(1)\n"
        "    return PixelFeatures(4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"{module}:make"
    from naslib_bayes.predictors.surrogate import TNASSurrogate

    config = SurrogateConfig(dataset_encoder="images", feature_extractor=name, meta_datasets=("cifar100",))
    path = surrogate_io.save(TNASSurrogate(config, generator=torch.Generator().manual_seed(0)), tmp_path / "s.pt")
    monkeypatch.delitem(sys.modules, module)
    return path, name, lambda: importlib.import_module(module).CALLS


def test_a_user_feature_extractor_in_a_surrogate_file_runs_only_when_trusted(user_extractor_file, nats_benchmark):
    import sys

    path, name, calls = user_extractor_file
    module = name.partition(":")[0]
    for trust in (False, "other_module:make"):
        with pytest.raises(UserError) as info:
            surrogate_io.load(path, trust_feature_extractor=trust)
        message = str(info.value)
        assert message.startswith(str(path)) and name in message and "\n" not in message
        assert "trust_feature_extractor=True" in message
        assert module not in sys.modules  # refused before anything was imported
    surrogate, _ = surrogate_io.load(path, trust_feature_extractor=True)
    assert surrogate.config.feature_extractor == name and calls() == [1]
    surrogate_io.load(path, trust_feature_extractor=name)
    assert calls() == [1, 1]
    # A TNAS search trusts the extractor its own feature_extractor hyper-parameter names.
    problem = BlackBoxProblem.from_benchmark(nats_benchmark, "cifar10", "test_accuracy", 3)
    for extractor, refused in (("random-conv", True), (name, False)):
        opt = TNAS(seed=0, surrogate=str(path), feature_extractor=extractor)
        opt.problem = problem
        if refused:
            with pytest.raises(UserError, match="trust_feature_extractor"):
                opt.build_surrogate()
        else:
            assert opt.build_surrogate().config.feature_extractor == name


def test_a_trusted_user_extractor_that_no_longer_imports_is_named_not_the_file_called_damaged(user_extractor_file):
    """The file is whole; the module its extractor names is gone (another machine, a renamed
    package). That was 'a damaged surrogate file', which sent the user to the file."""
    path, name, _ = user_extractor_file
    (path.parent / f"{name.partition(':')[0]}.py").unlink()
    with pytest.raises(UserError) as info:
        surrogate_io.load(path, trust_feature_extractor=True)
    message = str(info.value)
    assert message.startswith(f"{path}: feature extractor {name!r}: cannot import it") and "\n" not in message
    assert "damaged" not in message


def test_same_seed_same_trajectory_and_no_repeats(nats_benchmark, surrogate_file):
    results = [_run(nats_benchmark, "ImageNet16-120", 9, seed, surrogate=str(surrogate_file), initial_design=2,
                    finetune_steps=5) for seed in (3, 3)]
    runs = [problem.objective.queried for _, problem in results]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 9
    # NASLib's reporting methods: the incumbent, with the search metric as validation accuracy.
    opt, problem = results[0]
    best = int(np.argmax(problem.objective.values))  # first of tied values, as the incumbent
    assert opt.get_final_architecture() == problem.objective.queried[best]
    assert opt.train_statistics()[1] == problem.objective.values[best]


def test_ucb_and_initial_design_only(nats_benchmark, surrogate_file):
    opt, problem = _run(nats_benchmark, "cifar10", 8, 1, surrogate=str(surrogate_file), initial_design_only=True)
    ranked = acquisition.ranking(opt.prior, opt.priority)[:8].tolist()
    assert [opt.cells.index(c) for c in problem.objective.queried] == ranked
    assert opt.iteration_times == []
    _, ucb = _run(nats_benchmark, "cifar10", 7, 1, surrogate=str(surrogate_file), acquisition="ucb",
                  initial_design=3, finetune_steps=3)
    assert len(set(ucb.objective.queried)) == 7


def test_select_best_skips_queried_cells_and_breaks_ties_by_priority():
    scores = torch.tensor([0.5, 2.0, 2.0, 1.0, 2.0])
    allowed = torch.tensor([True, False, True, True, True])
    assert acquisition.select_best(scores, allowed, torch.tensor([0, 9, 1, 5, 3])) == 4
    assert acquisition.select_best(scores, allowed, torch.tensor([0, 9, 7, 5, 3])) == 2
    allowed[[2, 4]] = False
    assert acquisition.select_best(scores, allowed, torch.arange(5)) == 3


def test_select_best_never_picks_a_cell_not_allowed_when_scores_are_nan():
    """A NaN score (a broken posterior) must not make a queried cell the choice."""
    allowed = torch.tensor([False, True, True, False])
    scores = torch.tensor([5.0, math.nan, 1.0, 9.0])
    assert acquisition.select_best(scores, allowed, torch.arange(4)) == 2
    scores = torch.full((4,), math.nan)
    assert acquisition.select_best(scores, allowed, torch.tensor([3, 0, 2, 1])) == 2  # all NaN: by priority


def test_expected_improvement_matches_its_integral():
    mean, std = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.7, 0.2, 1e-15], dtype=torch.float64)
    ei = acquisition.expected_improvement(mean, std, best=0.5)
    z = torch.linspace(-12, 12, 200001, dtype=torch.float64)
    for m, s, value in zip(mean[:2], std[:2], ei[:2]):
        f = m + s * z
        density = torch.exp(-0.5 * z**2) / (2 * torch.pi) ** 0.5
        assert float(torch.trapezoid((f - 0.5).clamp_min(0) * density, z)) == pytest.approx(float(value), abs=1e-8)
    assert float(ei[2]) == pytest.approx(1.5)


def test_score_dispatches_ucb_and_ei_with_their_options():
    """ucb is mean + sqrt(beta) std; ei's xi raises the bar the improvement is measured from;
    where std is 0 log EI is the log of the plain improvement (without one, below every other score)."""
    mean = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=torch.float64)
    std = torch.tensor([0.7, 0.2, 0.0, 0.0], dtype=torch.float64)
    ucb = acquisition.score("ucb", mean, std, best=0.5, beta=4.0)
    assert torch.allclose(ucb, mean + 2.0 * std)
    ei = acquisition.score("ei", mean, std, best=0.5, xi=0.3)
    assert torch.allclose(ei[:3], acquisition.score("ei", mean, std, best=0.8)[:3])
    assert float(ei[2]) == pytest.approx(math.log(1.2)) and math.isfinite(float(ei[3]))
    assert float(ei[3]) < float(ei[:3].min())
    assert not torch.allclose(ei[:2], acquisition.score("ei", mean, std, best=0.5)[:2])


def test_ranking_orders_by_score_and_exact_ties_by_priority():
    scores = torch.tensor([1.0, 2.0, 2.0, 1.0, 3.0])
    assert acquisition.ranking(scores, torch.tensor([0, 1, 4, 3, 2])).tolist() == [4, 2, 1, 3, 0]
    assert acquisition.ranking(scores, torch.tensor([4, 3, 0, 1, 2])).tolist() == [4, 1, 2, 0, 3]


def _log_ei_by_quadrature(z: float) -> float:
    """log E[max(Z + z, 0)] for Z ~ N(0, 1) and z <= -1, without underflow: with t = Z + z,
    EI = phi(z) * integral over t > 0 of t * exp(z t - t^2 / 2)."""
    t = torch.linspace(0, 60 / abs(z), 400001, dtype=torch.float64)
    integral = torch.trapezoid(t * torch.exp(z * t - 0.5 * t**2), t)
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi) + math.log(float(integral))


def test_log_expected_improvement_is_accurate_far_below_the_incumbent():
    z = torch.tensor([-1.0, -5.0, -8.0, -9.0, -20.0, -40.0, -100.0], dtype=torch.float64)
    std = torch.full_like(z, 0.13)
    log_ei = acquisition.log_expected_improvement(0.5 + std * z, std, best=0.5)
    for value, zi in zip(log_ei, z):
        assert float(value) == pytest.approx(math.log(0.13) + _log_ei_by_quadrature(float(zi)), abs=1e-6)
    ei = acquisition.expected_improvement(0.5 + std * z, std, best=0.5)
    assert torch.allclose(torch.log(ei[:4]), log_ei[:4], rtol=0, atol=1e-9)  # EI keeps its digits until it underflows


def test_log_expected_improvement_stays_finite_and_monotone_however_far_below_the_incumbent():
    """log EI rises with the mean at any distance below the incumbent; from 5e7 standard deviations
    down, 1 + z * Phi(z) / phi(z) (about 1 / z^2) rounds to 0 and its log1p was -inf."""
    z = -torch.logspace(0, 12, 20001, dtype=torch.float64).flip(0)
    log_ei = acquisition.log_expected_improvement(z, torch.ones_like(z), best=0.0)
    assert bool(torch.isfinite(log_ei).all())
    assert bool((log_ei.diff() > 0).all())
    for zi in (-6e7, -1e9):  # h(z) = phi(z) / z^2 * (1 - 3 / z^2 + ...): the correction is below rounding
        expected = -0.5 * zi * zi - 0.5 * math.log(2 * math.pi) - 2 * math.log(-zi)
        value = float(acquisition.log_expected_improvement(torch.tensor([zi], dtype=torch.float64),
                                                           torch.ones(1, dtype=torch.float64), best=0.0))
        assert value == pytest.approx(expected, rel=1e-15)


def test_ei_scores_keep_ranking_cells_where_ei_underflows():
    """gp-bo and tnas without the prior score EI by its log: cells 40 and 45 standard deviations
    below the incumbent (EI = 0 in double precision) are still told apart."""
    mean, std = torch.tensor([-40.0, -45.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    assert torch.equal(acquisition.expected_improvement(mean, std, best=0.0), torch.zeros(2, dtype=torch.float64))
    scores = acquisition.score("ei", mean, std, best=0.0)
    assert bool(torch.isfinite(scores).all()) and float(scores[0]) > float(scores[1])
    assert acquisition.select_best(scores, torch.ones(2, dtype=torch.bool), torch.tensor([0, 1])) == 0


def test_cells_with_no_std_and_no_improvement_rank_as_ei_does_in_the_limit_of_no_std():
    """EI of a cell below the incumbent vanishes as its std -> 0, more slowly the closer its mean:
    cells of no std (at most 1e-12) rank by mean, all below any cell with some EI left; they
    scored -inf, so that a search whose unqueried cells all had no std chose by tie priority."""
    mean = torch.tensor([-0.3, -0.01, -2.0, 0.0, -0.5], dtype=torch.float64)
    for tiny in (1e-6, 1e-7, 1e-8):  # log EI still finite here: the order the limit keeps
        limit_order = torch.argsort(acquisition.log_expected_improvement(mean, torch.full_like(mean, tiny), 0.0))
        assert limit_order.tolist() == [2, 4, 0, 1, 3]
    for no_std in (0.0, 1e-12, 1e-13):
        scores = acquisition.log_expected_improvement(mean, torch.full_like(mean, no_std), best=0.0)
        assert bool(torch.isfinite(scores).all()) and torch.argsort(scores).tolist() == [2, 4, 0, 1, 3]
        everyone = torch.ones(5, dtype=torch.bool)
        for priority in (torch.arange(5), torch.arange(5).flip(0)):
            assert acquisition.select_best(scores, everyone, priority) == 3
    # beside cells with some EI left (however little) or a certain improvement, they come last
    mean = torch.cat([mean, torch.tensor([-40.0, -1e9, 0.5], dtype=torch.float64)])
    std = torch.tensor([0.0] * 5 + [1.0, 1e-3, 0.0], dtype=torch.float64)
    scores = acquisition.log_expected_improvement(mean, std, best=0.0)
    assert bool(torch.isfinite(scores).all()) and float(scores[:5].max()) < float(scores[5:].min())
    assert torch.argsort(scores[:5]).tolist() == [2, 4, 0, 1, 3]
    assert torch.equal(scores[5:], acquisition.log_expected_improvement(mean[5:], std[5:], best=0.0))


def test_prior_weight_ranks_cells_with_no_std_and_no_improvement():
    """Every unqueried cell at the same mean below the incumbent with no std: pi-BO's prior picks
    the cell (the limit of EI * pi^(beta / n) as std -> 0), not the tie priority."""
    from types import SimpleNamespace

    opt = TNAS(seed=0)
    opt.problem = SimpleNamespace(objective=SimpleNamespace(budget=50))
    opt.history = [((0,) * 6, 1.0)] * 5
    opt.prior = opt.log_belief = torch.tensor([0.2, 1.5, -0.7, 0.9], dtype=torch.float64)
    mean, std = torch.full((4,), -0.4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    scores = opt.acquisition_scores(mean, std, best=0.0)
    for priority in (torch.arange(4), torch.arange(4).flip(0), torch.tensor([1, 3, 0, 2])):
        assert acquisition.select_best(scores, torch.ones(4, dtype=torch.bool), priority) == 1
    assert torch.argsort(scores).tolist() == torch.argsort(opt.prior).tolist()


def test_prior_weighted_ei_ranks_cells_far_below_the_incumbent_by_their_true_ei():
    """Two cells 8.1 and 9.1 std below the incumbent, as a late BO step meets them: pi-BO's score
    is log EI + (beta / n) * log pi, not the log of EI's rounding noise."""
    from types import SimpleNamespace

    opt = TNAS(seed=0)
    opt.problem = SimpleNamespace(objective=SimpleNamespace(budget=50))
    opt.history = [((0,) * 6, 1.0)] * 25
    opt.prior = opt.log_belief = torch.tensor([2.87, 2.92], dtype=torch.float64)
    std = torch.tensor([0.131, 0.135], dtype=torch.float64)
    z = torch.tensor([-8.06, -9.07], dtype=torch.float64)
    scores = opt.acquisition_scores(std * z, std, best=0.0)
    expected = [math.log(float(s)) + _log_ei_by_quadrature(float(zi)) + 0.2 * float(p)
                for s, zi, p in zip(std, z, opt.prior)]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert acquisition.select_best(scores, torch.ones(2, dtype=torch.bool), torch.arange(2)) == 0


# ---- checkpoint ---------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_predictions(surrogate_file, tmp_path):
    payload = torch.load(surrogate_file, weights_only=True)  # no pickled objects
    assert payload["format"] == surrogate_io.FORMAT and payload["version"] == surrogate_io.FORMAT_VERSION
    first, _ = surrogate_io.load(surrogate_file)
    surrogate_io.save(first, tmp_path / "again.pt", {"note": "copy"})
    second, info = surrogate_io.load(tmp_path / "again.pt")
    assert info == {"note": "copy"}
    cells = list(nb201.all_cells())[::50]
    enc1, enc2 = first.encode_all(cells), second.encode_all(cells)
    assert torch.equal(enc1, enc2)
    y = torch.linspace(-1, 1, 30, dtype=torch.float64)
    means = []
    for s, enc in ((first, enc1), (second, enc2)):
        s.gp.condition_on(enc[:30], y)
        means.append(s.gp.posterior(enc))
    assert torch.equal(means[0][0], means[1][0]) and torch.equal(means[0][1], means[1][1])


def test_a_surrogate_file_with_single_precision_evidence_values_gives_the_prior_of_their_float64(
        surrogate_file, tmp_path):
    payload = torch.load(surrogate_file, weights_only=True)
    payload["evidence"]["values"] = payload["evidence"]["values"].float()
    torch.save(payload, tmp_path / "single.pt")
    single, _ = surrogate_io.load(tmp_path / "single.pt")
    encodings = single.encode_all(list(nb201.all_cells()))
    _, values, _ = single.evidence_inputs(encodings)  # the prior's data: float32 rows once failed here
    payload["evidence"]["values"] = payload["evidence"]["values"].double()
    torch.save(payload, tmp_path / "double.pt")
    double, _ = surrogate_io.load(tmp_path / "double.pt")
    assert values.dtype == torch.float64 and torch.equal(values, double.evidence_inputs(encodings)[1])


def test_loading_rejects_other_files(tmp_path):
    from naslib_bayes.errors import UserError

    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a naslib-bayes TNAS surrogate"):
        surrogate_io.load(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        surrogate_io.load(tmp_path / "missing.pt")


# ---- transfer-topk and gp-bo ------------------------------------------------------------------
def _toy_benchmark():
    cells = [(0, 0, 0, 0, 0, k) for k in range(5)] + [(1, 1, 1, 1, 1, k) for k in range(5)]
    # Source scores tie in pairs; the target is irrelevant to the order.
    source = [1.0, 1.0, 3.0, 3.0, 2.0, 0.0, 0.0, 5.0, 4.0, 4.0]
    return Benchmark(cells, {"cifar100": {"test_accuracy": source}, "cifar10": {"test_accuracy": list(range(10))}})


def test_transfer_topk_follows_source_scores_with_seeded_ties():
    bench = _toy_benchmark()
    orders = {}
    for seed in range(8):
        problem = BlackBoxProblem.from_benchmark(bench, "cifar10", "test_accuracy", 10)
        run_black_box(TransferTopK(seed=seed), problem)
        orders[seed] = [bench.index_of(c) for c in problem.objective.queried]
        again = BlackBoxProblem.from_benchmark(bench, "cifar10", "test_accuracy", 10)
        run_black_box(TransferTopK(seed=seed), again)
        assert [bench.index_of(c) for c in again.objective.queried] == orders[seed]
        source = np.asarray([1.0, 1.0, 3.0, 3.0, 2.0, 0.0, 0.0, 5.0, 4.0, 4.0])
        assert list(source[orders[seed]]) == sorted(source, reverse=True)
    assert len({tuple(o) for o in orders.values()}) > 1  # ties go different ways for different seeds


def test_transfer_topk_on_the_real_benchmark(nats_benchmark):
    result = run_blackbox_search(nats_benchmark, "transfer-topk", "cifar10", budget=5, seed=0)
    scores = transfer_scores(nats_benchmark.without("cifar10"))
    expected = [nb201.to_string(nats_benchmark.cell(i)) for i in np.argsort(-scores, kind="stable")[:5]]
    assert [t["architecture"] for t in result["trajectory"]] == expected
    assert result["transfer_source"]["datasets"] == ["cifar100", "ImageNet16-120"]


def test_transfer_scores_average_each_datasets_own_standardisation():
    """Cells A-E; cifar100 has A-D at 0, 0, 20, 20 (mean 10, std 10: z = -1, -1, 1, 1), ImageNet
    has A-E at 0, 0, 0, 0, 5 (mean 1, std 2: z = -0.5 x 4, 2). Mean z over the datasets that have
    the cell: A, B -0.75; C, D 0.25; E 2 (ImageNet alone). Raw accuracies would put C and D (10
    on average) above E (5), and a sum of z instead of a mean would give A, B -1.5 and C, D 0.5."""
    cells = [(0, 0, 0, 0, 0, k) for k in range(5)]
    nan = float("nan")
    bench = Benchmark(cells, {"cifar10": {"test_accuracy": [1.0, 2.0, 3.0, 4.0, 5.0]},
                              "cifar100": {"test_accuracy": [0.0, 0.0, 20.0, 20.0, nan]},
                              "ImageNet16-120": {"test_accuracy": [0.0, 0.0, 0.0, 0.0, 5.0]}})
    scores = transfer_scores(bench.without("cifar10"))
    assert scores[:5] == pytest.approx([-0.75, -0.75, 0.25, 0.25, 2.0], abs=1e-12)
    assert np.isnan(scores[5:]).all()  # no source dataset has the other cells
    for seed in range(4):
        problem = BlackBoxProblem.from_benchmark(bench, "cifar10", "test_accuracy", 5)
        run_black_box(TransferTopK(seed=seed), problem)
        order = [cells.index(c) for c in problem.objective.queried]
        assert order[0] == 4 and set(order[1:3]) == {2, 3} and set(order[3:]) == {0, 1}


def test_gp_bo_needs_no_source_and_is_seeded(nats_benchmark):
    trajectories = []
    for seed in (0, 0, 1):
        objective = Objective(nats_benchmark, "cifar10", "test_accuracy", 8)
        opt = registry_create("gp-bo", seed, initial_design=4, finetune_steps=10)
        run_black_box(opt, BlackBoxProblem(objective, source=None))
        trajectories.append(objective.queried)
    assert trajectories[0] == trajectories[1] != trajectories[2]
    assert len(set(trajectories[0])) == 8


class FirstQueriesWithoutValue(Objective):
    """The first two queries return no value, as cells a partial file lacks do."""

    def _lookup(self, cell):
        return math.nan if self.num_queries < 2 else super()._lookup(cell)


class RecordingGPBO(GPBO):
    def acquisition_scores(self, mean, std, best):
        self.bests.append(best)
        return super().acquisition_scores(mean, std, best)


def test_bo_steps_fit_the_measured_cells_and_improve_on_their_best_target(nats_benchmark):
    """Each BO step fits the cells with a value only (here the first two queries have none) and
    EI's incumbent is their best GP target: with the copula, the best of n distinct values has
    mid-rank n - 1/2, so its target is Phi^-1(n / (n + 1))."""
    from scipy.stats import norm

    objective = FirstQueriesWithoutValue(nats_benchmark, "cifar10", "test_accuracy", 7)
    opt = RecordingGPBO(seed=0, initial_design=4, finetune_steps=2)
    opt.bests = []
    run_black_box(opt, BlackBoxProblem(objective, source=None))
    measured = objective.values[2:6]
    assert len(set(measured)) == len(measured)  # distinct, as the closed form assumes
    assert [log["n"] for log in opt.fit_log] == [2, 3, 4]
    assert opt.bests == pytest.approx([norm.ppf(n / (n + 1)) for n in (2, 3, 4)], abs=1e-12)


def test_gp_bo_standardises_each_encoding_dimension_over_all_cells(nats_benchmark):
    objective = Objective(nats_benchmark, "cifar10", "test_accuracy", 2)
    opt = run_black_box(registry_create("gp-bo", 0, initial_design=2), BlackBoxProblem(objective, source=None))
    assert opt.encodings.shape == (15625, 16)
    torch.testing.assert_close(opt.encodings.mean(0), torch.zeros(16, dtype=opt.encodings.dtype), rtol=0, atol=1e-5)
    torch.testing.assert_close(opt.encodings.std(0), torch.ones(16, dtype=opt.encodings.dtype), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_gp_bo_starts_from_the_random_cells_the_other_baselines_start_from(nats_benchmark, seed):
    """rs, re, ls and bananas query the same first random cells for a seed; gp-bo drew its own
    (as uniform), so its rows differed from theirs by luck before it had fitted anything."""
    queried = {}
    for name in ("rs", "gp-bo"):
        objective = Objective(nats_benchmark, "cifar10", "test_accuracy", 10)
        run_black_box(registry_create(name, seed), BlackBoxProblem(objective, source=None))
        queried[name] = objective.queried
    assert queried["gp-bo"] == queried["rs"] and len(set(queried["rs"])) == 10


@pytest.mark.parametrize("transform", ["copula", "standardise"])
def test_gp_bo_fits_the_targets_in_the_units_tnas_uses(nats_benchmark, transform):
    import torch

    from naslib_bayes.predictors.target_fit import transform_observations

    objective = Objective(nats_benchmark, "cifar10", "test_accuracy", 6)
    overrides = {} if transform == "copula" else {"output_transform": transform}  # copula: the default
    opt = registry_create("gp-bo", 0, initial_design=4, finetune_steps=2, **overrides)
    run_black_box(opt, BlackBoxProblem(objective, source=None))
    values = torch.tensor([93.0, 10.0, 91.0, 92.0], dtype=torch.float64)  # one degenerate cell
    targets = opt.gp_targets(torch.arange(4), values)
    torch.testing.assert_close(targets, transform_observations(values, transform))
    spread_of_the_good_ones = float(targets[[0, 2, 3]].max() - targets[[0, 2, 3]].min())
    assert spread_of_the_good_ones > 1.0 if transform == "copula" else spread_of_the_good_ones < 0.1


@pytest.mark.parametrize("name, setting", [("gp-bo", "output_transform"), ("tnas", "meta_output_transform"),
                                           ("tnas", "meta_outer"), ("tnas", "dataset_encoder")])
def test_an_unknown_variant_is_refused_on_construction(name, setting):
    """Checked once the optimizer was bound to a problem, a comparison spent the runs of the
    optimizers before it (rs's) and a search made --out before refusing the setting."""
    with pytest.raises(UserError, match=f"{setting} 'ranks': expected one of"):
        registry_create(name, 0, **{setting: "ranks"})


def registry_create(name, seed, **hp):
    from naslib_bayes.optimizers import registry

    return registry.create(name, kind=registry.BLACK_BOX, seed=seed, **hp)


# ---- CLI -------------------------------------------------------------------------------------------
def test_meta_train_then_search_with_the_surrogate(capsys, tmp_path, nats_csv):
    import jsonschema

    from naslib_bayes import results

    code, out, err = run_cli(capsys, "meta-train", "--benchmark", str(nats_csv), "--datasets", "cifar100,ImageNet16-120",
                          "--seed", "1", "--iterations", "6", "--encoder-hidden", "16", "--out", str(tmp_path / "mt"))
    assert code == 0, err
    meta = json.loads((tmp_path / "mt" / "result.json").read_text())
    jsonschema.validate(meta, results.load_schema())
    assert meta["meta_datasets"] == ["cifar100", "ImageNet16-120"] and (tmp_path / "mt" / "surrogate.pt").exists()
    code, out, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", str(nats_csv), "--dataset", "cifar10",
                          "--surrogate", str(tmp_path / "mt"), "--budget", "7", "--seed", "0",
                          "--opt", "finetune_steps=3", "--out", str(tmp_path / "s"))
    assert code == 0, err
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    jsonschema.validate(result, results.load_schema())
    assert result["surrogate"]["path"].endswith("surrogate.pt") and not result["surrogate"]["meta_trained_here"]
    assert result["surrogate"]["encoder_hidden"] == 16  # the file's, whatever the unused default in config says
    assert result["dataset_encoder"]["mode"] == "off" and result["initial_design"]["k"] == 5
    assert result["initial_design"]["architectures"] == [t["architecture"] for t in result["trajectory"][:5]]
    assert len(result["trajectory"]) == 7
    assert result["surrogate"]["target_in_meta_training"] is False
    # the same surrogate searching a dataset it was meta-trained on: allowed, but recorded
    code, out, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", str(nats_csv), "--dataset",
                             "cifar100", "--surrogate", str(tmp_path / "mt"), "--budget", "6", "--seed", "0",
                             "--opt", "finetune_steps=3", "--out", str(tmp_path / "seen"))
    assert code == 0, err
    seen = json.loads((tmp_path / "seen" / "result.json").read_text())
    jsonschema.validate(seen, results.load_schema())
    assert seen["surrogate"]["target_in_meta_training"] is True and "not transfer" in err
    # a dataset named twice (an alias) would weigh its evaluations double
    code, out, err = run_cli(capsys, "meta-train", "--benchmark", str(nats_csv), "--datasets", "cifar100,CIFAR-100",
                             "--iterations", "6", "--out", str(tmp_path / "twice"))
    assert code == 2 and "--datasets: cifar100, CIFAR-100 all name cifar100; give each once" in err and not (tmp_path / "twice" / "surrogate.pt").exists()


def test_meta_train_datasets_in_any_order_give_the_same_surrogate(capsys, tmp_path, nats_csv):
    # task sampling and held-out splits follow the list: given in another order, the same
    # datasets meta-trained another surrogate
    payloads = []
    for order in ("ImageNet16-120,cifar100", "cifar100,ImageNet16-120"):
        out = tmp_path / order.replace(",", "-")
        code, _, err = run_cli(capsys, "meta-train", "--benchmark", str(nats_csv), "--datasets", order, "--seed", "3",
                               "--iterations", "6", "--encoder-hidden", "8", "--out", str(out))
        assert code == 0, err
        assert json.loads((out / "result.json").read_text())["meta_datasets"] == ["cifar100", "ImageNet16-120"]
        payloads.append(torch.load(out / "surrogate.pt", weights_only=True))
    first, second = payloads
    assert first["info"]["meta_datasets"] == second["info"]["meta_datasets"] == ["cifar100", "ImageNet16-120"]
    assert first["state_dict"].keys() == second["state_dict"].keys()
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert all(torch.equal(first["evidence"][k], second["evidence"][k]) for k in first["evidence"])


def test_meta_train_command_defaults_are_those_tnas_meta_trains_with(capsys):
    """`meta-train` with no options gives the surrogate `search --optimizer tnas` would meta-train."""
    from naslib_bayes.cli import build_parser

    from naslib_bayes.commands.meta_train import reptile_settings

    args = build_parser().parse_args(["meta-train", "--benchmark", "b.csv", "--datasets", "cifar10", "--out", "o"])
    config = MetaTrainConfig()
    assert (args.outer, args.iterations, args.lr, *reptile_settings(args), args.output_transform,
            args.evidence_top) == (config.outer, config.iterations, config.lr, config.outer_step, config.inner_steps,
                                   config.output_transform, config.evidence_top)
    assert (TNAS.defaults["meta_outer"], TNAS.defaults["meta_iterations"], TNAS.defaults["meta_lr"],
            TNAS.defaults["meta_outer_step"], TNAS.defaults["meta_output_transform"],
            TNAS.defaults["meta_evidence_top"]) == (
        config.outer, config.iterations, config.lr, config.outer_step, config.output_transform, config.evidence_top)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["meta-train", "--help"])
    assert f"(default {config.iterations})" in capsys.readouterr().out


def test_meta_train_command_offers_exactly_the_outer_updates_and_transforms_meta_training_knows():
    """The command lists its choices itself (importing meta_train would load torch for --help):
    a transform or outer update added to the library must reach the command, and none it lacks."""
    from naslib_bayes.cli import build_parser
    from naslib_bayes.predictors.meta_train import OUTER_UPDATES
    from naslib_bayes.predictors.surrogate import OUTPUT_TRANSFORMS

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {a.dest: tuple(a.choices) for a in subparsers.choices["meta-train"]._actions if a.choices}
    assert set(choices["outer"]) == set(OUTER_UPDATES)
    assert set(choices["output_transform"]) == set(OUTPUT_TRANSFORMS)


@pytest.mark.parametrize("option, value", [("--lr", "-1"), ("--lr", "0"), ("--outer-step", "-0.1")])
def test_meta_train_refuses_a_step_size_out_of_range_before_writing(capsys, tmp_path, nats_csv, option, value):
    code, _, err = run_cli(capsys, "meta-train", "--benchmark", str(nats_csv), "--datasets", "cifar100",
                           option, value, "--out", str(tmp_path / "o"))
    assert code == 2 and option in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_meta_train_refuses_a_dataset_with_too_few_evaluated_cells_before_writing(capsys, tmp_path):
    # refused only once meta-training began, beside an --out made (and locked) for it
    from partial_benchmark import write_partial_csv

    benchmark = write_partial_csv(tmp_path / "partial.csv", n=5, cifar100_everywhere=True)
    code, _, err = run_cli(capsys, "meta-train", "--benchmark", str(benchmark), "--datasets", "cifar10",
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "meta-training dataset 'cifar10' has only 5 evaluated cells" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option, value", [("--outer-step", "0.5"), ("--inner-steps", "3")])
def test_meta_train_refuses_reptile_settings_with_the_joint_outer_update(capsys, tmp_path, nats_csv, option, value):
    # joint training never reads them, yet result.json's config recorded them as if used
    code, _, err = run_cli(capsys, "meta-train", "--benchmark", str(nats_csv), "--datasets", "cifar100",
                           option, value, "--out", str(tmp_path / "o"))
    assert code == 2 and err.strip() == f"naslib-bayes: error: {option} applies with --outer reptile, not joint"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--image-root", "."], "--image-root applies with --dataset-encoder images, not off"),
    (["--dataset-encoder", "learned", "--feature-extractor", "pixels"],
     "--feature-extractor applies with --dataset-encoder images, not learned"),
])
def test_meta_train_refuses_image_options_its_encoder_would_ignore(capsys, tmp_path, nats_csv, argv, message):
    # ignored, the extractor's name would still be recorded in the surrogate's settings as if used
    code, _, err = run_cli(capsys, "meta-train", "--benchmark", str(nats_csv), "--datasets", "cifar100", *argv,
                           "--out", str(tmp_path / "o"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name, value", [("meta_lr", -1.0), ("meta_lr", 0.0), ("meta_outer_step", -0.5),
                                         ("meta_iterations", 0), ("meta_evidence_top", 0)])
def test_tnas_refuses_meta_training_settings_out_of_range(name, value):
    with pytest.raises(UserError, match=f"{name}={value!r}"):
        TNAS(seed=0, **{name: value})


def test_search_without_surrogate_says_it_meta_trains(capsys, tmp_path, nats_csv):
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", str(nats_csv), "--dataset", "cifar100",
                        "--budget", "6", "--opt", "meta_iterations=4", "--opt", "finetune_steps=2",
                        "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert "meta-training leave-one-dataset-out on cifar10, ImageNet16-120" in err
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert result["surrogate"]["meta_trained_here"] and result["surrogate"]["meta_datasets"] == ["cifar10", "ImageNet16-120"]


def cifar100_without_validation_accuracy(nats_benchmark, path):
    """A benchmark file whose cifar10 and ImageNet16-120 have validation accuracy and cifar100 only test accuracy."""
    from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
    from naslib_bayes.search_spaces.nasbench201.loaders import save_npz

    tables = {}
    for dataset in nats_benchmark.datasets:
        test = nats_benchmark.query_all(dataset, "test_accuracy")
        tables[dataset] = {"test_accuracy": test} if dataset == "cifar100" else \
            {"test_accuracy": test, "val_accuracy": test[::-1].copy()}
    save_npz(Benchmark(nats_benchmark.cells, tables), path)
    return path


def test_a_search_records_the_metric_each_meta_training_dataset_was_learned_from(capsys, tmp_path, nats_benchmark):
    # cifar100 lacks the search metric and is meta-trained on its test accuracy: only a log line said so
    import jsonschema

    from naslib_bayes import results

    path = cifar100_without_validation_accuracy(nats_benchmark, tmp_path / "mixed.npz")
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", path, "--dataset", "cifar10",
                           "--search-metric", "val_accuracy", "--budget", "6", "--opt", "meta_iterations=4",
                           "--opt", "finetune_steps=2", "--out", tmp_path / "s")
    assert code == 0, err
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    jsonschema.validate(result, results.load_schema())
    assert result["surrogate"]["meta_metrics"] == {"cifar100": "test_accuracy", "ImageNet16-120": "val_accuracy"}


def test_meta_train_records_the_metric_each_dataset_was_learned_from(capsys, tmp_path, nats_csv):
    import jsonschema

    from naslib_bayes import results
    from naslib_bayes.predictors import surrogate_io

    code, _, err = run_cli(capsys, "meta-train", "--benchmark", nats_csv, "--datasets", "cifar100,ImageNet16-120",
                           "--iterations", "4", "--encoder-hidden", "8", "--out", tmp_path / "mt")
    assert code == 0, err
    meta = json.loads((tmp_path / "mt" / "result.json").read_text())
    jsonschema.validate(meta, results.load_schema())
    learned_from = {"cifar100": "test_accuracy", "ImageNet16-120": "test_accuracy"}
    assert meta["meta_metrics"] == meta["surrogate"]["meta_metrics"] == learned_from
    assert surrogate_io.load(tmp_path / "mt")[1]["meta_metrics"] == learned_from


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "rs", "--surrogate", "x"], "--surrogate does not apply to --optimizer rs"),
    (["--optimizer", "tnas", "--dataset-encoder", "images"], "--dataset-encoder images needs --image-root"),
    (["--optimizer", "tnas", "--surrogate", "{tmp}/none.pt"], "does not exist"),
    # the image options serve the images encoder only: elsewhere they would be ignored
    (["--optimizer", "tnas", "--image-root", "{tmp}"], "--image-root applies with --dataset-encoder images, not off"),
    (["--optimizer", "tnas", "--dataset-encoder", "learned", "--feature-extractor", "pixels"],
     "--feature-extractor applies with --dataset-encoder images, not learned"),
    # as --opt too: the root was recorded in result.json's config, unread
    (["--optimizer", "tnas", "--opt", "image_root={tmp}"], "--image-root applies with --dataset-encoder images, not off"),
])
def test_search_flag_errors(capsys, tmp_path, nats_csv, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = run_cli(capsys, "search", *argv, "--benchmark", str(nats_csv), "--dataset", "cifar10",
                        "--budget", "3", "--out", str(tmp_path / "o"))
    assert code == 2 and message in err, err


@pytest.mark.parametrize("argv, key", [
    (["--encoder-hidden", "8", "--opt", "encoder_hidden=16"], "encoder_hidden"),
    (["--dataset-encoder", "images", "--image-root", "{tmp}", "--opt", "dataset_encoder=learned"], "dataset_encoder"),
    (["--surrogate", "{surrogate}", "--opt", "surrogate={tmp}/other.pt"], "surrogate"),
])
def test_search_refuses_a_surrogate_setting_given_as_a_flag_and_as_opt(capsys, tmp_path, nats_csv, surrogate_file,
                                                                       argv, key):
    # --opt silently won: the flag's value was checked (an image root against its encoder, a
    # surrogate file for existence) and the other one used, the flag's ignored
    argv = [a.format(tmp=tmp_path, surrogate=surrogate_file) for a in argv]
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", *argv, "--benchmark", str(nats_csv),
                           "--dataset", "cifar10", "--budget", "3", "--out", str(tmp_path / "o"))
    flag = f"--{key.replace('_', '-')}"
    assert code == 2 and err.strip() == f"naslib-bayes: error: {flag} and --opt {key} both set {key}; give one", err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--encoder-hidden", "8"], "--encoder-hidden applies when meta-training here; a --surrogate file already has one"),
    (["--image-root", "{tmp}"], "has the off dataset encoder, which reads no images"),
])
def test_a_surrogate_given_by_opt_is_checked_as_one_given_by_flag(capsys, tmp_path, nats_csv, surrogate_file,
                                                                  argv, message):
    # with --opt surrogate=FILE the flags were checked as if meta-training here: --encoder-hidden
    # was ignored beside the file's (and recorded as used)
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--opt", f"surrogate={surrogate_file}", *argv,
                           "--benchmark", str(nats_csv), "--dataset", "cifar10", "--budget", "3",
                           "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_search_with_no_dataset_to_meta_train_on_is_refused_before_out_is_made(capsys, tmp_path, nats_csv):
    # refused only once the search was set up, beside an --out made (and locked) for it
    rows = nats_csv.read_text().splitlines()
    column = rows[0].split(",").index("ArchitectureString")
    cifar10_only = tmp_path / "cifar10.csv"
    cifar10_only.write_text("\n".join(f"{row.split(',')[0]},{row.split(',')[column]}" for row in rows) + "\n")
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", str(cifar10_only),
                           "--dataset", "cifar10", "--budget", "3", "--out", str(tmp_path / "o"))
    assert code == 2 and "a benchmark with datasets other than the target to meta-train on" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("encoder, extra, message", [
    # the images surrogate failed only once the search was set up, beside an --out made for it
    ("images", [], "encodes a dataset by its images: give the target's with --image-root"),
    # a surrogate of another encoder ignored the root and recorded it as if used
    ("off", ["--image-root", "{tmp}"], "has the off dataset encoder, which reads no images"),
])
def test_a_surrogate_file_and_the_image_root_are_checked_together_before_out_is_made(
        capsys, tmp_path, nats_csv, encoder, extra, message):
    from naslib_bayes.predictors.surrogate import TNASSurrogate

    config = SurrogateConfig(dataset_encoder=encoder, meta_datasets=("cifar100", "ImageNet16-120"),
                             **({"feature_extractor": "pixels"} if encoder == "images" else {}))
    path = surrogate_io.save(TNASSurrogate(config), tmp_path / "s" / "surrogate.pt")
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--surrogate", str(path.parent),
                           *[a.format(tmp=tmp_path) for a in extra], "--benchmark", str(nats_csv),
                           "--dataset", "cifar10", "--budget", "3", "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_prior_weight_ranks_equal_ei_by_prior_and_fades_with_observations():
    from types import SimpleNamespace

    opt = TNAS(seed=0)
    opt.problem = SimpleNamespace(objective=SimpleNamespace(budget=50))
    opt.prior = opt.log_belief = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)  # prior_form "mean"
    mean = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    std = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    ei = acquisition.expected_improvement(mean, std, best=1.0)
    gaps = []
    for n in (5, 50):
        opt.history = [((0,) * 6, 1.0)] * n
        scores = opt.acquisition_scores(mean, std, best=1.0)
        assert torch.allclose(scores - torch.log(ei), (5.0 / n) * opt.prior)  # beta = budget / 10
        gaps.append(float(scores[2] - scores[0]))
        # queries a partial benchmark had no value for are no evidence: the weight stays
        opt.history += [((1,) * 6, math.nan)] * n
        assert torch.equal(opt.acquisition_scores(mean, std, best=1.0), scores)
    assert gaps[0] > 0 > gaps[1]  # early the prior's favourite wins; later the target's EI does
    opt.config["prior_beta"] = 0  # plain EI, scored by its log (the same ranking)
    assert torch.allclose(opt.acquisition_scores(mean, std, best=1.0), torch.log(ei), rtol=0, atol=1e-12)


def test_top_prior_form_weights_ei_by_the_prior_probability_of_a_top_cell(nats_benchmark, surrogate_file):
    """``prior_form=top``: log pi(x) = log P(f0(x) >= tau), tau the prior mean of the prior_top-th cell."""
    opt, _ = _run(nats_benchmark, "cifar10", 6, 0, surrogate=str(surrogate_file), prior_form="top", prior_top=20,
                  initial_design=3, finetune_steps=3)
    order = torch.argsort(opt.prior, descending=True)
    tau_cell = int(order[19])
    assert float(opt.log_belief[tau_cell]) == pytest.approx(math.log(0.5), abs=1e-9)
    above, below = opt.prior > opt.prior[tau_cell], opt.prior < opt.prior[tau_cell]
    assert bool((opt.log_belief[above] > math.log(0.5)).all()) and bool((opt.log_belief[below] < math.log(0.5)).all())
    # the prior's worst cell is ruled out far more firmly than by exp(mu0)
    worst = int(order[-1])
    assert float(opt.log_belief[worst]) < float(opt.prior[worst] - opt.prior.max()) - 10
    mean = torch.zeros(len(opt.cells), dtype=torch.float64)
    std = torch.ones(len(opt.cells), dtype=torch.float64)
    scores = opt.acquisition_scores(mean, std, best=1.0)
    ei = acquisition.expected_improvement(mean, std, best=1.0)
    assert torch.allclose(scores - torch.log(ei), (opt.prior_beta() / 6) * opt.log_belief)


def test_an_unknown_prior_form_is_refused(nats_benchmark, surrogate_file):
    with pytest.raises(UserError, match="prior_form 'median'"):
        _run(nats_benchmark, "cifar10", 3, 0, surrogate=str(surrogate_file), prior_form="median")


# ---- target_units=prior --------------------------------------------------------------------
def test_prior_quantiles_follow_the_ranking_as_meta_training_copula():
    from naslib_bayes.optimizers.tnas import prior_quantiles

    order = torch.tensor([2, 0, 3, 1])  # cell 2 best, cell 1 worst
    q = prior_quantiles(order)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = normal.icdf(1.0 - (torch.arange(4, dtype=torch.float64) + 0.5) / 4).double()
    assert torch.allclose(q[order], expected)
    assert torch.allclose(q[2], -q[1]) and float(q[2]) > float(q[0]) > float(q[3]) > float(q[1])


def test_reorder_to_keeps_the_reference_values_in_the_observed_order_and_averages_ties():
    from naslib_bayes.optimizers.tnas import reorder_to

    reference = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)  # the prior's order of the cells
    values = torch.tensor([40.0, 45.0, 41.0, 39.0], dtype=torch.float64)  # the target disagrees
    assert reorder_to(values, reference).tolist() == [1.0, 3.0, 2.0, 0.0]
    tied = reorder_to(torch.tensor([5.0, 5.0, 4.0, 6.0], dtype=torch.float64), reference)
    assert tied.tolist() == [1.5, 1.5, 0.0, 3.0]
    assert float(tied.sum()) == float(reference.sum())


def test_prior_units_fit_residuals_from_the_prior_with_the_constant_mean_frozen(nats_benchmark, surrogate_file):
    from naslib_bayes.optimizers.tnas import reorder_to

    class Recording(TNAS):
        def finetune(self, index, y):
            self.fitted.append((index.clone(), y.clone()))
            return super().finetune(index, y)

    Recording.fitted = []
    rec = Recording(seed=0, surrogate=str(surrogate_file), target_units="prior", initial_design=3, finetune_steps=5)
    problem = BlackBoxProblem.from_benchmark(nats_benchmark, "cifar10", "test_accuracy", 6)
    run_black_box(rec, problem)
    start = float(rec._start_state["gp.mean_module.raw_constant"])
    assert float(rec.surrogate.gp.mean_module.constant.detach()) == start  # frozen while fine-tuning
    raw_scale = rec.surrogate.gp.covar_module.raw_outputscale.detach()
    assert not torch.equal(raw_scale, rec._start_state["gp.covar_module.raw_outputscale"])  # the rest is tuned
    index, fitted = rec.fitted[-1]
    values = torch.as_tensor(problem.objective.values[: index.numel()], dtype=torch.float64)
    targets = reorder_to(values, rec.prior_quantile[index])
    assert torch.allclose(fitted, targets - rec.prior_quantile[index])
    # the level comes from the prior: the initial design's targets sit at its top quantiles, far above 0
    assert float(targets.min()) > 2.0
    assert len(set(problem.objective.queried)) == 6


def test_own_units_are_the_default_and_unknown_units_are_refused(nats_benchmark, surrogate_file):
    from naslib_bayes.errors import UserError
    from naslib_bayes.predictors.target_fit import transform_observations

    opt = TNAS(seed=0)
    values = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    opt.surrogate = type("S", (), {"config": SurrogateConfig(output_transform="copula")})()
    assert opt.config["target_units"] == "own" and opt.mean_offset() is None and not opt.frozen("mean_module.raw_constant")
    assert torch.equal(opt.gp_targets(torch.arange(3), values), transform_observations(values, "copula"))
    with pytest.raises(UserError, match="target_units"):
        _run(nats_benchmark, "cifar10", 3, 0, surrogate=str(surrogate_file), target_units="other")


def test_meta_output_transform_reaches_meta_training_and_bo(nats_benchmark, tmp_path):
    from naslib_bayes.predictors.target_fit import transform_observations
    from naslib_bayes.optimizers.tnas import meta_train_surrogate

    assert TNAS.defaults["meta_output_transform"] == "copula"
    source = nats_benchmark.without("cifar10", "ImageNet16-120")
    config = {**TNAS.defaults, "meta_iterations": 2, "meta_output_transform": "robust"}
    surrogate, info = meta_train_surrogate(source, "test_accuracy", config, seed=0)
    assert surrogate.config.output_transform == "robust" and info["meta_train_config"]["output_transform"] == "robust"
    # the evidence is in robust units of cifar100: its degenerate cells at the clip, its best near +1.3
    assert float(surrogate.evidence.values.min()) == -3.0 and 1.0 < float(surrogate.evidence.values.max()) < 1.6
    path = tmp_path / "surrogate.pt"
    surrogate_io.save(surrogate, path, info)
    opt = TNAS(seed=0)
    opt.surrogate = surrogate_io.load(path)[0]
    values = torch.tensor([70.0, 72.0, 71.0, 10.0], dtype=torch.float64)
    assert torch.equal(opt.gp_targets(torch.arange(4), values), transform_observations(values, "robust"))


def _best_seen(queried, values, k: int, count: int) -> list:
    """The ``count`` best of the first ``k`` queried cells, best first (ties: the earlier query)."""
    return [queried[int(i)] for i in np.argsort(-np.asarray(values[:k]), kind="stable")[:count]]


def test_local_radius_keeps_bo_queries_next_to_the_best_cell_seen(nats_benchmark, surrogate_file):
    opt, problem = _run(nats_benchmark, "ImageNet16-120", 9, 0, surrogate=str(surrogate_file), initial_design=3,
                        finetune_steps=3, local_radius=1, local_centres=1)
    queried, values = problem.objective.queried, problem.objective.values
    for k in range(3, 9):
        assert queried[k] in nb201.neighbours(_best_seen(queried, values, k, 1)[0])
    # Unrestricted, the same surrogate's EI goes further afield at least once.
    _, free = _run(nats_benchmark, "ImageNet16-120", 9, 0, surrogate=str(surrogate_file), initial_design=3,
                   finetune_steps=3, local_radius=0)
    queried, values = free.objective.queried, free.objective.values
    best_so_far = [_best_seen(queried, values, k, 1)[0] for k in range(3, 9)]
    assert any(q not in {b, *nb201.neighbours(b)} for q, b in zip(queried[3:9], best_so_far))  # > 1 edge change


def test_by_default_bo_queries_stay_next_to_the_three_best_cells_seen(nats_benchmark, surrogate_file):
    _, problem = _run(nats_benchmark, "ImageNet16-120", 10, 0, surrogate=str(surrogate_file), finetune_steps=3)
    queried, values = problem.objective.queried, problem.objective.values
    for k in range(5, 10):  # every BO step after the five-cell initial design
        assert any(queried[k] in nb201.neighbours(b) for b in _best_seen(queried, values, k, 3))
    # gp-bo keeps scoring every cell (the trust region was validated for tnas only)
    assert GPBO.defaults["local_radius"] == 0 and TNAS.defaults["local_radius"] == 1


def test_a_used_up_neighbourhood_opens_every_cell_again(nats_benchmark, surrogate_file):
    opt, _ = _run(nats_benchmark, "cifar10", 4, 0, surrogate=str(surrogate_file), initial_design=3,
                  finetune_steps=0, local_radius=1, local_centres=2)
    index, values = opt.observed()
    centres = [opt.cells[int(i)] for i in index[torch.argsort(values, descending=True)[:2]]]
    near = set(centres).union(*(nb201.neighbours(c) for c in centres))

    local = torch.nonzero(opt.selectable()).flatten().tolist()
    assert local == [i for i, c in enumerate(opt.cells) if c in near and not opt.is_queried(c)]
    for i in local:  # query the whole neighbourhood, each worse than the centres
        opt.history.append((opt.cells[i], -1.0))
    assert int(opt.selectable().sum()) == len(opt.cells) - len(opt.history)


@pytest.mark.parametrize("name, value", [("local_radius", -1), ("local_centres", 0)])
def test_local_search_settings_are_bounded(nats_benchmark, surrogate_file, name, value):
    with pytest.raises(UserError, match=name):
        _run(nats_benchmark, "cifar10", 3, 0, surrogate=str(surrogate_file), **{name: value})


def test_fine_tuning_that_diverges_at_too_large_a_rate_is_one_line_naming_the_rate(nats_benchmark):
    # Adam at rate 1000 throws the kernel's hyper-parameters where its matrix has no Cholesky
    # factor; that was torch's LinAlgError traceback, saying nothing of the setting behind it
    with pytest.raises(UserError, match="fine-tuning the GP diverged after 1 steps at learning rate 1000"):
        run_blackbox_search(nats_benchmark, "gp-bo", "cifar10", budget=12, seed=0,
                            hyperparameters={"finetune_lr": 1000.0})


def test_fine_tuning_whose_last_step_diverges_is_the_same_one_line(nats_benchmark):
    # The state after the last Adam step was never factorised in the fine-tuning: one step at rate
    # 1000 left a kernel without a Cholesky factor, and the posterior ended in torch's LinAlgError
    with pytest.raises(UserError, match="fine-tuning the GP diverged after 1 steps at learning rate 1000"):
        run_blackbox_search(nats_benchmark, "gp-bo", "cifar10", budget=12, seed=0,
                            hyperparameters={"finetune_lr": 1000.0, "finetune_steps": 1})


def test_meta_train_overwrite_stopped_after_the_new_surrogate_leaves_no_old_result_beside_it(capsys, tmp_path,
                                                                                             nats_csv, monkeypatch):
    # the old result.json (seed 1's meta-training) stayed beside seed 2's surrogate when the
    # process stopped between writing the one and the other
    argv = ["meta-train", "--benchmark", str(nats_csv), "--datasets", "cifar100", "--iterations", "3",
            "--encoder-hidden", "8", "--out", str(tmp_path / "mt")]
    assert run_cli(capsys, *argv, "--seed", "1")[0] == 0
    assert run_cli_stopped_before_its_result(capsys, monkeypatch, *argv, "--seed", "2", "--overwrite") == 130
    assert surrogate_io.load(tmp_path / "mt")[1]["seed"] == 2 and not (tmp_path / "mt" / "result.json").exists()


def test_every_bo_step_fine_tunes_from_the_surrogate_files_state_on_the_copula_of_what_was_seen(
        nats_benchmark, surrogate_file, monkeypatch):
    """Each BO iteration starts its fine-tuning at the GP of the surrogate file (not at the last
    iteration's fit), takes exactly ``finetune_steps`` Adam steps (one marginal likelihood per step,
    and one to check the state it ends in), on targets that are the normal quantiles of the queried
    cells' mid-ranks among the observations alone: Phi^-1((r + 1) / (n + 1)) for the r-th lowest."""
    from scipy.stats import norm

    from naslib_bayes.optimizers import deep_kernel_bo
    from naslib_bayes.predictors.deep_kernel_gp import DeepKernelGP

    meta_learned = surrogate_io.load(surrogate_file)[0].gp.state_dict()
    fits, calls = [], []
    finetune, neg_mll = deep_kernel_bo.finetune_gp, DeepKernelGP.neg_mll

    def recording_finetune(surrogate, encodings, y, context, steps, lr, frozen=None):
        fits.append(({k: v.clone() for k, v in surrogate.gp.state_dict().items()}, y.clone(), steps, len(calls)))
        return finetune(surrogate, encodings, y, context, steps, lr, frozen)

    monkeypatch.setattr(deep_kernel_bo, "finetune_gp", recording_finetune)
    monkeypatch.setattr(DeepKernelGP, "neg_mll", lambda self, x, y: calls.append(1) or neg_mll(self, x, y))
    _, problem = _run(nats_benchmark, "cifar10", 8, 0, surrogate=str(surrogate_file), initial_design=5,
                      finetune_steps=4)
    assert len(fits) == 3
    ends = [start for *_, start in fits[1:]] + [len(calls)]
    for (state, y, steps, start), end in zip(fits, ends):
        assert steps == 4 and end - start == steps + 1
        assert state.keys() == meta_learned.keys()
        for name, value in meta_learned.items():
            assert torch.equal(state[name], value), name
        seen = np.asarray(problem.objective.values[: len(y)])
        ranks = np.argsort(np.argsort(seen))
        assert len(set(seen)) == len(seen)  # distinct: the closed form has no ties
        np.testing.assert_allclose(y.numpy(), norm.ppf((ranks + 1) / (len(seen) + 1)), rtol=0, atol=1e-12)
