"""Black-box search: query accounting, random search, and the result it writes."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest

from naslib_bayes import results
from naslib_bayes.errors import UserError
from naslib_bayes.experiment import run_blackbox_search
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import (BlackBoxOptimizer, BlackBoxProblem, BudgetExhausted, DuplicateQuery,
                                              NoValueQueried, Objective, run_black_box)
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark
from partial_benchmark import write_partial_csv
from strict_objective import StrictObjective


def test_objective_counts_and_forbids_duplicates(nats_benchmark):
    objective = Objective(nats_benchmark, "cifar10", "test_accuracy", budget=2)
    a, b, c = (1,) * 6, (3,) * 6, (2,) * 6
    assert objective(a) == nats_benchmark.query(a, "cifar10")
    with pytest.raises(DuplicateQuery):
        objective(a)
    objective(b)
    with pytest.raises(BudgetExhausted):
        objective(c)
    assert objective.queried == [a, b] and objective.remaining == 0
    best = max((a, b), key=lambda x: nats_benchmark.query(x, "cifar10"))
    assert objective.incumbent()[0] == best


def test_trajectory_tracks_the_incumbent(nats_benchmark):
    objective = Objective(nats_benchmark, "cifar100", "test_accuracy", budget=3)
    for cell in [(3,) * 6, (0,) * 6, (1,) * 6]:
        objective(cell)
    traj = objective.trajectory()
    assert [t["architecture"] for t in traj] == [nb201.to_string(c) for c in objective.queried]
    running = [max(objective.values[: i + 1]) for i in range(3)]
    assert [t["incumbent_accuracy"] for t in traj] == pytest.approx(running)


def test_the_incumbent_is_the_first_of_tied_cells(nats_benchmark):
    """The two best cifar10 cells share 94.37: whichever is queried first stays the incumbent."""
    first = nb201.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")
    second = nb201.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    assert nats_benchmark.query(first, "cifar10") == nats_benchmark.query(second, "cifar10")
    for order in ((first, second), (second, first)):
        objective = Objective(nats_benchmark, "cifar10", "test_accuracy", budget=3)
        for cell in ((0,) * 6, *order):
            objective(cell)
        assert objective.incumbent() == (order[0], nats_benchmark.query(first, "cifar10"))


def test_problem_source_excludes_target(nats_benchmark):
    problem = BlackBoxProblem.from_benchmark(nats_benchmark, "cifar100", "test_accuracy", 5)
    assert problem.source.datasets == ("cifar10", "ImageNet16-120")


@pytest.mark.parametrize("seed", [0, 1])
def test_random_search_spends_the_budget_on_distinct_cells(nats_benchmark, seed):
    result = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=60, seed=seed)
    archs = [t["architecture"] for t in result["trajectory"]]
    assert len(archs) == 60 == len(set(archs))
    again = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=60, seed=seed)
    assert [t["architecture"] for t in again["trajectory"]] == archs
    other = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=60, seed=seed + 10)
    assert [t["architecture"] for t in other["trajectory"]] != archs


def test_result_validates_and_reports_the_incumbent(nats_benchmark, tmp_path):
    result = run_blackbox_search(nats_benchmark, "rs", "ImageNet16-120", budget=20, seed=3)
    path = results.write_result(tmp_path, result)
    loaded = json.loads(path.read_text())
    jsonschema.validate(loaded, results.load_schema())
    final = loaded["final_architecture"]
    assert nb201.to_string(loaded["final_architecture_op_indices"]) == final
    assert loaded["trajectory"][-1]["incumbent_accuracy"] == nats_benchmark.query(final, "ImageNet16-120")
    assert loaded["benchmark_accuracy"]["cifar10"] == nats_benchmark.query(final, "cifar10")
    assert loaded["search_metric"] == loaded["report_metric"] == "test_accuracy"
    assert any("test accuracy" in note for note in loaded["notes"])


def test_a_numpy_seed_and_budget_search_as_python_ints_and_the_result_writes(nats_benchmark, tmp_path):
    plain = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=5, seed=3)
    given = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=np.int64(5), seed=np.int64(3))
    assert given["trajectory"] == plain["trajectory"]
    loaded = json.loads(results.write_result(tmp_path, given).read_text())  # json refuses numpy integers
    assert (loaded["seed"], loaded["budget"]) == (3, 5)
    jsonschema.validate(loaded, results.load_schema())
    with pytest.raises(UserError, match="budget must be a whole number, got 5.5"):
        run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=5.5, seed=3)  # not 5 queries recorded as 5.5

def test_schema_rejects_a_broken_result(nats_benchmark):
    result = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=3, seed=0)
    schema = results.load_schema()
    for key, bad in [("final_architecture_op_indices", [0, 1]), ("schema_version", "0.9"), ("seed", "zero")]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**result, key: bad}, schema)
    for key in results.new_result("search"):  # every common key is required (null where a command has none)
        with pytest.raises(jsonschema.ValidationError, match=f"'{key}' is a required property"):
            jsonschema.validate({k: v for k, v in result.items() if k != key}, schema)


@pytest.mark.parametrize("key, bad", [
    ("budget", 0), ("wall_time_s", -0.5), ("final_architecture_op_indices", [0, 1, 2, 3, 4, 5]),
    ("final_architecture_op_indices", [0, 1, 2, 3, 4, 0, 1]), ("final_architecture", 7), ("command", None),
    ("benchmark_accuracy", {"cifar10": "93.1"}), ("config", None), ("trajectory", [{"architecture": "x"}]),
    ("trajectory", [{"architecture": 3, "accuracy": 1.0, "incumbent_accuracy": 1.0}]),
    ("accuracy_compressed", 100.5), ("params_after", -1), ("notes", ["fine", 3]),
    ("meta_metrics", {"cifar100": 3}), ("surrogate", {"meta_metrics": ["test_accuracy"]}),
])
def test_schema_rejects_a_field_out_of_its_range(nats_benchmark, key, bad):
    # budgets count queries (at least one), op indices are 6 edges of 5 operations, accuracies are percent
    result = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=2, seed=0)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**result, key: bad}, results.load_schema())


def test_unknown_hyperparameter_is_named(nats_benchmark):
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match="'population'"):
        run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=3, seed=0, hyperparameters={"population": 3})


# ---- partial benchmarks: files with values for some cells only ---------------------------------
@pytest.fixture
def partial(tmp_path):
    """A benchmark with values for 40 of the 15,625 cells."""
    return load_benchmark(write_partial_csv(tmp_path / "partial.csv", 40))


def test_a_partial_benchmark_is_warned_about_and_noted(partial):
    warnings = []
    result = run_blackbox_search(partial, "rs", "cifar10", budget=10, seed=0, warn=warnings.append)
    expected = "partial.csv has cifar10 test_accuracy for 40 of 15,625 cells: random and model-based picks take cells with a value"
    assert sum(expected in w for w in warnings) == 1
    assert any(expected in note for note in result["notes"])


@pytest.mark.parametrize("name", ["rs", "re", "ls", "bananas"])
def test_random_draws_pick_cells_with_a_value(partial, name):
    hp = {"bananas": {"epochs": 5, "k": 2, "num_candidates": 10, "num_init": 5}}.get(name, {})
    problem = BlackBoxProblem.from_benchmark(partial, "cifar10", "test_accuracy", 12)
    opt = run_black_box(registry.create(name, kind=registry.BLACK_BOX, seed=3, **hp), problem)
    domain = set(problem.objective.domain)
    assert len(domain) == 40
    initial = {"rs": 12, "re": 12, "ls": 10, "bananas": 5}[name]  # queries drawn at random
    assert all(cell in domain for cell in problem.objective.queried[:initial])
    assert opt.get_final_architecture() in domain


def test_gp_bo_initial_design_and_steps_pick_cells_with_a_value(partial):
    problem = BlackBoxProblem.from_benchmark(partial, "cifar10", "test_accuracy", 7)
    run_black_box(registry.create("gp-bo", kind=registry.BLACK_BOX, seed=0, initial_design=4, finetune_steps=2), problem)
    assert all(math.isfinite(v) for v in problem.objective.values)


def test_transfer_topk_queries_cells_with_a_target_value_first(tmp_path):
    bench = load_benchmark(write_partial_csv(tmp_path / "c10-sample.csv", 30, every=7, cifar100_everywhere=True))
    assert bench.count_values("cifar10", "test_accuracy") == 30 and bench.is_complete("cifar100", "test_accuracy")
    result = run_blackbox_search(bench, "transfer-topk", "cifar10", budget=30, seed=0)
    assert all(step["accuracy"] is not None for step in result["trajectory"])


@pytest.mark.parametrize("name", ["rs", "transfer-topk", "gp-bo"])
def test_a_budget_beyond_the_cells_with_a_value_is_refused_where_only_they_are_picked(partial, name):
    with pytest.raises(UserError) as info:
        run_blackbox_search(partial, name, "cifar10", budget=41, seed=0)
    message = str(info.value)
    assert "partial.csv has cifar10 test_accuracy for 40 of 15,625 cells" in message
    assert "a budget of 41 queries exceeds them" in message


def test_mutation_based_searches_go_on_past_the_cells_with_a_value(partial):
    result = run_blackbox_search(partial, "re", "cifar10", budget=60, seed=0, hyperparameters={"population_size": 5})
    archs = [step["architecture"] for step in result["trajectory"]]
    assert len(set(archs)) == 60
    assert sum(step["accuracy"] is not None for step in result["trajectory"]) <= 40


@pytest.mark.parametrize("name", ["rs", "re", "ls", "bananas", "transfer-topk", "gp-bo"])
def test_drawing_from_the_domain_reads_no_unqueried_value(partial, name):
    hp = {"bananas": {"epochs": 5, "k": 2, "num_candidates": 10, "num_init": 4},
          "gp-bo": {"initial_design": 4, "finetune_steps": 2}}.get(name, {})
    # The domain (which cells have a value) is computed before the guard; values are then read
    # one query at a time.
    problem = BlackBoxProblem(StrictObjective(partial, "cifar10", "test_accuracy", 8), source=partial.without("cifar10"))
    run_black_box(registry.create(name, kind=registry.BLACK_BOX, seed=1, **hp), problem)
    assert problem.objective.num_queries == 8


class OutsideTheDomain(BlackBoxOptimizer):
    """Queries only cells the benchmark has no value for."""

    def propose(self):
        domain = set(self.problem.objective.domain)
        return next(c for c in nb201.all_cells() if c not in domain and not self.is_queried(c))


def test_a_search_that_found_no_value_ends_with_one_line(partial, monkeypatch):
    monkeypatch.setattr(registry, "create", lambda *args, **kwargs: OutsideTheDomain(seed=0))
    with pytest.raises(NoValueQueried) as info:
        run_blackbox_search(partial, "rs", "cifar10", budget=5, seed=0)
    assert isinstance(info.value, UserError)
    assert str(info.value) == (f"none of the 5 cells queried has a cifar10 test_accuracy value in {partial.source}: "
                               "the search found no incumbent")


def test_a_budget_beyond_the_search_space_is_refused(nats_benchmark):
    with pytest.raises(UserError, match="a budget of 15626 queries exceeds the 15,625 cells of the search space"):
        Objective(nats_benchmark, "cifar10", "test_accuracy", budget=15626)


def test_random_draws_run_out_with_an_error_not_a_hang(partial):
    problem = BlackBoxProblem.from_benchmark(partial, "cifar10", "test_accuracy", 3)
    opt = registry.create("rs", kind=registry.BLACK_BOX, seed=0)
    opt.adapt_search_space(problem.space, dataset_api=problem)
    with pytest.raises(RuntimeError, match="every cell of the search space is queried or excluded"):
        opt.random_unqueried(exclude=set(nb201.all_cells()))
    outside = opt.random_unqueried(exclude=set(problem.objective.domain))  # the domain spent: any other cell
    assert outside not in set(problem.objective.domain)


def test_random_search_on_a_complete_benchmark_draws_as_before(nats_benchmark):
    # Recorded before partial benchmarks were handled: complete ones must keep their trajectories.
    result = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=3, seed=0)
    assert [step["architecture"] for step in result["trajectory"]] == [
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|skip_connect~2|",
        "|avg_pool_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
    ]


@pytest.mark.parametrize("seed, shown", [(-1, "-1"), (1.5, "1.5"), (2 ** 32, "4294967296")])
def test_an_optimizer_built_from_python_refuses_a_seed_numpy_cannot_take(seed, shown):
    # numpy's ValueError named no seed, and 1.5 silently ran seed 1
    with pytest.raises(UserError, match=rf"seed must be an integer from 0 to 4294967295, got {shown}$"):
        registry.create("rs", seed=seed)


def test_an_optimizer_takes_a_numpy_integer_seed_as_that_seed():
    assert registry.create("rs", seed=np.int64(7)).seed == 7


def test_schema_says_which_order_the_op_indices_are_in():
    """final_architecture_op_indices are naslib-bayes's (benchmark-string order), not NASLib's
    ``get_hash()``: the schema names the order, and names it as the code has it."""
    description = results.load_schema()["properties"]["final_architecture_op_indices"]["description"]
    assert ", ".join(nb201.OPS) in description
    assert ", ".join(f"{target}<-{source}" for source, target in nb201.EDGES) in description
    assert "get_hash" in description
