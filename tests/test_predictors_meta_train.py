"""Meta-training pieces: the REPTILE update, the output transform, the held-out split."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from naslib_bayes.predictors import meta_train as mt
from naslib_bayes.predictors.surrogate import SurrogateConfig, TNASSurrogate



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
    from scipy.stats import norm

    reference = np.array([1.0, 2.0, 2.0, 3.0, 10.0, 50.0])
    z = mt.copula(reference, reference)
    assert np.all(np.diff(z[[0, 1, 3, 4, 5]]) > 0) and z[1] == z[2]
    assert z[0] == pytest.approx(-z[-1])
    # by hand: the normal quantile of the mid-rank over n + 1 = 7; the tied 2s share rank 2.5
    assert np.allclose(z, norm.ppf(np.array([1.0, 2.5, 2.5, 4.0, 5.0, 6.0]) / 7), rtol=0, atol=1e-12)
    # Values outside the reference (a BO observation better than all seen) stay finite, beyond the
    # ends: half a rank below the first and above the last. A value between two reference values
    # (2.5) takes the rank between theirs.
    low, high, between = mt.copula(np.array([-5.0, 99.0, 2.5]), reference)
    assert np.isfinite([low, high]).all() and low < z[0] and high > z[-1]
    assert np.allclose([low, high, between], norm.ppf(np.array([0.5, 6.5, 3.5]) / 7), rtol=0, atol=1e-12)


def test_robust_clips_degenerate_cells_and_keeps_the_top_spaced_by_accuracy():
    # 100 ordinary cells around 90 (IQR 2.0 -> scale 2.0 / 1.349) and three degenerate ones.
    rng = np.random.default_rng(0)
    ordinary = np.sort(90.0 + rng.uniform(-2.0, 2.0, size=100))
    reference = np.concatenate([[1.0, 5.0, 10.0], ordinary])
    z = mt.robust_standardise(reference, reference)
    q1, median, q3 = np.percentile(reference, [25, 50, 75])
    scale = (q3 - q1) / 1.349
    # the degenerate cells all sit at the clip, not tens of scales below
    assert np.all(z[:3] == mt.ROBUST_CLIP) and mt.ROBUST_CLIP == -3.0
    # above the clip: affine in accuracy, so order kept and gaps proportional to accuracy gaps
    assert np.allclose(z[3:], (ordinary - median) / scale)
    assert np.all(np.diff(z[3:]) >= 0)
    top = ordinary[-3:]
    gaps_z, gaps_acc = np.diff(mt.robust_standardise(top, reference)), np.diff(top)
    assert np.allclose(gaps_z / gaps_acc, 1.0 / scale)
    # unlike the copula, one far-away best cell stays far: 0.5 pp more is 0.5 / scale more
    best = mt.robust_standardise(np.array([ordinary[-1] + 0.5]), reference)[0]
    assert best - z[-1] == pytest.approx(0.5 / scale)
    # a custom clip, and a constant reference (IQR and std zero) falls back to scale 1
    assert mt.robust_standardise(np.array([0.0]), reference, clip=-10.0)[0] == -10.0
    assert np.allclose(mt.robust_standardise(np.array([3.0, 4.0]), np.array([3.0, 3.0, 3.0])), [0.0, 1.0])


def test_robust_split_uses_training_cells_only(nats_benchmark):
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar10"])[0]
    split = mt._split(0, data, 0.1, "robust", np.random.default_rng(0))
    values = split.in_gp_units(split.held_out).numpy()
    expected = mt.robust_standardise(data.values[split.held_out], data.values[split.train])
    assert np.allclose(values, expected) and values.min() == mt.ROBUST_CLIP
    # cifar10 has degenerate cells (10% accuracy): unclipped they would sit ~20 scales below the median
    assert mt.robust_standardise(data.values[split.train], data.values[split.train], clip=-np.inf).min() < -20


@pytest.mark.parametrize("name", ["robustt", "rank", ""])
def test_unknown_output_transform_is_a_user_error_naming_it(name):
    from naslib_bayes.errors import UserError
    from naslib_bayes.predictors.target_fit import transform_observations

    message = f"^output_transform {name!r}: expected one of standardise, copula, robust$"
    with pytest.raises(UserError, match=message):
        mt.MetaTrainConfig(output_transform=name)
    with pytest.raises(UserError, match=message):
        transform_observations(torch.tensor([1.0, 2.0]), name)
    with pytest.raises(UserError, match=message):
        SurrogateConfig(output_transform=name)
    mt.MetaTrainConfig(output_transform="robust")  # accepted


@pytest.mark.parametrize("make, message", [
    (lambda: mt.MetaTrainConfig(outer="maml"), "outer 'maml': expected one of reptile, joint"),
    (lambda: SurrogateConfig(dataset_encoder="pixels"), "dataset_encoder 'pixels': expected one of off, learned, images"),
])
def test_an_unknown_variant_is_named_as_the_setting_it_is_given_by(make, message):
    """One wording for every choice, as the optimizers' hyper-parameters say it."""
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match=f"^{message}$"):
        make()


