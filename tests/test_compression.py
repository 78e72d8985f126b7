"""Network compression: tracing, switches, dependencies, bias folding, slimming, saving."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from naslib_bayes.compression.io import load_compressed, read_description, save_compressed
from naslib_bayes.compression.models import build_model, vgg
from naslib_bayes.compression.prune import plan_pruning, slim
from naslib_bayes.compression.switched import SwitchedNetwork
from naslib_bayes.compression.trace import InputSelect, UnsupportedModelError, trace_chain
from naslib_bayes.optimizers.bayesnas import hard_prior
from naslib_bayes.search_spaces.counting import count_flops, count_parameters


def _randomise(net: SwitchedNetwork, seed: int) -> None:
    """Switches away from 1 and BatchNorm statistics away from (0, 1), so that folding matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.switch_parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def _random_decisions(net: SwitchedNetwork, seed: int, p_unit=0.5, p_input=0.7):
    g = torch.Generator().manual_seed(seed)
    keep_units = [torch.rand(info.units, generator=g) < p_unit for info in net.info.layers]
    keep_inputs = [torch.rand(info.in_groups, generator=g) < p_input for info in net.info.layers]
    for keep in keep_units + keep_inputs:  # never empty a layer
        keep[0] = True
    return keep_units, keep_inputs


SMALL_VGG = dict(config=(8, "M", 12, 12, "M", 16), hidden=24)


@pytest.mark.parametrize("name, shape", [("lenet5", (1, 28, 28)), ("lenet5", (1, 8, 8)), ("lenet300", (1, 8, 8)),
                                         ("vgg", (3, 16, 16))])
@pytest.mark.parametrize("seed", [0, 1])
def test_removal_gives_the_masked_networks_outputs(name, shape, seed):
    torch.manual_seed(seed)
    model = vgg(shape, 10, **SMALL_VGG) if name == "vgg" else build_model(name, shape, 10)
    net = SwitchedNetwork(trace_chain(model), shape)
    _randomise(net, seed)
    keep_units, keep_inputs = _random_decisions(net, seed)
    plan = plan_pruning(net, keep_units, keep_inputs)
    small = slim(net, plan)
    dense = small.to_dense().eval()
    masked = net.masked(keep_units, keep_inputs).eval()
    x = torch.randn(16, *shape)
    with torch.no_grad():
        want = masked(x)
        assert torch.allclose(small.eval()(x), want, atol=1e-5, rtol=0)
        assert torch.allclose(dense(x), want, atol=1e-5, rtol=0)
    # physically smaller: real parameter and FLOP counts shrink with the widths
    assert small.widths() == plan.kept_widths()
    assert small.widths()[:-1] != net.widths()[:-1]
    assert count_parameters(dense) < count_parameters(model)
    assert count_flops(dense, shape) < count_flops(model, shape)
    assert not any(isinstance(m, SwitchedNetwork) for m in dense.modules())


def _hand_built():
    """conv(2->3) BN ReLU pool conv(3->4) ReLU flatten linear(64->5) ReLU linear(5->3), on 2x14x14."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 5), nn.ReLU(),
                          nn.Linear(5, 3))
    with torch.no_grad():
        model[4].weight[1].zero_()  # conv2 unit 1 reads nothing: constant relu(0.7 * s)
        model[4].bias[1] = 0.7
        model[7].weight[:, 2 * 16:3 * 16].zero_()  # nothing reads conv2 unit 2
    return model


def test_dependency_propagation_and_bias_folding_on_a_hand_built_net():
    model = _hand_built()
    shape = (2, 14, 14)
    net = SwitchedNetwork(trace_chain(model), shape)
    _randomise(net, 3)
    keep_units = [torch.tensor([True, True, False]), torch.ones(4, dtype=torch.bool),
                  torch.tensor([True, True, True, True, False]), None]
    keep_inputs = [torch.ones(2, dtype=torch.bool), torch.ones(3, dtype=torch.bool),
                   torch.tensor([True, True, True, False]),  # conv2 unit 3: its consumer input is pruned
                   torch.ones(5, dtype=torch.bool)]
    plan = plan_pruning(net, keep_units, keep_inputs)
    # conv1 unit 2 pruned -> conv2 loses that input; conv2: unit 1 constant (folded), unit 2 has no
    # consumer, unit 3's only consumer input is pruned; fc1 unit 4 pruned -> fc2 loses that input
    assert plan.kept_widths() == [2, 1, 4, 3]
    assert plan.keep_inputs[1].tolist() == [True, True, False]
    assert plan.keep_inputs[3].tolist() == [True, True, True, True, False]
    assert plan.removed[0] == {"pruned": 1, "no_consumer": 0, "constant": 0, "constant_kept": 0}
    assert plan.removed[1] == {"pruned": 0, "no_consumer": 2, "constant": 1, "constant_kept": 0}
    # the fold: fc1 bias += sum over conv2 unit 1's 16 positions of W * t * relu(0.7 * s)
    s, t = float(net.parent[1][1]), float(net.child[2][1])
    const = t * F.relu(torch.tensor(0.7 * s)).item()
    expected = (net.layer(2).weight[:, 16:32].sum(dim=1) * const).double()
    assert torch.allclose(plan.bias_shift[2], expected.detach(), atol=1e-6)
    assert torch.count_nonzero(plan.bias_shift[1]) == 0 and torch.count_nonzero(plan.bias_shift[3]) == 0
    small = slim(net, plan)
    masked = net.masked(keep_units, keep_inputs).eval()
    x = torch.randn(8, *shape)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), masked(x), atol=1e-5, rtol=0)
        assert torch.allclose(small.to_dense().eval()(x), masked(x), atol=1e-5, rtol=0)
    # and without the fold the outputs would differ: the constant matters
    with torch.no_grad():
        no_fold = slim(net, type(plan)(plan.keep_units, plan.keep_inputs,
                                       [torch.zeros_like(b) for b in plan.bias_shift], plan.removed))
        assert (no_fold.eval()(x) - masked(x)).abs().max() > 1e-3


def three_padded_convs(middle: int) -> nn.Sequential:
    """Convolutions 2 -> 3 -> ``middle`` -> 2 channels with zero padding on 6x6 inputs, then a linear layer."""
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, middle, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(middle, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 36, 3))


def test_a_constant_unit_feeding_a_padded_conv_is_kept_exactly():
    torch.manual_seed(1)
    model = three_padded_convs(middle=4)
    with torch.no_grad():
        model[2].weight[1].zero_()
        model[2].bias[1] = 0.5
    net = SwitchedNetwork(trace_chain(model), (2, 6, 6))
    plan = plan_pruning(net, [None] * 4, [None] * 4)
    assert plan.removed[1]["constant_kept"] == 1 and plan.kept_widths() == [3, 4, 2, 3]
    assert plan.removed[1]["constant"] == 0  # kept, so not among the removed constants as well
    x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        assert torch.allclose(slim(net, plan).to_dense().eval()(x), net.eval()(x), atol=1e-5, rtol=0)


def test_a_constant_unit_read_only_by_a_kept_constant_unit_stays_exact():
    """conv1 unit 1 is constant; only conv2 unit 1 reads it, and that unit is kept (a constant
    that zero padding makes differ at the border of conv3's input): the padded map conv1 unit 1
    becomes at conv2 differs at the border too, so it cannot be folded into conv2 unit 1's bias."""
    torch.manual_seed(0)
    model = three_padded_convs(middle=3)
    with torch.no_grad():
        model[0].weight[1].zero_()
        model[0].bias[1] = 0.8
        model[2].weight[:, 1].zero_()
        model[2].weight[1].zero_()
        model[2].weight[1, 1] = torch.randn(3, 3)
    net = SwitchedNetwork(trace_chain(model), (2, 6, 6))
    plan = plan_pruning(net, [None] * 4, [None] * 4)
    assert plan.removed[1]["constant_kept"] == 1 and plan.removed[0]["constant_kept"] == 1
    assert plan.removed[1]["constant"] == plan.removed[0]["constant"] == 0
    x = torch.randn(4, 2, 6, 6)
    with torch.no_grad():
        assert torch.allclose(slim(net, plan).eval()(x), net.eval()(x), atol=1e-5, rtol=0)


def test_a_constant_unit_is_folded_into_a_consumer_without_a_bias():
    """Hidden unit 1 reads nothing: its output is relu(0.5) = 0.5 everywhere, and the bias-free
    last layer must gain a bias of W[:, 1] * 0.5 to compute without it what it did with it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[1].weight[1].zero_()
        model[1].bias[1] = 0.5
    net = SwitchedNetwork(trace_chain(model), (1, 2, 2))
    plan = plan_pruning(net, [None, None], [None, None])
    assert plan.kept_widths() == [2, 2] and plan.removed[0]["constant"] == 1
    last = slim(net, plan).to_dense()[-1]
    assert last.in_features == 2 and last.bias is not None
    assert torch.allclose(last.bias, model[3].weight[:, 1].detach() * 0.5, atol=1e-7)
    x = torch.randn(6, 1, 2, 2)
    with torch.no_grad():
        assert torch.allclose(slim(net, plan).eval()(x), model(x), atol=1e-6, rtol=0)


def test_inputs_pruned_twice_select_the_original_inputs_that_survived_both():
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10)
    net = SwitchedNetwork(trace_chain(model), (1, 8, 8))
    first = torch.arange(64) % 3 != 0
    once = slim(net, plan_pruning(net, [None] * 3, [first, None, None]))
    second = torch.arange(int(first.sum())) % 2 == 1  # of the inputs left, every other one
    twice = slim(once, plan_pruning(once, [None] * 3, [second, None, None]))
    survivors = [i for i in range(64) if i % 3][1::2]
    selects = [m for m in twice.to_dense() if isinstance(m, InputSelect)]
    assert len(selects) == 1 and selects[0].index.tolist() == survivors
    both = torch.zeros(64, dtype=torch.bool)
    both[survivors] = True
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(twice.eval()(x), net.masked([None] * 3, [both, None, None]).eval()(x), atol=1e-5)


def test_a_compressed_network_that_dropped_inputs_is_compressed_again_from_its_saved_files(tmp_path):
    """compress() traces the networks it is given: its own output, with an InputSelect in front
    of the first layer, is one of them (a second round of pruning, say)."""
    torch.manual_seed(0)
    net = SwitchedNetwork(trace_chain(build_model("lenet300", (1, 8, 8), 10)), (1, 8, 8))
    first = torch.arange(64) % 3 != 0
    save_compressed(slim(net, plan_pruning(net, [None] * 3, [first, None, None])).to_dense(), tmp_path, (1, 8, 8))
    loaded = load_compressed(tmp_path)
    chain = trace_chain(loaded)
    assert [type(m) for _, m in chain][:3] == [nn.Flatten, InputSelect, nn.Linear]
    again = SwitchedNetwork(chain, (1, 8, 8))
    second = torch.arange(int(first.sum())) % 2 == 1
    twice = slim(again, plan_pruning(again, [None] * 3, [second, None, None]))
    selects = [m for m in twice.to_dense() if isinstance(m, InputSelect)]
    assert len(selects) == 1 and selects[0].index.tolist() == [i for i in range(64) if i % 3][1::2]
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = again.masked([None] * 3, [second, None, None]).eval()(x)
        assert torch.allclose(twice.eval()(x), expected, atol=1e-5)


def test_slimming_keeps_layers_the_user_froze_frozen():
    """A frozen layer stays frozen through pruning, as its BatchNorm does: fine-tuning the slimmed
    network must not train weights that the uncompressed network kept fixed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, bias=False),
                          nn.ReLU(), nn.Flatten(), nn.Linear(48, 3))
    for module in (model[0], model[1], model[3]):
        module.requires_grad_(False)
    net = SwitchedNetwork(trace_chain(model), (1, 8, 8))
    with torch.no_grad():
        net.layer(0).weight[1].zero_()  # a constant unit: its bias is folded into the bias-free conv
    keep = [torch.tensor([True, True, False, True]), torch.tensor([True, False, True]), None]
    small = slim(net, plan_pruning(net, keep, [None, None, None]))
    assert small.layer(1).bias is not None
    frozen = [small.layer(0), small.bn(0), small.layer(1)]
    assert [p.requires_grad for m in frozen for p in m.parameters()] == [False] * 6
    assert all(p.requires_grad for p in small.layer(2).parameters())


