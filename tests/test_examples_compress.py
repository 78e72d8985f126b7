"""examples/compress_your_cnn.py: compressing a custom CNN on digits, saving and reloading it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from example_loader import load_example

# Strong sparsity and a budget so that twelve epochs on the 1,079 training digits prune: the
# seventh HARD update brings the network within 30% of its parameters.
BUDGET = 0.3
FAST = ["--lambda", "1", "--epochs", "12", "--max-params", str(BUDGET), "--seed", "0"]


@pytest.fixture(scope="module")
def example():
    return load_example("compress_your_cnn")


@pytest.fixture(scope="module")
def first_run(example, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress-example")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before the per-test one-thread fixture of conftest.py applies
    try:
        yield out, example.main(FAST + ["--out", str(out)])
    finally:
        torch.set_num_threads(threads)


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _multiply_accumulates(model: nn.Module, input_shape) -> int:
    """Conv and linear MACs of one image, counted from the output shapes the layers produce."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * module.in_channels // module.groups * kernel
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in _layers(model)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return total


def test_reported_costs_are_those_of_the_saved_network(first_run, example):
    from naslib_bayes.compression import load_compressed

    out, result = first_run
    loaded = load_compressed(out)
    assert result["params_after"] == sum(p.numel() for p in loaded.parameters())
    assert result["flops_after"] == _multiply_accumulates(loaded, (1, 8, 8))
    dense = example.build_cnn((1, 8, 8), 10)
    assert result["params_before"] == sum(p.numel() for p in dense.parameters())
    assert result["flops_before"] == _multiply_accumulates(dense, (1, 8, 8))
    assert result["params_after"] < result["params_before"]  # something was pruned
    assert result["params_removed"] == pytest.approx(1 - result["params_after"] / result["params_before"])
    assert result["flops_removed"] == pytest.approx(1 - result["flops_after"] / result["flops_before"])


def test_widths_in_the_table_are_the_saved_networks_layer_shapes(first_run, example):
    from naslib_bayes.compression import load_compressed

    out, result = first_run
    layers = _layers(load_compressed(out))
    units = [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers]
    assert result["widths_after"] == units
    assert layers[0].in_channels == result["inputs_after"]
    assert result["widths_before"] == [16, 32, 64, 10] and result["layer_names"] == ["conv1", "conv2", "fc1", "fc2"]
    rows = {name: (before, after) for name, _, before, after in result["rows"]}
    assert rows["inputs"] == (1, result["inputs_after"])
    assert [rows[name][1] for name in result["layer_names"]] == units


def test_reloaded_network_computes_what_the_compressed_one_does(first_run):
    from naslib_bayes.compression import evaluate, load_compressed
    from naslib_bayes.data import load_dataset

    out, result = first_run
    held_out = load_dataset("digits", seed=0).test
    loaded = load_compressed(out)
    with torch.no_grad():
        difference = (loaded(held_out.images) - result["compressed_model"].eval()(held_out.images)).abs().max()
    assert float(difference) <= 1e-6 and result["reload_max_abs_diff"] <= 1e-6
    assert evaluate(loaded, held_out) == pytest.approx(result["accuracy_compressed"])
    assert result["accuracy_compressed"] > 50.0 and result["accuracy_dense"] > 90.0


def test_the_parameter_budget_holds(first_run):
    _, result = first_run
    assert result["budget_met"] is True
    assert result["params_after"] <= BUDGET * result["params_before"]


def test_a_residual_network_is_refused_in_one_line_naming_where_it_branches(first_run):
    _, result = first_run
    message = result["unsupported_message"]
    assert "\n" not in message
    # the stem's ReLU feeds the skip connection, inside the module named 'block'
    assert "'relu'" in message and "module 'block' (ResidualBlock)" in message and "sequential chains" in message


def test_the_same_seed_gives_the_same_network_and_accuracies(first_run, example, tmp_path):
    _, result = first_run
    again = example.main(FAST + ["--out", str(tmp_path)])
    for key in ("widths_after", "inputs_after", "params_after", "accuracy_dense", "accuracy_compressed"):
        assert again[key] == result[key], key


@pytest.mark.parametrize("extra", [[], ["--data-root", "EMPTY"]], ids=["no-data-root", "empty-folder"])
def test_mnist_without_its_files_is_a_one_line_error(example, tmp_path, capsys, extra):
    argv = ["--dataset", "mnist", "--out", str(tmp_path / "out")] + [str(tmp_path) if a == "EMPTY" else a
                                                                      for a in extra]
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert ("--data-root" in message) if not extra else (str(tmp_path) in message)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("where", ["file", "below-a-file"])
def test_an_out_that_is_a_file_is_refused_in_one_line_before_training(example, tmp_path, capsys, where):
    in_the_way = tmp_path / "model.pt"
    in_the_way.write_text("not a folder")
    out = in_the_way if where == "file" else in_the_way / "compressed"
    with pytest.raises(SystemExit) as exit_info:
        example.main(FAST + ["--out", str(out)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert message.startswith("error: ") and "\n" not in message and str(in_the_way) in message
    assert "training" not in captured.out  # refused before minutes of training, not when saving
    assert in_the_way.read_text() == "not a folder"


def test_save_compressed_into_a_file_is_a_user_error_naming_it(tmp_path):
    from naslib_bayes.compression import save_compressed
    from naslib_bayes.errors import UserError

    in_the_way = tmp_path / "model.pt"
    in_the_way.write_text("not a folder")
    with pytest.raises(UserError, match="model.pt"):
        save_compressed(nn.Sequential(nn.Linear(4, 2)), in_the_way, (4,))


def test_the_training_steps_leave_the_callers_global_random_state_alone(example):
    """The library draws dropout masks from its own seeded streams: a script copying these steps
    needs no torch.manual_seed before them, and its own global draws stay its own."""
    from naslib_bayes.compression import CompressionConfig
    from naslib_bayes.data import load_dataset

    splits = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = example.build_cnn(splits.train.image_shape, splits.train.num_classes)
    cfg = CompressionConfig(lam=0.2, epochs=3, finetune_epochs=1)
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    example.train_baseline(model, splits, cfg, 0, None, None)
    example.run_compression(model, splits, cfg, 0, None, None)
    assert torch.equal(torch.random.get_rng_state(), before)