@pytest.mark.parametrize("field, value", [("lr", -1.0), ("lr", 0.0), ("outer_step", -0.5),
                                          ("iterations", 0), ("inner_steps", 0)])
def test_a_meta_training_setting_out_of_range_is_a_user_error_naming_it(field, value):
    """A negative learning rate was a traceback from Adam; no steps or a zero rate trained nothing,
    a negative REPTILE step away from the tasks, without a word."""
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match=f"{field}={value!r}"):
        mt.MetaTrainConfig(**{field: value})


def test_robust_observations_use_their_own_statistics():
    from naslib_bayes.predictors.target_fit import transform_observations

    values = torch.tensor([70.0, 71.0, 72.0, 73.0, 74.0, 5.0], dtype=torch.float64)
    y = transform_observations(values, "robust")
    expected = mt.robust_standardise(values.numpy(), values.numpy())
    assert torch.allclose(y, torch.as_tensor(expected)) and float(y[-1]) == mt.ROBUST_CLIP
    assert torch.all(torch.diff(y[:5]) > 0)
    assert float(transform_observations(torch.tensor([71.0], dtype=torch.float64), "robust")[0]) == 0.0


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



def test_every_evidence_cell_carries_every_datasets_value(nats_benchmark):
    """A cell chosen by one dataset (its best, or at random) enters with the other's value too.

    Otherwise a cell among CIFAR-10's best that CIFAR-100 did not draw would be seen with its
    CIFAR-10 value alone, and the prior would favour cells good on one dataset.
    """
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar10", "cifar100"])
    rng = np.random.default_rng(0)
    splits = [mt._split(i, d, 0.1, "copula", rng) for i, d in enumerate(data)]
    config = mt.MetaTrainConfig(evidence_top=50, evidence_random=30)
    evidence = mt._select_evidence(splits, config, rng)
    rows = {}
    for cell, value, owner in zip(evidence.cells.tolist(), evidence.values.tolist(), evidence.dataset.tolist()):
        assert (tuple(cell), owner) not in rows  # each (cell, dataset) once
        rows[tuple(cell), owner] = value
    for split in splits:
        index = {tuple(c): i for i, c in enumerate(split.data.cells.tolist())}
        train = set(split.train.tolist())
        best = split.train[np.argsort(-split.data.values[split.train])[:50]]
        for other in splits:
            # every cell the other dataset chose is here with this dataset's own value, where it trains on it
            chosen_by_other = {cell for cell, owner in rows if owner == other.index}
            for cell in chosen_by_other:
                if index[cell] in train:
                    expected = float(split.in_gp_units(np.array([index[cell]]))[0])
                    assert rows[cell, split.index] == pytest.approx(expected)
        # and its own best cells are all there
        assert all((tuple(split.data.cells[i].tolist()), split.index) in rows for i in best)
    # the two datasets disagree about their best cells, so the union is larger than either choice
    per_dataset = [sum(1 for _, owner in rows if owner == s.index) for s in splits]
    assert min(per_dataset) > 80