def test_scratch_retraining_of_a_network_with_a_frozen_layer_is_refused_naming_it_before_training():
    """Scratch retraining gives every layer fresh weights: a layer the user froze would keep random
    weights that never train, so the run is refused at once, naming the layer."""
    from naslib_bayes.compression import CompressionConfig, compress
    from naslib_bayes.data import load_dataset
    from naslib_bayes.errors import UserError

    digits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("lenet300", digits.train.image_shape, digits.train.num_classes)
    model[3].requires_grad_(False)
    cfg = CompressionConfig(lam=0.05, epochs=3, finetune_epochs=1, augment=False, retrain="scratch")
    with pytest.raises(UserError, match=r"retrain='scratch'.*layer '3' \(Linear\) is frozen"):
        compress(model, digits.train, cfg, seed=0, log=pytest.fail)  # refused before the first epoch


@pytest.mark.parametrize("stage", ["compress", "train_dense"])
@pytest.mark.parametrize("layers, words", [
    ((nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)), r"outputs of shape \(3,\).*10 classes"),
    ((nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 10, 3)), r"outputs of shape \(10, 6, 6\).*10 classes"),
])
def test_a_network_without_a_logit_per_class_is_refused_in_one_line_before_training(stage, layers, words):
    # cross_entropy's "Target 8 is out of bounds" or "Expected target size" at the first step named neither
    from naslib_bayes.compression import CompressionConfig, compress, train_dense
    from naslib_bayes.data import load_dataset
    from naslib_bayes.errors import UserError

    digits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(*layers)
    cfg = CompressionConfig(lam=0.05, epochs=3, finetune_epochs=1, augment=False)
    run = compress if stage == "compress" else train_dense
    with pytest.raises(UserError, match=words):
        run(model, digits.train, cfg, seed=0, log=pytest.fail)  # refused before the first epoch


def test_reinitialise_keeps_the_hard_state_and_resets_weights_and_switches():
    """Scratch retraining (the one caller) trains without the sparsity term and makes no further
    update, so the HARD state stays as the last update left it, as the docstring says."""
    torch.manual_seed(0)
    net = SwitchedNetwork(trace_chain(build_model("lenet300", (1, 4, 4), 3)), (1, 4, 4))
    g = torch.Generator().manual_seed(0)
    h = lambda n: torch.rand(n, generator=g, dtype=torch.float64) * 100  # noqa: E731
    net.hard_update([h(300), h(100)], [h(16), h(300), h(100)], lam=1.0)
    with torch.no_grad():
        net.parent[0].mul_(0.3)
    before = {name: b.clone() for name, b in net.named_buffers()}
    net.reinitialise(0)
    assert all(torch.equal(b, before[name]) for name, b in net.named_buffers())
    assert int(net.num_updates) == 1 and not bool((net.state("gamma", "parent", 0) == 1).all())
    assert all(bool((s == 1).all()) for s in net.switch_parameters())


def test_slimming_carries_the_hard_state_of_the_surviving_switches():
    torch.manual_seed(0)
    net = SwitchedNetwork(trace_chain(build_model("lenet300", (1, 4, 4), 3)), (1, 4, 4))
    with torch.no_grad():
        net.parent[0][:5] = 0.01
        net.child[0][:3] = 0.0
    g = torch.Generator().manual_seed(0)
    h = lambda n: torch.rand(n, generator=g, dtype=torch.float64) * 100  # noqa: E731
    updates = net.hard_update([h(300), h(100)], [h(16), h(300), h(100)], lam=1.0)
    plan = plan_pruning(net, [u.keep_units for u in updates], [u.keep_inputs for u in updates])
    small = slim(net, plan)
    assert small.widths() == [295, 100, 3] and small.info.layers[0].in_groups == 13
    for kind in ("gamma", "omega", "C"):
        for l in range(3):
            kept = plan.keep_inputs[l]
            assert torch.equal(small.state(kind, "child", l), net.state(kind, "child", l)[kept]), (kind, l)
        for l in range(2):
            kept = plan.keep_units[l]
            assert torch.equal(small.state(kind, "parent", l), net.state(kind, "parent", l)[kept]), (kind, l)
    assert int(small.num_updates) == 1


