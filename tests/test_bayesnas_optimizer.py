"""BayesNAS as a one-shot optimizer on the NB201 supernet: NASLib's methods, schedule, updates, pruning."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
import torch.nn as nn

from naslib_bayes import results
from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD
from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet
from naslib_bayes.training.oneshot import OneShotTrainer
from naslib_bayes.training.search import SearchConfig, run_oneshot_search


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    from naslib_bayes.data import load_dataset

    train = load_dataset("digits", seed=0).train
    return train.images[:192], train.labels[:192]


def make(seed=0, **hyper):
    torch.manual_seed(seed)
    opt = BayesNAS(seed=seed, **hyper)
    opt.adapt_search_space(NB201SuperNet(4, 1, 10, 1))
    return opt


def test_metaoptimizer_methods():
    opt = make()
    assert opt.using_step_function
    model = opt.get_checkpointables()["model"]
    assert isinstance(model, nn.Module)
    keys = model.state_dict().keys()
    assert "arch.parent.normal" in keys and "arch.gamma_child_normal" in keys and "arch.C_parent_normal" in keys
    groups = opt.get_op_optimizer().param_groups
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["params"] == opt.architectural_weights
    assert groups[0]["weight_decay"] > 0
    assert opt.get_model_size() > 0
    assert opt.bank.parent["normal"].shape == (3, 6) and opt.bank.child["normal"].shape == (3, 6, 4)
    assert float(opt.bank.parent["normal"].detach().min()) == 1.0  # switches start at 1
    opt.new_epoch(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logits, logits_val, loss, val_loss = opt.step((x, y), (x, y))
    assert logits.shape == (8, 10) and logits_val.shape == (8, 10) and loss.dim() == 0 and val_loss.dim() == 0


def test_warmup_trains_weights_only_then_switches_with_penalty(digits):
    opt = make(lambda_origin=0.05)
    x, y = digits[0][:32], digits[1][:32]
    switches0 = [p.detach().clone() for p in opt.architectural_weights]
    stem0 = opt.model.net.stem[0].weight.detach().clone()
    opt.new_epoch(0)  # warm-up
    opt.step((x, y))
    assert all(torch.equal(a, b) for a, b in zip(switches0, opt.architectural_weights))
    assert not torch.equal(stem0, opt.model.net.stem[0].weight)
    opt.new_epoch(1)  # joint
    opt.step((x, y))
    assert not torch.equal(switches0[0], opt.architectural_weights[0])


def test_update_after_the_round_fills_gamma_c_and_relevance(digits):
    opt = make(curvature_batches=2)
    OneShotTrainer(opt, *digits, batch_size=48, seed=0).search()
    assert opt.rounds_done == 1 and len(opt.updates) == 1
    gp, gc = opt.bank.gammas("normal")
    assert bool((gp > 0).all()) and bool((gc > 0).all())
    assert bool((opt.bank.C_child_normal > 0).all())
    # C = (1/gamma_old + H/lambda)^-1 <= gamma_old = 1
    assert float(opt.bank.C_child_normal.max()) <= 1.0
    rel = opt.relevance()
    assert len(rel) == 6 * 5
    assert sum(r["kept"] and r["op"] is not None for r in rel) == sum(op != nb201.NONE for op in opt.get_final_architecture())
    for r in rel:
        assert len(r["C"]) == 3 and r["decision"] in ("entropy", "repair")
        assert (r["gamma"] > ENTROPY_THRESHOLD) == (r["entropy"] > 0)
    assert nb201.is_connected(opt.get_final_architecture())


def test_naslib_style_driving_matches_the_trainer(digits):
    """NASLib's Trainer never calls end_epoch: the update then runs in after_training."""
    a = make(curvature_batches=2)
    OneShotTrainer(a, *digits, batch_size=48, seed=0).search()
    b = make(curvature_batches=2)
    trainer = OneShotTrainer(b, *digits, batch_size=48, seed=0)
    b.before_training()
    for epoch in range(b.total_epochs):
        b.new_epoch(epoch)
        order = trainer._order(trainer.train_index, epoch, 0)
        for step in range(trainer.steps_per_epoch):
            b.step(trainer._batch(order, step, epoch, 0), None)
        trainer.scheduler.step()
    assert b.rounds_done == 0  # pending: the round's update has not run yet
    b.after_training()
    assert b.get_final_architecture() == a.get_final_architecture()
    assert torch.equal(a.bank.gamma_child_normal, b.bank.gamma_child_normal)


