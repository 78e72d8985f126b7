"""Derivation of discrete cells from switch gammas: exhaustive and randomised checks."""

from __future__ import annotations

import itertools
import random

import torch

from naslib_bayes.optimizers.bayesnas import derive
from naslib_bayes.optimizers.bayesnas.hard_prior import ENTROPY_THRESHOLD
from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
from naslib_bayes.search_spaces.darts.search_network import DartsSearchNetwork
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet

HIGH, LOW = 0.5, 0.01  # above / below the entropy threshold
CHILD_OPS = (nb201.SKIP, nb201.CONV1X1, nb201.CONV3X3, nb201.AVG_POOL)


def check_cell(cell, gp, gc, decisions):
    """Invariants every derived NB201 cell must satisfy."""
    gc = torch.as_tensor(gc, dtype=torch.float64).tolist()
    assert nb201.is_connected(cell)
    # no dangling edge: every non-none edge lies on an input-to-output path
    assert nb201.live_edges(cell) == tuple(op != nb201.NONE for op in cell)
    assert len(decisions) == 6 * 5
    keep_c, live = derive.entropy_stage(gp, gc, nb201.EDGES, (0,), (3,))
    for e, op in enumerate(cell):
        if op == nb201.NONE:
            continue
        k = CHILD_OPS.index(op)
        survivors = [j for j in range(4) if keep_c[e][j]]
        if survivors:  # an edge with entropy survivors keeps the largest-gamma survivor
            assert k in survivors
            assert gc[e][k] == max(gc[e][j] for j in survivors)
    # a decision is "repair" exactly when the final state differs from the entropy verdict
    by_key = {(d.edge, d.op): d for d in decisions}
    for e in range(6):
        parent = by_key[(e, None)]
        assert parent.kept == (cell[e] != nb201.NONE)
        assert (parent.decision == "entropy") == (parent.kept == live[e])
        for j, op in enumerate(CHILD_OPS):
            d = by_key[(e, nb201.OPS[op])]
            assert d.kept == (cell[e] == op)
            assert (d.decision == "entropy") == (d.kept == keep_c[e][j])


def test_all_edge_survival_patterns():
    rng = random.Random(0)
    seen_repairs = 0
    for pattern in itertools.product([False, True], repeat=6):
        gp = torch.tensor([HIGH if alive else LOW for alive in pattern], dtype=torch.float64)
        gc = torch.tensor([[rng.uniform(0.1, 1.0) for _ in range(4)] for _ in range(6)], dtype=torch.float64)
        cell, decisions = derive.derive_nb201(gp, gc)
        check_cell(cell, gp, gc, decisions)
        live = nb201.live_edge_mask(pattern)
        if any(live):
            # survivors already connect the output: exactly the live edges remain
            assert tuple(op != nb201.NONE for op in cell) == live
        else:
            seen_repairs += 1
            assert any(d.decision == "repair" and d.op is None for d in decisions)
    assert seen_repairs > 0


def test_random_op_survival_patterns():
    rng = random.Random(12345)
    for _ in range(10_000):
        gp = [rng.choice([LOW, HIGH, rng.uniform(0.0, 1.0)]) for _ in range(6)]
        gc = [[rng.choice([LOW, rng.uniform(0.0, 0.3), rng.uniform(0.0, 2.0)]) for _ in range(4)] for _ in range(6)]
        cell, decisions = derive.derive_nb201(gp, gc)
        check_cell(cell, gp, gc, decisions)


def test_edge_into_dead_node_is_pruned():
    # node 2 has no surviving input (edges 0->2, 1->2 pruned) while 2->3 has the largest gamma
    gp = torch.tensor([HIGH, LOW, LOW, HIGH, HIGH, 10.0], dtype=torch.float64)
    gc = torch.full((6, 4), 0.3, dtype=torch.float64)
    gc[:, 2] = 0.4  # conv3x3 strongest everywhere
    cell, decisions = derive.derive_nb201(gp, gc)
    assert cell == (nb201.CONV3X3, nb201.NONE, nb201.NONE, nb201.CONV3X3, nb201.CONV3X3, nb201.NONE)
    dead = next(d for d in decisions if d.edge == 5 and d.op is None)
    assert not dead.kept and dead.decision == "entropy" and "dead node" in dead.reason
    # node 1 does not reach the output (edges 1->2, 1->3 pruned): the edge 0->1 into it is pruned
    gp = torch.tensor([HIGH, HIGH, LOW, HIGH, LOW, HIGH], dtype=torch.float64)
    cell, _ = derive.derive_nb201(gp, gc)
    assert cell[0] == nb201.NONE and cell[1] != nb201.NONE