def test_pruned_first_layer_inputs_become_an_input_selection():
    model = build_model("lenet300", (1, 8, 8), 10)
    net = SwitchedNetwork(trace_chain(model), (1, 8, 8))
    keep_inputs = [torch.arange(64) % 3 != 0, None, None]
    plan = plan_pruning(net, [None, None, None], keep_inputs)
    dense = slim(net, plan).to_dense().eval()
    selects = [m for m in dense if isinstance(m, InputSelect)]
    assert len(selects) == 1 and selects[0].index.tolist() == [i for i in range(64) if i % 3]
    assert dense[2].in_features == 42
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(dense(x), net.masked([None] * 3, keep_inputs).eval()(x), atol=1e-5)


# ------------------------------------------------------------------------------ unsupported models
class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid())
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x + self.conv(x), 1))


class _Scale(nn.Module):
    def forward(self, x):
        return x * 2.0


class _Block(nn.Module):
    """A residual block inside an otherwise sequential network."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class _TiedConv(nn.Module):
    """One convolution applied twice (tied weights), with one ReLU module reused as usual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * 64, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.relu(self.conv(self.relu(self.conv(x)))), 1))


class _TiedLinears(nn.Module):
    """Two linear layers sharing one weight tensor (the module of each is called once)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(128, 128)
        self.fc2 = nn.Linear(128, 128)
        self.fc2.weight = self.fc1.weight
        self.head = nn.Linear(128, 3)

    def forward(self, x):
        return self.head(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


@pytest.mark.parametrize("model, words", [
    (_Sigmoid(), ["'features.1'", "Sigmoid"]),
    (_TiedLinears(), ["'fc1'", "'fc2'", "share", "weight"]),
    (_TiedConv(), ["'conv'", "Conv2d", "2 times"]),
    (_Residual(), ["sequential chains"]),
    (nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU(), _Block(), nn.Flatten(), nn.Linear(72, 3)),
     ["used 2 times", "module '2' (_Block)", "sequential chains"]),
    (nn.Sequential(nn.Conv2d(1, 2, 3), _Scale(), nn.Flatten(), nn.Linear(72, 3)), ["mul", "module '1'", "_Scale"]),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(144, 3)), ["'0'", "groups=2"]),
    (nn.Sequential(nn.Flatten(), nn.Linear(128, 8), nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 2, 1)),
     ["'2'", "Unflatten"]),
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 3)),
     ["two BatchNorms"]),
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(144, 3)), ["'1'", "BatchNorm1d"]),
    (nn.Sequential(nn.Flatten(), nn.Linear(128, 8), nn.BatchNorm2d(8), nn.Linear(8, 3)), ["'2'", "BatchNorm2d"]),
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.MaxPool2d(2, return_indices=True), nn.Flatten(), nn.Linear(36, 3)),
     ["'1'", "MaxPool2d", "return_indices"]),
    (nn.Sequential(nn.Conv2d(2, 4, 3), InputSelect(4, [0, 2]), nn.Flatten(), nn.Linear(72, 3)),
     ["'1'", "InputSelect", "after the first layer"]),
])
def test_unsupported_models_give_an_error_naming_the_module(model, words):
    with pytest.raises(UnsupportedModelError) as info:
        SwitchedNetwork(trace_chain(model), (2, 8, 8) if not isinstance(model, _Sigmoid | _Residual) else (1, 8, 8))
    for word in words:
        assert word in str(info.value), str(info.value)


def _doubled_output(module, inputs, output):
    return output * 2


def _with_output_hook(model: nn.Module, module: nn.Module) -> nn.Module:
    module.register_forward_hook(_doubled_output)
    return model


def _weight_normed() -> nn.Module:
    with warnings.catch_warnings():  # torch.nn.utils.weight_norm is deprecated, not gone
        warnings.simplefilter("ignore")
        conv = torch.nn.utils.weight_norm(nn.Conv2d(2, 4, 3))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))


def _hooked_chain(where: str) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    return _with_output_hook(model, model if where == "root" else model[0])


@pytest.mark.parametrize("make, words", [
    (lambda: _hooked_chain("layer"), ["module '0' (Conv2d)", "hook"]),
    (lambda: _hooked_chain("root"), ["Sequential", "hook"]),
    (_weight_normed, ["module '0' (Conv2d)", "hook", "weight_norm"]),
], ids=["on a layer", "on the model", "weight_norm"])
def test_a_module_with_forward_hooks_is_refused_naming_it(make, words):
    """The slimmed network is built from fresh modules, without the hooks that change what the
    user's layers compute (a doubled output, weight_norm's weight from weight_g and weight_v)."""
    with pytest.raises(UnsupportedModelError) as info:
        SwitchedNetwork(trace_chain(make()), (2, 8, 8))
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message


@pytest.mark.parametrize("model, name, shape", [
    (nn.Sequential(nn.Flatten(), nn.Linear(128, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(),
                   nn.Linear(8, 3)), "'2' (BatchNorm1d)", "(8,)"),
    (nn.Sequential(nn.Conv2d(2, 4, 8), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(),
                   nn.Linear(4, 3)), "'1' (BatchNorm2d)", "(4, 1, 1)"),
])
def test_a_batchnorm_without_running_statistics_on_one_value_per_channel_is_refused_saying_why(model, name, shape):
    with pytest.raises(UnsupportedModelError) as info:
        SwitchedNetwork(trace_chain(model), (2, 8, 8))
    message = str(info.value)
    for words in (name, "track_running_stats=False", "one value per channel", shape, "single image"):
        assert words in message, message
    assert "Expected more than 1 value" not in message and "\n" not in message
    with_statistics = nn.Sequential(nn.Flatten(), nn.Linear(128, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    assert SwitchedNetwork(trace_chain(with_statistics), (2, 8, 8)).info.layers[0].bn == 2
    on_a_map = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                             nn.Linear(144, 3))  # many values per channel: batch statistics of one image work
    assert SwitchedNetwork(trace_chain(on_a_map), (2, 8, 8)).info.layers[0].bn == 1


class ConvActivationNet(nn.Module):
    """conv -> ``activation`` -> torch.flatten -> linear, written in forward as users write it."""

    def __init__(self, activation=F.relu):
        super().__init__()
        self.activation = activation
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 36, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.activation(self.conv(x)), 1))


def test_functional_flatten_and_relu_are_read_as_modules():
    chain = trace_chain(ConvActivationNet())
    assert [type(m).__name__ for _, m in chain] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    relu = nn.ReLU()  # a module without weights may be reused
    chain = trace_chain(nn.Sequential(nn.Conv2d(1, 2, 3), relu, nn.Conv2d(2, 2, 3), relu))
    assert [type(m).__name__ for _, m in chain] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]



@pytest.mark.parametrize("relu", [lambda x: F.relu(x, inplace=True), lambda x: F.relu(x, True),
                                  lambda x: x.relu_(), torch.relu_])
def test_an_in_place_functional_relu_is_read_as_a_relu_module(relu):
    torch.manual_seed(0)
    model = ConvActivationNet(relu)
    chain = trace_chain(model)
    assert [type(m).__name__ for _, m in chain] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():  # the chain computes what the model does
        assert torch.equal(nn.Sequential(*[m for _, m in chain])(x), model(x))



class _ViewFlatten(nn.Module):
    """conv ReLU pool, flattened by ``flatten(x)`` (a view written by hand), then a linear layer."""

    def __init__(self, flatten):
        super().__init__()
        self.flatten = flatten
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * 16, 4)

    def forward(self, x):
        batch = x.size(0)
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(self.flatten(x, batch))


@pytest.mark.parametrize("flatten", [
    lambda x, batch: x.view(x.size(0), -1), lambda x, batch: x.reshape(x.shape[0], -1),
    lambda x, batch: x.view(x.size()[0], -1), lambda x, batch: x.view((x.size(0), -1)),
    lambda x, batch: torch.reshape(x, (x.shape[0], -1)), lambda x, batch: x.view(batch, -1),
])
def test_a_view_to_the_batch_size_by_minus_one_is_read_as_a_flatten(flatten):
    torch.manual_seed(0)
    model = _ViewFlatten(flatten)
    chain = trace_chain(model)
    assert [type(m).__name__ for _, m in chain] == ["Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():  # the chain computes what the model does
        assert torch.equal(nn.Sequential(*[m for _, m in chain])(x), model(x))


@pytest.mark.parametrize("flatten, words", [
    (lambda x, batch: x.view(x.size(1), -1), ["used 2 times", "'size", "'view'"]),  # rows of channels
    (lambda x, batch: x.view(-1, 48), ["'view'"]),
])
def test_a_view_that_is_not_a_flatten_to_the_batch_size_is_refused(flatten, words):
    with pytest.raises(UnsupportedModelError) as info:
        trace_chain(_ViewFlatten(flatten))
    for word in words:
        assert word in str(info.value), str(info.value)


class _Functional(nn.Module):
    """conv, then ``step(x, training)`` written in forward, then a linear layer on what it flattens to."""

    def __init__(self, step, features):
        super().__init__()
        self.step = step
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(features, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.step(self.conv(x), self.training), 1))


@pytest.mark.parametrize("step, features, modules", [
    (lambda x, t: F.max_pool2d(x, 2), 48, [nn.MaxPool2d(2)]),
    (lambda x, t: F.max_pool2d(x, (3, 2), stride=(1, 2), padding=1, dilation=(1, 1), ceil_mode=True), 120,
     [nn.MaxPool2d((3, 2), (1, 2), 1, (1, 1), ceil_mode=True)]),
    (lambda x, t: torch.max_pool2d(x, 2, [], 0, 1, False), 48, [nn.MaxPool2d(2)]),
    (lambda x, t: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=False, count_include_pad=False,
                               divisor_override=None), 48, [nn.AvgPool2d(3, 2, 1, count_include_pad=False)]),
    (lambda x, t: F.adaptive_avg_pool2d(x, (2, None)), 48, [nn.AdaptiveAvgPool2d((2, None))]),
    (lambda x, t: F.dropout(x, 0.25, t, True), 192, [nn.Dropout(0.25)]),
    (lambda x, t: F.dropout(x, p=0.25, training=False), 192, [nn.Identity()]),  # never drops
    (lambda x, t: x.mean((3, 2)), 3, [nn.AdaptiveAvgPool2d(1), nn.Flatten()]),
    (lambda x, t: torch.mean(x, dim=[2, -1], keepdim=True), 3, [nn.AdaptiveAvgPool2d(1)]),
])
def test_functional_pooling_dropout_and_mean_are_read_as_the_modules_they_stand_for(step, features, modules):
    torch.manual_seed(0)
    model = _Functional(step, features)
    chain = [m for _, m in trace_chain(model)]
    expected = [nn.Conv2d] + [type(m) for m in modules] + [nn.Flatten, nn.Linear]
    assert [type(m) for m in chain] == expected
    for got, want in zip(chain[1:], modules):
        assert repr(got) == repr(want) and vars(got) == vars(want) | {"training": got.training}
    x = torch.randn(4, 1, 8, 8)
    for training in (True, False):  # dropout follows the model's mode, as nn.Dropout does
        model.train(training)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            want = model(x)
            torch.manual_seed(1)
            got = nn.Sequential(*chain).train(training)(x)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_telling_dropouts_training_apart_leaves_the_models_own_train_method_uncalled():
    class FreezesOnTrain(_Functional):
        calls = 0

        def train(self, mode=True):  # a user's train() with side effects
            type(self).calls += 1
            return super().train(mode)

    model = FreezesOnTrain(lambda x, t: F.dropout(x, 0.25, t), 192).eval()
    calls = FreezesOnTrain.calls
    assert isinstance(trace_chain(model)[1][1], nn.Dropout)
    assert FreezesOnTrain.calls == calls and not any(m.training for m in model.modules())


@pytest.mark.parametrize("step, words", [
    (lambda x, t: F.max_pool2d(x, 2, return_indices=True)[0], ["'max_pool2d_with_indices'", "pair"]),
    (lambda x, t: F.dropout(x, 0.5), ["'dropout'", "training=True", "eval mode"]),
    (lambda x, t: F.dropout(x, 0.5, training=True), ["'dropout'", "training=True", "eval mode"]),
    (lambda x, t: torch.dropout(x, 0.5, True), ["'dropout'", "training=True", "eval mode"]),
    (lambda x, t: F.dropout(x, 1.5, t), ["'dropout'", "1.5"]),
    (lambda x, t: x.mean(1, keepdim=True), ["'mean'", "dim=1"]),
    (lambda x, t: x.mean((1, 2, 3)), ["'mean'", "(1, 2, 3)"]),
    (lambda x, t: x.mean(), ["'mean'", "dims"]),
    (lambda x, t: torch.mean(x, (2, 3), dtype=torch.float64), ["'mean'", "dtype"]),
])
def test_functional_pooling_dropout_or_mean_that_no_module_computes_is_refused_naming_the_call(step, words):
    model = _Functional(step, 3).train()
    with pytest.raises(UnsupportedModelError) as info:
        trace_chain(model)
    message = str(info.value)
    assert "\n" not in message and "the model's forward" in message
    for word in words:
        assert word in message, message
    assert model.training and all(m.training for m in model.modules())  # the model's mode is given back


# ------------------------------------------------------------------------------ HARD update
def test_hard_update_prunes_units_with_small_switches_and_couples_children():
    torch.manual_seed(0)
    net = SwitchedNetwork(trace_chain(build_model("lenet300", (1, 4, 4), 3)), (1, 4, 4))
    with torch.no_grad():
        net.parent[0][:5] = 0.01  # parent nearly off: unit pruned, its child coupled to nothing
        net.child[1][5:10] = 0.0  # consumers' inputs off: units pruned although their parents are 1
        net.child[0][:3] = 0.0  # input pixels no unit reads any more: pruned
    curvature_parent = [torch.full((300,), 50.0, dtype=torch.float64), torch.full((100,), 50.0, dtype=torch.float64)]
    curvature_child = [torch.full((16,), 50.0, dtype=torch.float64), torch.full((300,), 50.0, dtype=torch.float64),
                       torch.full((100,), 50.0, dtype=torch.float64)]
    updates = net.hard_update(curvature_parent, curvature_child, lam=1.0)
    keep = updates[0].keep_units
    assert not keep[:10].any() and keep[10:].all()
    assert torch.equal(updates[1].keep_inputs, keep)
    # the stored state is the search's HARD update (one-switch groups)
    gamma_parent = hard_prior.update_gamma(net.parent[0].detach().double().abs(), net.state("omega", "parent", 0))
    assert torch.allclose(net.state("gamma", "parent", 0)[10:], gamma_parent[10:])
    assert (net.state("gamma", "parent", 0)[:10] == 0).all() and (net.state("gamma", "child", 1)[:10] == 0).all()
    assert (net.state("gamma", "child", 1)[10:] < net.state("gamma", "parent", 0)[10:]).all()  # coupling
    # the inputs (children without a parent): gamma_init 1 and H 50 give C = 1/51 and omega =
    # sqrt(1 - C), so a switch of 1 gets gamma sqrt(51/50) (kept), a switch of 0 gets 0 (pruned)
    assert updates[0].keep_inputs.tolist() == [False] * 3 + [True] * 13
    gamma_inputs = net.state("gamma", "child", 0)
    assert (gamma_inputs[:3] == 0).all() and torch.allclose(gamma_inputs[3:], torch.tensor((51 / 50) ** 0.5).double())
    assert int(net.num_updates) == 1


def test_switches_scale_a_unit_after_its_batchnorm_and_a_flattened_channel_as_one_block():
    """The forward pass written out with torch's functions: the parent switch multiplies the
    BatchNorm's output (eval mode, so before it would differ by the shift), the linear layer's
    parent its output, and a child switch after Flatten the 16 features of its channel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3), nn.ReLU(),
                          nn.Linear(3, 2)).double()
    net = SwitchedNetwork(trace_chain(model), (2, 6, 6))
    _randomise(net, 1)
    s0, s1 = torch.tensor([2.0, -0.5]), torch.tensor([1.5, 0.0, -1.0])
    t0, t1, t2 = torch.tensor([0.5, 3.0]), torch.tensor([3.0, 0.25]), torch.tensor([1.0, 2.0, 3.0])
    with torch.no_grad():
        for switch, value in zip([*net.parent, *net.child], [s0, s1, t0, t1, t2]):
            switch.copy_(value)
    net.eval()
    conv, bn, fc1, fc2 = net.steps[0], net.steps[1], net.steps[4], net.steps[6]
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        y = F.conv2d(x * t0.double().view(1, 2, 1, 1), conv.weight, conv.bias)
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        y = F.relu(y * s0.double().view(1, 2, 1, 1)).flatten(1) * t1.double().repeat_interleave(16)
        y = F.relu(F.linear(y, fc1.weight, fc1.bias) * s1.double()) * t2.double()
        expected = F.linear(y, fc2.weight, fc2.bias)
        assert torch.allclose(net(x), expected, rtol=0, atol=1e-12)


