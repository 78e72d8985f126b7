"""The DARTS space: ops, networks, and a BayesNAS and a DARTS search on digits whose genotypes train
to >= 90% held-out accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from naslib_bayes.optimizers.bayesnas.curvature import gauss_newton_diagonal
from naslib_bayes.optimizers.bayesnas.switches import SwitchBank
from naslib_bayes.optimizers.darts import DARTS
from naslib_bayes.optimizers.oneshot import OneShotModel
from naslib_bayes.optimizers.random_cell import RandomCell
from naslib_bayes.search_spaces.darts.eval_network import DartsEvalNetwork, drop_path
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES, PRIMITIVES, make_op
from naslib_bayes.search_spaces.darts.search_network import DartsSearchNetwork, cell_edges, reduction_layers
from naslib_bayes.training.evaluate import TrainConfig, run_training
from naslib_bayes.training.search import SearchConfig, run_oneshot_search



@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride, size", [(1, 8), (2, 8), (2, 7)])
def test_ops_keep_channels_and_halve_on_stride(name, stride, size):
    torch.manual_seed(0)
    op = make_op(name, 4, stride, affine=False, pool_bn=True)
    y = op(torch.randn(2, 4, size, size))
    side = -(-size // stride)
    assert y.shape == (2, 4, side, side)
    if name == "none":
        assert float(y.abs().sum()) == 0.0


def test_search_network_shape_and_topology():
    net = DartsSearchNetwork(4, 10, layers=5, in_channels=1)
    assert reduction_layers(5) == (1, 3) and reduction_layers(8) == (2, 5)
    topo = {t.name: t for t in net.topologies()}
    assert topo["normal"].num_cells == 3 and topo["reduce"].num_cells == 2
    assert len(cell_edges()) == 14 and topo["normal"].ops == NONZERO_PRIMITIVES and len(PRIMITIVES) == 8
    assert topo["normal"].inputs == (0, 1) and topo["normal"].outputs == (2, 3, 4, 5)
    bank = SwitchBank(net.topologies())
    out = net(torch.randn(3, 1, 8, 8), bank)
    assert out.shape == (3, 10)
    # the usual 8-cell network has 6 normal and 2 reduction cells
    assert {t.name: t.num_cells for t in DartsSearchNetwork(4, 10).topologies()} == {"normal": 6, "reduce": 2}


def test_switch_curvature_through_the_darts_supernet():
    torch.manual_seed(0)
    net = DartsSearchNetwork(4, 10, layers=5, in_channels=1)
    bank = SwitchBank(net.topologies())
    res = gauss_newton_diagonal(OneShotModel(net, bank), torch.randn(8, 1, 8, 8))
    for name in ("normal", "reduce"):
        hp, hc = res.get(bank.parent[name], "sum"), res.get(bank.child[name], "sum")
        assert hp.shape == (bank.topologies[name].num_cells, 14) and hc.shape[-1] == 7
        assert bool((hp > 0).all()) and bool((hc >= 0).all()) and bool((hc > 0).any())


def test_eval_network_drop_path_and_auxiliary_head():
    g = Genotype.from_json({"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                            "reduce": [["max_pool_3x3", 0], ["dil_conv_5x5", 1]] * 4})
    net = DartsEvalNetwork(g, 4, 10, 5, auxiliary=True, in_channels=1, drop_path_prob=0.3)
    net.train()
    logits, aux = net(torch.randn(4, 1, 8, 8))
    assert logits.shape == (4, 10) and aux.shape == (4, 10)
    net.eval()
    logits, aux = net(torch.randn(4, 1, 8, 8))
    assert aux is None
    x = torch.ones(1000, 1, 1, 1)
    dropped = drop_path(x, 0.25, torch.Generator().manual_seed(0))
    assert 0.2 < float((dropped == 0).float().mean()) < 0.3
    assert torch.allclose(dropped.mean(), torch.tensor(1.0), atol=0.1)  # rescaled by 1/(1-p)


@pytest.mark.parametrize("method", [DARTS, RandomCell])
def test_baselines_derive_the_concat_of_their_search_network(method):
    """With multiplier 2 of 4 steps the search cell concatenates nodes 4 and 5 only; the derived
    genotype must describe that cell, not one concatenating every intermediate node."""
    opt = method(seed=0)
    opt.adapt_search_space(DartsSearchNetwork(4, 10, layers=5, steps=4, multiplier=2, in_channels=1))
    genotype = opt.get_final_architecture()
    assert genotype.normal_concat == genotype.reduce_concat == (4, 5)


def test_genotype_validation():
    with pytest.raises(ValueError, match="none"):
        Genotype.from_json({"normal": [["none", 0], ["skip_connect", 1]], "reduce": [["skip_connect", 0], ["skip_connect", 1]]})
    with pytest.raises(ValueError, match="not an earlier node"):
        Genotype.from_json({"normal": [["skip_connect", 2], ["skip_connect", 1]], "reduce": [["skip_connect", 0], ["skip_connect", 1]]})


@pytest.mark.parametrize("optimizer", ["bayesnas", "darts"])
def test_digits_search_genotype_trains_to_90_percent(optimizer, tmp_path):
    """A search on digits with a small 5-cell DARTS supernet, then training the genotype."""
    cfg = SearchConfig(optimizer=optimizer, search_space="darts", dataset="digits", seed=0, channels=4, cells=5,
                       batch_size=64, search_images=128,
                       hyperparameters={"curvature_batches": 1} if optimizer == "bayesnas" else {})
    result = run_oneshot_search(cfg)
    genotype = Genotype.from_json(result["final_architecture"])  # validates ops and inputs
    for cell in (genotype.normal, genotype.reduce):
        assert len(cell) == 8
        for node in range(4):
            (op_a, src_a), (op_b, src_b) = cell[2 * node: 2 * node + 2]
            assert src_a != src_b, "two inputs from distinct predecessors"
            assert "none" not in (op_a, op_b)
    if optimizer == "bayesnas":
        assert len(result["relevance"]) == 2 * 14 * 8
        assert {r["decision"] for r in result["relevance"]} <= {"entropy", "repair"}
    (tmp_path / "g.json").write_text(json.dumps(result["final_architecture"]))
    trained = run_training(TrainConfig(str(tmp_path / "g.json"), "digits", epochs=3, channels=4, cells=5,
                                       batch_size=64, lr=0.05), tmp_path / "train")
    assert trained["test_accuracy"] >= 90.0, trained["test_accuracy"]
    assert (tmp_path / "train" / "checkpoint.pt").exists()