def test_disconnected_survivors_restore_the_path_of_largest_total_gamma():
    gp = torch.full((6,), LOW, dtype=torch.float64)
    gc = torch.full((6, 4), 0.02, dtype=torch.float64)
    # path 0->1->3 (edges 0, 4) has the largest total: 0.05 + 0.05 > 0.045 (edge 3) etc.
    gc[0, 1] = 0.05
    gc[4, 3] = 0.05
    gc[3, 2] = 0.045
    cell, decisions = derive.derive_nb201(gp, gc)
    assert cell == (nb201.CONV1X1, nb201.NONE, nb201.NONE, nb201.NONE, nb201.AVG_POOL, nb201.NONE)
    assert derive.repair_fraction(decisions) > 0
    assert all(d.decision == "repair" for d in decisions if d.kept)


def test_a_restored_path_avoids_edges_pruned_in_an_earlier_round():
    """Edge 1->2 was pruned in an earlier round (gamma 0: not computed since, no op to rank).
    Nothing survives now; 0->1->2->3 has the largest sum (0.05 + 0 + 0.04) only because the
    pruned edge links two strong ones. The restore must take a path of unpruned edges,
    0->1->3 (0.05 + 0.002), rather than a cell with an arbitrary op on the pruned edge."""
    gp = torch.tensor([0.05, 0.05, 0.0, 0.01, 0.05, 0.05], dtype=torch.float64)
    gc = torch.full((6, 4), 0.01, dtype=torch.float64)
    gc[0, 2] = 0.05
    gc[2] = 0.0
    gc[4] = 0.001
    gc[4, 1] = 0.002
    gc[5, 1] = 0.04
    cell, decisions = derive.derive_nb201(gp, gc)
    check_cell(cell, gp, gc, decisions)
    assert cell == (nb201.CONV3X3, nb201.NONE, nb201.NONE, nb201.NONE, nb201.CONV1X1, nb201.NONE)
    assert not any(d.kept for d in decisions if d.edge == 2)


def test_several_survivors_keep_largest_gamma():
    gp = torch.full((6,), HIGH, dtype=torch.float64)
    gc = torch.tensor([[0.1, 0.2, 0.3, 0.05]] * 6, dtype=torch.float64)
    cell, decisions = derive.derive_nb201(gp, gc)
    assert cell == (nb201.CONV3X3,) * 6
    repaired = [d for d in decisions if d.decision == "repair"]
    assert len(repaired) == 6 * 2  # skip and conv1x1 survived the entropy test but were dropped
    assert all(d.op in ("skip_connect", "nor_conv_1x1") for d in repaired)
    assert all(d.reason == "repair: a larger-gamma op kept on this edge" for d in repaired)


def test_a_restored_path_revives_the_survivors_it_connects():
    """Edges 1->2, 1->3 and 2->3 survive the entropy test but node 1 is unreachable, so nothing
    is live. The path of largest total gamma is 0->1->3 (0.03 + 3.0); restoring it makes node 1
    reachable, which revives 1->2 and 2->3 with their largest-gamma ops."""
    gp = torch.full((6,), HIGH, dtype=torch.float64)
    gc = torch.full((6, 4), 0.02, dtype=torch.float64)  # below the threshold: 0->1, 0->2, 0->3
    gc[0, 1] = 0.03
    gc[2] = torch.tensor([0.1, 0.2, 0.1, 0.1])
    gc[4] = torch.tensor([0.1, 0.1, 3.0, 0.1])
    gc[5] = torch.tensor([0.1, 0.1, 0.1, 0.3])
    cell, decisions = derive.derive_nb201(gp, gc)
    check_cell(cell, gp, gc, decisions)
    assert cell == (nb201.CONV1X1, nb201.NONE, nb201.CONV1X1, nb201.NONE, nb201.CONV3X3, nb201.AVG_POOL)
    reason = {d.edge: d.reason for d in decisions if d.op is None}
    restored = "repair: restored the input-to-output path of largest total gamma"
    assert reason[0] == reason[4] == restored
    assert reason[2] == reason[5] == "repair: revived by a restored path"


