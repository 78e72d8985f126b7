"""The NAS-Bench-201 network: shapes, zero cells, training, and costs against NASLib's data."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.counting import flop_breakdown
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201.loaders import load_zero_cost_json
from naslib_bayes.search_spaces.nasbench201.model import (
    Cell,
    NB201Network,
    count_flops,
    count_parameters,
    model_cost,
)

N0, SKIP, C1, C3, POOL = range(5)
ALL_CONV = (C3, C1, C3, SKIP, C3, C1)  # every edge live, every conv on an input-output path
MIXED = (SKIP, C3, POOL, N0, C1, SKIP)
EMPTY = (N0,) * 6
NO_INPUT_PATH = (N0, N0, C3, N0, C1, SKIP)  # nothing leaves node 0, but convs sit downstream
OUTPUT_CUT = (C3, C3, C3, N0, N0, N0)  # all edges into node 3 are none

# Benchmark settings: class count and image size of each dataset (C=16, N=5 throughout).
DATASETS = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run this module's many batch-of-one passes on one intra-op thread.

    Tiny convolutions gain nothing from a second thread, and on a busy machine OpenMP's
    spin-waiting made this module 5x slower (300 s against 64 s at load 7 on 2 cores).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- shapes and zero cells --------------------------------------------------------------
@pytest.mark.parametrize("cell", [ALL_CONV, MIXED, EMPTY, NO_INPUT_PATH])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 16, 16), (2, 4, 4), (3, 7, 9)])
def test_forward_gives_logits_for_any_image_size_and_channels(cell, shape):
    """Eval-mode logits are the classifier on the global average of a (4C, ceil(H/4), ceil(W/4))
    feature map, each image's own (batch-independent), and depend on the image exactly when the
    cell has an input-to-output path (otherwise every image gets the same logits)."""
    torch.manual_seed(0)
    model = _randomise_bn(NB201Network(cell, C=4, N=1, num_classes=7, in_channels=shape[0])).eval()
    x = torch.randn(2, *shape)
    seen = []
    model.lastact.register_forward_hook(lambda module, inputs, output: seen.append(output.detach().clone()))
    with torch.no_grad():
        logits = model(x)
        alone = model(x[1:])
    assert logits.shape == (2, 7)
    features = seen[0]
    assert features.shape == (2, 16, -(-shape[1] // 4), -(-shape[2] // 4))
    by_hand = features.mean(dim=(2, 3)) @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(logits, by_hand, atol=1e-6)
    assert torch.allclose(alone[0], logits[1], atol=1e-5)
    differ = not torch.allclose(logits[0], logits[1], atol=1e-6)
    assert differ == nb201.is_connected(cell)


def test_benchmark_sized_network_runs_on_cifar_shapes():
    model = NB201Network(MIXED, num_classes=100)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    stage_widths = [m.C for m in model.cells if isinstance(m, Cell)]
    assert stage_widths == [16] * 5 + [32] * 5 + [64] * 5


def test_cell_accepts_a_benchmark_string():
    assert Cell(nb201.to_string(MIXED), 4).cell == MIXED


@pytest.mark.parametrize("cell", [EMPTY, OUTPUT_CUT])
def test_cell_whose_output_has_no_input_is_exactly_zero(cell):
    module = _randomise_bn(Cell(cell, 4)).eval()
    out = module(torch.randn(3, 4, 6, 6))
    assert out.shape == (3, 4, 6, 6) and torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("train", [True, False])
def test_cell_without_input_path_outputs_zero_at_initialisation(train):
    # The convs downstream of the zero node are computed (as in the benchmark's network); at
    # initialisation their BN shift is 0, so the output is zero in both modes. A trained BN
    # shift would make it a learned constant, which is why they are not skipped.
    module = Cell(NO_INPUT_PATH, 4).train(train)
    out = module(torch.randn(3, 4, 6, 6))
    assert out.shape == (3, 4, 6, 6) and torch.equal(out, torch.zeros_like(out))


def test_network_of_empty_cells_ignores_its_input():
    model = NB201Network(EMPTY, C=4, N=2).eval()
    first, second = model(torch.randn(1, 3, 8, 8)), model(torch.randn(1, 3, 8, 8))
    assert torch.equal(first, second)


@pytest.mark.parametrize("kwargs", [{"C": 0}, {"N": 1.5}, {"num_classes": -1}, {"in_channels": 0}])
def test_bad_network_sizes_are_user_errors_naming_the_size(kwargs):
    ((name, value),) = kwargs.items()
    with pytest.raises(UserError, match=f"positive integer {name}, got {value}$"):
        NB201Network(MIXED, **kwargs)


def test_bad_cell_is_a_user_error_naming_the_cell():
    with pytest.raises(UserError, match=re.escape("invalid NAS-Bench-201 cell (1, 2, 3)")):
        NB201Network((1, 2, 3))


# ---- training -----------------------------------------------------------------------------
def test_train_and_eval_modes_run_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = NB201Network(ALL_CONV, C=4, N=2, num_classes=5).train()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    bn = model.stem[1]
    assert bn.num_batches_tracked == 1 and bn.running_mean.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    assert torch.equal(logits, model(x).detach())  # eval mode is deterministic


# ---- costs ---------------------------------------------------------------------------------
def test_model_cost_reports_the_built_network_in_millions():
    model = NB201Network(MIXED, C=8, N=2, num_classes=3, in_channels=1)
    cost = model_cost(MIXED, C=8, N=2, num_classes=3, in_channels=1, image_size=12)
    assert cost == {"params_m": count_parameters(model) / 1e6, "flops_m": count_flops(model, (1, 12, 12)) / 1e6}


@pytest.fixture(scope="module")
def zc_costs(zc_json):
    """{dataset: {cell: (params, flops)}} from NASLib's zero-cost JSON, as integer counts."""
    bench = load_zero_cost_json(zc_json)
    cells = [bench.cell(i) for i in range(bench.num_in_file)]
    costs = {}
    for dataset in DATASETS:
        params, flops = bench.query_all(dataset, "params"), bench.query_all(dataset, "flops")
        # The file stores millions with 6 decimals, i.e. exact integer counts.
        costs[dataset] = {c: (round(params[i] * 1e6), round(flops[i] * 1e6)) for i, c in enumerate(cells)}
    return costs