@pytest.mark.parametrize("iterations", [30, 70])
def test_the_last_iteration_is_validated_even_off_the_validation_grid(nats_benchmark, iterations):
    """Validation runs every ``eval_every`` iterations; the final weights must still be able to win."""
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(iterations=iterations, eval_every=50)
    _, log = mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=0)
    assert [h["iteration"] for h in log.history] == sorted({*range(50, iterations + 1, 50), iterations})
    # from random weights, validation improves over these few steps: the last weights are kept
    assert log.best_iteration == iterations
    assert log.best_val_loss == log.history[-1]["val_loss"]


DIVERGED = r"meta-training diverged \({}\) in iteration {}, at learning rate {}: run again with a lower " \
           r"learning rate \(meta-train --lr, or TNAS's meta_lr\)"
SMALL_TASKS = {"task_size": (20, 30), "val_tasks": 1, "val_support": 20, "val_query": 30}


def test_training_steps_all_nan_since_a_validation_stop_meta_training_naming_the_iteration_and_rate(
        nats_benchmark, monkeypatch):
    """Every step skipped as NaN: meta-training returned its initial weights without a word."""
    from naslib_bayes.errors import UserError

    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    monkeypatch.setattr(mt, "batch_loss", lambda *args: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(UserError, match="^" + DIVERGED.format("training loss nan", 2, "0.01") + "$"):
        mt.meta_train(data, SurrogateConfig(encoder_hidden=8), mt.MetaTrainConfig(iterations=4, eval_every=2), seed=0)


def test_one_broken_down_task_is_skipped_and_logged_without_nan(nats_benchmark, monkeypatch):
    """A single task whose kernel matrix breaks down (a NaN loss) is no divergence: its step is
    skipped, meta-training goes on, and the log, which goes to result.json (no NaN), says None."""
    import json

    real, calls = mt.batch_loss, []

    def nan_on_the_second_step(*args):
        calls.append(1)
        return torch.tensor(float("nan"), requires_grad=True) if len(calls) == 2 else real(*args)

    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    monkeypatch.setattr(mt, "batch_loss", nan_on_the_second_step)
    _, log = mt.meta_train(data, SurrogateConfig(encoder_hidden=8),
                           mt.MetaTrainConfig(iterations=4, eval_every=2, **SMALL_TASKS), seed=0)
    assert log.iterations == 4 and [h["iteration"] for h in log.history] == [2, 4]
    assert log.history[0]["train_loss"] is None and math.isfinite(log.history[1]["train_loss"])
    json.dumps(log.to_dict(), allow_nan=False)


def test_a_nan_validation_loss_stops_meta_training_at_its_iteration(nats_benchmark, monkeypatch):
    """NaN was never an improvement: training ran on to its patience and kept the last good weights."""
    from naslib_bayes.errors import UserError

    losses = iter([5.0, 4.0, float("nan")])
    monkeypatch.setattr(mt, "validation_loss", lambda *args: next(losses))
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(iterations=10, eval_every=2, **SMALL_TASKS)
    with pytest.raises(UserError, match="^" + DIVERGED.format("validation loss nan", 4, "0.01") + "$"):
        mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=0)


def test_a_learning_rate_that_diverges_is_one_error_naming_it(nats_benchmark):
    """The weights blow up until a task's kernel matrix breaks down, which was a LinAlgError traceback."""
    from naslib_bayes.errors import UserError

    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(iterations=20, eval_every=5, lr=1000.0, **SMALL_TASKS)
    with pytest.raises(UserError, match="^" + DIVERGED.format("kernel matrix is not positive definite.*", r"\d+", "1000")):
        mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=0)


