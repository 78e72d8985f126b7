"""BayesNAS update rules on a hand-computed example, the entropy boundary, node dependencies."""

from __future__ import annotations

import math

import pytest
import torch

from naslib_bayes.optimizers.bayesnas import hard_prior
from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD, hard_update
from naslib_bayes.optimizers.bayesnas.switches import CellTopology, SwitchBank

D = dict(dtype=torch.float64)


def test_hand_computed_update():
    """One edge, two cells, one child op.

    parent: s = (0.6, 0.8), ||s|| = 1, H = (2, 0.5), lambda_o = 0.5 -> H/lambda = (4, 1);
            gamma = 0.5 -> C = 1/(2+4) = 1/6, 1/(2+1) = 1/3;
            omega^2 = |-C/0.25 + 2| summed = 4/3 + 2/3 = 2 -> omega = sqrt(2), gamma = 1/sqrt(2).
    child:  s = (0.3, 0.4), ||s|| = 0.5, H = (1, 1), lambda_c = 1, gamma = 1 -> C = 1/2 each;
            omega^2 = 2 * (1 - 1/2) = 1 -> gamma = 0.5;
            coupled: 1 / (1/0.5 + sqrt(2)) = 1 / (2 + sqrt(2)).
    """
    upd = hard_update(
        switch_parent=torch.tensor([[0.6], [0.8]], **D),
        switch_child=torch.tensor([[[0.3]], [[0.4]]], **D),
        curvature_parent=torch.tensor([[2.0], [0.5]], **D),
        curvature_child=torch.tensor([[[1.0]], [[1.0]]], **D),
        gamma_parent=torch.tensor([0.5], **D),
        gamma_child=torch.tensor([[1.0]], **D),
        lambda_origin=0.5, lambda_child=1.0,
        edges=[(0, 1)], inputs=[0], outputs=[1],
    )
    assert torch.allclose(upd.curvature_parent.flatten(), torch.tensor([4.0, 1.0], **D))
    assert torch.allclose(upd.C_parent.flatten(), torch.tensor([1 / 6, 1 / 3], **D))
    assert torch.allclose(upd.omega_parent, torch.tensor([math.sqrt(2)], **D))
    assert torch.allclose(upd.gamma_parent, torch.tensor([1 / math.sqrt(2)], **D))
    assert torch.allclose(upd.C_child.flatten(), torch.tensor([0.5, 0.5], **D))
    assert torch.allclose(upd.omega_child, torch.tensor([[1.0]], **D))
    assert torch.allclose(upd.gamma_child_uncoupled, torch.tensor([[0.5]], **D))
    assert torch.allclose(upd.gamma_child, torch.tensor([[1 / (2 + math.sqrt(2))]], **D))
    assert upd.live == [True]


def test_reweight_closed_form():
    """With C the Laplace variance, |-C/gamma^2 + 1/gamma| = H / (1 + gamma H)."""
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(5, 3, generator=gen, **D) * 10
    gamma = torch.rand(3, generator=gen, **D) + 0.1
    c = hard_prior.posterior_variance(gamma, h)
    omega = hard_prior.reweight(gamma, c, 0)
    assert torch.allclose(omega, (h / (1 + gamma * h)).sum(0).sqrt())


def test_entropy_boundary():
    assert math.isclose(ENTROPY_THRESHOLD, 1 / (2 * math.pi * math.e))
    at = torch.tensor([ENTROPY_THRESHOLD], **D)
    assert abs(float(hard_prior.entropy(at))) < 1e-12
    assert not bool(hard_prior.entropy_keep(at))  # entropy exactly 0 is "non-positive": pruned
    assert bool(hard_prior.entropy_keep(at * (1 + 1e-9)))
    assert not bool(hard_prior.entropy_keep(at * (1 - 1e-9)))
    assert float(hard_prior.entropy(torch.tensor(0.06, **D))) > 0 > float(hard_prior.entropy(torch.tensor(0.05, **D)))


