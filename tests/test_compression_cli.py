"""Compression end to end: the schedule on digits, the command line, and the MNIST split."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from naslib_bayes import results
from naslib_bayes.compression import MODEL_NAMES, MODELS, CompressionConfig, build_model, compress, evaluate
from naslib_bayes.compression.io import load_compressed
from naslib_bayes.data import load_dataset
from cli_runner import run_cli

# Strong sparsity so that a few epochs on the 1,078 training digits already prune units. With
# ``rebalance`` (the default) a unit is pruned only when its share of its layer's scale is small,
# no longer because every switch drifts towards zero; at lambda 0.3 three updates leave the first
# layer's 300 units all in place, at 0.5 they prune it.
FAST = dict(lam=0.5, epochs=6, finetune_epochs=2, batch_size=32, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_compress_prunes_units_and_keeps_a_working_network(digits):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("lenet300", digits.train.image_shape, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = compress(model, digits.train, CompressionConfig(**FAST), seed=0, val=digits.val)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    assert outcome.widths_before == [300, 100, 10]
    assert outcome.widths_after[0] < 300 and outcome.widths_after[1] < 100 and outcome.widths_after[2] == 10
    assert outcome.params_after < outcome.params_before and outcome.flops_after < outcome.flops_before
    # exact up to float32 rounding, which grows with the logits: a tolerance relative to their size
    with torch.no_grad():
        scale = max(1.0, float(outcome.model(digits.train.images[:256]).abs().max()))
    assert outcome.masked_max_abs_diff < 1e-5 * scale
    assert evaluate(outcome.model, digits.test) > 80.0
    updates = [h for h in outcome.history if h["phase"] == "update"]
    assert len(updates) == FAST["epochs"] - FAST["finetune_epochs"] - 1  # after every sparse epoch past warm-up
    assert all(h["masked_max_abs_diff"] < 1e-5 * scale for h in updates)
    assert [h["widths"][0] for h in updates] == sorted((h["widths"][0] for h in updates), reverse=True)


def test_shipped_model_names_match_the_factories():
    assert tuple(MODELS) == MODEL_NAMES


def test_compress_command_writes_result_and_a_loadable_model(capsys, tmp_path, digits):
    torch.set_num_threads(1)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "0.3",
                             "--epochs", "6", "--finetune-epochs", "2", "--batch-size", "32", "--lr", "0.05",
                             "--seed", "0", "--out", str(out_dir))
    assert code == 0, err
    result = json.loads((out_dir / "result.json").read_text())
    jsonschema.validate(result, results.load_schema())
    assert result["command"] == "compress" and result["model"] == "lenet300" and result["seed"] == 0
    assert result["params_after"] < result["params_before"] == 50610
    assert result["flops_after"] < result["flops_before"]
    assert list(result["kept_channels"]) == ["1", "3", "5"] and result["kept_channels"]["5"] == 10
    assert 0 <= result["accuracy_compressed"] <= 100 and result["accuracy_dense"] > 80
    assert result["final_architecture"] in out
    model = load_compressed(out_dir)
    widths = [m.out_features for m in model if isinstance(m, torch.nn.Linear)]
    assert widths == list(result["kept_channels"].values())
    assert abs(evaluate(model, digits.test) - result["accuracy_compressed"]) < 1e-9


@pytest.mark.parametrize("argv, message", [
    (["--model", "lenet5", "--dataset", "mnist"], "--data-root is required"),
    (["--model", "lenet5", "--dataset", "mnist", "--data-root", "/no/such/dir"], "does not exist"),
    (["--model", "resnet", "--dataset", "digits"], "invalid choice"),
    (["--model", "lenet5", "--dataset", "digits", "--lambda", "0"], "positive"),
    (["--model", "lenet5", "--dataset", "digits", "--epochs", "3", "--finetune-epochs", "3"], "finetune_epochs"),
])
def test_compress_errors_are_one_line(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "compress", *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "out" / "result.json").exists()


def test_mnist_split_keeps_the_held_out_images_apart(mnist_dir):
    splits = load_dataset("mnist", mnist_dir, seed=1, val_size=1000)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7000, 1000, 2000)
    seen = set(splits.train.indices.tolist()) | set(splits.val.indices.tolist())
    assert seen.isdisjoint(splits.test.indices.tolist())