def drive_epoch(opt, trainer, epoch):
    """One epoch as NASLib's Trainer runs it (no end_epoch)."""
    opt.new_epoch(epoch)
    order = trainer._order(trainer.train_index, epoch, 0)
    for step in range(trainer.steps_per_epoch):
        opt.step(trainer._batch(order, step, epoch, 0), None)
    trainer.scheduler.step()


def test_pruned_switches_are_masked_and_no_longer_computed(digits):
    """Two rounds: groups driven to zero in round 1 (as the group lasso does) are pruned by the
    entropy criterion, then masked, zeroed and skipped in round 2; the final cell avoids them."""
    opt = make(rounds=2, curvature_batches=1)
    trainer = OneShotTrainer(opt, *digits, batch_size=48, seed=0)
    drive_epoch(opt, trainer, 0)
    drive_epoch(opt, trainer, 1)
    with torch.no_grad():
        opt.bank.child["normal"][:, 0, 1] = 1e-4  # edge 0 (1<-0): nor_conv_1x1
        opt.bank.child["normal"][:, 3, :] = 1e-4  # edge 3 (3<-0): every op
    opt.end_epoch(1)
    first = opt.updates[0]
    assert first["pruned_ops"]["normal"] == 5
    mask = opt.bank.mask_child_normal & opt.bank.mask_parent_normal.unsqueeze(-1)
    assert not bool(mask[0, 1]) and not bool(mask[3].any()) and int(mask.sum()) == 24 - 5
    assert not bool(opt.bank.mask_parent_normal[3])  # all ops of edge 3 pruned: the edge is gone
    relevance = {(r["edge"], r["op"]): r for r in opt.relevance()}
    assert relevance[(0, "nor_conv_1x1")]["gamma"] <= ENTROPY_THRESHOLD
    assert relevance[(0, "nor_conv_1x1")]["decision"] == "entropy"

    calls = {"n": 0}
    hooks = [op.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
             for cell in opt.model.net.cells if hasattr(cell, "edges") for edge in cell.edges for op in edge]
    with torch.no_grad():
        opt.model(digits[0][:4])
    for h in hooks:
        h.remove()
    assert calls["n"] == 3 * (24 - 5)  # 3 cells, pruned ops are not computed
    drive_epoch(opt, trainer, 2)
    opt.after_training()
    assert opt.rounds_done == 2
    assert float(opt.bank.child["normal"].detach()[:, ~mask].abs().sum()) == 0.0
    cell = opt.get_final_architecture()
    assert nb201.is_connected(cell) and cell[3] == nb201.NONE and cell[0] != nb201.CONV1X1


def test_nb201_digits_search_result_validates(nats_benchmark):
    cfg = SearchConfig(optimizer="bayesnas", search_space="nb201", dataset="digits", seed=1, channels=4, cells=1,
                       search_images=192, batch_size=48, hyperparameters={"curvature_batches": 2})
    result = run_oneshot_search(cfg, benchmark=nats_benchmark)
    jsonschema.validate(json.loads(json.dumps(result)), results.load_schema())
    cell = nb201.from_string(result["final_architecture"])
    assert list(cell) == result["final_architecture_op_indices"]
    assert result["benchmark_accuracy"]["cifar10"] == pytest.approx(nats_benchmark.query(cell, "cifar10"))
    assert len(result["epoch_times_s"]) == 2 and len(result["architecture_update_times_s"]) == 1
    assert result["config"]["optimizer_config"]["lambda_child"] == result["config"]["optimizer_config"]["lambda_origin"]
    assert 0.0 <= result["repair_fraction"] <= 1.0
    assert result["repair_fraction"] == pytest.approx(
        sum(r["decision"] == "repair" for r in result["relevance"]) / len(result["relevance"]))
