"""Baseline black-box optimizers: budget accounting, no repeated queries, seeded behaviour, and
the algorithmic signature each one is named for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naslib_bayes.experiment import run_blackbox_search
from naslib_bayes.optimizers import registry
from naslib_bayes.optimizers.blackbox import BlackBoxProblem, Objective, run_black_box
from naslib_bayes.predictors.mlp_ensemble import MLPEnsemble, MLPEnsembleConfig
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.encodings import PATH_ENCODING_DIM, path_encoding, path_feature_index

#: Small BANANAS settings so that tests stay fast; the algorithm is unchanged.
FAST_BANANAS = {"epochs": 30, "k": 4, "num_candidates": 40}
SETTINGS = {"rs": {}, "re": {}, "ls": {}, "bananas": FAST_BANANAS}
#: The GP-based optimizers and the transfer baseline, with just enough fitting to run quickly.
MODEL_BASED = {"transfer-topk": {}, "gp-bo": {"finetune_steps": 3}, "tnas": {"meta_iterations": 3, "finetune_steps": 3}}


def run(benchmark, name, budget, seed, dataset="cifar10", **overrides):
    problem = BlackBoxProblem.from_benchmark(benchmark, dataset, "test_accuracy", budget)
    settings = {**SETTINGS, **MODEL_BASED}[name]
    optimizer = registry.create(name, kind=registry.BLACK_BOX, seed=seed, **{**settings, **overrides})
    run_black_box(optimizer, problem)
    return problem.objective


def hamming(a, b) -> int:
    return sum(x != y for x, y in zip(a, b))


def test_every_registered_black_box_optimizer_is_covered():
    assert set(SETTINGS) | set(MODEL_BASED) == set(registry.names(registry.BLACK_BOX))


@pytest.mark.parametrize("name", sorted(SETTINGS) + sorted(MODEL_BASED))
def test_budget_is_spent_exactly_on_distinct_cells(nats_benchmark, name):
    budget = 37  # not a multiple of any batch size or population
    objective = run(nats_benchmark, name, budget, seed=4)
    assert objective.num_queries == budget and objective.remaining == 0
    assert len(set(objective.queried)) == budget


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_same_seed_same_trajectory_other_seed_other_trajectory(nats_benchmark, name):
    first = run(nats_benchmark, name, 25, seed=1).queried
    assert run(nats_benchmark, name, 25, seed=1).queried == first
    assert run(nats_benchmark, name, 25, seed=2).queried != first


@pytest.mark.parametrize("name, overrides", [("re", {"population_size": 5, "sample_size": 2}),
                                             ("ls", {"num_init": 2}), ("ls", {"improvement": "first"})])
def test_long_searches_never_repeat_a_cell(nats_benchmark, name, overrides):
    # Small populations and many restarts exhaust neighbourhoods: the optimizers must walk on.
    objective = run(nats_benchmark, name, 400, seed=0, dataset="cifar100", **overrides)
    assert len(set(objective.queried)) == 400


def test_regularized_evolution_mutates_a_living_member(nats_benchmark):
    population = 8
    objective = run(nats_benchmark, "re", 60, seed=3, population_size=population, sample_size=3)
    queried = objective.queried
    # the first P queries fill the population with random cells, not mutants of earlier ones
    assert sum(any(hamming(queried[t], c) == 1 for c in queried[:t]) for t in range(population)) < population // 2
    for t in range(population, len(queried)):
        alive = queried[t - population : t]  # aging: the population is the last P queried
        assert any(hamming(queried[t], parent) == 1 for parent in alive), t


def test_regularized_evolution_tournament_draws_with_replacement(nats_benchmark):
    # Population 2, tournament 2: without replacement the better member would always be the
    # parent; drawn with replacement (Real et al., Algorithm 1) the worse one wins a quarter of them.
    objective = run(nats_benchmark, "re", 200, seed=0, population_size=2, sample_size=2)
    queried = objective.queried
    worse_parent = better_parent = 0
    for t in range(2, len(queried)):
        alive = sorted(queried[t - 2 : t], key=lambda c: nats_benchmark.query(c, "cifar10"))
        of_worse, of_better = (hamming(queried[t], member) == 1 for member in alive)
        worse_parent += of_worse and not of_better
        better_parent += of_better and not of_worse
    assert worse_parent + better_parent > 150
    assert 0.1 < worse_parent / (worse_parent + better_parent) < 0.4


@pytest.mark.parametrize("seed", range(20))
def test_regularized_evolution_finds_a_parents_last_unqueried_neighbour(nats_benchmark, seed):
    # 23 of the parent's 24 neighbours queried: 50 mutation draws miss the last one in about one
    # search of eight, which then took a random cell although a mutation was left.
    problem = BlackBoxProblem.from_benchmark(nats_benchmark, "cifar10", "test_accuracy", 30)
    optimizer = registry.create("re", kind=registry.BLACK_BOX, seed=seed, population_size=1, sample_size=1)
    optimizer.adapt_search_space(problem.space, dataset_api=problem)
    optimizer.new_epoch(0)  # the only member of the population: every tournament's winner
    parent = problem.objective.queried[0]
    *spent, last = nb201.neighbours(parent)
    for cell in spent:
        problem.objective(cell)
    optimizer.new_epoch(1)
    assert problem.objective.queried[-1] == last


def test_local_search_climbs_from_the_best_initial_cell(nats_benchmark):
    objective = run(nats_benchmark, "ls", 60, seed=5, num_init=10)
    initial = objective.queried[:10]
    centre = max(initial, key=lambda c: nats_benchmark.query(c, "cifar10"))
    fresh = [n for n in nb201.neighbours(centre) if n not in initial]
    # Best improvement: the whole unqueried neighbourhood is evaluated before any move.
    assert set(objective.queried[10 : 10 + len(fresh)]) == set(fresh)
    best_nbr = max(nb201.neighbours(centre), key=lambda c: nats_benchmark.query(c, "cifar10"))
    next_query = objective.queried[10 + len(fresh)]
    if nats_benchmark.query(best_nbr, "cifar10") > nats_benchmark.query(centre, "cifar10"):
        assert hamming(next_query, best_nbr) == 1  # moved to the best neighbour
    else:
        assert hamming(next_query, centre) > 0  # restarted


def replay_local_search(queried, value, num_init: int, improvement: str) -> int:
    """Check ``queried`` against the rules of local search, from the values alone; returns the
    number of restarts. After the initial design the centre is its best cell; each query is an
    unqueried neighbour of the centre, except right after a local optimum, when it is a restart
    cell that becomes the centre. "first" moves to a neighbour as soon as it beats the centre;
    once every neighbour is known the search climbs to the best one if it beats the centre, and
    otherwise restarts."""
    known = {c: value(c) for c in queried[:num_init]}
    centre = max(queried[:num_init], key=known.get)  # first of tied values
    restarts, restarting = 0, False
    for t in range(num_init, len(queried)):
        while not restarting and all(n in known for n in nb201.neighbours(centre)):
            best = max(nb201.neighbours(centre), key=known.get)
            if known[best] > known[centre]:
                centre = best
            else:
                restarting = True
        cell = queried[t]
        known[cell] = value(cell)
        if restarting:
            centre, restarting, restarts = cell, False, restarts + 1
            continue
        assert cell in nb201.neighbours(centre), t
        if improvement == "first" and known[cell] > known[centre]:
            centre = cell
    return restarts


@pytest.mark.parametrize("improvement", ["best", "first"])
def test_local_search_follows_its_rules_through_moves_and_restarts(nats_benchmark, improvement):
    objective = run(nats_benchmark, "ls", 300, seed=2, num_init=5, improvement=improvement)
    restarts = replay_local_search(objective.queried, lambda c: nats_benchmark.query(c, "cifar10"), 5, improvement)
    assert restarts >= 2  # the replay went through restarts and the climbs after them


@pytest.mark.parametrize("parents, mutations", [(1, 1), (2, 2)])
def test_bananas_queries_mutants_of_good_cells(nats_benchmark, parents, mutations):
    """Each batch of k = 4 is drawn from mutants (at most ``mutations`` edges changed) of the
    ``parents`` best cells queried before it (num_arches_to_mutate), not of any earlier cell."""
    objective = run(nats_benchmark, "bananas", 30, seed=0, num_init=10, max_mutations=mutations,
                    num_arches_to_mutate=parents)
    queried = objective.queried
    for start in range(10, len(queried), FAST_BANANAS["k"]):
        values = sorted((nats_benchmark.query(c, "cifar10") for c in queried[:start]), reverse=True)
        best = [c for c in queried[:start] if nats_benchmark.query(c, "cifar10") >= values[parents - 1]]  # ties kept
        for t in range(start, min(start + FAST_BANANAS["k"], len(queried))):
            assert min(hamming(queried[t], parent) for parent in best) <= mutations, t


def test_bananas_rejects_an_unknown_acquisition(nats_benchmark):
    with pytest.raises(ValueError, match="acq_fn_type"):
        run(nats_benchmark, "bananas", 12, seed=0, acq_fn_type="pi")


@pytest.mark.parametrize("acq", ["its", "ei"])
def test_bananas_beats_random_search_on_average(nats_benchmark, acq):
    def mean_regret(name, **overrides):
        best = nats_benchmark.best("cifar10")
        return np.mean([best - max(run(nats_benchmark, name, 40, seed=s, **overrides).values) for s in range(4)])

    assert mean_regret("bananas", acq_fn_type=acq) < mean_regret("rs")


@pytest.mark.parametrize("threads", [1, 3])
def test_bananas_fits_its_ensemble_on_its_own_thread_count_and_gives_the_caller_its_own_back(
        nats_benchmark, monkeypatch, threads):
    """The thread count changes float reductions: a standalone search (torch's default, all cores)
    and a comparison's worker (one thread) must fit the same seed's ensemble alike."""
    import torch

    seen = []
    fit = MLPEnsemble.fit
    monkeypatch.setattr(MLPEnsemble, "fit", lambda self, *a: (seen.append(torch.get_num_threads()), fit(self, *a))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run(nats_benchmark, "bananas", 18, seed=0, **({} if threads == 1 else {"threads": threads}))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [threads, threads]  # fits after the 10 random cells and after 4 more


def test_bananas_acquisitions_are_a_thompson_draw_and_the_expected_improvement():
    from naslib_bayes.optimizers.bananas import Bananas

    its = Bananas(seed=0)
    mean, std = np.full(20000, 3.0), np.full(20000, 2.0)
    draws = its._acquisition(mean, std, best=0.0)
    # one draw from N(mean, std^2) per candidate: sample mean 3 and sd 2 (standard errors 0.014, 0.01)
    assert abs(draws.mean() - 3.0) < 0.06 and abs(draws.std() - 2.0) < 0.04
    assert np.array_equal(its._acquisition(mean[:5], np.zeros(5), best=0.0), mean[:5])  # no spread: the mean
    ei = Bananas(seed=0, acq_fn_type="ei")
    mean, std = np.array([0.5, 1.5, -1.0, 4.0]), np.array([0.5, 1.0, 0.3, 2.0])
    z = np.linspace(-12, 12, 200001)
    density = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    integral = [np.trapezoid(np.maximum(m + s * z - 1.0, 0.0) * density, z) for m, s in zip(mean, std)]
    np.testing.assert_allclose(ei._acquisition(mean, std, best=1.0), integral, rtol=0, atol=1e-8)


def test_mlp_ensemble_predictions_follow_an_affine_change_of_the_targets():
    """Members are trained on standardised targets, so rescaled and shifted targets give the same
    fit, rescaled and shifted."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.random((40, 6)).astype(np.float32)
    y = x @ np.arange(1, 7) + rng.normal(scale=0.3, size=40)
    config = MLPEnsembleConfig(num_layers=3, width=16, epochs=40)
    base = MLPEnsemble(config, torch.Generator().manual_seed(0)).fit(x, y).predict(x)
    scaled = MLPEnsemble(config, torch.Generator().manual_seed(0)).fit(x, 250.0 * y - 40.0).predict(x)
    np.testing.assert_allclose(scaled, 250.0 * base - 40.0, rtol=1e-5, atol=1e-3)


def test_path_encoding_counts_live_paths():
    conv = nb201.OPS.index("nor_conv_3x3")
    all_conv = path_encoding((conv,) * 6)
    assert all_conv.shape == (PATH_ENCODING_DIM,) == (84,)
    expected = {path_feature_index([conv] * n) for n in (1, 2, 3)}
    assert set(np.flatnonzero(all_conv)) == expected
    assert not path_encoding((nb201.NONE,) * 6).any()
    # 'none' on edge 0->3 removes exactly the length-1 path.
    cell = (conv, conv, conv, nb201.NONE, conv, conv)
    assert set(np.flatnonzero(path_encoding(cell))) == expected - {path_feature_index([conv])}


def test_path_feature_indices_are_a_bijection():
    ops = [op for op in range(nb201.NUM_OPS) if op != nb201.NONE]
    indices = [path_feature_index([ops[i] for i in positions])
               for n in (1, 2, 3) for positions in np.ndindex(*(len(ops),) * n)]
    assert sorted(indices) == list(range(PATH_ENCODING_DIM))


def test_mlp_ensemble_learns_and_disagrees_off_data():
    rng = np.random.default_rng(0)
    x = rng.random((80, 6)).astype(np.float32)
    y = x @ np.arange(1, 7) + 3.0
    config = MLPEnsembleConfig(num_layers=3, width=16, epochs=150)
    import torch

    model = MLPEnsemble(config, torch.Generator().manual_seed(0)).fit(x, y)
    test = rng.random((50, 6)).astype(np.float32)
    pred = model.predict(test)
    assert pred.shape == (config.num_members, 50)
    assert np.corrcoef(pred.mean(0), test @ np.arange(1, 7))[0, 1] > 0.9
    assert pred.std(0).mean() > 0  # members differ: the ensemble has an uncertainty
    again = MLPEnsemble(config, torch.Generator().manual_seed(0)).fit(x, y).predict(test)
    np.testing.assert_array_equal(pred, again)


def test_results_record_report_regret_inputs(nats_benchmark):
    result = run_blackbox_search(nats_benchmark, "re", "cifar100", budget=30, seed=0)
    assert result["report_optimum"] == nats_benchmark.best("cifar100")
    running = np.maximum.accumulate([q["accuracy"] for q in result["trajectory"]])
    np.testing.assert_allclose(result["incumbent_report_accuracy"], running)  # search = report metric here


class FirstQueriesWithoutValue(Objective):
    """The first ``missing`` queries return no value, as cells a partial file lacks do."""

    def __init__(self, *args, missing: int):
        super().__init__(*args)
        self.missing = missing

    def _lookup(self, cell):
        return float("nan") if self.num_queries < self.missing else super()._lookup(cell)


def test_bananas_draws_at_random_until_it_has_a_value_to_fit(nats_benchmark):
    objective = FirstQueriesWithoutValue(nats_benchmark, "cifar10", "test_accuracy", 12, missing=6)
    optimizer = registry.create("bananas", kind=registry.BLACK_BOX, seed=0,
                                **{**FAST_BANANAS, "epochs": 5, "num_init": 3, "k": 2, "num_candidates": 10})
    run_black_box(optimizer, BlackBoxProblem(objective))
    assert objective.num_queries == 12
    assert optimizer.num_fits == 3  # after query 7, the first with a value: batches of 2 for queries 8-12
    assert optimizer.get_final_architecture() in objective.queried[6:]


BASELINES_DOC = Path(__file__).resolve().parent.parent / "docs" / "baselines.md"


def doc_section(text: str, name: str) -> str:
    """The part of docs/baselines.md under the heading of baseline ``name`` (up to the next heading)."""
    start = text.index(f"## `{name}`:")
    end = text.find("\n#", start + 1)
    return text[start:] if end < 0 else text[start:end]


@pytest.mark.parametrize("name, kind", [("rs", registry.BLACK_BOX), ("re", registry.BLACK_BOX),
                                        ("ls", registry.BLACK_BOX), ("bananas", registry.BLACK_BOX),
                                        ("darts", registry.ONE_SHOT)])
def test_baselines_doc_states_every_default_of_each_baseline(name, kind):
    # A researcher reads the defaults (and NASLib's values beside them) there; a default changed
    # in the code but not in the page would misstate what a comparison ran.
    section = doc_section(BASELINES_DOC.read_text(), name)
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for setting, value in registry.create(name, kind=kind, seed=0).config.items():
        row = next((r for r in rows if f"`{setting}`" in r.split(" | ")[0]), None)
        assert row is not None, f"{name}: no row for {setting}"
        assert f"`{value!r}`" in row.split(" | ")[1], f"{name}: {setting} is {value!r}, the page says {row}"