def test_a_numpy_integer_seed_meta_trains_as_the_same_python_int(nats_benchmark):
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(iterations=4, eval_every=2)
    trained = [mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=seed)[0] for seed in (3, np.int64(3))]
    first, second = (t.state_dict() for t in trained)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_numpy_integer_seed_gives_the_predictor_the_same_untrained_surrogate():
    from naslib_bayes.predictors.naslib_predictor import TNASPredictor

    first, second = (TNASPredictor(seed=seed).surrogate.state_dict() for seed in (5, np.int64(5)))
    assert all(torch.equal(first[k], second[k]) for k in first)

@pytest.mark.parametrize("encoder", ["off", "learned", "images"])
def test_a_seeded_surrogate_and_its_reload_leave_the_global_random_stream_alone(tmp_path, encoder):
    from naslib_bayes.predictors import surrogate_io

    config = SurrogateConfig(dataset_encoder=encoder, meta_datasets=("a", "b"), feature_extractor="pixels")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    surrogate = TNASSurrogate(config, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(3), expected)  # building it drew nothing from the caller's stream
    path = surrogate_io.save(surrogate, tmp_path / "s.pt")
    torch.manual_seed(0)
    surrogate_io.load(path)  # its weights come from the file
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("mode", ["off", "learned"])
def test_evidence_inputs_merge_one_cells_datasets_into_their_mean_only_without_a_context(mode):
    """Without a dataset context the kernel cannot tell the datasets of one cell apart: their
    rows become one point at the mean with noise scale 1/count. With a context they stay apart."""
    from naslib_bayes.predictors.surrogate import Evidence, cell_index

    surrogate = TNASSurrogate(SurrogateConfig(meta_datasets=("a", "b"), dataset_encoder=mode, context_dim=2),
                              generator=torch.Generator().manual_seed(0))
    cells = torch.tensor([[1, 2, 3, 4, 0, 1], [4, 4, 4, 4, 4, 4], [1, 2, 3, 4, 0, 1], [0, 0, 0, 0, 0, 1]])
    evidence = Evidence(cells, torch.tensor([1.0, 5.0, 3.0, -1.0], dtype=torch.float64), torch.tensor([0, 0, 1, 1]))
    surrogate.set_evidence(evidence)
    encodings = torch.arange(15625, dtype=torch.float64).unsqueeze(1).repeat(1, 16)  # row i is psi = i
    x, values, noise_scale = surrogate.evidence_inputs(encodings)
    index = [int(i) for i in cell_index(cells)]
    if mode == "off":
        assert x.shape == (3, 16)
        by_cell = {int(row[0]): (v, n) for row, v, n in zip(x.tolist(), values.tolist(), noise_scale.tolist())}
        assert sorted(by_cell) == sorted(set(index))
        assert by_cell[index[0]] == pytest.approx((2.0, 0.5))  # mean of 1 and 3, noise / 2
        assert by_cell[index[1]] == pytest.approx((5.0, 1.0))
        assert by_cell[index[3]] == pytest.approx((-1.0, 1.0))
    else:
        contexts = surrogate.contexts.detach()
        assert x.shape == (4, 18) and torch.equal(noise_scale, torch.ones(4, dtype=torch.float64))
        for cell, value, owner in zip(index, evidence.values.tolist(), evidence.dataset.tolist()):
            row = (x[:, 0] == cell) & (values == value)
            assert int(row.sum()) == 1
            assert torch.equal(x[row, 16:].squeeze(0), contexts[owner])


def test_reptile_with_a_zero_outer_step_leaves_the_initial_weights(nats_benchmark):
    """theta + 0 * (theta' - theta) = theta: whatever its inner steps did, REPTILE with outer_step 0
    ends where it started, the weights a fresh surrogate of the same seed is built with."""
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(outer="reptile", outer_step=0.0, inner_steps=2, iterations=4, eval_every=2,
                                task_size=(20, 30), val_tasks=1, val_support=20, val_query=30)
    surrogate, _ = mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=3)
    fresh = TNASSurrogate(SurrogateConfig(encoder_hidden=8, meta_datasets=("cifar100",)),
                          generator=torch.Generator().manual_seed(3))
    for (name, p), p0 in zip(surrogate.named_parameters(), fresh.parameters()):
        assert torch.equal(p, p0), name


