"""Dataset-encoder modes of the TNAS surrogate (learned contexts, image sets) and its NASLib predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.blackbox import BlackBoxProblem, run_black_box
from naslib_bayes.optimizers.tnas import TNAS
from naslib_bayes.predictors import surrogate_io
from naslib_bayes.predictors.meta_train import MetaDataset, MetaTrainConfig, meta_datasets_from_benchmark, meta_train
from naslib_bayes.predictors.naslib_predictor import TNASPredictor
from naslib_bayes.predictors.surrogate import SurrogateConfig
from naslib_bayes.predictors.target_fit import transform_observations
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

TINY = MetaTrainConfig(iterations=10, eval_every=5, val_tasks=1, val_support=20, val_query=30, tasks_per_step=1,
                       task_size=(20, 30), evidence_top=100, evidence_random=40)


@pytest.fixture(scope="module")
def learned_surrogate(nats_benchmark, tmp_path_factory):
    """A tiny ``learned``-mode surrogate (copula output transform, the default) meta-trained on
    cifar100 and ImageNet16-120 (cifar10 never seen), and its file."""
    source = nats_benchmark.without("cifar10")
    surrogate, _ = meta_train(meta_datasets_from_benchmark(source, source.datasets),
                              SurrogateConfig(dataset_encoder="learned"), TINY, seed=0)
    return surrogate, surrogate_io.save(surrogate, tmp_path_factory.mktemp("learned") / "s.pt")


def test_learned_contexts_start_the_target_at_their_mean_and_adapt(nats_benchmark, learned_surrogate):
    surrogate, path = learned_surrogate
    assert surrogate.contexts.shape == (2, 4)
    problem = BlackBoxProblem.from_benchmark(nats_benchmark, "cifar10", "test_accuracy", 6)
    opt = run_black_box(TNAS(seed=0, surrogate=str(path), initial_design=3, finetune_steps=10), problem)
    start = surrogate.contexts.detach().mean(0)
    assert torch.allclose(opt._start_state["target_context"], start)
    assert not torch.allclose(opt.target_context.detach(), start)  # fine-tuned on the target's observations
    # The contexts of the meta-training datasets themselves are not touched by BO.
    assert torch.equal(opt.surrogate.contexts.detach(), surrogate.contexts.detach())


def test_images_mode_learns_phi_from_image_sets(nats_benchmark, mnist_dir, tmp_path):
    from naslib_bayes.predictors.dataset_context import image_sampler

    # Plumbing check on real images: two "meta-training datasets" whose image sets are digits
    # and MNIST, with accuracy columns borrowed from the benchmark.
    datasets = [
        MetaDataset("digits", np.asarray(nats_benchmark.cells), np.asarray(nats_benchmark.query_all("cifar100")),
                    image_sampler("digits", None, per_class=5, max_classes=10)),
        MetaDataset("mnist", np.asarray(nats_benchmark.cells), np.asarray(nats_benchmark.query_all("ImageNet16-120")),
                    image_sampler("mnist", mnist_dir.parent, per_class=5, max_classes=10)),
    ]
    config = SurrogateConfig(dataset_encoder="images", feature_extractor="pixels", images_per_class=5, max_classes=10)
    surrogate, _ = meta_train(datasets, config, TINY, seed=0)
    # phi is trained through the marginal likelihood: a task's loss reaches its weights.
    from naslib_bayes.predictors import meta_train as mt

    splits = [mt._split(i, d, 0.1, "copula", np.random.default_rng(0)) for i, d in enumerate(datasets)]
    loss = mt.batch_loss(surrogate, [(splits[1], splits[1].train[:25])], torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in surrogate.dataset_encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert surrogate.meta_phi.shape == (2, 4)
    assert not torch.allclose(surrogate.meta_phi[0], surrogate.meta_phi[1])
    path = surrogate_io.save(surrogate, tmp_path / "s.pt")
    again, _ = surrogate_io.load(path)
    assert again.config.feature_extractor == "pixels" and torch.equal(again.meta_phi, surrogate.meta_phi)
    sets = datasets[0].images(torch.Generator().manual_seed(1))
    from naslib_bayes.predictors.dataset_context import image_context

    assert torch.equal(image_context(again, sets), image_context(surrogate, sets))


def test_naslib_predictor_fits_and_reads_every_architecture_form(nats_benchmark):
    rng = np.random.default_rng(0)
    cells = [nats_benchmark.cell(i) for i in rng.choice(15625, size=260, replace=False)]
    truth = np.asarray([nats_benchmark.query(c, "cifar10") for c in cells])
    predictor = TNASPredictor(seed=0, finetune_steps=60, lr=0.02)
    predictor.fit([nb201.to_string(c) for c in cells[:200]], truth[:200])
    as_tuples = predictor.query(cells[200:])
    as_strings = predictor.query([nb201.to_string(c) for c in cells[200:]])
    mean, std = predictor.predict_dist(cells[200:])
    assert isinstance(as_tuples, np.ndarray) and as_tuples.shape == (60,)
    np.testing.assert_allclose(as_tuples, as_strings)
    np.testing.assert_allclose(as_tuples, mean)
    assert (std > 0).all()
    assert spearmanr(as_tuples, truth[200:])[0] > 0.5  # far better than chance on held-out cells
    # std is a measured accuracy's: the latent uncertainty plus the fitted observation noise, so
    # the +-2 std band holds held-out accuracies about as often as a normal one should (the
    # latent band alone held 51% of 1,060 held-out cells, this one 94%)
    latent_mean, latent_std = predictor.predict_dist(cells[200:], observation_noise=False)
    np.testing.assert_allclose(latent_mean, mean)
    assert (std > latent_std).all()
    assert np.mean(np.abs(truth[200:] - mean) <= 2 * std) >= 0.85
    naslib_order = [nb201.to_naslib(c) for c in cells[200:]]

    class FakeNaslibGraph:  # what NASLib's NasBench201SearchSpace exposes
        def __init__(self, op_indices):
            self.op_indices = op_indices

        def get_hash(self):
            return tuple(self.op_indices)

    np.testing.assert_allclose(predictor.query([FakeNaslibGraph(o) for o in naslib_order]), as_tuples)
    # an array of op indices reads as its values, whole floats too; a fraction is refused, not truncated
    np.testing.assert_allclose(predictor.query([np.asarray(c, dtype=float) for c in cells[200:203]]), as_tuples[:3])
    with pytest.raises(UserError, match="invalid NAS-Bench-201 cell"):
        predictor.query([np.asarray([0, 1, 2, 3, 3, 0]) + 0.5])  # 3.5 is no op index


# ---- the predictor adapts to the target as a TNAS BO iteration does -----------------------------
def test_naslib_predictor_fits_the_targets_a_bo_iteration_fits(nats_benchmark, learned_surrogate):
    # A TNAS search's last BO iteration fine-tunes on its first five observations; the predictor
    # fitted on the same observations must see the same GP targets (the surrogate's copula, not a
    # standardisation) and end in the same fine-tuned kernel and context.
    torch.manual_seed(0)
    _, path = learned_surrogate
    assert surrogate_io.load(path)[0].config.output_transform == "copula"
    problem = BlackBoxProblem.from_benchmark(nats_benchmark, "cifar10", "test_accuracy", 6)
    opt = run_black_box(TNAS(seed=0, surrogate=str(path), initial_design=3, finetune_steps=10), problem)
    assert opt.fit_log[-1]["n"] == 5
    cells, values = [c for c, _ in opt.history[:5]], [v for _, v in opt.history[:5]]
    predictor = TNASPredictor(surrogate=path, finetune_steps=10, lr=opt.config["finetune_lr"], seed=0,
                              target_transform="surrogate")
    predictor.fit(cells, values)
    bo_targets = opt.gp_targets(torch.arange(5), torch.as_tensor(values, dtype=torch.float64))
    torch.testing.assert_close(predictor.surrogate.gp.train_targets, bo_targets, rtol=0, atol=1e-12)
    torch.testing.assert_close(predictor.surrogate.gp.train_targets, opt.surrogate.gp.train_targets, rtol=0, atol=1e-12)
    # psi of 5 cells vs of all 15,625 differs in float rounding only
    torch.testing.assert_close(predictor.context.detach(), opt.target_context.detach(), rtol=1e-5, atol=1e-7)
    fitted, bo = predictor.surrogate.gp.hyperparameters(), opt.surrogate.gp.hyperparameters()
    assert fitted == pytest.approx(bo, rel=1e-5)


def test_naslib_predictor_fine_tunes_a_learned_context_from_the_meta_training_mean(nats_benchmark, learned_surrogate):
    torch.manual_seed(0)
    surrogate, path = learned_surrogate
    start = surrogate.contexts.detach().mean(0)
    rng = np.random.default_rng(0)
    cells = [nats_benchmark.cell(int(i)) for i in rng.choice(15625, size=20, replace=False)]
    accuracy = [nats_benchmark.query(c, "cifar10") for c in cells]
    predictor = TNASPredictor(surrogate=path, finetune_steps=20, seed=0)
    torch.testing.assert_close(predictor.context, start)
    predictor.fit(cells, accuracy)
    fitted = predictor.context.detach().clone()
    assert not torch.allclose(fitted, start)  # fine-tuned with the kernel, as BO does
    assert torch.equal(predictor.surrogate.contexts.detach(), surrogate.contexts.detach())  # meta contexts untouched
    predictor.fit(cells, accuracy)  # a refit restarts from the meta-training mean, as each BO iteration does
    torch.testing.assert_close(predictor.context.detach(), fitted)


def test_naslib_predictor_answers_an_empty_query_with_empty_arrays(nats_benchmark, learned_surrogate):
    """NASLib asks for predictions of whatever list it holds, which can be empty."""
    _, path = learned_surrogate
    cells = [nats_benchmark.cell(i) for i in range(0, 15625, 1000)]
    predictor = TNASPredictor(surrogate=path, finetune_steps=2, seed=0)
    predictor.fit(cells, [nats_benchmark.query(c, "cifar10") for c in cells])
    assert predictor.query([]).shape == (0,)
    mean, std = predictor.predict_dist([])
    assert mean.shape == std.shape == (0,)


def test_naslib_predictors_given_one_surrogate_object_neither_share_nor_change_it(nats_benchmark, learned_surrogate):
    _, path = learned_surrogate
    surrogate = surrogate_io.load(path)[0]
    untouched = {k: v.clone() for k, v in surrogate.state_dict().items()}
    rng = np.random.default_rng(0)
    cells = [nats_benchmark.cell(int(i)) for i in rng.choice(15625, size=30, replace=False)]
    accuracy = np.asarray([nats_benchmark.query(c, "cifar10") for c in cells])
    first = TNASPredictor(surrogate=surrogate, finetune_steps=10, seed=0)
    first.fit(cells[:20], accuracy[:20])
    predicted = first.query(cells[20:])
    second = TNASPredictor(surrogate=surrogate, finetune_steps=10, seed=0)  # made after the first one's fit
    second.fit(cells[:10], accuracy[:10] - 5.0)
    np.testing.assert_array_equal(first.query(cells[20:]), predicted)  # the second fit leaves the first alone
    from_file = TNASPredictor(surrogate=path, finetune_steps=10, seed=0)
    from_file.fit(cells[:10], accuracy[:10] - 5.0)
    np.testing.assert_array_equal(second.query(cells[20:]), from_file.query(cells[20:]))  # same start as a fresh one
    assert all(torch.equal(v, untouched[k]) for k, v in surrogate.state_dict().items())  # the caller's object

def test_naslib_predictor_fits_an_images_mode_surrogate_given_the_target_dataset(nats_benchmark):
    from naslib_bayes.errors import UserError
    from naslib_bayes.predictors.dataset_context import image_sampler, target_image_context

    torch.manual_seed(0)
    datasets = [MetaDataset("digits", np.asarray(nats_benchmark.cells), np.asarray(nats_benchmark.query_all("cifar100")),
                            image_sampler("digits", None, per_class=5, max_classes=10))]
    config = SurrogateConfig(dataset_encoder="images", feature_extractor="pixels", images_per_class=5, max_classes=10)
    tiny = MetaTrainConfig(iterations=2, eval_every=1, val_tasks=1, val_support=20, val_query=30, tasks_per_step=1,
                           task_size=(20, 30), evidence_top=50, evidence_random=20)
    surrogate, _ = meta_train(datasets, config, tiny, seed=0)
    with pytest.raises(UserError, match="dataset=") as error:
        TNASPredictor(surrogate=surrogate)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="image_root="):
        TNASPredictor(surrogate=surrogate, dataset="cifar10")
    predictor = TNASPredictor(surrogate=surrogate, dataset="digits", finetune_steps=10, seed=0)
    # the context a TNAS search with this seed starts from: phi of seeded samples of the target's images
    start = target_image_context(surrogate, "digits", None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(predictor.context, start)
    rng = np.random.default_rng(0)
    cells = [nats_benchmark.cell(int(i)) for i in rng.choice(15625, size=40, replace=False)]
    accuracy = np.asarray([nats_benchmark.query(c, "cifar10") for c in cells])
    predictor.fit(cells[:30], accuracy[:30])
    assert not torch.allclose(predictor.context.detach(), start)  # fine-tuned with the kernel, as BO does
    mean, std = predictor.predict_dist(cells[30:])
    assert mean.shape == std.shape == (10,)
    assert np.isfinite(mean).all() and (std > 0).all()
    np.testing.assert_array_equal(predictor.query(cells[30:]), mean)


def test_accuracy_map_inverts_the_bo_transform_and_keeps_rankings():
    from naslib_bayes.predictors.target_fit import transform_observations
    from naslib_bayes.predictors.meta_train import ROBUST_CLIP
    from naslib_bayes.predictors.naslib_predictor import AccuracyMap

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(70.0, 3.0, size=20), [40.0, 10.0, 65.0, 65.0]])  # a low tail, a tie
    for kind in ("standardise", "copula", "robust"):
        mapping = AccuracyMap(values, kind)
        z = mapping.targets.numpy()
        np.testing.assert_array_equal(z, transform_observations(torch.as_tensor(values), kind).numpy())  # BO's units
        kept = z > ROBUST_CLIP if kind == "robust" else np.ones_like(z, dtype=bool)  # the clip has no inverse
        np.testing.assert_allclose(mapping.to_accuracy(z[kept]), values[kept], rtol=0, atol=1e-9)
        grid = np.linspace(z.min() - 2.0, z.max() + 2.0, 2001)
        assert (np.diff(mapping.to_accuracy(grid)) > 0).all()  # strictly increasing: rankings are kept
        # beyond the knots the map continues linearly
        far = mapping.to_accuracy(z.max() + np.array([1.0, 2.0, 3.0]))
        assert far[2] - far[1] == pytest.approx(far[1] - far[0])
        mean, std = mapping.to_accuracy_dist(np.array([0.1, -0.3]), np.array([0.5, 0.2]))
        assert (std > 0).all()
        if kind == "standardise":  # affine: mean * sd + mean, std * sd
            np.testing.assert_allclose(mean, values.mean() + np.array([0.1, -0.3]) * values.std())
            np.testing.assert_allclose(std, np.array([0.5, 0.2]) * values.std())
    constant = AccuracyMap(np.array([5.0, 5.0]), "copula")  # one distinct value: unit slope
    np.testing.assert_allclose(constant.to_accuracy(np.array([-1.0, 0.0, 2.0])), [4.0, 5.0, 7.0])


@pytest.mark.parametrize("low_tail", [[10.0], [10.0, 12.0]])
def test_accuracy_map_of_robust_units_is_affine_with_one_clipped_observation_or_several(low_tail):
    # Clipping has no inverse: the clipped observations are no knots, one alone as much as
    # several, or the segment to it bends the inverse of the other observations' affine map.
    from naslib_bayes.predictors.meta_train import robust_standardise
    from naslib_bayes.predictors.naslib_predictor import AccuracyMap

    values = np.array([*low_tail, 88.0, 89.0, 90.0, 90.5, 91.0, 92.0, 93.0, 94.0])
    mapping = AccuracyMap(values, "robust")
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    scale = (q3 - q1) / 1.349
    assert robust_standardise(values, values)[: len(low_tail)] == pytest.approx([-3.0] * len(low_tail))
    z = np.array([-2.5, -1.5, 0.0, 1.0])
    np.testing.assert_allclose(mapping.to_accuracy(z), median + z * scale, rtol=0, atol=1e-9)
    _, std = mapping.to_accuracy_dist(np.array([-1.5]), np.array([0.5]))
    np.testing.assert_allclose(std, [0.5 * scale], rtol=0, atol=1e-9)


def test_naslib_predictor_refuses_an_unknown_target_transform():
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match="^target_transform 'ranks': expected one of standardise, copula, robust, surrogate$"):
        TNASPredictor(seed=0, target_transform="ranks")


@pytest.mark.parametrize("setting, message", [
    ({"lr": -0.01}, "lr=-0.01: expected a number > 0"),
    ({"lr": 0.0}, "lr=0.0: expected a number > 0"),  # Adam would take 50 steps that change nothing
    ({"lr": float("nan")}, "lr=nan"),
    ({"finetune_steps": -3}, "finetune_steps=-3: expected a number >= 0"),
    ({"finetune_steps": 2.5}, "finetune_steps=2.5: expected int"),  # not silently 2 steps
    ({"finetune_steps": "many"}, "finetune_steps='many': expected int"),
])
def test_naslib_predictor_refuses_fitting_settings_out_of_range_in_one_line(setting, message):
    # As TNAS bounds finetune_steps and finetune_lr: refused where they are given, naming them,
    # instead of torch's ValueError at fit, or a fit that silently trains nothing.
    with pytest.raises(UserError, match=f"TNASPredictor: hyper-parameter {message}"):
        TNASPredictor(seed=0, **setting)
    predictor = TNASPredictor(seed=0, finetune_steps=3)
    with pytest.raises(UserError, match=f"TNASPredictor: hyper-parameter {message}"):
        predictor.set_hyperparams(setting)
    assert predictor.get_hyperparams() == {"finetune_steps": 3, "lr": 0.01}  # a refused setting changes nothing
    predictor.set_hyperparams({"finetune_steps": np.int64(4), "lr": 1e-3, "other": "kept"})
    assert predictor.get_hyperparams() == {"finetune_steps": 4, "lr": 1e-3, "other": "kept"}
    assert type(predictor.get_hyperparams()["finetune_steps"]) is int


def test_a_naslib_predictor_whose_fit_failed_refuses_to_query_until_fitted_again(monkeypatch):
    # The failed fit had already replaced the accuracy map and reset the GP: a query would have
    # mapped the first fit's conditioning through the second fit's map, and answered silently.
    from naslib_bayes.predictors import naslib_predictor

    cells = list(nb201.all_cells())[:2800:700]
    predictor = TNASPredictor(seed=0, finetune_steps=3)
    predictor.fit(cells, [60.0, 70.0, 80.0, 90.0])
    first = predictor.query(cells)

    def broken(*args, **kwargs):
        raise RuntimeError("the fit broke down")

    monkeypatch.setattr(naslib_predictor, "finetune_gp", broken)
    with pytest.raises(RuntimeError, match="broke down"):
        predictor.fit(cells, [0.6, 0.7, 0.8, 0.9])
    with pytest.raises(UserError, match="call fit"):
        predictor.query(cells)
    monkeypatch.undo()
    predictor.fit(cells, [60.0, 70.0, 80.0, 90.0])
    np.testing.assert_array_equal(predictor.query(cells), first)


def test_a_naslib_predictor_whose_last_fine_tuning_step_diverged_says_so_in_fit():
    # fit returned as if fitted, and the first query ended in torch's LinAlgError: one Adam step at
    # rate 1000 had left a kernel without a Cholesky factor
    cells = list(nb201.all_cells())[:2800:700]
    predictor = TNASPredictor(seed=0, finetune_steps=1, lr=1000.0)
    with pytest.raises(UserError, match="diverged after 1 steps at learning rate 1000"):
        predictor.fit(cells, [60.0, 70.0, 80.0, 90.0])
    with pytest.raises(UserError, match="call fit"):
        predictor.query(cells)


@pytest.mark.parametrize("transform", ["standardise", "copula", "robust"])
def test_accuracies_equal_up_to_rounding_are_fitted_as_equal_ones(transform):
    # 50 and 50 +- 1e-13 (sums of floats that print alike) were distinct to each transform (two
    # ranks to the copula): the GP spread them apart and the map back to accuracies scaled every
    # std by 1e-13, where equal accuracies give a std of about 1
    cells = list(nb201.all_cells())[:2800:700]
    predictions = []
    for accuracies in ([50.0, 50.0, 50.0, 50.0], [50.0, 50.0 + 1e-13, 50.0, 50.0 - 1e-13]):
        predictor = TNASPredictor(seed=0, finetune_steps=3, target_transform=transform)
        predictor.fit(cells, accuracies)
        predictions.append(predictor.predict_dist(list(nb201.all_cells())[5:9]))
    np.testing.assert_allclose(predictions[1][0], predictions[0][0])
    np.testing.assert_allclose(predictions[1][1], predictions[0][1], rtol=1e-6)
    assert (predictions[1][1] > 0.5).all()
    # the other side: top cells a few hundredths of a point apart are real differences, kept in their order
    close = torch.tensor([93.37, 93.41, 93.39, 93.38], dtype=torch.float64)
    assert torch.argsort(transform_observations(close, transform)).tolist() == [0, 3, 2, 1]


def test_naslib_predictor_query_ranks_follow_its_gp_and_its_training_targets(nats_benchmark, learned_surrogate):
    # A toy case: the copula predictor queried on its own training cells. Its predictions are a
    # strictly increasing map of the GP's posterior mean, and rank the cells as their accuracies do.
    torch.manual_seed(0)
    _, path = learned_surrogate
    rng = np.random.default_rng(0)
    cells = [nats_benchmark.cell(int(i)) for i in rng.choice(15625, size=12, replace=False)]
    accuracy = np.asarray([nats_benchmark.query(c, "cifar10") for c in cells])
    predictor = TNASPredictor(surrogate=path, finetune_steps=50, seed=0, target_transform="copula")
    predictor.fit(cells, accuracy)
    prediction = predictor.query(cells)
    latent, _ = predictor.surrogate.gp.posterior(predictor._inputs(predictor._encodings(cells)))
    np.testing.assert_array_equal(np.argsort(prediction), np.argsort(latent.numpy()))
    assert spearmanr(prediction, accuracy)[0] > 0.9
    assert accuracy.min() <= prediction.min() and prediction.max() <= accuracy.max()  # shrunk toward the middle


def test_naslib_predictor_takes_one_accuracy_per_architecture_or_refuses_the_shape():
    # a (2, 10) table was flattened into 20 accuracies for 20 architectures, and text was a
    # numpy ValueError traceback
    cells = list(nb201.all_cells())[:20]
    y = np.linspace(60.0, 70.0, 20)
    predictor = TNASPredictor(seed=0, finetune_steps=2)
    with pytest.raises(UserError, match=r"one accuracy per architecture, got an array of shape \(2, 10\)"):
        predictor.fit(cells, y.reshape(2, 10))
    with pytest.raises(UserError, match="ytrain must be numbers, one per architecture"):
        predictor.fit(cells[:2], ["high", "low"])
    as_column = TNASPredictor(seed=0, finetune_steps=2)
    as_column.fit(cells, y.reshape(20, 1))
    predictor.fit(cells, y)
    np.testing.assert_array_equal(as_column.query(cells[:5]), predictor.query(cells[:5]))


# ---- meta-train --dataset-encoder images: inputs refused before --out is made ---------------
def _write_cifar100_images(root) -> None:
    """A CIFAR-100 folder of 12 training and 4 test images, as the loaders read it."""
    _write_pickled_images(root / "cifar-100-python", {"train": 12, "test": 4}, 32, b"fine_labels", range(100))


def _write_cifar10_images(root) -> None:
    """A CIFAR-10 folder of 5 training batches of 3 images and 4 test images."""
    files = {**{f"data_batch_{i}": 3 for i in range(1, 6)}, "test_batch": 4}
    _write_pickled_images(root / "cifar-10-batches-py", files, 32, b"labels", range(10))


def _write_imagenet16_images(root) -> None:
    """An ImageNet16 folder of 10 training batches of 2 images and 4 validation images."""
    files = {**{f"train_data_batch_{i}": 2 for i in range(1, 11)}, "val_data": 4}
    _write_pickled_images(root / "ImageNet16", files, 16, b"labels", range(1, 121))


def _write_pickled_images(folder, files: dict, side: int, label_key: bytes, labels) -> None:
    import pickle

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, n in files.items():
        content = {b"data": rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8),
                   label_key: rng.choice(list(labels), n).tolist()}
        (folder / name).write_bytes(pickle.dumps(content))


@pytest.mark.parametrize("datasets, extractor, named", [
    ("cifar100,ImageNet16-120", "random-conv", "ImageNet16"),  # the image root lacks ImageNet16-120
    ("cifar100", "no_module_of_that_name:make", "no_module_of_that_name:make"),
])
def test_meta_train_refuses_missing_images_or_extractor_before_making_out(capsys, tmp_path, nats_csv, datasets,
                                                                          extractor, named):
    """Both were refused only after --out was made, leaving a folder behind that held no run."""
    from cli_runner import run_cli

    _write_cifar100_images(tmp_path / "images")
    out = tmp_path / "meta"
    code, _, err = run_cli(capsys, "meta-train", "--benchmark", nats_csv, "--datasets", datasets,
                           "--dataset-encoder", "images", "--image-root", tmp_path / "images",
                           "--feature-extractor", extractor, "--iterations", 1, "--out", out)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and named in errors[0] and "Traceback" not in err
    assert not out.exists()


def test_search_meta_trains_on_images_named_by_opt_alone(capsys, tmp_path, nats_csv):
    """``--opt dataset_encoder=images --opt image_root=DIR`` was refused as lacking --image-root."""
    import json

    from cli_runner import run_cli

    for write in (_write_cifar10_images, _write_cifar100_images, _write_imagenet16_images):
        write(tmp_path / "images")
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--opt", "dataset_encoder=images",
                           "--opt", f"image_root={tmp_path / 'images'}", "--opt", "feature_extractor=pixels",
                           "--opt", "meta_iterations=1", "--opt", "finetune_steps=1", "--benchmark", nats_csv,
                           "--dataset", "cifar10", "--budget", 3, "--out", tmp_path / "o")
    assert code == 0, err
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["dataset_encoder"]["mode"] == "images" and result["config"]["image_root"] == str(tmp_path / "images")


def test_meta_train_records_the_images_it_read(capsys, tmp_path, nats_csv, monkeypatch):
    """result.json recorded the extractor but not the image root, so the run could not be
    repeated from its record; a relative root is recorded resolved, as the run read it."""
    import json

    import jsonschema
    from cli_runner import run_cli
    from naslib_bayes import results

    _write_cifar100_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "meta-train", "--benchmark", nats_csv, "--datasets", "cifar100",
                           "--dataset-encoder", "images", "--image-root", "images", "--feature-extractor", "pixels",
                           "--iterations", 1, "--out", "meta")
    assert code == 0, err
    result = json.loads((tmp_path / "meta" / "result.json").read_text())
    jsonschema.validate(result, results.load_schema())
    assert result["config"]["image_root"] == str((tmp_path / "images").resolve())
    assert result["config"]["surrogate_config"]["feature_extractor"] == "pixels"
    assert result["dataset_encoder"] == {"mode": "images", "feature_extractor": "pixels"}
    _, info = surrogate_io.load(tmp_path / "meta")
    assert info["image_root"] == result["config"]["image_root"]  # a search with the file records it too


# ---- search --optimizer tnas: a surrogate's inputs refused before --out is made ------------
def _images_surrogate_file(folder, feature_extractor="pixels"):
    """An images-mode surrogate file meta-trained (in name) on cifar100 and ImageNet16-120."""
    from naslib_bayes.predictors.surrogate import Evidence, TNASSurrogate

    config = SurrogateConfig(dataset_encoder="images", feature_extractor=feature_extractor,
                             meta_datasets=("cifar100", "ImageNet16-120"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        surrogate = TNASSurrogate(config)
    evidence = Evidence(torch.tensor([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1]]),
                        torch.tensor([0.5, -0.5], dtype=torch.float64), torch.tensor([0, 1]))
    surrogate.set_evidence(evidence, torch.zeros(2, config.context_dim, dtype=torch.float64))
    return surrogate_io.save(surrogate, folder / "surrogate.pt")


def _untrusted_extractor_file(folder):
    """A surrogate file naming a user extractor that the search does not trust."""
    path = _images_surrogate_file(folder)
    payload = torch.load(path, weights_only=True)
    payload["surrogate_config"]["feature_extractor"] = "someone_elses_module:make"
    torch.save(payload, path)
    return path


def _damaged_weights_file(folder):
    path = _images_surrogate_file(folder)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {"not_a_weight": torch.zeros(1)}
    torch.save(payload, path)
    return path


def _nan_meta_phi_file(folder):
    path = _images_surrogate_file(folder)
    payload = torch.load(path, weights_only=True)
    payload["meta_phi"][1, 0] = float("nan")
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("make_file, named", [
    (_images_surrogate_file, "cifar-10-batches-py"),  # the image root lacks the target's, cifar10
    (_untrusted_extractor_file, "someone_elses_module:make"),
    (_damaged_weights_file, "a damaged surrogate file"),
    (_nan_meta_phi_file, "meta_phi holds NaN or infinite values"),
])
def test_search_refuses_a_surrogate_it_cannot_use_before_making_out(capsys, tmp_path, nats_csv, make_file, named):
    """Each was refused only once the search set up its surrogate, beside an --out made (and
    locked) for a run that never started."""
    from cli_runner import run_cli

    _write_cifar100_images(tmp_path / "images")
    path = make_file(tmp_path / "s")
    out = tmp_path / "search"
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--surrogate", path,
                           "--image-root", tmp_path / "images", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", 3, "--out", out)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and named in errors[0] and "Traceback" not in err, err
    assert not out.exists()


def test_search_refuses_a_feature_extractor_other_than_its_surrogate_files(capsys, tmp_path, nats_csv):
    """--opt feature_extractor names the extractor a file's is trusted as; naming another one was
    silently ignored (the file's was used) while result.json's config recorded it as used."""
    from cli_runner import run_cli

    _write_cifar10_images(tmp_path / "images")
    path = _images_surrogate_file(tmp_path / "s")  # its extractor: pixels
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--surrogate", path,
                           "--image-root", tmp_path / "images", "--opt", "feature_extractor=random-conv",
                           "--benchmark", nats_csv, "--dataset", "cifar10", "--budget", 3, "--out", tmp_path / "o")
    assert code == 2 and err.strip() == (f"naslib-bayes: error: --opt feature_extractor=random-conv: {path} has "
                                         "the feature extractor 'pixels'"), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("write_images, extractor, named", [
    ([_write_cifar100_images], "pixels", "ImageNet16"),  # a meta-training dataset's images are missing
    ([_write_cifar100_images, _write_imagenet16_images], "pixels", "cifar-10-batches-py"),  # the target's
    ([_write_cifar100_images, _write_imagenet16_images], "no_module_of_that_name:make", "no_module_of_that_name"),
])
def test_search_meta_training_on_images_refuses_its_inputs_before_making_out(capsys, tmp_path, nats_csv,
                                                                             write_images, extractor, named):
    """The images were read, and the extractor built, only once the search set up, beside an
    --out made for it; the target's images after the whole meta-training."""
    from cli_runner import run_cli

    for write in write_images:
        write(tmp_path / "images")
    out = tmp_path / "search"
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--dataset-encoder", "images",
                           "--image-root", tmp_path / "images", "--feature-extractor", extractor,
                           "--opt", "meta_iterations=1", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", 3, "--out", out)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and named in errors[0] and "Traceback" not in err, err
    assert not out.exists()


# ---- images-mode surrogate files: each meta-training dataset's phi ---------------------------
@pytest.mark.parametrize("damage", ["missing", "one_row_for_two_datasets", "too_wide"])
def test_a_damaged_meta_phi_in_an_images_surrogate_file_is_one_line(tmp_path, damage):
    """The phi each meta-training dataset's evidence is seen with was loaded unchecked: the search
    then failed with a TypeError, IndexError or matrix-shape traceback, or a kernel with no
    Cholesky factor from a NaN, after --out was made."""
    from naslib_bayes.predictors.surrogate import Evidence, TNASSurrogate

    config = SurrogateConfig(dataset_encoder="images", feature_extractor="pixels", meta_datasets=("cifar100", "mnist"))
    surrogate = TNASSurrogate(config, generator=torch.Generator().manual_seed(0))
    evidence = Evidence(torch.tensor([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1]]), torch.tensor([0.5, -0.5], dtype=torch.float64),
                        torch.tensor([0, 1]))
    surrogate.set_evidence(evidence, torch.randn(2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    payload = torch.load(surrogate_io.save(surrogate, tmp_path / "good.pt"), weights_only=True)
    phi = payload["meta_phi"]
    damaged = {"missing": None, "one_row_for_two_datasets": phi[:1], "too_wide": torch.zeros(2, 7, dtype=torch.float64),
               "integers": torch.zeros(2, 4, dtype=torch.long)}[damage]
    if damaged is None:
        del payload["meta_phi"]
    else:
        payload["meta_phi"] = damaged
    bad = tmp_path / "surrogate.pt"
    torch.save(payload, bad)
    with pytest.raises(UserError) as info:
        surrogate_io.load(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: a damaged surrogate file") and "meta_phi" in message and "\n" not in message
