"""The DARTS space: ops, networks, and a BayesNAS and a DARTS search on digits whose genotypes train
to >= 90% held-out accuracy."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.bayesnas.curvature import gauss_newton_diagonal
from naslib_bayes.optimizers.bayesnas.switches import SwitchBank
from naslib_bayes.optimizers.darts import DARTS, SoftmaxMixer
from naslib_bayes.optimizers.oneshot import OneShotModel
from naslib_bayes.optimizers.random_cell import RandomCell
from naslib_bayes.search_spaces.darts.eval_network import DartsEvalNetwork, drop_path
from naslib_bayes.search_spaces.darts.genotype import Genotype
from naslib_bayes.search_spaces.darts.ops import NONZERO_PRIMITIVES, PRIMITIVES, make_op
from naslib_bayes.search_spaces.darts.search_network import DartsSearchNetwork, cell_edges, reduction_layers
from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet
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


def test_auxiliary_head_reads_the_second_reduction_cell_with_darts_widths():
    """DARTS's auxiliary head classifies the features after the second reduction cell (cell 5 of 8,
    4 nodes of 4C channels: 16C), with 128 then 768 channels at C = 36, scaled with C (floored at 16 and 32)."""
    g = Genotype.from_json({"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                            "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]] * 4})
    torch.manual_seed(0)
    net = DartsEvalNetwork(g, 4, 10, 8, auxiliary=True, in_channels=1).train()
    seen = {}
    net.cells[5].register_forward_hook(lambda module, args, out: seen.setdefault("cell5", out))
    net.auxiliary_head.register_forward_hook(lambda module, args, out: seen.setdefault("head_in", args[0]))
    net(torch.randn(2, 1, 16, 16))
    assert seen["head_in"] is seen["cell5"] and seen["head_in"].shape[1] == 16 * 4
    convs = [m for m in net.auxiliary_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 16), (16, 85)]  # C = 4: 128 C / 36 floored at 16
    darts_size = DartsEvalNetwork(g, 36, 10, 8, auxiliary=True, in_channels=1)
    convs = [m for m in darts_size.auxiliary_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(576, 128), (128, 768)]
    half = DartsEvalNetwork(g, 18, 10, 8, auxiliary=True, in_channels=1)
    convs = [m for m in half.auxiliary_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(288, 64), (64, 384)]


def test_eval_network_of_darts_v2_has_the_published_parameter_count():
    """DARTS (second order)'s CIFAR-10 cell in the 20-cell, C = 36 evaluation network: DARTS's
    training script reports 3,349,342 parameters outside the auxiliary head (the paper's 3.3M).
    Equality checks every op's layers, the preprocessing and reduction widths and the classifier."""
    darts_v2 = Genotype.from_json({
        "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
                   ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
                   ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    })
    net = DartsEvalNetwork(darts_v2, 36, 10, 20, auxiliary=True)
    outside_head = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("auxiliary_head."))
    assert outside_head == 3_349_342


def test_search_network_has_the_parameter_count_of_darts_search_model():
    """DARTS's search model on CIFAR-10 (C = 16, 8 cells, 4 steps) logs 1,930,618 weights (its
    architecture parameters are kept apart): every mixed op's candidate ops, with their
    non-affine BatchNorms, and the preprocessing and reduction widths are DARTS's."""
    net = DartsSearchNetwork(16, 10, layers=8)
    assert sum(p.numel() for p in net.parameters()) == 1_930_618


def test_drop_path_spares_identity_edges_and_drops_the_others():
    """As in DARTS, drop path zeroes whole samples of an edge's output, but never of an identity edge."""
    from naslib_bayes.search_spaces.darts.eval_network import EvalCell

    torch.manual_seed(0)
    skips = [("skip_connect", 0), ("skip_connect", 1)] * 4
    convs = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * 4
    s0, s1 = torch.randn(64, 4, 6, 6), torch.randn(64, 4, 6, 6)
    for edges, spared in ((skips, True), (convs, False)):
        cell = EvalCell(edges, (2, 3, 4, 5), 4, 4, 4, reduction=False, reduction_prev=False).train()
        kept = cell(s0, s1, 0.0)
        dropped = cell(s0, s1, 0.9, torch.Generator().manual_seed(0))
        assert torch.allclose(dropped, kept) == spared


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