def test_darts_genotype_two_distinct_inputs_no_none():
    ops = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
           "dil_conv_5x5")
    rng = random.Random(7)
    for trial in range(2000):
        gp = [rng.choice([LOW, HIGH, rng.uniform(0, 1)]) for _ in range(14)]
        gc = [[rng.choice([LOW, rng.uniform(0, 1)]) for _ in ops] for _ in range(14)]
        genotype, concat, decisions = derive.derive_darts_cell(gp, gc, ops)
        assert concat == [2, 3, 4, 5]
        assert len(genotype) == 8
        for node in range(4):
            (op_a, src_a), (op_b, src_b) = genotype[2 * node: 2 * node + 2]
            assert src_a != src_b and 0 <= src_a < node + 2 and 0 <= src_b < node + 2
            assert op_a in ops and op_b in ops
        kept_edges = [d.edge for d in decisions if d.op is None and d.kept]
        assert len(kept_edges) == 8
    # all survive: the two largest-gamma inputs per node, with their largest-gamma op
    gp = torch.full((14,), HIGH, dtype=torch.float64)
    gc = torch.full((14, 7), 0.2, dtype=torch.float64)
    gc[0, 3] = gc[1, 4] = 0.9  # node 2: inputs 0 and 1
    gc[4, 0] = gc[2, 1] = 0.9  # node 3: inputs 2 (edge 4) and 0 (edge 2)
    genotype, _, decisions = derive.derive_darts_cell(gp, gc, ops)
    assert genotype[:4] == [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("avg_pool_3x3", 0), ("max_pool_3x3", 2)]
    dropped = [d for d in decisions if d.op is None and not d.kept]
    assert len(dropped) == 14 - 8  # nodes 3, 4, 5 have 3, 4, 5 surviving inputs and keep two
    assert all(d.decision == "repair" and d.reason == "repair: not among the node's two strongest inputs"
               for d in dropped)


def test_darts_cell_concatenates_and_keeps_alive_only_the_topologys_outputs():
    """With multiplier 2 of 4 steps the search cell concatenates nodes 4 and 5 only: the
    genotype must too, and node 3, whose edges to them fail the entropy test, is dead."""
    ops = ("max_pool_3x3", "sep_conv_3x3")
    edges = derive.darts_edges(4)
    from3 = [e for e, (src, _) in enumerate(edges) if src == 3]
    into3 = [e for e, (_, dst) in enumerate(edges) if dst == 3]
    gp = [LOW if e in from3 else HIGH for e in range(len(edges))]
    gc = [[HIGH, LOW] for _ in edges]
    topo = DartsSearchNetwork(4, 10, layers=2, steps=4, multiplier=2, in_channels=1).topologies()[0]
    assert topo.outputs == (4, 5)
    _, concat, decisions = derive.derive_darts_cell(gp, gc, ops, outputs=topo.outputs)
    assert concat == [4, 5]
    parent = {d.edge: d for d in decisions if d.op is None}
    kept3 = [e for e in into3 if parent[e].kept]
    assert len(kept3) == 2  # node 3 is dead: the genotype's two inputs of it are a fill-up
    assert all(parent[e].decision == "repair" and "too few survivors" in parent[e].reason for e in kept3)
    # all intermediate nodes are outputs by default: node 3 and its inputs are live
    _, concat, decisions = derive.derive_darts_cell(gp, gc, ops)
    assert concat == [2, 3, 4, 5]
    parent = {d.edge: d for d in decisions if d.op is None}
    assert all(parent[e].decision == "entropy" for e in kept3)


def test_bayesnas_derives_the_concat_of_its_search_network():
    opt = BayesNAS(seed=0)
    opt.adapt_search_space(DartsSearchNetwork(4, 10, layers=5, steps=4, multiplier=2, in_channels=1))
    genotype = opt.derive()["architecture"]
    assert genotype.normal_concat == genotype.reduce_concat == (4, 5)


# --------------------------------------------------------------------------------------
# The real update followed by the real derivation (BayesNAS.derive on the SwitchBank's gammas)
# --------------------------------------------------------------------------------------
def _optimizer(supernet, seed=0):
    torch.manual_seed(seed)
    opt = BayesNAS(seed=seed)
    opt.adapt_search_space(supernet)
    return opt


def _unit_curvature(bank):
    """H = 1 for every switch: with lambda = 0.01, H/lambda = 100 and gamma ~ the switch value."""
    return {name: (torch.ones(t.num_cells, t.num_edges, dtype=torch.float64),
                   torch.ones(t.num_cells, t.num_edges, t.num_ops, dtype=torch.float64))
            for name, t in bank.topologies.items()}