def test_early_stopping_keeps_the_best_weights_and_halves_the_rate_on_plateaus(nats_benchmark, monkeypatch):
    """Validation losses 5 (start), then 4, 3, 3.5, 3.2, 2.99995 every 2 iterations with patience 3:
    the best is 3 at iteration 4, the next three are no improvement by 1e-4, so training stops at
    iteration 10 with the weights of iteration 4. lr_patience 1: the second validation without
    improvement (iteration 8) halves the rate."""
    losses, snapshots = iter([5.0, 4.0, 3.0, 3.5, 3.2, 2.99995, 1.0, 1.0]), []

    def scripted(surrogate, tasks, torch_gen):
        snapshots.append([p.detach().clone() for p in surrogate.parameters()])
        return next(losses)

    monkeypatch.setattr(mt, "validation_loss", scripted)
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(iterations=100, eval_every=2, patience=3, lr_patience=1, task_size=(20, 30),
                                val_tasks=1, val_support=20, val_query=30)
    surrogate, log = mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=0)
    assert (log.iterations, log.stopped_early, log.best_iteration, log.best_val_loss) == (10, True, 4, 3.0)
    assert [h["iteration"] for h in log.history] == [2, 4, 6, 8, 10]
    assert [h["lr"] for h in log.history] == [0.01, 0.01, 0.01, 0.005, 0.005]
    best = snapshots[2]  # taken as validation returned 3.0
    assert not all(torch.equal(a, b) for a, b in zip(best, snapshots[-1]))  # training went on after it
    for p, kept in zip(surrogate.parameters(), best):
        assert torch.equal(p, kept)


def test_standardise_uses_the_training_cells_statistics_only(nats_benchmark):
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])[0]
    split = mt._split(0, data, 0.1, "standardise", np.random.default_rng(0))
    train = data.values[split.train]
    mean, std = train.sum() / train.size, np.sqrt(((train - train.mean()) ** 2).mean())
    assert (split.mean, split.std) == pytest.approx((mean, std), rel=1e-12)
    held_out = split.in_gp_units(split.held_out).numpy()
    np.testing.assert_allclose(held_out, (data.values[split.held_out] - mean) / std, rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e-13, 1e6])
def test_the_observation_transforms_read_ties_in_the_values_own_units(scale):
    # an absolute threshold of 1e-12 on the spread took accuracies given in units of 1e-13 for
    # ties (a gp-bo search then differed from query 4 on), and kept rounding noise of equal
    # values apart at a large scale
    from naslib_bayes.predictors.target_fit import standardise
    from naslib_bayes.predictors.meta_train import robust_standardise

    values = np.array([46.3, 46.5, 47.1, 45.0, 46.3, 44.2])
    torch.testing.assert_close(standardise(torch.tensor(values * scale)), standardise(torch.tensor(values)))
    np.testing.assert_allclose(robust_standardise(values * scale, values * scale), robust_standardise(values, values),
                               atol=1e-9)
    tied = torch.tensor([46.3, 46.3 + 7e-15]) * scale  # one value, rounded two ways
    assert float(standardise(tied).abs().max()) < 1e-6 * scale


def test_image_samples_of_meta_datasets_take_the_sizes_given(nats_benchmark, monkeypatch, tmp_path):
    """The surrogate config's images_per_class and max_classes size the target's samples in the
    search; meta-training drew 20 x 20 whatever the config said."""
    from naslib_bayes.predictors import dataset_context

    labels = torch.arange(6).repeat_interleave(10)  # 6 classes of 10 images
    monkeypatch.setattr(dataset_context, "dataset_images", lambda name, root: (torch.rand(60, 1, 4, 4), labels))
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"], dataset_encoder="images",
                                           image_root=tmp_path, per_class=3, max_classes=2)[0]
    assert tuple(data.images(torch.Generator().manual_seed(0)).shape) == (2, 3, 1, 4, 4)