def test_random_cell_derives_seeded_connected_nb201_cells():
    """The random-cell baseline's NB201 architecture is a connected cell (as NASLib's sampler): 341 of
    the 15,625 cells are not, and these seeds draw some of them without the filter."""
    from naslib_bayes.search_spaces.nasbench201 import cell as nb201

    supernet = NB201SuperNet(4, 1, 10, 1)
    cells = []
    for seed in range(400):
        opt = RandomCell(seed=seed)
        opt.adapt_search_space(supernet)
        cells.append(opt.get_final_architecture())
    assert all(nb201.is_connected(c) for c in cells)
    assert len(set(cells)) >= 390  # spread over the space, not a few fixed cells
    again = RandomCell(seed=3)
    again.adapt_search_space(supernet)
    assert again.get_final_architecture() == cells[3]


def test_genotype_validation():
    with pytest.raises(ValueError, match="none"):
        Genotype.from_json({"normal": [["none", 0], ["skip_connect", 1]], "reduce": [["skip_connect", 0], ["skip_connect", 1]]})
    with pytest.raises(ValueError, match="not an earlier node"):
        Genotype.from_json({"normal": [["skip_connect", 2], ["skip_connect", 1]], "reduce": [["skip_connect", 0], ["skip_connect", 1]]})


@pytest.mark.parametrize("source", [0.7, 1.5, True, "1", float("inf")])
def test_genotype_input_that_is_not_a_whole_number_is_refused_naming_the_edge(source):
    """int() made 0.7 input 0 and true input 1: a network other than the one written trained silently
    (and Infinity was an OverflowError traceback)."""
    data = {"normal": [["sep_conv_3x3", 0], ["skip_connect", source]], "reduce": [["skip_connect", 0], ["skip_connect", 1]]}
    with pytest.raises(UserError, match=r"^g.json: normal\[1\] input must be a whole number"):
        Genotype.from_json(data, source="g.json")
    whole = {**data, "normal": [["sep_conv_3x3", 0], ["skip_connect", 1.0]]}
    assert Genotype.from_json(whole).normal == (("sep_conv_3x3", 0), ("skip_connect", 1))



@pytest.mark.parametrize("concat", [5, None, "2345", {"2": 3}])
def test_genotype_concat_that_is_not_a_list_is_refused_naming_the_concat(concat):
    """A concat of 5 or null was refused as 'genotype edges must be [op, input] pairs', sending the
    user to the edges, which were right."""
    data = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": concat,
            "reduce": [["skip_connect", 0], ["skip_connect", 1]]}
    with pytest.raises(UserError, match=r"^g.json: normal_concat must be a list of node indices"):
        Genotype.from_json(data, source="g.json")


def test_genotype_without_concat_concatenates_every_node_of_each_cell_type():
    """A reduction cell with fewer nodes than the normal cell concatenates its own nodes, instead of
    being refused for a reduce_concat the genotype never listed (taken from the normal cell)."""
    g = Genotype.from_json({"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                            "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]] * 2})
    assert (g.normal_concat, g.reduce_concat) == ((2, 3, 4, 5), (2, 3))
    net = DartsEvalNetwork(g, 4, 10, 3, auxiliary=False, in_channels=1)
    assert net(torch.randn(2, 1, 8, 8))[0].shape == (2, 10)

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


# ---- first-order DARTS --------------------------------------------------------------------------
class Scale(torch.nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


def test_darts_edge_mixes_its_ops_by_the_softmax_over_all_five_ops_none_included():
    mixer = SoftmaxMixer(NB201SuperNet(4, 1, 10, 1).topologies(), torch.Generator().manual_seed(0))
    with torch.no_grad():  # exp(alpha) = 4 (none), 1, 2, 3, 10: softmax weights 4/20, 1/20, 2/20, 3/20, 10/20
        mixer.alpha["normal"][2] = torch.tensor([4.0, 1.0, 2.0, 3.0, 10.0]).log()
    out = mixer.mix(torch.ones(1), [Scale(f) for f in (1.0, 10.0, 100.0, 1000.0)], "normal", 0, 2)
    assert float(out.detach()) == pytest.approx((1 + 2 * 10 + 3 * 100 + 10 * 1000) / 20)


def _darts_nb201(warmup_epochs: int) -> DARTS:
    torch.manual_seed(0)
    opt = DARTS(seed=0, warmup_epochs=warmup_epochs)
    opt.adapt_search_space(NB201SuperNet(4, 1, 10, 1))
    opt.new_epoch(0)
    return opt


def _two_batches():
    g = torch.Generator().manual_seed(1)
    batch = lambda: (torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))  # noqa: E731
    return batch(), batch()


