"""Property-based tests of compression on random supported chains: whatever the chain and the
switch decisions, the physically slimmed network computes what the masked network computes, it
has exactly the parameters its kept widths call for, and its saved files load back unchanged.
Modules and calls that look supported (grouped or dilated convolutions, other padding modes and
activations, batch statistics, residual adds, a layer called twice) are slimmed exactly or refused
in one line naming them.

Every test is derandomized (the same examples on every run) and kept small.
"""

from __future__ import annotations

import tempfile
from typing import NamedTuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from naslib_bayes.compression.io import (
    load_compressed,
    read_description,
    save_compressed,
)
from naslib_bayes.compression.prune import PrunePlan, plan_pruning, slim
from naslib_bayes.compression.switched import SwitchedNetwork
from naslib_bayes.compression.trace import (
    InputSelect,
    UnsupportedModelError,
    trace_chain,
)
from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.counting import count_parameters

SETTINGS = settings(derandomize=True, deadline=None, max_examples=100)
TOLERANCE = 1e-5


def _conv_block(draw, channels: int, size: tuple[int, int]) -> tuple[list[nn.Module], int, tuple[int, int]]:
    """A Conv2d (random kernel, stride, padding and its mode, dilation, bias) with optional
    BatchNorm2d, ReLU, pooling and dropout after it; the modules, the output channels and the
    output size."""
    kernel = draw(st.integers(1, min(3, *size)))
    padding = draw(st.integers(0, kernel // 2 + 1))
    dilation = draw(st.integers(1, max(1, (min(size) + 2 * padding - 1) // max(1, kernel - 1))))
    mode = draw(st.sampled_from(["zeros", "reflect", "circular", "replicate"])) if padding < min(size) else "zeros"
    stride = draw(st.integers(1, 2))
    out = draw(st.integers(1, 5))
    modules = [nn.Conv2d(channels, out, kernel, stride=stride, padding=padding, dilation=dilation,
                         bias=draw(st.booleans()), padding_mode=mode)]
    size = tuple((s + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for s in size)
    if draw(st.booleans()):  # batch statistics need more than one value per channel of an image
        track = draw(st.booleans()) or size[0] * size[1] == 1
        modules.append(nn.BatchNorm2d(out, affine=draw(st.booleans()), track_running_stats=track))
    if draw(st.booleans()):
        modules.append(nn.ReLU(inplace=draw(st.booleans())))
    if min(size) >= 2 and draw(st.booleans()):
        pool = draw(st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))
        modules.append(pool(2, padding=draw(st.integers(0, 1))))
        size = tuple((s + 2 * modules[-1].padding - 2) // 2 + 1 for s in size)
    if draw(st.booleans()):
        modules.append(nn.Dropout(0.3))
    return modules, out, size


def _linear_block(draw, features: int, last: bool) -> tuple[list[nn.Module], int]:
    out = 3 if last else draw(st.integers(1, 6))
    modules = [nn.Linear(features, out, bias=draw(st.booleans()))]
    if draw(st.booleans()):  # a batch norm of one value per feature needs its running statistics
        modules.append(nn.BatchNorm1d(out, affine=draw(st.booleans())))
    if not last and draw(st.booleans()):
        modules.append(nn.ReLU(inplace=draw(st.booleans())))
    if not last and draw(st.booleans()):
        modules.append(nn.Dropout(0.3))
    return modules, out


@st.composite
def chains(draw) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A random supported chain: conv blocks, an optional adaptive pooling, a Flatten, linear
    blocks ending in 3 logits."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(3, 8)), draw(st.integers(3, 8)))
    channels, size, modules = shape[0], shape[1:], []
    for _ in range(draw(st.integers(0, 3))):
        block, channels, size = _conv_block(draw, channels, size)
        modules += block
    if draw(st.booleans()):
        size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        modules.append(nn.AdaptiveAvgPool2d(size))
    modules.append(nn.Flatten())
    features = channels * size[0] * size[1]
    linears = draw(st.integers(1, 3))
    for n in range(linears):
        block, features = _linear_block(draw, features, last=n == linears - 1)
        modules += block
    return nn.Sequential(*modules), shape


def _randomise(net: SwitchedNetwork, seed: int, sparsity: float) -> None:
    """Switches of either sign away from 1, BatchNorm statistics away from (0, 1), biases away from
    0, and some (unit, input) weight slices and whole units' weights zeroed, so that constant units
    occur, folded or (where a consumer's zero padding makes them vary) kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.switch_parameters():
            p.copy_((torch.rand(p.shape, generator=g) + 0.5) * torch.where(torch.rand(p.shape, generator=g) < 0.2,
                                                                            -1.0, 1.0))
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                cut = torch.rand(m.weight.shape[:2], generator=g) < sparsity
                cut |= torch.rand(m.weight.shape[:1], generator=g).unsqueeze(1) < sparsity / 2  # reads nothing
                m.weight[cut] = 0
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))


def _decisions(draw, net: SwitchedNetwork):
    """Random keep-masks (a drawn share kept): units of every layer but the last, input groups of
    every layer."""
    keep = draw(st.sampled_from([0.6, 0.8, 0.95]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))

    def mask(n: int) -> torch.Tensor:
        return torch.rand(n, generator=g) < keep

    keep_units = [mask(info.units) for info in net.info.layers[:-1]] + [None]
    keep_inputs = [mask(info.in_groups) for info in net.info.layers]
    return keep_units, keep_inputs


class Case(NamedTuple):
    """A random chain's input shape, its switched network, the masked network and pruning plan of
    random decisions, and the slimmed dense network (None where no input is left in use)."""

    shape: tuple[int, int, int]
    net: SwitchedNetwork
    masked: SwitchedNetwork
    plan: PrunePlan
    dense: nn.Sequential | None


def _compressed(data) -> Case:
    model, shape = data.draw(chains())
    torch.manual_seed(data.draw(st.integers(0, 2**16)))
    net = SwitchedNetwork(trace_chain(model), shape)
    _randomise(net, data.draw(st.integers(0, 2**16)), data.draw(st.sampled_from([0.0, 0.2, 0.4])))
    keep_units, keep_inputs = _decisions(data.draw, net)
    masked = net.masked(keep_units, keep_inputs).eval()
    plan = plan_pruning(net, keep_units, keep_inputs)
    try:
        dense = slim(net, plan).to_dense().eval()
    except UserError:
        dense = None
    return Case(shape, net, masked, plan, dense)


def _inputs(shape, seed: int, n: int = 5) -> torch.Tensor:
    return torch.randn((n,) + tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@SETTINGS
@given(st.data())
def test_the_slimmed_network_computes_what_the_masked_network_computes(data):
    case = _compressed(data)
    x = _inputs(case.shape, 0)
    with torch.no_grad():
        want = case.masked(x)
        if case.dense is None:  # refused only when the masked network's output does not depend on its input
            assert torch.allclose(case.masked(_inputs(case.shape, 1)), want, atol=TOLERANCE, rtol=0)
            return
        got = case.dense(x)
    assert torch.allclose(got, want, atol=TOLERANCE, rtol=TOLERANCE), (got - want).abs().max()


def _hand_count(net: SwitchedNetwork, plan) -> int:
    """Parameters the kept widths call for, counted on the original network: per layer its kept
    rows times its kept input groups times the weights per group (a conv's kernel; the pixels a
    flattened channel becomes), a bias per kept row where the layer had one or folding added one,
    and a BatchNorm's affine pair per kept row (a switch folded into a BatchNorm makes it affine)."""
    total = 0
    for l, info in enumerate(net.info.layers):
        layer, rows = net.layer(l), plan.keep_units[l]
        kernel = layer.weight[0, 0].numel()
        total += int(rows.sum()) * int(plan.keep_inputs[l].sum()) * info.group_size * kernel
        if layer.bias is not None or bool((plan.bias_shift[l][rows] != 0).any()):
            total += int(rows.sum())
        bn = net.bn(l)
        if bn is not None and (bn.affine or l < net.num_layers - 1):
            total += 2 * int(rows.sum())
    return total


@SETTINGS
@given(st.data())
def test_the_slimmed_network_has_the_parameters_of_its_kept_widths(data):
    case = _compressed(data)
    if case.dense is None:
        return
    layers = [m for m in case.dense if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [m.weight.shape[0] for m in layers] == case.plan.kept_widths()
    assert count_parameters(case.dense) == _hand_count(case.net, case.plan)


@settings(derandomize=True, deadline=None, max_examples=25)
@given(st.data())
def test_a_saved_slimmed_network_loads_back_with_identical_outputs(data):
    case = _compressed(data)
    shape, plan, dense = case.shape, case.plan, case.dense
    if dense is None:
        return
    x = _inputs(shape, 2)
    with tempfile.TemporaryDirectory() as folder:
        save_compressed(dense, folder, shape, kept_units=plan.kept_widths())
        loaded = load_compressed(folder)
        assert read_description(folder)["kept_units"] == plan.kept_widths()
        state = torch.load(f"{folder}/model.pt", weights_only=True)
    assert set(state) == set(dense.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(x), dense(x))
    assert [type(m) for m in loaded] == [type(m) for m in dense]
    assert any(isinstance(m, InputSelect) for m in loaded) == (not bool(plan.keep_inputs[0].all()))


# ---- modules that look supported: handled exactly, or refused in one line naming them ------------
class _Forward(nn.Module):
    """conv -> ``step`` written in forward -> conv -> torch.flatten -> linear, on 2x6x6 images."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(144, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv2(self.step(self.conv(x))), 1))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(72, 3)

    def forward(self, x):
        return self.fc((self.conv(x) + x).flatten(1))


class _LinearTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(72, 72)
        self.out = nn.Linear(72, 3)

    def forward(self, x):
        return self.out(self.fc(torch.relu(self.fc(x.flatten(1)))))


def _conv_then(*modules, features=64) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3), *modules, nn.Flatten(), nn.Linear(features, 3))


@pytest.mark.parametrize("model, words, shape", [
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(16, 3)),
     ["'1' (Conv2d)", "groups=4"], (2, 6, 6)),
    (_conv_then(nn.LeakyReLU()), ["'1' (LeakyReLU)"], (2, 6, 6)),
    (_conv_then(nn.ELU()), ["'1' (ELU)"], (2, 6, 6)),
    (_conv_then(nn.GELU()), ["'1' (GELU)"], (2, 6, 6)),
    (_conv_then(nn.Sigmoid()), ["'1' (Sigmoid)"], (2, 6, 6)),
    (_conv_then(nn.Tanh()), ["'1' (Tanh)"], (2, 6, 6)),
    (_conv_then(nn.AdaptiveMaxPool2d(1), features=4), ["'1' (AdaptiveMaxPool2d)"], (2, 6, 6)),
    (_conv_then(nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4, track_running_stats=False), features=4),
     ["'2' (BatchNorm2d)", "track_running_stats=False"], (2, 6, 6)),
    (_Forward(F.leaky_relu), ["'leaky_relu'"], (2, 6, 6)),
    (_Forward(F.gelu), ["'gelu'"], (2, 6, 6)),
    (_Forward(torch.tanh), ["'tanh'"], (2, 6, 6)),
    (_Forward(F.elu), ["'elu'"], (2, 6, 6)),
    (nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(16, 3)), ["'0' (Conv1d)"], (2, 6)),
    (_Residual(), ["used 2 times", "sequential chains"], (2, 6, 6)),
    (_LinearTwice(), ["'fc' (Linear)", "2 times"], (2, 6, 6)),
    (_Forward(lambda x: x.view(-1, 144)), ["'view'"], (2, 6, 6)),
])
def test_a_module_or_call_that_only_looks_supported_is_refused_in_one_line_naming_it(model, words, shape):
    with pytest.raises(UnsupportedModelError) as info:
        SwitchedNetwork(trace_chain(model), shape)
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message


def _pad_mode_net(mode: str, **conv) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, padding_mode=mode,
                                                                            **conv), nn.Flatten(), nn.Linear(144, 3))


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Conv2d(2, 4, 3, dilation=2, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 3, dilation=2, padding=1),
                  nn.Flatten(), nn.Linear(64, 3)),
    _pad_mode_net("reflect"), _pad_mode_net("circular"), _pad_mode_net("replicate"),
    nn.Sequential(nn.Conv2d(2, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 4, 3, padding="same", dilation=2),
                  nn.Flatten(), nn.Linear(144, 3)),
    nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(),
                  nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                  nn.Linear(64, 3)),
    nn.Sequential(nn.Sequential(nn.Conv2d(2, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())),
                  nn.Sequential(nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(64, 3))),
    _Forward(F.relu), _Forward(lambda x: F.relu(x, inplace=True)),
    nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d((5, 3)),
                  nn.Flatten(), nn.Linear(60, 3)),
    nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.AdaptiveAvgPool2d(1),
                  nn.Flatten(), nn.Linear(4, 3)),
], ids=["dilated", "reflect", "circular", "replicate", "same", "batch-statistics", "nested", "F.relu",
        "F.relu-in-place", "adaptive-up", "adaptive-1"])
def test_a_lookalike_that_is_accepted_is_slimmed_exactly_and_saved_exactly(model):
    shape = (2, 6, 6)
    chain = trace_chain(model)
    for seed in range(4):
        torch.manual_seed(seed)
        net = SwitchedNetwork(chain, shape)
        _randomise(net, seed, 0.3)
        g = torch.Generator().manual_seed(seed)
        keep_units = [torch.rand(info.units, generator=g) < 0.6 for info in net.info.layers[:-1]] + [None]
        keep_inputs = [torch.ones(info.in_groups, dtype=torch.bool) for info in net.info.layers]
        dense = slim(net, plan_pruning(net, keep_units, keep_inputs)).to_dense().eval()
        x = _inputs(shape, seed)
        with torch.no_grad():
            torch.testing.assert_close(dense(x), net.masked(keep_units, keep_inputs).eval()(x), atol=TOLERANCE,
                                       rtol=TOLERANCE)
        with tempfile.TemporaryDirectory() as folder:
            save_compressed(dense, folder, shape)
            with torch.no_grad():
                assert torch.equal(load_compressed(folder)(x), dense(x))


@pytest.mark.parametrize("mode, width, folded, kept", [("reflect", 3, 1, 0), ("circular", 3, 1, 0),
                                                      ("zeros", 4, 0, 1)])
def test_a_constant_unit_feeding_a_padded_conv_is_folded_where_the_padding_keeps_it_constant(mode, width, folded,
                                                                                              kept):
    """Reflect and circular padding repeat a constant map, so its contribution is the same at every
    position and folds into the bias; zero padding makes the border differ, so the unit is kept."""
    torch.manual_seed(0)
    shape = (2, 6, 6)
    net = SwitchedNetwork(trace_chain(_pad_mode_net(mode)), shape)
    keep_units = [torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool), None]
    keep_inputs = [torch.ones(n, dtype=torch.bool) for n in (2, 4, 4)]
    with torch.no_grad():
        net.layer(0).weight[1] = 0  # unit 1 reads nothing: relu(bias), a constant map
        net.layer(0).bias[1] = 0.7
    plan = plan_pruning(net, keep_units, keep_inputs)
    assert (plan.removed[0]["constant"], plan.removed[0]["constant_kept"]) == (folded, kept)
    assert plan.kept_widths()[0] == width
    dense = slim(net, plan).to_dense().eval()
    x = _inputs(shape, 3)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), net.masked(keep_units, keep_inputs).eval()(x), atol=TOLERANCE,
                                   rtol=TOLERANCE)