def test_update_then_derive_nb201_restores_the_path_of_largest_real_gamma():
    """Nothing survives the entropy test, so the output is disconnected and every edge is dead;
    the restored path must be the one of largest *real* gamma (conv3x3 on 0->3, 10x the
    others), not the first path in index order with the first op (what zeroed gammas gave)."""
    opt = _optimizer(NB201SuperNet(4, 1, 10, 1))
    bank = opt.bank
    conv3 = bank.topologies["normal"].ops.index("nor_conv_3x3")
    with torch.no_grad():
        bank.parent["normal"].fill_(0.05)
        bank.child["normal"].fill_(0.005)
        bank.child["normal"][:, 3, conv3] = 0.05
    upd = bank.update(_unit_curvature(bank), 0.01, 0.01)["normal"]
    assert upd.live == [False] * 6
    gp, gc = bank.gammas("normal")
    assert bool((gp > 0).all()) and bool((gc > 0).all())  # dead edges keep their own gammas
    assert float(gc.max()) == float(gc[3, conv3]) < ENTROPY_THRESHOLD
    derivation = opt.derive()
    cell = derivation["architecture"]
    assert cell == (nb201.NONE, nb201.NONE, nb201.NONE, nb201.CONV3X3, nb201.NONE, nb201.NONE)
    kept = [d for d in derivation["per_type"]["normal"]["decisions"] if d.kept]
    assert [(d.edge, d.op) for d in kept] == [(3, None), (3, "nor_conv_3x3")]
    assert all(d.decision == "repair" and d.entropy is not None for d in kept)
    assert kept[0].gamma == float(gp[3]) and kept[1].gamma == float(gc[3, conv3])


def test_update_then_derive_darts_fills_a_node_by_its_real_gammas():
    """All three inputs of node 3 fail the entropy test (node 3 has no survivor, its two
    out-edges are dead by node dependencies); the fill-up must take the two inputs of largest
    real gamma with their largest-gamma op: sep_conv_5x5 from node 2, dil_conv_3x3 from node 1
    (zeroed gammas gave max_pool_3x3 from nodes 0 and 1)."""
    opt = _optimizer(DartsSearchNetwork(4, 10, layers=5, in_channels=1))
    bank = opt.bank
    ops = bank.topologies["normal"].ops
    edges = derive.darts_edges(4)
    into3 = [e for e, (_, dst) in enumerate(edges) if dst == 3]
    assert into3 == [2, 3, 4]  # from nodes 0, 1, 2
    with torch.no_grad():
        for name in bank.topologies:
            bank.parent[name][:, into3] = 0.05
            bank.child[name][:, into3, :] = 0.1
            bank.child[name][:, 4, ops.index("sep_conv_5x5")] = 1.0
            bank.child[name][:, 3, ops.index("dil_conv_3x3")] = 0.5
    updates = bank.update(_unit_curvature(bank), 0.01, 0.01)
    out3 = [e for e, (src, _) in enumerate(edges) if src == 3]
    for name, upd in updates.items():
        assert [e for e, alive in enumerate(upd.live) if not alive] == into3 + out3
        gp, _ = bank.gammas(name)
        assert bool((gp[into3 + out3] > 0).all())
    genotype = opt.derive()["architecture"]
    for cell in (genotype.normal, genotype.reduce):
        assert cell[2:4] == (("dil_conv_3x3", 1), ("sep_conv_5x5", 2))
        assert cell[:2] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))  # node 2: all equal, index order
    decisions = opt.derive()["per_type"]["normal"]["decisions"]
    by_key = {(d.edge, d.op): d for d in decisions}
    for e in out3:  # above the threshold, pruned only because node 3 has no surviving input
        assert by_key[(e, None)].gamma > ENTROPY_THRESHOLD and "dead node" in by_key[(e, None)].reason


def test_derivation_recomputes_the_updates_survivors_from_the_stored_gammas():
    """The derivation's entropy stage on the stored (unzeroed) gammas reproduces exactly the
    update's survivors and node dependencies, so pruning decisions are those of the update."""
    opt = _optimizer(NB201SuperNet(4, 1, 10, 1))
    bank = opt.bank
    gen = torch.Generator().manual_seed(0)
    dead_seen = 0
    for _ in range(40):
        with torch.no_grad():
            bank.parent["normal"].copy_(torch.rand(3, 6, generator=gen) * 0.15)
            bank.child["normal"].copy_(torch.rand(3, 6, 4, generator=gen) * 0.25)
            bank.gamma_parent_normal.fill_(1.0)
            bank.gamma_child_normal.fill_(1.0)
        upd = bank.update(_unit_curvature(bank), 0.01, 0.01)["normal"]
        keep_c, live = derive.entropy_stage(*bank.gammas("normal"), nb201.EDGES, (0,), (3,))
        assert live == upd.live
        assert keep_c == upd.keep_child.tolist()
        assert [any(row) for row in keep_c] == upd.keep_parent.tolist()
        dead_seen += sum(p and not alive for p, alive in zip(upd.present, upd.live))
    assert dead_seen > 0  # some edges were dead by dependencies only
