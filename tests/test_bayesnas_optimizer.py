"""BayesNAS as a one-shot optimizer on the NB201 supernet: NASLib's methods, schedule, updates, pruning."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch
import torch.nn.functional as F

from naslib_bayes import results
from naslib_bayes.optimizers.bayesnas.curvature import gauss_newton_diagonal
from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD
from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet
from naslib_bayes.training.oneshot import OneShotTrainer
from naslib_bayes.training.search import SearchConfig, run_oneshot_search



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
    assert model is opt.model
    keys = model.state_dict().keys()
    assert "arch.parent.normal" in keys and "arch.gamma_child_normal" in keys and "arch.C_parent_normal" in keys
    groups = opt.get_op_optimizer().param_groups
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["params"] == opt.architectural_weights
    # the weights, and only they, take the configured decay; the switches are no part of the size
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.net.parameters()}
    assert make(weight_decay=5e-4).get_op_optimizer().param_groups[0]["weight_decay"] == 5e-4
    weights = sum(p.numel() for p in NB201SuperNet(4, 1, 10, 1).parameters())
    assert opt.get_model_size() == weights / 1e6
    assert opt.bank.parent["normal"].shape == (3, 6) and opt.bank.child["normal"].shape == (3, 6, 4)
    assert float(opt.bank.parent["normal"].detach().min()) == 1.0  # switches start at 1
    opt.new_epoch(0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logits, logits_val, loss, val_loss = opt.step((x, y), (x, y))
    assert logits.shape == (8, 10) and logits_val.shape == (8, 10)
    # warm-up: the training loss is the cross-entropy alone (no penalty); the validation pass
    # evaluates the updated model without training it
    assert torch.allclose(loss, F.cross_entropy(logits, y))
    with torch.no_grad():
        again = opt.model(x)
    assert torch.equal(logits_val, again) and not torch.equal(logits_val, logits)
    assert torch.allclose(val_loss, F.cross_entropy(again, y))


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


def test_update_after_the_round_fills_gamma_c_and_relevance(digits, monkeypatch):
    """One round's update, recomputed from the curvature it used: from gamma_init g = 0.5,
    C = 1/(1/g + H/lambda), omega = sqrt(sum_cells |-C/g^2 + 1/g|), gamma = ||s||/omega and the
    children coupled to their parent's new gamma, with lambda_origin and lambda_child each on its
    own groups."""
    g = 0.5
    opt = make(curvature_batches=2, lambda_origin=0.05, lambda_child=0.02, gamma_init=g)
    seen = []
    compute = opt.compute_curvature

    def spy(inputs):
        seen.append(compute(inputs))
        return seen[-1]

    monkeypatch.setattr(opt, "compute_curvature", spy)
    OneShotTrainer(opt, *digits, batch_size=48, seed=0).search()
    assert opt.rounds_done == 1 and len(opt.updates) == 1 and len(seen) == 1
    hp, hc = (h.double() for h in seen[0]["normal"])
    assert bool((hc > 0).any()) and bool((hp > 0).any())
    sp = opt.bank.parent["normal"].detach().double()
    sc = opt.bank.child["normal"].detach().double()
    c_parent = 1.0 / (1.0 / g + hp / 0.05)
    c_child = 1.0 / (1.0 / g + hc / 0.02)
    assert torch.allclose(opt.bank.C_parent_normal, c_parent, rtol=1e-10, atol=0)
    assert torch.allclose(opt.bank.C_child_normal, c_child, rtol=1e-10, atol=0)
    gamma_parent = sp.norm(dim=0) / (1.0 / g - c_parent / g**2).abs().sum(dim=0).sqrt()
    gamma_child = sc.norm(dim=0) / (1.0 / g - c_child / g**2).abs().sum(dim=0).sqrt()
    coupled = gamma_child * gamma_parent[:, None] / (gamma_child + gamma_parent[:, None])
    gp, gc = opt.bank.gammas("normal")
    assert torch.allclose(gp, gamma_parent, rtol=1e-10, atol=0)
    assert torch.allclose(gc, coupled, rtol=1e-10, atol=0)
    assert opt.updates[0]["mean_curvature"]["normal"] == pytest.approx([float(hp.mean()), float(hc.mean())])
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


def _fixed_curvature(opt, h=1.0):
    """Make the next architecture update use H = h for every switch (its curvature batches are
    otherwise the round's last training batches); the rest of the update runs as in a search."""
    topo = opt.bank.topologies["normal"]
    fixed = {"normal": (torch.full((topo.num_cells, topo.num_edges), h, dtype=torch.float64),
                        torch.full((topo.num_cells, topo.num_edges, topo.num_ops), h, dtype=torch.float64))}
    opt.compute_curvature = lambda inputs: fixed
    opt._curvature_inputs = [torch.zeros(1, 1, 8, 8)]


def test_relevance_reports_real_gamma_and_reason_of_dead_and_all_pruned_edges():
    """Edges 0->2 and 1->2 fail the entropy test, so node 2 is unreachable and edge 2->3 (the
    strongest of the cell) is dead by node dependencies alone; every op of 1->3 fails, so that
    edge is out with "all ops pruned", and node 1 then reaches no output (0->1 dead too).
    relevance must report every group's own gamma and entropy with the right reason."""
    opt = make()
    conv3 = opt.bank.topologies["normal"].ops.index("nor_conv_3x3")
    with torch.no_grad():
        opt.bank.parent["normal"][:, 1] = 1e-3  # 0->2
        opt.bank.parent["normal"][:, 2] = 1e-3  # 1->2
        opt.bank.child["normal"][:, 4, :] = 1e-3  # 1->3: every op
        opt.bank.child["normal"][:, 5, conv3] = 3.0  # 2->3: conv3x3, the strongest switch
    _fixed_curvature(opt)
    opt.architecture_update()
    assert opt.get_final_architecture() == (nb201.NONE,) * 3 + (nb201.SKIP, nb201.NONE, nb201.NONE)
    rel = {(r["edge"], r["op"]): r for r in opt.result_extras()["relevance"]}
    gp, gc = opt.bank.gammas("normal")
    ops = opt.bank.topologies["normal"].ops
    for (e, op), r in rel.items():
        gamma = float(gp[e]) if op is None else float(gc[e, ops.index(op)])
        assert gamma > 0 and r["gamma"] == pytest.approx(gamma, rel=1e-12)
        assert r["entropy"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * gamma), rel=1e-12)
        if e != 3:  # the survivors are connected: no repair except one op of many on 0->3
            assert r["decision"] == "entropy"
    for e in (0, 5):  # above the threshold, dead by node dependencies only
        for op in (None, *ops):
            assert rel[(e, op)]["gamma"] > ENTROPY_THRESHOLD and not rel[(e, op)]["kept"]
            assert rel[(e, op)]["reason"] == "dead node (not on an input-to-output path)"
    assert rel[(5, "nor_conv_3x3")]["gamma"] == max(r["gamma"] for r in rel.values() if r["op"] is not None)
    assert rel[(4, None)]["gamma"] > ENTROPY_THRESHOLD and rel[(4, None)]["reason"] == "all ops pruned"
    for key in [(4, op) for op in ops] + [(1, None), (2, None)]:
        assert 0 < rel[key]["gamma"] <= ENTROPY_THRESHOLD and rel[key]["entropy"] <= 0
        assert rel[key]["reason"] == "gamma at or below threshold"