def test_entropy_criterion_keeps_a_unit_just_above_one_over_2_pi_e_and_prunes_one_just_below():
    """Worked by hand: gamma_init 1 and H / lambda = 3 give C = 1/4, omega = sqrt(3)/2, so a switch s
    gets gamma g = 2 s / sqrt(3); the consumers' child switch, 1, gets g1 = 2 / sqrt(3), coupled to
    its parent g * g1 / (g + g1) = g1 s / (1 + s). A unit survives when that exceeds 1/(2 pi e)."""
    threshold = 1 / (2 * math.pi * math.e)
    g1 = 2 / math.sqrt(3)
    switch_for = lambda coupled: coupled / (g1 - coupled)  # noqa: E731  inverts g1 s / (1 + s)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    net = SwitchedNetwork(trace_chain(model), (1, 1, 2))
    with torch.no_grad():
        net.parent[0].copy_(torch.tensor([switch_for(threshold * (1 + 1e-6)), switch_for(threshold * (1 - 1e-6)), 1.0],
                                         dtype=torch.float64))
    h = lambda n: torch.full((n,), 6.0, dtype=torch.float64)  # noqa: E731  6 / lambda 2 = 3
    updates = net.hard_update([h(3)], [h(2), h(3)], lam=2.0)
    assert updates[0].keep_units.tolist() == [True, False, True]
    assert updates[0].unit_scores[:2].tolist() == pytest.approx([threshold * (1 + 1e-6), threshold * (1 - 1e-6)],
                                                                 rel=1e-12)
    assert net.state("C", "parent", 0).tolist() == pytest.approx([0.25] * 3, rel=1e-12)
    assert net.state("omega", "parent", 0).tolist() == pytest.approx([math.sqrt(3) / 2] * 3, rel=1e-12)