def _gradients(loss, params):
    return torch.autograd.grad(loss, params)


def test_darts_step_moves_alpha_by_adam_on_the_validation_batch_then_weights_by_sgd_on_the_training_batch():
    """Adam's first step is lr * g / (|g| + eps), g the gradient of the validation loss plus
    weight decay * alpha (DARTS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3); then SGD's first
    step with momentum is lr * (clipped gradient of the training loss at the new alpha + wd * w)."""
    opt = _darts_nb201(warmup_epochs=0)
    group = opt.arch_optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3e-4, (0.5, 0.999), 1e-3)
    train, val = _two_batches()
    before = copy.deepcopy(opt.model)
    alpha0 = before.arch.alpha["normal"].detach().clone()
    (g,) = _gradients(F.cross_entropy(before(val[0]), val[1]), [before.arch.alpha["normal"]])
    g = g + 1e-3 * alpha0
    opt.step(train, val)
    alpha = opt.mixer.alpha["normal"].detach()
    torch.testing.assert_close(alpha, alpha0 - 3e-4 * g / (g.abs() + 1e-8), rtol=0, atol=1e-9)
    with torch.no_grad():
        before.arch.alpha["normal"].copy_(alpha)
    weights = list(before.net.parameters())
    grads = _gradients(F.cross_entropy(before(train[0]), train[1]), weights)
    norm = torch.sqrt(sum((gr ** 2).sum() for gr in grads))
    clip = min(1.0, 5.0 / (float(norm) + 1e-6))
    for w_new, w, gr in zip(opt.model.net.parameters(), weights, grads):
        torch.testing.assert_close(w_new.detach(), w.detach() - 0.05 * (clip * gr + 3e-4 * w.detach()), rtol=0, atol=1e-6)


def test_darts_warmup_trains_the_weights_on_both_batches_and_leaves_alpha_alone():
    opt = _darts_nb201(warmup_epochs=1)
    alpha0 = opt.mixer.alpha["normal"].detach().clone()
    train, val = _two_batches()
    _, logits_val, _, val_loss = opt.step(train, val)
    assert torch.equal(opt.mixer.alpha["normal"].detach(), alpha0)
    assert logits_val is not None and val_loss is not None  # the validation batch trained the weights too


def _set_weights(opt: DARTS, name: str, rows: list[dict[int, float]]) -> None:
    """Give cell type ``name`` the softmax weights ``rows`` (column -> weight, the rest share what is left)."""
    alpha = opt.mixer.alpha[name]
    with torch.no_grad():
        for e, row in enumerate(rows):
            rest = (1.0 - sum(row.values())) / (alpha.shape[1] - len(row))
            alpha[e] = torch.tensor([row.get(k, rest) for k in range(alpha.shape[1])]).log()


def test_darts_derives_the_nb201_cell_by_the_argmax_over_all_five_ops_none_included():
    opt = _darts_nb201(warmup_epochs=0)
    # columns: none, skip, conv1x1, conv3x3, pool
    _set_weights(opt, "normal", [{0: 0.4, 3: 0.3}, {3: 0.5}, {1: 0.5}, {4: 0.5}, {2: 0.5}, {0: 0.5, 1: 0.45}])
    assert opt.get_final_architecture() == (0, 3, 1, 4, 2, 0)