def test_a_group_kept_between_rounds_recovers_its_gamma_and_omega():
    """Two rounds. Round 1: nothing survives, the derivation restores edge 0->3 (conv3x3, the
    largest real gamma) and only that edge and op stay in the supernet. Round 2: its switches
    have grown back to 1; the update must start from their round-1 gammas (not from 0, which
    would give omega = inf and freeze gamma and the penalty at 0), so the edge now survives
    the entropy test on its own."""
    opt = make(rounds=2)
    conv3 = opt.bank.topologies["normal"].ops.index("nor_conv_3x3")
    with torch.no_grad():
        opt.bank.parent["normal"].fill_(0.05)
        opt.bank.child["normal"].fill_(0.005)
        opt.bank.child["normal"][:, 3, conv3] = 0.05
    _fixed_curvature(opt)
    first = opt.architecture_update()
    assert first["architecture"] == "|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"
    assert opt.bank.mask_parent_normal.tolist() == [False, False, False, True, False, False]
    assert opt.bank.mask_child_normal[3].tolist() == [k == conv3 for k in range(4)]
    g1_parent = float(opt.bank.gamma_parent_normal[3])
    g1_child = float(opt.bank.gamma_child_normal[3, conv3])
    assert 0 < g1_child < g1_parent < ENTROPY_THRESHOLD  # below the threshold, kept by the repair

    with torch.no_grad():  # round 2's training: the kept switches grow back
        opt.bank.parent["normal"][:, 3] = 1.0
        opt.bank.child["normal"][:, 3, conv3] = 1.0
    _fixed_curvature(opt)
    opt.architecture_update()
    assert opt.rounds_done == 2
    # the update from the round-1 gammas: omega = sqrt(n * (H/lam) / (1 + gamma H/lam)), gamma = ||s|| / omega
    n, h = 3, 1.0 / 0.01
    gp = math.sqrt(n) / math.sqrt(n * h / (1 + g1_parent * h))
    gc_raw = math.sqrt(n) / math.sqrt(n * h / (1 + g1_child * h))
    assert float(opt.bank.gamma_parent_normal[3]) == pytest.approx(gp, rel=1e-9)
    assert float(opt.bank.gamma_child_normal[3, conv3]) == pytest.approx(1 / (1 / gc_raw + 1 / gp), rel=1e-9)
    assert float(opt.bank.gamma_child_normal[3, conv3]) > ENTROPY_THRESHOLD
    assert 0 < float(opt.bank.omega_parent_normal[3]) < math.inf
    assert 0 < float(opt.bank.omega_child_normal[3, conv3]) < math.inf
    cell = opt.get_final_architecture()
    assert cell == (nb201.NONE, nb201.NONE, nb201.NONE, nb201.CONV3X3, nb201.NONE, nb201.NONE)
    rel = {(r["edge"], r["op"]): r for r in opt.relevance()}
    assert rel[(3, None)]["decision"] == rel[(3, "nor_conv_3x3")]["decision"] == "entropy"  # no repair now
    assert rel[(3, "nor_conv_3x3")]["kept"]
    assert rel[(0, None)]["reason"] == rel[(3, "skip_connect")]["reason"] == "pruned in an earlier round"
    # the kept groups are back in the penalty with their finite omega
    pen = opt.bank.penalty(0.01, 0.01)
    expected = 0.01 * (float(opt.bank.omega_parent_normal[3]) + float(opt.bank.omega_child_normal[3, conv3])) * math.sqrt(3)
    assert float(pen.detach()) == pytest.approx(expected, rel=1e-6)


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