@pytest.mark.parametrize("curvature", [0.0, 1e-6, 1e-2, 1.0, 1e2, 1e6, 1e12])
def test_large_gamma_survives_whatever_its_curvature(curvature):
    """A group with large switches and large prior variance is kept for any curvature: large
    curvature shrinks C, not gamma (gamma >= ||s|| sqrt(gamma_old / n))."""
    n = 4
    upd = hard_update(
        switch_parent=torch.ones(n, 1, **D), switch_child=torch.ones(n, 1, 1, **D),
        curvature_parent=torch.full((n, 1), curvature, **D), curvature_child=torch.full((n, 1, 1), curvature, **D),
        gamma_parent=torch.tensor([2.0], **D), gamma_child=torch.tensor([[2.0]], **D),
        lambda_origin=0.01, lambda_child=0.01, edges=[(0, 1)], inputs=[0], outputs=[1],
    )
    assert bool(upd.keep_parent.all()) and bool(upd.keep_child.all())
    assert float(upd.gamma_parent) >= math.sqrt(2.0) - 1e-9
    if curvature > 0:
        assert float(upd.C_parent.max()) < 2.0  # the posterior variance did shrink


def test_small_switches_are_pruned_and_coupling_prunes_children():
    """A parent group driven to ~0 is pruned and takes its (large) children with it."""
    upd = hard_update(
        switch_parent=torch.full((3, 2), 1.0, **D).index_fill_(1, torch.tensor([1]), 1e-3),
        switch_child=torch.ones(3, 2, 2, **D),
        curvature_parent=torch.ones(3, 2, **D), curvature_child=torch.ones(3, 2, 2, **D),
        gamma_parent=torch.ones(2, **D), gamma_child=torch.ones(2, 2, **D),
        lambda_origin=0.01, lambda_child=0.01, edges=[(0, 1), (0, 1)], inputs=[0], outputs=[1],
    )
    assert upd.keep_parent.tolist() == [True, False]
    assert upd.keep_child.tolist() == [[True, True], [False, False]]
    assert float(upd.gamma_child_uncoupled[1].min()) > ENTROPY_THRESHOLD  # pruned only by the coupling


def test_node_dependencies_prune_dead_edges_but_keep_their_gammas():
    """NB201-like DAG: node 2 unreachable (edges 0->2, 1->2 pruned) kills edge 2->3; the dead
    edge is pruned through ``live`` while its gammas stay its own (not zeroed)."""
    edges = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert hard_prior.live_edge_mask(edges, [True, False, False, True, True, True], [0], [3]) == \
        [True, False, False, True, True, False]
    # node 1 does not reach the output: the edge into it is dead
    assert hard_prior.live_edge_mask(edges, [True, True, False, False, False, True], [0], [3]) == \
        [False, True, False, False, False, True]
    # the mask follows the DAG, not the order the edges are listed in
    present = [True, False, True, True, False, True]  # 0->1->2->3 and 0->3
    want = hard_prior.live_edge_mask(edges, present, [0], [3])
    order = [5, 2, 0, 4, 3, 1]
    got = hard_prior.live_edge_mask([edges[i] for i in order], [present[i] for i in order], [0], [3])
    assert want == [True, False, True, True, False, True] and got == [want[i] for i in order]
    n = 2
    s = torch.ones(n, 6, **D)
    s[:, 1] = 1e-4
    s[:, 2] = 1e-4
    upd = hard_update(s, torch.ones(n, 6, 1, **D), torch.ones(n, 6, **D), torch.ones(n, 6, 1, **D),
                      torch.ones(6, **D), torch.ones(6, 1, **D), 0.01, 0.01, edges, [0], [3])
    assert upd.live == [True, False, False, True, True, False]
    assert upd.present == [True, False, False, True, True, True]
    assert upd.keep_parent.tolist() == upd.live
    assert upd.keep_child[:, 0].tolist() == upd.live
    # edge 2->3 is as strong as the live edges: same gammas, pruned only by the dependency
    assert torch.equal(upd.gamma_parent[5], upd.gamma_parent[0]) and float(upd.gamma_parent[5]) > ENTROPY_THRESHOLD
    assert torch.equal(upd.gamma_child[5], upd.gamma_child[0]) and float(upd.gamma_child[5, 0]) > ENTROPY_THRESHOLD
    assert torch.allclose(upd.gamma_child, hard_prior.hard_coupling(upd.gamma_child_uncoupled, upd.gamma_parent.unsqueeze(-1)))


