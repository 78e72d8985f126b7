"""Black-box search: query accounting, random search, and the result it writes."""

from __future__ import annotations

import json

import jsonschema
import pytest

from naslib_bayes import results
from naslib_bayes.experiment import run_blackbox_search
from naslib_bayes.optimizers.blackbox import BlackBoxProblem, BudgetExhausted, DuplicateQuery, Objective
from naslib_bayes.search_spaces.nasbench201 import cell as nb201


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


def test_schema_rejects_a_broken_result(nats_benchmark):
    result = run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=3, seed=0)
    schema = results.load_schema()
    for key, bad in [("final_architecture_op_indices", [0, 1]), ("schema_version", "0.9"), ("seed", "zero")]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**result, key: bad}, schema)
    del result["versions"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(result, schema)


def test_unknown_hyperparameter_is_named(nats_benchmark):
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match="'population'"):
        run_blackbox_search(nats_benchmark, "rs", "cifar10", budget=3, seed=0, hyperparameters={"population": 3})