def test_result_extras_hands_out_copies_of_the_update_records():
    """search_result pops each update's time_s into a field of its own; that must not strip the
    optimizer's own records (a second result, or a checkpoint written after it, keeps them)."""
    opt = make()
    _fixed_curvature(opt)
    opt.architecture_update()
    opt.result_extras()["architecture_updates"][0].pop("time_s")
    assert "time_s" in opt.result_extras()["architecture_updates"][0]
    assert "time_s" in opt.updates[0]


@pytest.mark.parametrize("reduction", ["mean", "sum", "dataset"])
def test_curvature_reduction_scales_the_summed_gauss_newton_diagonal(digits, reduction):
    """Over two batches of 8 and 16 images: ``sum`` is the sum of the per-batch sums, ``mean``
    divides it by the 24 samples, ``dataset`` multiplies that mean by the images of the epoch."""
    opt = make(curvature_reduction=reduction)
    batches = [digits[0][:8], digits[0][8:24]]
    opt._epoch_images = 96
    got = opt.compute_curvature(batches)["normal"]
    sums = [gauss_newton_diagonal(opt.model, x) for x in batches]
    scale = {"sum": 1.0, "mean": 1 / 24, "dataset": 96 / 24}[reduction]
    for got_h, param in zip(got, (opt.bank.parent["normal"], opt.bank.child["normal"])):
        want = (sums[0].get(param, "sum") + sums[1].get(param, "sum")) * scale
        assert bool((want > 0).any())
        assert torch.allclose(got_h, want, rtol=1e-9)


def test_curvature_batches_are_the_last_of_the_round_across_its_epochs(digits):
    """A round of 2 joint epochs of 4 steps with curvature_batches 6: the curvature is computed on
    the round's last 6 training batches (2 of its first epoch, 4 of its second), not only on the
    4 of its last epoch."""
    opt = make(epochs=2, curvature_batches=6)
    trainer = OneShotTrainer(opt, *digits, batch_size=48, seed=0)
    seen = []
    compute = opt.compute_curvature
    opt.compute_curvature = lambda inputs: (seen.extend(inputs), compute(inputs))[1]
    trainer.search()
    assert trainer.steps_per_epoch == 4 and opt.rounds_done == 1
    expected = [trainer._batch(trainer._order(trainer.train_index, epoch, 0), step, epoch, 0)[0]
                for epoch, step in [(1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3)]]
    assert len(seen) == 6 and all(torch.equal(a, b) for a, b in zip(seen, expected))


def test_dataset_reduction_scales_by_the_images_of_an_epoch_when_the_batches_span_epochs(digits):
    """Curvature batches from two epochs of 16 images hold 24 samples: ``dataset`` is still their
    mean times the 16 images of an epoch (the search set), not their sum."""
    opt = make(curvature_reduction="dataset")
    batches = [digits[0][:8], digits[0][8:24]]
    opt._epoch_images = 16
    got = opt.compute_curvature(batches)["normal"]
    sums = [gauss_newton_diagonal(opt.model, x) for x in batches]
    for got_h, param in zip(got, (opt.bank.parent["normal"], opt.bank.child["normal"])):
        want = (sums[0].get(param, "sum") + sums[1].get(param, "sum")) * (16 / 24)
        assert torch.allclose(got_h, want, rtol=1e-9)