def test_switch_bank_update_penalty_and_prune():
    topo = CellTopology("normal", 3, ((0, 1), (0, 2), (1, 2)), ("a", "b"), (0,), (2,))
    bank = SwitchBank([topo])
    # omega = 1 before the first update: penalty = lambda * sum_g ||s_g|| = 3 groups * sqrt(3) (+ 6 children)
    pen = bank.penalty(0.1, 0.2)
    assert math.isclose(float(pen.detach()), 0.1 * 3 * math.sqrt(3) + 0.2 * 6 * math.sqrt(3), rel_tol=1e-6)
    with torch.no_grad():
        bank.child["normal"][:, 0, 1] = 1e-3
    hp = torch.ones(3, 3, **D)
    hc = torch.ones(3, 3, 2, **D)
    upd = bank.update({"normal": (hp, hc)}, 0.01, 0.01)["normal"]
    assert bool((bank.gamma_child_normal[0, 1] <= ENTROPY_THRESHOLD))
    bank.prune("normal", upd.keep_parent, upd.keep_child)
    assert bank.active_ops("normal", 0) == [0]
    assert float(bank.child["normal"].detach()[:, 0, 1].abs().sum()) == 0.0
    # the pruned group leaves the penalty, even where momentum would move its switch off 0; the
    # others now use their omega, by the closed form of reweight: gamma_old = 1 and H / lambda =
    # 100 in each of the 3 cells give omega = sqrt(3 * 100 / 101) for every group
    with torch.no_grad():
        bank.child["normal"][:, 0, 1] = 0.5
    omega, norm = math.sqrt(300 / 101), math.sqrt(3)
    pen = bank.penalty(0.1, 0.2)
    assert math.isclose(float(pen.detach()), omega * norm * (0.1 * 3 + 0.2 * 5), rel_tol=1e-6)
    pen.backward()
    # d(lambda omega ||s_g||) / ds = lambda omega s / ||s_g||, and nothing for the pruned group
    want = torch.full((3, 3, 2), 0.2 * omega / norm)
    want[:, 0, 1] = 0.0
    assert torch.allclose(bank.child["normal"].grad, want, rtol=1e-6)
    assert torch.allclose(bank.parent["normal"].grad, torch.full((3, 3), 0.1 * omega / norm), rtol=1e-6)


def test_ard_update_on_channel_switches_without_a_dag():
    """The core step works per channel (no group dimension beyond the switch itself), as network
    compression uses it: C, omega and gamma by the closed forms."""
    s = torch.tensor([0.9, 0.05, 0.5], **D)
    h = torch.tensor([2.0, 2.0, 0.0], **D)
    g = torch.ones(3, **D)
    h_l, c, omega, gamma = hard_prior.ard_update(s.unsqueeze(0), h.unsqueeze(0), g, lam=0.5)
    assert torch.allclose(c.flatten(), 1 / (1 + h / 0.5))
    assert torch.allclose(omega[:2], torch.sqrt((h / 0.5) / (1 + h / 0.5))[:2])
    assert torch.allclose(gamma[:2], s[:2] / omega[:2])
    assert float(gamma[2]) > 1e9  # no curvature: omega floored, gamma huge (kept)
    assert hard_prior.entropy_keep(gamma).tolist() == [True, False, True]


