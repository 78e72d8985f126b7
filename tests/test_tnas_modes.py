"""Dataset-encoder modes of the TNAS surrogate (learned contexts, image sets) and its NASLib predictor."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from naslib_bayes.optimizers.blackbox import BlackBoxProblem, run_black_box
from naslib_bayes.optimizers.tnas import TNAS
from naslib_bayes.predictors import surrogate_io
from naslib_bayes.predictors.meta_train import MetaDataset, MetaTrainConfig, meta_datasets_from_benchmark, meta_train
from naslib_bayes.predictors.naslib_predictor import TNASPredictor
from naslib_bayes.predictors.surrogate import SurrogateConfig
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

TINY = MetaTrainConfig(iterations=10, eval_every=5, val_tasks=1, val_support=20, val_query=30, tasks_per_step=1,
                       task_size=(20, 30), evidence_top=100, evidence_random=40)



def test_learned_contexts_start_the_target_at_their_mean_and_adapt(nats_benchmark, tmp_path):
    source = nats_benchmark.without("cifar10")
    surrogate, _ = meta_train(meta_datasets_from_benchmark(source, source.datasets),
                              SurrogateConfig(dataset_encoder="learned"), TINY, seed=0)
    assert surrogate.contexts.shape == (2, 4)
    path = surrogate_io.save(surrogate, tmp_path / "s.pt")
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