def test_a_slimmed_network_has_the_parameters_and_multiply_accumulates_counted_by_hand():
    """2 input channels -> conv 3x3 (3 channels, padding 1) -> max-pool -> 48 features -> 5 -> 2 on 8x8
    images. Dropping input channel 0, conv channel 1 and hidden unit 3 leaves a conv of 2 x 1 x 9
    weights and 2 biases (2 x 64 positions x 9 MACs), a 32 -> 4 layer and a 4 -> 2 one. Parameters
    count weights and biases; FLOPs are multiply-accumulates per image, as result.json reports them."""
    from naslib_bayes.compression.compressor import _pruning, model_costs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 5),
                          nn.ReLU(), nn.Linear(5, 2))
    assert model_costs(model, (2, 8, 8)) == (3 * 18 + 3 + 48 * 5 + 5 + 5 * 2 + 2, 3 * 64 * 18 + 48 * 5 + 5 * 2)
    net = SwitchedNetwork(trace_chain(model), (2, 8, 8))
    keep_units = [torch.tensor([True, False, True]), torch.tensor([True, True, True, False, True]), None]
    keep_inputs = [torch.tensor([False, True]), keep_units[0], keep_units[1]]
    _, _, _, slimmed, params = _pruning(net, keep_units, keep_inputs)
    expected_params = (2 * 9 + 2) + (32 * 4 + 4) + (4 * 2 + 2)
    assert params == expected_params
    assert model_costs(slimmed.to_dense(), (2, 8, 8)) == (expected_params, 2 * 64 * 9 + 32 * 4 + 4 * 2)