def test_switch_bank_update_keeps_dead_edges_gammas_and_restarts_unmasked_zero_gammas():
    """SwitchBank.update stores every unmasked group's own gamma, also on an edge dead by node
    dependencies, and never lets an unmasked group sit at gamma 0 (omega = inf would freeze it
    there and drop it from the penalty): a zero gamma (e.g. from a checkpoint that zeroed dead
    edges) restarts from gamma_init. Masked groups stay at gamma 0 / omega 0."""
    topo = CellTopology("normal", 3, ((0, 1), (0, 2), (1, 2)), ("a", "b"), (0,), (2,))
    hp, hc = torch.ones(3, 3, **D), torch.ones(3, 3, 2, **D)

    bank = SwitchBank([topo], gamma_init=0.5)
    with torch.no_grad():
        bank.parent["normal"][:, 1] = 1e-3  # 0->2 fails
        bank.parent["normal"][:, 2] = 1e-3  # 1->2 fails too: node 1 reaches no output, 0->1 is dead
    upd = bank.update({"normal": (hp, hc)}, 0.01, 0.01)["normal"]
    assert upd.present == [True, False, False] and upd.live == [False, False, False]
    assert float(bank.gamma_parent_normal[0]) > ENTROPY_THRESHOLD  # dead, not zeroed
    assert bool((bank.gamma_child_normal[0] > ENTROPY_THRESHOLD).all())
    assert torch.equal(bank.gammas("normal")[0], upd.gamma_parent)

    fresh = SwitchBank([topo], gamma_init=0.5)
    stale = SwitchBank([topo], gamma_init=0.5)
    with torch.no_grad():
        stale.gamma_parent_normal[0] = 0.0  # unmasked, but gamma 0
        stale.gamma_child_normal[0] = 0.0
        for b in (fresh, stale):
            b.mask_parent_normal[2] = False  # masked: stays out
            b.parent["normal"][:, 2] = 0.0
            b.child["normal"][:, 2] = 0.0
    a = fresh.update({"normal": (hp, hc)}, 0.01, 0.01)["normal"]
    b = stale.update({"normal": (hp, hc)}, 0.01, 0.01)["normal"]
    for kind in ("gamma_parent", "gamma_child", "omega_parent", "omega_child"):
        assert torch.equal(stale.state(kind, "normal"), fresh.state(kind, "normal")), kind
    assert float(stale.gamma_parent_normal[0]) > ENTROPY_THRESHOLD and 0 < float(stale.omega_parent_normal[0]) < math.inf
    assert bool((stale.omega_child_normal[0] > 0).all())
    assert float(stale.gamma_parent_normal[2]) == 0.0 and float(stale.omega_parent_normal[2]) == 0.0
    assert a.live == b.live
    with pytest.raises(ValueError, match="gamma_init"):
        SwitchBank([topo], gamma_init=0.0)


def test_loading_a_pruned_banks_state_forgets_the_ops_read_before():
    """Resuming loads the masks of a checkpoint into a bank whose forward passes have already
    read its own masks: the ops computed afterwards must be the checkpoint's."""
    topo = CellTopology("normal", 2, ((0, 1), (0, 2), (1, 2)), ("a", "b"), (0,), (2,))
    pruned = SwitchBank([topo])
    keep_child = torch.tensor([[True, False], [True, True], [False, False]])
    pruned.prune("normal", torch.tensor([True, True, False]), keep_child)
    fresh = SwitchBank([topo])
    assert [fresh.active_ops("normal", e) for e in range(3)] == [[0, 1], [0, 1], [0, 1]]
    fresh.load_state_dict(pruned.state_dict())
    assert [fresh.active_ops("normal", e) for e in range(3)] == [[0], [0, 1], []]
    assert not fresh.active("normal", 2) and fresh.active("normal", 0, 0) and not fresh.active("normal", 0, 1)