def test_cost_depends_only_on_conv_and_pool_counts_in_model_and_data(zc_costs):
    # Every op but `none` is computed wherever it sits (convs fed by a zero node too, as in the
    # benchmark: 126 of the 491 cells have a conv off every input-output path, and all match), so a cell's cost depends only on how many edges carry a 1x1 conv, a 3x3 conv
    # or a pool (skip and none cost nothing). Checked here for all 491 cells, on each cell
    # module (the network is 3 x 5 copies of it) and on the benchmark's data; the next test
    # then compares one full network per group and dataset, which covers every cell.
    assert len(zc_costs["cifar10"]) == 491
    model_costs: dict[tuple[int, int, int], tuple] = {}
    data_costs: dict[tuple[int, int, int], tuple] = {}
    for cell in zc_costs["cifar10"]:
        key = _op_count_key(cell)
        module = Cell(cell, 16)
        cost = (count_parameters(module), flop_breakdown(module, (16, 8, 8)))
        assert model_costs.setdefault(key, cost) == cost, nb201.to_string(cell)
        data = tuple(zc_costs[dataset][cell] for dataset in DATASETS)
        assert data_costs.setdefault(key, data) == data, nb201.to_string(cell)


def naslib_flops(model: nn.Module, image_size: int) -> int:
    """The FLOP convention of NASLib's zero-cost data, rebuilt from our breakdown.

    NASLib measured its ``flops`` with tensorwatch's model statistics (a torchstat port), which
    counts, per forward pass of one image: conv and linear MACs (linear bias excluded), two
    operations per BatchNorm element (affine), one per ReLU input element, kernel-area
    operations per output of a fixed-window pool, and for the global average pool
    ``C * (H + 1) * (W + 1)`` where the true count is ``C * H * W``: that window over-count,
    ``C * (H + W + 1)`` with the final 4C x H/4 x W/4 feature map, is the only term that is not
    a plain operation count.
    """
    counts = flop_breakdown(model, (3, image_size, image_size))
    channels, side = model.classifier.in_features, image_size // 4
    window_overcount = channels * (2 * side + 1)
    return (
        counts["conv"] + counts["linear"] + 2 * counts["batchnorm"] + counts["activation"]
        + counts["pooling"] + window_overcount
    )


def test_costs_equal_the_benchmark_on_every_dataset(zc_costs):
    # Parameters: exact equality. NASLib counts every parameter of the benchmark network (conv
    # weights, BN scales and shifts, classifier weight and bias; none/skip/pool have none).
    # FLOPs: exact equality under NASLib's counting convention (see naslib_flops).
    representatives = {_op_count_key(cell): cell for cell in zc_costs["cifar10"]}
    assert len(representatives) == 66
    for cell in representatives.values():
        for dataset, (num_classes, image_size) in DATASETS.items():
            model = NB201Network(cell, C=16, N=5, num_classes=num_classes)
            params, flops = zc_costs[dataset][cell]
            assert count_parameters(model) == params, (dataset, nb201.to_string(cell))
            assert naslib_flops(model, image_size) == flops, (dataset, nb201.to_string(cell))


@pytest.mark.parametrize("side", [32, 16])
def test_nb201_flops_of_the_all_3x3_network_match_a_hand_count(side):
    # NAS-Bench-201's convention: multiply-accumulates of convs and the classifier only.
    C, area = 16, side * side
    stem = area * C * 3 * 9
    cell_convs = 6 * 5 * area * (C * C * 9 + (2 * C) ** 2 * 9 / 4 + (4 * C) ** 2 * 9 / 16)  # 6 convs, 5 cells, 3 stages
    reductions = sum(
        (area / 4**k) * (c * 2 * c * 9 + (2 * c) ** 2 * 9 + c * 2 * c)  # conv_a, conv_b, shortcut
        for k, c in ((1, C), (2, 2 * C))
    )
    classifier = 4 * C * 10
    model = NB201Network((C3,) * 6, C=C, N=5, num_classes=10)
    assert count_flops(model, (3, side, side)) == stem + cell_convs + reductions + classifier


# ---- helpers -------------------------------------------------------------------------------
def _op_count_key(cell: nb201.Cell) -> tuple[int, ...]:
    counts = nb201.op_counts(cell)
    return counts["nor_conv_1x1"], counts["nor_conv_3x3"], counts["avg_pool_3x3"]


def _randomise_bn(module: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters (as after training)."""
    torch.manual_seed(1)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 2)
            bn.bias.data.uniform_(-1, 1)
    return module
