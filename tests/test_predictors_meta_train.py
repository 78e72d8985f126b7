"""Meta-training pieces: the REPTILE update, the output transform, the held-out split."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from naslib_bayes.predictors import meta_train as mt
from naslib_bayes.predictors.surrogate import SurrogateConfig, TNASSurrogate


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split(nats_benchmark):
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])[0]
    return mt._split(0, data, 0.1, "copula", np.random.default_rng(0))


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("outer_step", [0.0, 0.5, 1.0])
def test_reptile_moves_theta_the_outer_step_towards_the_inner_result(split, outer_step):
    task = [(split, split.train[:40])]
    config = mt.MetaTrainConfig(outer="reptile", inner_steps=3, outer_step=outer_step)
    model = TNASSurrogate(SurrogateConfig(meta_datasets=("cifar100",)), generator=torch.Generator().manual_seed(0))
    inner = copy.deepcopy(model)
    start = _params(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    mt._reptile_step(model, opt, task, config, torch.Generator())
    # theta' from the same start, the same Adam and the same task, without the outer update
    mt._adam_steps(inner, torch.optim.Adam(inner.parameters(), lr=0.01), task, 3, torch.Generator(), config.clip_norm)
    moved = False
    for p, p0, p_inner in zip(model.parameters(), start, inner.parameters()):
        assert torch.allclose(p, p0 + outer_step * (p_inner - p0), atol=1e-10)
        moved |= not torch.equal(p_inner, p0)
    assert moved


def test_copula_is_monotone_symmetric_and_ties_share_a_value():
    reference = np.array([1.0, 2.0, 2.0, 3.0, 10.0, 50.0])
    z = mt.copula(reference, reference)
    assert np.all(np.diff(z[[0, 1, 3, 4, 5]]) > 0) and z[1] == z[2]
    assert z[0] == pytest.approx(-z[-1])
    # Values outside the reference (a BO observation better than all seen) stay finite, beyond the ends.
    low, high = mt.copula(np.array([-5.0, 99.0]), reference)
    assert np.isfinite([low, high]).all() and low < z[0] and high > z[-1]


def test_held_out_cells_never_reach_tasks_or_evidence(split):
    assert len(np.intersect1d(split.train, split.held_out)) == 0
    assert len(split.held_out) == pytest.approx(0.1 * 15625, abs=1)
    rng = np.random.default_rng(1)
    config = mt.MetaTrainConfig(evidence_top=50, evidence_random=30)
    for _ in range(20):
        task = mt._sample_task(split, config, rng)
        assert 20 <= len(task) <= 100 and np.isin(task, split.train).all()
    evidence = mt._select_evidence([split], config, rng)
    index = {tuple(c): i for i, c in enumerate(split.data.cells.tolist())}
    rows = np.array([index[tuple(c)] for c in evidence.cells.tolist()])
    assert len(rows) == 80 and np.isin(rows, split.train).all()
    best_train = split.train[np.argsort(-split.data.values[split.train])[:50]]
    assert set(best_train) <= set(rows)