def test_darts_genotype_takes_per_node_the_two_edges_with_the_largest_non_none_weight():
    opt = DARTS(seed=0)
    opt.adapt_search_space(DartsSearchNetwork(4, 10, layers=5, in_channels=1))
    # columns: none, max_pool, avg_pool, skip, sep3, sep5, dil3, dil5; edges 0-1 into node 2,
    # 2-4 into node 3, 5-8 into node 4, 9-13 into node 5 (from nodes 0, 1, ... in order)
    rows = [{0: 0.5, 4: 0.3}, {7: 0.4},
            {0: 0.9, 1: 0.05}, {3: 0.3}, {2: 0.4},
            {}, {1: 0.6}, {}, {5: 0.5},
            {4: 0.45}, {}, {}, {}, {6: 0.5}]
    for name in ("normal", "reduce"):
        _set_weights(opt, name, rows)
    expected = (("sep_conv_3x3", 0), ("dil_conv_5x5", 1), ("skip_connect", 1), ("avg_pool_3x3", 2),
                 ("max_pool_3x3", 1), ("sep_conv_5x5", 3), ("sep_conv_3x3", 0), ("dil_conv_3x3", 4))
    genotype = opt.get_final_architecture()
    assert genotype.normal == genotype.reduce == expected
    assert genotype.normal_concat == (2, 3, 4, 5)


class _EdgeNumberMixer:
    """Each edge's output is its own number everywhere: a node holds the sum of its edges' numbers."""

    def mix(self, state, ops, cell_type, index, edge):
        return torch.full_like(state, float(edge))


@pytest.mark.parametrize("multiplier, expected_nodes", [(1, [26.0]), (2, [9.0, 26.0]), (3, [1.0, 9.0, 26.0])])
def test_search_cell_concatenates_its_last_nodes(multiplier, expected_nodes):
    """Three steps: node 0 sums edges 0+1, node 1 edges 2+3+4, node 2 edges 5..8 (1, 9, 26); the
    output is the last ``multiplier`` of them, in order, C channels each (DARTS's concat)."""
    from naslib_bayes.search_spaces.darts.search_network import SearchCell

    cell = SearchCell(steps=3, multiplier=multiplier, c_pp=4, c_p=4, c=2, reduction=False, reduction_prev=False,
                      cell_type="normal", index=0)
    out = cell(torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3), _EdgeNumberMixer())
    assert out.shape == (1, 2 * multiplier, 3, 3)
    expected = torch.cat([torch.full((1, 2, 3, 3), value) for value in expected_nodes], dim=1)
    torch.testing.assert_close(out, expected)


def test_a_genotype_key_it_does_not_know_is_refused_naming_it():
    # a misspelt concat was ignored: the cell silently concatenated every node instead
    data = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concta": [2],
            "reduce": [["skip_connect", 0], ["skip_connect", 1]]}
    with pytest.raises(UserError) as info:
        Genotype.from_json(data, source="g.json")
    assert str(info.value) == ("g.json: unknown genotype key 'normal_concta'; a genotype has normal, normal_concat, "
                               "reduce, reduce_concat")
    data["normal_concat"] = data.pop("normal_concta")
    genotype = Genotype.from_json(data)
    assert Genotype.from_json(genotype.to_json()) == genotype


def test_an_empty_concat_is_refused_as_empty():
    # it was called "a node that does not exist", which sent the user looking for a wrong index
    data = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": [],
            "reduce": [["skip_connect", 0], ["skip_connect", 1]]}
    with pytest.raises(UserError) as info:
        Genotype.from_json(data, source="g.json")
    assert str(info.value) == "g.json: normal_concat is empty; list the intermediate nodes (2 .. 2) the cell outputs"


def test_a_genotype_in_darts_python_form_is_refused_as_such_before_any_folder(tmp_path, capsys):
    """DARTS's genotypes.py writes ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=range(2, 6), ...)``;
    pasted into --arch it was read as a malformed NAS-Bench-201 cell string."""
    from cli_runner import run_cli

    darts_text = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 3), "
                  "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=range(2, 3))")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--arch", darts_text, "--dataset", "digits", "--epochs", "1", "--out", out)
    assert code == 2 and not out.exists()
    assert err.strip().splitlines() == [
        "naslib-bayes: error: --arch: DARTS's Python form Genotype(...) is not read; give the genotype as JSON, "
        '{"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5], "reduce": [...], '
        '"reduce_concat": [2, 3, 4, 5]}, or a JSON file holding it']