def test_rebalance_and_folding_keep_a_training_mode_network_to_rounding():
    """BatchNorm after the ReLU, a switch at 0 and negative switches, in training mode (batch
    statistics), float64: moving scale between switches and weights, and folding the switches
    away, change no output beyond rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 9, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    net = SwitchedNetwork(trace_chain(model), (3, 8, 8))
    _randomise(net, 2)
    with torch.no_grad():
        net.parent[0][1] = 0.0
        net.parent[1].mul_(torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64))
        net.steps[0].weight.mul_(5.0)
    net.train()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        before = net(x)
        net.rebalance()
        assert float(net.parent[0][1]) == 0.0
        assert torch.allclose(net(x), before, rtol=0, atol=1e-12)
        assert torch.allclose(net.to_dense()(x), before, rtol=0, atol=1e-12)


def test_min_units_repairs_an_emptied_layer():
    """Worked by hand (H = 50, lam = 2, gamma_init = 1, switches 1): the first update gives
    C = 1/26, omega = sqrt(25/26) and gamma = |s| sqrt(26/25); the second, from a gamma g, omega
    w(g) = sqrt(25 / (1 + 25 g)). Layer 1's units are all below the entropy threshold, so min_units
    keeps unit 7 (the only non-zero one) and one unit whose switch and gamma are 0."""
    net = SwitchedNetwork(trace_chain(build_model("lenet300", (1, 4, 4), 3)), (1, 4, 4))
    with torch.no_grad():
        net.parent[1].zero_()
        net.parent[1][7] = 1e-4
    h = lambda n: torch.full((n,), 50.0, dtype=torch.float64)  # noqa: E731
    updates = net.hard_update([h(300), h(100)], [h(16), h(300), h(100)], lam=2.0, min_units=2)
    kept = torch.nonzero(updates[1].keep_units).flatten().tolist()
    assert len(kept) == 2 and 7 in kept and updates[1].repaired_units == 2
    assert updates[0].repaired_units == 0 and bool(updates[0].keep_units.all())
    (zero_unit,) = set(kept) - {7}
    s7 = float(net.parent[1][7].detach())  # 1e-4 in the switches' float32
    g1 = math.sqrt(26 / 25)
    g7 = s7 * g1
    gc7 = g7 * g1 / (g7 + g1)  # unit 7's input switch of layer 2, coupled to its parent
    gamma_parent = net.state("gamma", "parent", 1)
    assert float(gamma_parent[7]) == pytest.approx(g7, rel=1e-12)
    assert int(torch.count_nonzero(gamma_parent)) == 1  # the repaired unit's switch is 0: so is its gamma
    assert float(net.state("gamma", "child", 2)[7]) == pytest.approx(gc7, rel=1e-12)
    assert torch.allclose(net.state("omega", "parent", 1), torch.full((100,), math.sqrt(25 / 26), dtype=torch.float64))

    net.hard_update([h(300), h(100)], [h(16), h(300), h(100)], lam=2.0, min_units=2)
    w = lambda g: math.sqrt(25 / (1 + 25 * g))  # noqa: E731
    # a gamma-0 group (the repaired unit and every pruned one) leaves the penalty with omega 0,
    # not inf (inf * 0 would make the penalty, and the training loss, nan)
    for role, l, g in (("parent", 1, g7), ("child", 2, gc7)):
        omega = net.state("omega", role, l)
        assert float(omega[7]) == pytest.approx(w(g), rel=1e-12)
        assert float(omega[zero_unit]) == 0.0 and int(torch.count_nonzero(omega)) == 1
    for role, l, g in (("child", 0, g1), ("parent", 0, g1), ("child", 1, g1 / 2)):
        assert torch.allclose(net.state("omega", role, l), torch.full_like(net.state("omega", role, l), w(g)))
    expected = 2 * ((16 + 300) * w(g1) + 300 * w(g1 / 2) + s7 * w(g7) + w(gc7))
    assert int(net.num_updates) == 2 and float(net.penalty(2.0).detach()) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_rebalance_keeps_the_function_and_brings_switches_to_unit_rms(channels_last):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU(),
                          nn.Flatten(), nn.Linear(5 * 16, 6), nn.ReLU(), nn.Linear(6, 3))
    if channels_last:  # weights whose rows are not contiguous in memory
        model = model.to(memory_format=torch.channels_last)
    net = SwitchedNetwork(trace_chain(model), (3, 8, 8))
    _randomise(net, 0)
    net.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        before = net(x)
        net.rebalance()
        assert torch.allclose(net(x), before, atol=1e-5, rtol=1e-5)
    for switch in net.switch_parameters():
        assert float(switch.detach().square().mean()) == pytest.approx(1.0, rel=1e-5)


def test_rebalance_gains_are_switch_times_column_row_and_batchnorm_norms():
    """Worked by hand: every layer's gains come out as (1, 7) or (7, 1), whose rms is 5, so the
    switches become 0.2 and 1.4 (signs kept). Gains: an input's |t| times the l2 norm of the
    columns reading it; a unit's |s| times the l2 norm of its row and bias, or |BN weight|."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(),
                          nn.Linear(2, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.6, 0.0], [0.8, 7.0]]))  # column norms 1, 7
        model[1].bias.copy_(torch.tensor([4.0, 0.0]))  # after the columns' rescaling: row norms 5, sqrt(41)
        model[3].weight.copy_(torch.tensor([[4.2, 0.0], [5.6, 1.0]]))  # column norms 7, 1
        model[4].weight.copy_(torch.tensor([-7.0, 1.0]))
        model[4].bias.copy_(torch.tensor([3.0, 3.0]))
        model[6].weight.copy_(torch.tensor([[1.0, 7.0]]))
    net = SwitchedNetwork(trace_chain(model), (1, 1, 2))
    with torch.no_grad():
        net.parent[0].copy_(torch.tensor([0.2, 7 / 41 ** 0.5]))  # gains 0.2 * 5 = 1 and 7
        net.parent[1].copy_(torch.tensor([1.0, -1.0]))
    net.eval()
    x = torch.randn(5, 1, 1, 2)
    with torch.no_grad():
        before = net(x)
        net.rebalance()
        assert torch.allclose(net(x), before, atol=1e-5)
    expected = {"child 0": [0.2, 1.4], "parent 0": [0.2, 1.4], "child 1": [1.4, 0.2], "parent 1": [1.4, -0.2],
                "child 2": [0.2, 1.4]}
    got = {f"{role} {l}": getattr(net, role)[l].detach().tolist() for role, n in (("child", 3), ("parent", 2))
           for l in range(n)}
    for key, values in expected.items():
        assert got[key] == pytest.approx(values, rel=1e-5), key


def test_a_batchnorm_without_affine_parameters_takes_its_switch_when_folded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, affine=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 16, 2))
    net = SwitchedNetwork(trace_chain(model), (1, 6, 6))
    with torch.no_grad():
        net.parent[0].copy_(torch.tensor([0.5, -1.5, 2.0]))
        net.bn(0).running_mean.copy_(torch.tensor([0.3, -0.2, 0.1]))
        net.bn(0).running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
    net.eval()
    x = torch.randn(5, 1, 6, 6)
    with torch.no_grad():
        before = net(x)
        net.rebalance()  # nothing to move into a BatchNorm without weights: its switches stay
        assert torch.allclose(net(x), before, atol=1e-5)
        dense = net.to_dense().eval()
        assert dense[1].affine and torch.allclose(dense[1].weight, net.parent[0])
        assert torch.allclose(dense(x), before, atol=1e-5)


def test_proximal_step_soft_thresholds_by_omega():
    net = SwitchedNetwork(trace_chain(build_model("lenet300", (1, 2, 2), 3)), (1, 2, 2))
    with torch.no_grad():
        net.parent[1].copy_(torch.linspace(-0.2, 0.2, 100))
        net.state("omega", "parent", 1).fill_(2.0)
    net.proximal_step(0.05)  # threshold 0.1
    s = net.parent[1].detach()
    assert (s[torch.linspace(-0.2, 0.2, 100).abs() <= 0.1] == 0).all()
    assert torch.allclose(s[-1], torch.tensor(0.1))
    assert torch.allclose(net.child[0].detach(), torch.full((4,), 0.95))  # omega 1 before any update


def test_unit_costs_count_the_parameters_a_switch_keeps_alive():
    net = SwitchedNetwork(trace_chain(build_model("lenet5", (1, 28, 28), 10)), (1, 28, 28))
    parent, child = net.unit_costs()
    # conv1 channel: 25 weights + bias, and 50 x 25 weights of conv2; conv2 channel: 20 x 25 + bias and
    # 500 x 16 weights of fc1; fc1 neuron: 800 + bias and 10 weights of fc2; the one input channel: conv1's 20 x 25
    assert parent == [26 + 1250, 501 + 8000, 801 + 10]
    assert child == [500, 26 + 1250, 501 + 8000, 801 + 10]
    mean = net.mean_unit_cost()
    total = sum(c * n for c, n in zip(parent + child, [20, 50, 500, 1, 20, 50, 500]))
    assert mean == pytest.approx(total / (20 + 50 + 500 + 1 + 20 + 50 + 500))
    lam_p, lam_c = net.layer_lambdas(0.01, mean)
    assert lam_p[1] / lam_p[2] == pytest.approx(8501 / 811) and lam_c[1:] == lam_p
    sqrt_p, _ = net.layer_lambdas(0.01, mean, power=0.5)
    assert sqrt_p[1] == pytest.approx(0.01 * (8501 / mean) ** 0.5)
    assert net.layer_lambdas(0.01) == ([0.01] * 3, [0.01] * 4)
    # a channel of a bias-free conv with BatchNorm: 9 weights and BN's weight and bias, then its
    # 16 columns in each of the 3 rows of the linear layer
    bn_net = SwitchedNetwork(trace_chain(nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                                                       nn.Flatten(), nn.Linear(2 * 16, 3))), (1, 6, 6))
    assert bn_net.unit_costs() == ([9 + 2 + 3 * 16], [2 * 9, 9 + 2 + 3 * 16])


def test_per_layer_lambdas_act_as_scaled_curvature_and_scaled_penalty():
    torch.manual_seed(0)
    chain = trace_chain(build_model("lenet300", (1, 4, 4), 3))
    nets = [SwitchedNetwork(chain, (1, 4, 4)) for _ in range(2)]
    g = torch.Generator().manual_seed(1)
    for net in nets:
        with torch.no_grad():
            for p in net.switch_parameters():
                p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(p.numel())) + 0.05)
    h = lambda n: torch.rand(n, generator=g, dtype=torch.float64) * 100  # noqa: E731
    hp, hc = [h(300), h(100)], [h(16), h(300), h(100)]
    lam_p, lam_c = [0.5, 2.0], [0.25, 0.5, 2.0]
    a = nets[0].hard_update(hp, hc, (lam_p, lam_c))
    # lambda divides the curvature: per-layer lambdas equal lambda 1 with the curvature divided by them
    b = nets[1].hard_update([x / v for x, v in zip(hp, lam_p)], [x / v for x, v in zip(hc, lam_c)], 1.0)
    for role, n in (("parent", 2), ("child", 3)):
        for l in range(n):
            for kind in ("gamma", "omega", "C"):
                assert torch.allclose(nets[0].state(kind, role, l), nets[1].state(kind, role, l))
    assert all(torch.equal(x.keep_inputs, y.keep_inputs) for x, y in zip(a, b))
    expected = sum(v * (nets[0].state("omega", "parent", l) * nets[0].parent[l].detach().double().abs()).sum()
                   for l, v in enumerate(lam_p))
    expected += sum(v * (nets[0].state("omega", "child", l) * nets[0].child[l].detach().double().abs()).sum()
                    for l, v in enumerate(lam_c))
    assert float(nets[0].penalty((lam_p, lam_c))) == pytest.approx(float(expected), rel=1e-5)