def test_the_rate_is_halved_on_plateaus_of_negative_losses_as_early_stopping_counts_them(nats_benchmark, monkeypatch):
    """A predictive NLL is negative once the surrogate learns. Validation losses -1 (start), -2, then
    three each 4e-5 worse than -2: early stopping counts the three as no improvement (by 1e-4), and
    with lr_patience 1 the second of them must halve the rate. A threshold relative to the best
    (torch's default) took each as an improvement, as -1.99996 < -2 * (1 - 1e-4), and never did."""
    losses = iter([-1.0, -2.0, -1.99996, -1.99992, -1.99988, -1.0])
    monkeypatch.setattr(mt, "validation_loss", lambda surrogate, tasks, torch_gen: next(losses))
    data = mt.meta_datasets_from_benchmark(nats_benchmark, ["cifar100"])
    config = mt.MetaTrainConfig(iterations=100, eval_every=2, patience=3, lr_patience=1, task_size=(20, 30),
                                val_tasks=1, val_support=20, val_query=30)
    _, log = mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=0)
    assert (log.iterations, log.stopped_early, log.best_iteration) == (8, True, 2)
    assert [h["lr"] for h in log.history] == [0.01, 0.01, 0.005, 0.005]


def test_each_training_task_is_20_to_100_cells_of_one_dataset_in_that_datasets_own_units(nats_benchmark, monkeypatch):
    """What the marginal likelihood is fitted to during meta-training, read where it is computed:
    every task holds 20-100 distinct cells, and its targets are an exact affine map of one
    dataset's accuracies, the same map for every task of that dataset, whose mean and standard
    deviation are the dataset's (within 0.3 pp of the whole column's: its training cells are 90%
    of it) -- not the task's own statistics, nor those of both datasets together."""
    from naslib_bayes.predictors.deep_kernel_gp import DeepKernelGP

    events = []
    encode, neg_mll = TNASSurrogate.encode, DeepKernelGP.neg_mll
    monkeypatch.setattr(TNASSurrogate, "encode", lambda self, cells: events.append(("cells", list(cells))) or encode(self, cells))
    monkeypatch.setattr(DeepKernelGP, "neg_mll", lambda self, x, y: events.append(("y", y.detach().numpy().copy())) or neg_mll(self, x, y))
    names = ["cifar10", "cifar100"]
    data = mt.meta_datasets_from_benchmark(nats_benchmark, names)
    config = mt.MetaTrainConfig(iterations=12, eval_every=6, output_transform="standardise", val_tasks=1,
                                val_support=20, val_query=20)
    mt.meta_train(data, SurrogateConfig(encoder_hidden=8), config, seed=5)
    columns = {name: dict(zip(map(tuple, np.asarray(nats_benchmark.cells).tolist()), nats_benchmark.query_all(name)))
               for name in names}
    maps, start = {name: [] for name in names}, 0
    for kind, payload in events:
        if kind == "cells":
            cells, start = payload, 0
            continue
        task, start = cells[start : start + len(payload)], start + len(payload)
        assert 20 <= len(task) <= 100 and len(set(task)) == len(task)
        fits = []
        for name in names:
            accuracy = np.array([columns[name][tuple(c)] for c in task])
            slope, intercept = np.polyfit(payload, accuracy, 1)  # accuracy = std * y + mean
            if np.abs(slope * payload + intercept - accuracy).max() < 1e-8:
                fits.append((name, intercept, slope))
        assert len(fits) == 1
        maps[fits[0][0]].append(fits[0][1:])
    assert sum(len(m) for m in maps.values()) == 12 * config.tasks_per_step
    for name in names:
        column = np.array(list(columns[name].values()))
        assert maps[name], name
        mean, std = maps[name][0]
        assert np.allclose(maps[name], (mean, std), rtol=1e-9)
        assert abs(mean - column.mean()) < 0.3 and abs(std - column.std()) < 0.3