def test_budget_cut_back_removes_the_least_relevant_units_and_inputs_first():
    """4 inputs -> 6 hidden -> 2 outputs: 44 parameters. The update removes inputs 0, 1 and hidden
    units 0-3; by gamma the order is input 0 (6 parameters: its column), unit 1, unit 3 (6 each
    once input 0 is gone: 3 weights, a bias, 2 outgoing weights), ... A budget of 30 is met by
    the first three: 44 - 6 - 6 - 6 = 26, the two removals before it leave 32."""
    from naslib_bayes.compression.compressor import _pruning, prune_to_budget
    from naslib_bayes.compression.switched import LayerUpdate

    torch.manual_seed(0)
    net = SwitchedNetwork(trace_chain(nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))),
                          (1, 2, 2))
    keep_units = torch.tensor([False, False, False, False, True, True])
    keep_inputs = torch.tensor([False, False, True, True])
    updates = [LayerUpdate(keep_units, keep_inputs, unit_scores=torch.tensor([0.5, 0.1, 0.3, 0.2, 1.0, 1.0]),
                           input_scores=torch.tensor([0.05, 0.4, 1.0, 1.0])),
               LayerUpdate(None, keep_units.clone())]
    full = _pruning(net, [keep_units, None], [keep_inputs, keep_units])
    assert full[-1] == 12
    _, _, plan, slimmed, params = prune_to_budget(net, updates, 30, full)
    assert params == 26 and count_parameters(slimmed.to_dense()) == 26
    assert plan.keep_units[0].tolist() == [True, False, True, False, True, True]
    assert plan.keep_inputs[0].tolist() == [False, True, True, True]


def test_budget_cut_back_keeps_no_unit_whose_switches_are_both_zero_unless_retraining_revives_it():
    """4 inputs -> 6 hidden -> 2 outputs (44 parameters, 7 per hidden unit). The update removes
    hidden units 0-3, all scored 0, and units 2 and 3 have both switches at exactly 0: fine-tuning
    gives them no gradient (ReLU(0) = 0), so keeping them back to just meet a budget of 37 (one
    removal, unit 0) would count 14 parameters that compute nothing; both go, the budget
    undershot (30). From scratch their switches start again at 1 and the cut back stands."""
    from naslib_bayes.compression.compressor import _pruning, prune_to_budget
    from naslib_bayes.compression.switched import LayerUpdate

    torch.manual_seed(0)
    net = SwitchedNetwork(trace_chain(nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))),
                          (1, 2, 2))
    with torch.no_grad():
        net.parent[0][2:4] = 0.0
        net.child[1][2:4] = 0.0
    keep_units = torch.tensor([False, False, False, False, True, True])
    updates = [LayerUpdate(keep_units, torch.ones(4, dtype=torch.bool), unit_scores=torch.tensor([0.0] * 4 + [1.0] * 2),
                           input_scores=torch.ones(4)),
               LayerUpdate(None, keep_units.clone())]
    full = _pruning(net, [keep_units, None], [torch.ones(4, dtype=torch.bool), keep_units])
    _, _, plan, _, params = prune_to_budget(net, updates, 37, full)
    assert plan.keep_units[0].tolist() == [True, True, False, False, True, True] and params == 30
    _, _, plan, _, params = prune_to_budget(net, updates, 37, full, revived=True)
    assert plan.keep_units[0].tolist() == [False, True, True, True, True, True] and params == 37


def test_switches_get_no_weight_decay():
    from naslib_bayes.compression.compressor import _optimizer
    from naslib_bayes.compression.config import CompressionConfig

    weight, switch = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    cfg = CompressionConfig(momentum=0.0, weight_decay=0.5)
    opt = _optimizer([weight], [switch], cfg, lr=0.1)
    weight.grad, switch.grad = torch.zeros(3), torch.zeros(3)
    opt.step()  # no loss gradient: only the decay moves a parameter, by lr * decay
    assert torch.allclose(weight.detach(), torch.full((3,), 0.95)) and torch.equal(switch.detach(), torch.ones(3))


def test_lambda_scale_must_be_known():
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match="lam_scale"):
        CompressionConfig(lam_scale="size")


@pytest.mark.parametrize("gamma_init", [0.0, -1.0, float("nan"), float("inf")])
def test_a_prior_variance_that_is_not_positive_and_finite_is_refused_naming_gamma_init(gamma_init):
    # gamma 0 (or below, or NaN) gives omega = inf: the first update would prune every unit and
    # blame lambda; an infinite gamma keeps every unit whatever the data say
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match=r"gamma_init must be a positive, finite prior variance, got"):
        CompressionConfig(gamma_init=gamma_init)
    CompressionConfig(gamma_init=0.5)


# ------------------------------------------------------------------------------ saving
@pytest.mark.parametrize("height, width", [(4, 4), (4, 7), (7, 7), (5, 40)])
def test_lenet5_takes_inputs_down_to_4x4_pixels(height, width):
    """Below 28 pixels both convolutions are padded, so a side of 4 still leaves one pixel after
    the two poolings: the error said 'at least 8x8' although these inputs work."""
    model = build_model("lenet5", (1, height, width), 10)
    assert model(torch.zeros(2, 1, height, width)).shape == (2, 10)


@pytest.mark.parametrize("height, width", [(3, 3), (3, 10), (10, 3)])
def test_lenet5_refuses_inputs_below_4x4_naming_that_limit(height, width):
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match=f"at least 4x4 pixels, got {height}x{width}"):
        build_model("lenet5", (1, height, width), 10)


def test_saved_compressed_model_loads_back_with_identical_outputs(tmp_path):
    torch.manual_seed(2)
    shape = (3, 16, 16)
    net = SwitchedNetwork(trace_chain(vgg(shape, 10, **SMALL_VGG)), shape)
    _randomise(net, 2)
    keep_units, keep_inputs = _random_decisions(net, 2)
    dense = slim(net, plan_pruning(net, keep_units, keep_inputs)).to_dense().eval()
    save_compressed(dense, tmp_path, shape, kept_channels={"a": 1})
    loaded = load_compressed(tmp_path)
    x = torch.randn(6, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), dense(x))
    assert read_description(tmp_path)["kept_channels"] == {"a": 1}
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(dense.state_dict())


def test_saving_on_a_full_disk_is_one_line_naming_the_file_and_keeps_the_earlier_weights(tmp_path, monkeypatch):
    import contextlib
    import errno
    import os

    from naslib_bayes.errors import UserError

    def on_a_full_disk(obj, file):
        opened = open(file, "wb") if isinstance(file, (str, os.PathLike)) else contextlib.nullcontext(file)
        with opened as handle:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    save_compressed(model, tmp_path, (1, 2, 2))
    before = (tmp_path / "model.pt").read_bytes()
    monkeypatch.setattr(torch, "save", on_a_full_disk)
    with pytest.raises(UserError) as info:
        save_compressed(model, tmp_path, (1, 2, 2))
    assert str(info.value) == f"{tmp_path / 'model.pt'}: cannot write the file (OSError: [Errno 28] No space left on device)"
    assert (tmp_path / "model.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "widths.json"]  # no temporary left behind


def test_saving_keeps_strides_pooling_and_batchnorm_settings_that_differ_from_the_defaults(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), nn.BatchNorm2d(4, eps=0.5, momentum=0.3),
                          nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1), nn.AvgPool2d(2, stride=1),
                          nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).eval()
    with torch.no_grad():
        model[1].running_var.fill_(0.1)  # so that eps weighs: 0.1 + 0.5 against 0.1 + 1e-5
    save_compressed(model, tmp_path, (2, 8, 8))
    loaded = load_compressed(tmp_path)
    assert (loaded[1].eps, loaded[1].momentum) == (0.5, 0.3)
    x = torch.randn(4, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_float64_network_loads_back_in_float64_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5", (1, 12, 12), 10).double().eval()
    save_compressed(model, tmp_path, (1, 12, 12))
    loaded = load_compressed(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))  # float32 weights would round them

def test_loading_a_compressed_model_leaves_the_global_random_stream_alone(tmp_path):
    shape = (3, 16, 16)
    save_compressed(vgg(shape, 10, **SMALL_VGG).eval(), tmp_path, shape)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_compressed(tmp_path)  # its weights come from the file: no draw from the caller's stream
    assert torch.equal(torch.rand(3), expected)


def test_loading_rejects_a_foreign_widths_file(tmp_path):
    from naslib_bayes.errors import UserError

    (tmp_path / "widths.json").write_text('{"modules": []}')
    with pytest.raises(UserError, match="not a compressed-network description"):
        load_compressed(tmp_path)


@pytest.mark.parametrize("edit", [lambda d: d.pop("modules"), lambda d: d.update(modules={"type": "ReLU"}),
                                  lambda d: d["modules"][1].update(out_features=-1)])
def test_a_damaged_widths_file_is_a_user_error_naming_it(tmp_path, edit):
    import json

    from naslib_bayes.errors import UserError

    save_compressed(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), tmp_path, (1, 2, 2))
    path = tmp_path / "widths.json"
    description = json.loads(path.read_text())
    edit(description)
    path.write_text(json.dumps(description))
    with pytest.raises(UserError) as info:
        load_compressed(tmp_path)
    assert str(path) in str(info.value)


def test_pruning_that_leaves_the_output_constant_is_a_user_error():
    from naslib_bayes.errors import UserError

    torch.manual_seed(0)
    model = build_model("lenet300", (1, 4, 4), 3)
    with torch.no_grad():
        model[1].weight[0].zero_()  # hidden unit 0 reads no pixel
    net = SwitchedNetwork(trace_chain(model), (1, 4, 4))
    keep = torch.zeros(300, dtype=torch.bool)
    keep[0] = True  # only that unit survives: no input is read any more
    plan = plan_pruning(net, [keep, None, None], [None, keep, None])
    assert not plan.keep_inputs[0].any()
    with pytest.raises(UserError, match="pruning left no unit that reads the input"):
        slim(net, plan)


# ------------------------------------------------------------------------------ dtype
def test_a_float64_model_is_trained_compressed_and_evaluated_in_float64():
    import copy

    from naslib_bayes.compression import CompressionConfig, compress, evaluate, train_dense
    from naslib_bayes.data import load_dataset

    digits = load_dataset("digits", seed=0)  # float32 images, as every dataset holds them
    cfg = CompressionConfig(lam=0.2, epochs=3, finetune_epochs=1, augment=False)
    torch.manual_seed(0)
    model = build_model("lenet300", digits.train.image_shape, digits.train.num_classes).double()
    dense = copy.deepcopy(model)
    train_dense(dense, digits.train, cfg, seed=0)
    outcome = compress(model, digits.train, cfg, seed=0)
    for network in (dense, outcome.model):
        assert {p.dtype for p in network.parameters()} == {torch.float64}
        assert evaluate(network, digits.test) > 80  # trained, not merely run: chance is 10%


@pytest.mark.parametrize("epochs, finetune, least", [(2, 1, 3), (4, 3, 5)])
def test_too_few_epochs_for_a_sparse_one_name_the_epochs_that_would_do(epochs, finetune, least):
    # the warm-up epoch has no option of the command: the message says what epochs would leave a sparse one
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match=rf"epochs={epochs} with finetune_epochs={finetune}.*at least {least} epochs"):
        CompressionConfig(lam=0.1, epochs=epochs, finetune_epochs=finetune)
    CompressionConfig(lam=0.1, epochs=least, finetune_epochs=finetune)  # the number it names is enough


@pytest.mark.parametrize("field", ["momentum", "weight_decay"])
def test_a_negative_momentum_or_weight_decay_is_refused_naming_it(field):
    # torch's optimizer raised "Invalid momentum value" at the first epoch, naming no field of the config
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError, match=rf"^{field} must be a finite number >= 0, got -0.1$"):
        CompressionConfig(**{field: -0.1})


@pytest.mark.parametrize("field, message", [
    ("lam", "lambda must be a positive, finite number, got inf"),
    ("lr", "lr must be a positive, finite number, got inf"),
    ("momentum", "momentum must be a finite number >= 0, got inf"),
    ("weight_decay", "weight_decay must be a finite number >= 0, got inf"),
    ("distill_temperature", "distill_temperature must be a positive, finite number, got inf"),
])
def test_an_infinite_weight_or_rate_is_refused_naming_it(field, message):
    # lambda inf pruned every layer to min_units and warned of a constant network; the others ran
    # into a NaN loss reported as "training diverged at learning rate 0.02", blaming the lr
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.errors import UserError

    extra = {"distill": 0.5} if field == "distill_temperature" else {}
    with pytest.raises(UserError, match=rf"^{message}$"):
        CompressionConfig(**{field: float("inf")}, **extra)


def test_a_teacher_with_other_outputs_than_the_student_is_refused_in_one_line():
    # a KL divergence of mismatched shapes stopped the retraining with a traceback
    from naslib_bayes.compression import CompressionConfig, compress
    from naslib_bayes.data import load_dataset
    from naslib_bayes.errors import UserError

    digits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 7))
    cfg = CompressionConfig(lam=0.05, epochs=3, finetune_epochs=1, augment=False, distill=0.5)
    with pytest.raises(UserError, match=r"^the teacher gives outputs of shape \(7,\) per image, the network "
                                        r"being compressed \(10,\): distillation needs the same$"):
        compress(student, digits.train, cfg, seed=0, teacher=teacher)


def _digits_net(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)).to(device)


def test_a_model_off_the_cpu_is_refused_naming_its_device_not_an_input_shape():
    """Compression runs on the CPU: a model elsewhere failed the shape trace, in a message about
    its input shape that sent the user looking for a wrong shape."""
    with pytest.raises(UnsupportedModelError) as info:
        SwitchedNetwork(trace_chain(_digits_net("meta")), (1, 8, 8))
    message = str(info.value)
    assert "module '1' (Linear) has its weights on meta; compression runs on the CPU: pass model.cpu()" in message
    assert "input shape" not in message and "\n" not in message


def test_a_model_on_cuda_given_to_compress_is_refused_naming_the_device(monkeypatch):
    from naslib_bayes.compression import trace
    from naslib_bayes.compression.compressor import compress
    from naslib_bayes.compression.config import CompressionConfig
    from naslib_bayes.data import load_dataset

    model = _digits_net()
    on_cuda = {id(model[2].running_mean)}  # as if model.cuda() had moved the BatchNorm's statistics
    monkeypatch.setattr(trace, "_device_of",
                        lambda tensor: torch.device("cuda:0") if id(tensor) in on_cuda else tensor.device)
    train = load_dataset("digits", None, seed=0).train
    with pytest.raises(UnsupportedModelError) as info:
        compress(model, train, CompressionConfig(epochs=3, finetune_epochs=1), seed=0)
    assert "module '2' (BatchNorm1d) has its weights on cuda:0; compression runs on the CPU" in str(info.value)


def test_model_costs_is_exported_with_the_rest_of_the_compression_api():
    # A user counting a model's parameters and FLOPs before compressing it had to find the
    # function in compressor.py; the package's other public names are exported at its top.
    from naslib_bayes import compression

    assert "model_costs" in compression.__all__
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    assert compression.model_costs(net, (1, 2, 2)) == (4 * 3 + 3, 4 * 3)
