"""Compression end to end: the schedule on digits, the command line, and the MNIST split."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch

from naslib_bayes import results
from naslib_bayes.compression import MODEL_NAMES, MODELS, CompressionConfig, build_model, compress, evaluate
from naslib_bayes.compression.io import load_compressed
from naslib_bayes.data import load_dataset
from naslib_bayes.errors import UserError
from cli_runner import run_cli, run_cli_stopped_before_its_result

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
    outcome.model.train()
    evaluate(outcome.model, digits.val)
    assert outcome.model.training  # evaluate gives the model its mode back
    updates = [h for h in outcome.history if h["phase"] == "update"]
    assert len(updates) == FAST["epochs"] - FAST["finetune_epochs"] - 1  # after every sparse epoch past warm-up
    assert all(h["masked_max_abs_diff"] < 1e-5 * scale for h in updates)
    assert [h["widths"][0] for h in updates] == sorted((h["widths"][0] for h in updates), reverse=True)


def _record_learning_rates(monkeypatch) -> list[float]:
    """The learning rate each training epoch's optimizer steps with (not the one it reports)."""
    from naslib_bayes.compression import compressor

    rates, train_epoch = [], compressor._train_epoch

    def recording(model, data, opt, *args, **kwargs):
        rates.append(opt.param_groups[0]["lr"])
        return train_epoch(model, data, opt, *args, **kwargs)

    monkeypatch.setattr(compressor, "_train_epoch", recording)
    return rates


def test_parameter_budget_ends_pruning_at_the_first_update_within_it(digits, monkeypatch):
    torch.set_num_threads(1)
    rates = _record_learning_rates(monkeypatch)
    torch.manual_seed(0)
    model = build_model("lenet300", digits.train.image_shape, 10)
    budget = 0.7
    cfg = CompressionConfig(**{**FAST, "epochs": 8, "finetune_epochs": 1}, max_params=budget)
    outcome = compress(model, digits.train, cfg, seed=0)
    updates = [h for h in outcome.history if h["phase"] == "update"]
    limit = budget * outcome.params_before
    # pruning went on while over the budget and stopped at the first update within it; that
    # update's pruning is cut back to just meet the budget (uncut it leaves 17,567 parameters:
    # 35% of the network)
    assert all(h["params"] > limit for h in updates[:-1])
    assert limit - 0.01 * outcome.params_before < updates[-1]["params"] <= limit
    assert outcome.params_after == updates[-1]["params"]
    last_sparse = updates[-1]["epoch"]
    assert last_sparse < cfg.sparse_epochs  # the budget was met early ...
    finetune = [h for h in outcome.history if h["phase"] == "finetune"]
    # ... and fine-tuning took every epoch left, its cosine decay stretched over them
    assert [h["epoch"] for h in finetune] == list(range(last_sparse + 1, cfg.epochs + 1))
    assert finetune[0]["lr"] == cfg.lr and finetune[-1]["lr"] < cfg.lr
    assert [h["lr"] for h in finetune] == sorted((h["lr"] for h in finetune), reverse=True)
    assert outcome.budget_met is True
    # the optimizer trains at that rate: constant, then a cosine over the n epochs left
    n = len(finetune)
    expected = [cfg.lr] * last_sparse + [0.5 * cfg.lr * (1 + math.cos(math.pi * i / n)) for i in range(n)]
    assert rates == pytest.approx(expected, rel=1e-12)


def test_dense_baseline_trains_at_a_constant_rate_then_a_cosine_over_the_finetune_epochs(digits, monkeypatch):
    from naslib_bayes.compression import train_dense

    torch.set_num_threads(1)
    rates = _record_learning_rates(monkeypatch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cfg = CompressionConfig(lam=0.5, epochs=4, finetune_epochs=2, batch_size=256, lr=0.05)
    train_dense(model, digits.train, cfg, seed=0)
    assert rates == pytest.approx([0.05, 0.05, 0.05, 0.025], rel=1e-12)  # cos(0) = 1, cos(pi / 2) = 0


def test_hard_updates_come_every_update_every_sparse_epochs_and_after_the_last(digits):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    cfg = CompressionConfig(lam=1e-3, epochs=7, finetune_epochs=1, warmup_epochs=1, update_every=2, batch_size=256)
    outcome = compress(model, digits.train, cfg, seed=0)
    updates = [h for h in outcome.history if h["phase"] == "update"]
    # epoch 1 is warm-up; sparse epochs 2..6: updates after two of them (3, 5) and after the last (6)
    assert [h["epoch"] for h in updates] == [3, 5, 6]
    assert [h["update"] for h in updates] == [1, 2, 3]


def test_a_budget_pruning_never_reaches_is_reported_not_silent(digits, caplog):
    torch.manual_seed(0)
    model = build_model("lenet300", digits.train.image_shape, 10)
    cfg = CompressionConfig(**{**FAST, "lam": 0.01, "epochs": 4, "finetune_epochs": 1}, max_params=0.05)
    with caplog.at_level("WARNING", logger="naslib_bayes.compression.compressor"):
        outcome = compress(model, digits.train, cfg, seed=0)
    assert outcome.params_after > 0.05 * outcome.params_before and outcome.budget_met is False
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "budget was not reached" in warning and f"{outcome.params_after} of {outcome.params_before}" in warning


def test_a_compressed_network_that_answers_every_image_alike_is_reported_with_its_cause(digits, caplog):
    # lambda 3 zeroes every switch; min_units keeps one unit per layer, whose switch is 0: the
    # network's output is a constant (chance accuracy), which was reported without a word
    torch.manual_seed(0)
    model = build_model("lenet300", digits.train.image_shape, 10)
    cfg = CompressionConfig(**{**FAST, "lam": 3.0, "finetune_epochs": 1})
    with caplog.at_level("WARNING", logger="naslib_bayes.compression.compressor"):
        outcome = compress(model, digits.train, cfg, seed=0)
    output = outcome.model.eval()(digits.test.images)
    assert bool((output == output[:1]).all())
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "the same output for every image: every unit kept in layer" in warning and "lambda 3 pruned" in warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="naslib_bayes.compression.compressor"):
        compress(model, digits.train, CompressionConfig(**FAST), seed=0)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # a working network: nothing to say


def test_scratch_retraining_keeps_the_found_architecture_with_fresh_weights(digits):
    torch.set_num_threads(1)
    outcomes = {}
    for mode in ("finetune", "scratch"):
        torch.manual_seed(0)
        model = build_model("lenet300", digits.train.image_shape, 10)
        cfg = CompressionConfig(**{**FAST, "epochs": 8, "finetune_epochs": 3}, retrain=mode)
        outcomes[mode] = compress(model, digits.train, cfg, seed=0)
    finetuned, scratch = outcomes["finetune"], outcomes["scratch"]
    # the sparse phase is the same, so is the architecture it finds
    assert scratch.widths_after == finetuned.widths_after and scratch.inputs_after == finetuned.inputs_after
    assert scratch.widths_after[0] < 300
    pruned_weights = finetuned.switched.layer(0).weight
    assert not torch.allclose(scratch.switched.layer(0).weight, pruned_weights)
    assert evaluate(scratch.model, digits.test) > 80.0


@pytest.mark.parametrize("setting, flags, named", [
    # --retrain scratch replaces the pruned weights by fresh ones: no epoch trained them, and the
    # run reported an untrained network's accuracy as the compressed one
    ({"retrain": "scratch"}, ["--retrain", "scratch"], "--retrain scratch"),
    # the teacher is distilled while the pruned network retrains: it was never consulted, while
    # result.json recorded the distillation
    ({"distill": 0.5}, ["--distill", "0.5"], "--distill"),
])
def test_retraining_settings_without_retraining_epochs_are_refused(capsys, tmp_path, setting, flags, named):
    with pytest.raises(UserError, match="finetune_epochs"):
        CompressionConfig(epochs=3, finetune_epochs=0, **setting)
    code, _, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--epochs", "3",
                           "--finetune-epochs", "0", *flags, "--out", str(tmp_path / "out"))
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and named in errors[0] and "--finetune-epochs" in errors[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, named", [(["--distill-temperature", "2"], "--distill-temperature"),
                                          (["--distill-mixup"], "--distill-mixup")])
def test_distillation_settings_without_distill_are_refused_before_out_is_made(capsys, tmp_path, flags, named):
    """--distill-temperature without --distill did nothing while result.json recorded it."""
    code, _, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--epochs", "3",
                           *flags, "--out", str(tmp_path / "out"))
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and named in errors[0] and "--distill ALPHA" in errors[0], err
    assert not (tmp_path / "out").exists()


def test_distill_temperature_keeps_its_default_when_not_given():
    from types import SimpleNamespace

    from naslib_bayes.commands.compress import compression_config

    args = SimpleNamespace(lam=1e-3, epochs=3, finetune_epochs=None, batch_size=64, lr=0.02, lam_scale="none",
                           max_params=None, retrain="finetune", distill=0.5, distill_temperature=None,
                           distill_mixup=False, grad_clip=10.0, no_baseline=False)
    assert compression_config(args).distill_temperature == CompressionConfig().distill_temperature


def test_distillation_with_epochs_to_act_in_is_taken_without_retraining_epochs():
    CompressionConfig(epochs=3, finetune_epochs=0, distill=0.5, max_params=0.5)  # retraining after the budget
    CompressionConfig(epochs=3, finetune_epochs=0, distill=0.5, distill_sparse=True)  # distilled while pruning


def test_reinitialise_is_seeded_and_leaves_the_global_random_state_alone():
    from naslib_bayes.compression.switched import SwitchedNetwork

    def fresh(seed):
        net = SwitchedNetwork(list(build_model("lenet300", (1, 8, 8), 10)), (1, 8, 8))
        with torch.no_grad():
            net.parent[0].mul_(0.3)
        state = torch.get_rng_state()
        net.reinitialise(seed)
        assert torch.equal(torch.get_rng_state(), state)
        return net

    a, b, c = fresh(0), fresh(0), fresh(1)
    assert torch.equal(a.layer(0).weight, b.layer(0).weight)
    assert not torch.equal(a.layer(0).weight, c.layer(0).weight)
    assert all(bool((s == 1).all()) for s in a.switch_parameters())


def test_distillation_loss_mixes_cross_entropy_and_the_tempered_kl():
    from naslib_bayes.compression.compressor import distillation_loss

    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(16, 10, generator=gen), 3 * torch.randn(16, 10, generator=gen)
    labels = torch.randint(10, (16,), generator=gen)
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, teacher, labels, 0.0, 4.0), ce)
    assert float(distillation_loss(teacher, teacher, labels, 1.0, 4.0)) == pytest.approx(0.0, abs=1e-6)
    t = 2.0
    p_teacher, p_student = torch.softmax(teacher / t, 1), torch.softmax(student / t, 1)
    kl = (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean()
    expected = 0.7 * ce + 0.3 * t * t * kl
    assert torch.allclose(distillation_loss(student, teacher, labels, 0.3, t), expected, atol=1e-6)


def test_distillation_retrains_on_the_teachers_outputs(digits):
    torch.set_num_threads(1)
    # A teacher that ignores its input and says "3" with probability 0.9: a network distilled
    # from it alone (alpha 1) must learn that, one trained on the labels must not.
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        teacher[1].weight.zero_()
        teacher[1].bias.copy_(torch.full((10,), 0.1 / 9).log())
        teacher[1].bias[3] = torch.tensor(0.9).log()
    teacher.train()  # compress must use it in eval mode and leave its mode and weights alone
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    outcomes = {}
    for alpha in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model("lenet300", digits.train.image_shape, 10)
        cfg = CompressionConfig(**{**FAST, "epochs": 8, "finetune_epochs": 3, "lr": 0.02}, distill=alpha,
                                distill_temperature=2.0)
        outcomes[alpha] = compress(model, digits.train, cfg, seed=0, teacher=teacher)
        assert teacher.training and all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    plain, distilled = outcomes[0.0], outcomes[1.0]
    # distillation acts on the retraining only: the sparse phase, and the architecture, are the same
    assert distilled.widths_after == plain.widths_after and distilled.inputs_after == plain.inputs_after
    with torch.no_grad():
        p_three = {a: float(torch.softmax(o.model(digits.val.images), 1)[:, 3].mean()) for a, o in outcomes.items()}
    assert p_three[1.0] > 0.8 and p_three[0.0] < 0.2
    assert evaluate(plain.model, digits.val) > 50 > evaluate(distilled.model, digits.val)
    with pytest.raises(UserError, match="teacher"):
        compress(build_model("lenet300", digits.train.image_shape, 10), digits.train,
                 CompressionConfig(**FAST, distill=0.5), seed=0)


def test_mixup_blends_each_image_with_one_other_image_of_the_batch():
    from naslib_bayes.compression.compressor import mixup

    x = torch.eye(6).reshape(6, 1, 2, 3)  # image i is the indicator of pixel i
    mixed = mixup(x, torch.Generator().manual_seed(0)).reshape(6, 6)
    assert torch.allclose(mixed.sum(1), torch.ones(6))  # convex weights, summing to one
    assert ((mixed > 0).sum(1) <= 2).all()  # at most two source images each
    assert (mixed.max(1).values >= 0.5).all()  # the larger weight is on one of them
    assert len(set(mixed.diagonal().tolist())) == 6  # each image draws its own weight
    partners = [set(row.nonzero().flatten().tolist()) for row in mixed]
    assert any(len(p) == 2 for p in partners) and all(i in p for i, p in enumerate(partners))
    assert torch.equal(mixup(x, torch.Generator().manual_seed(0)), mixed.reshape(6, 1, 2, 3))
    assert not torch.equal(mixup(x, torch.Generator().manual_seed(1)), mixed.reshape(6, 1, 2, 3))


def test_mixup_distillation_shows_the_teacher_blended_images_only(digits):
    from naslib_bayes.compression.compressor import _mixup_distillation_step, mixup

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 10)

    torch.manual_seed(0)
    student = build_model("lenet300", digits.train.image_shape, 10)
    x, y = digits.train.images[:16], digits.train.labels[:16]
    cfg = CompressionConfig(**FAST, distill=0.25, distill_temperature=2.0, distill_mixup=True)
    loss, hard = _mixup_distillation_step(student, Recorder(), x, y, cfg, torch.Generator().manual_seed(0))
    expected_mix = mixup(x, torch.Generator().manual_seed(0))
    assert len(seen) == 1 and torch.equal(seen[0], expected_mix)
    with torch.no_grad():
        logits, mixed_logits = student(x), student(expected_mix)
    t = 2.0
    uniform = torch.full((16, 10), 0.1)
    kl = (uniform * (uniform.log() - torch.log_softmax(mixed_logits / t, 1))).sum(1).mean()
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(hard, ce, atol=1e-6)
    assert torch.allclose(loss, 0.75 * ce + 0.25 * t * t * kl, atol=1e-5)
    with pytest.raises(UserError, match="distill_mixup"):
        CompressionConfig(**FAST, distill_mixup=True)


def test_distill_sparse_consults_the_teacher_in_every_epoch_not_only_the_retraining(digits):
    torch.set_num_threads(1)

    class Counting(torch.nn.Module):
        """A teacher (uniform outputs) that counts the batches it is shown."""

        def __init__(self):
            super().__init__()
            self.batches = 0

        def forward(self, x):
            self.batches += 1
            return torch.zeros(len(x), 10)

    per_epoch = math.ceil(len(digits.train.labels) / FAST["batch_size"])
    calls = {}
    for sparse in (False, True):
        teacher = Counting().eval()
        torch.manual_seed(0)
        model = build_model("lenet300", digits.train.image_shape, 10)
        outcome = compress(model, digits.train, CompressionConfig(**FAST, distill=0.5, distill_sparse=sparse),
                           seed=0, teacher=teacher)
        retraining = sum(1 for h in outcome.history if h["phase"] == "finetune")
        calls[sparse] = teacher.batches
        assert teacher.batches == per_epoch * (FAST["epochs"] if sparse else retraining)
    assert calls[True] > calls[False]
    with pytest.raises(UserError, match="distill_sparse needs distill"):
        CompressionConfig(**FAST, distill_sparse=True)


def test_a_lone_last_image_sits_out_when_batchnorm_sees_one_value_per_channel(digits):
    """VGG on 8x8 digits normalises 1x1 maps: a last batch of one image cannot train (BatchNorm
    needs two values per channel), so that image sits out the epoch instead of crashing the run."""
    from naslib_bayes.compression import train_dense
    from naslib_bayes.compression.models import vgg

    torch.set_num_threads(1)
    batch_size = 98
    assert len(digits.train) % batch_size == 1
    cfg = CompressionConfig(lam=0.5, epochs=3, finetune_epochs=1, batch_size=batch_size, lr=0.05)
    torch.manual_seed(0)
    model = vgg(digits.train.image_shape, 10, config=(8, "M", 8, "M", 8, "M", 8), hidden=8)
    outcome = compress(model, digits.train, cfg, seed=0)
    assert len([h for h in outcome.history if h["phase"] == "update"]) == 1
    assert len(train_dense(model, digits.train, cfg, seed=0)) == cfg.epochs


def test_batches_of_one_image_are_refused_when_batchnorm_sees_one_value_per_channel(digits, capsys, tmp_path):
    """Every batch of one image fails there in training: the run stopped at its first step with
    torch's 'Expected more than 1 value per channel' traceback."""
    from naslib_bayes.compression import train_dense
    from naslib_bayes.compression.models import vgg

    cfg = CompressionConfig(lam=0.5, epochs=3, finetune_epochs=1, batch_size=1)
    torch.manual_seed(0)
    model = vgg(digits.train.image_shape, 10, config=(8, "M", 8, "M", 8, "M", 8), hidden=8)
    for train in (compress, train_dense):
        with pytest.raises(UserError, match="batch_size 1"):
            train(model, digits.train, cfg, seed=0)
    code, _, err = run_cli(capsys, "compress", "--model", "vgg", "--dataset", "digits", "--epochs", "3",
                           "--batch-size", "1", "--out", str(tmp_path / "out"))
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and "--batch-size" in errors[0], err
    assert not (tmp_path / "out").exists()


def test_batches_of_one_image_train_a_network_without_batchnorm(digits):
    cfg = CompressionConfig(lam=0.5, epochs=2, finetune_epochs=0, batch_size=1)
    small = load_dataset("digits", seed=0, val_fraction=0.7)  # 180 training images: a quick epoch
    torch.manual_seed(0)
    compress(build_model("lenet300", small.train.image_shape, 10), small.train, cfg, seed=0)


def test_shipped_model_names_match_the_factories():
    assert tuple(MODELS) == MODEL_NAMES


def test_compress_command_runs_on_the_threads_it_is_given_whatever_torch_had(capsys, tmp_path, digits):
    """As train and search: one torch thread by default, so the command's numbers are the benchmark
    script's (thread counts change float reductions) on any machine."""
    argv = ["compress", "--model", "lenet5", "--dataset", "digits", "--lambda", "0.02", "--epochs", "3",
            "--finetune-epochs", "1", "--batch-size", "64", "--seed", "0"]
    torch.set_num_threads(2)
    try:
        assert run_cli(capsys, *argv, "--out", str(tmp_path / "default"))[0] == 0
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert run_cli(capsys, *argv, "--threads", "2", "--out", str(tmp_path / "two"))[0] == 0
        assert torch.get_num_threads() == 2
        # the count changes the last digits of the numbers: each record says which it ran with
        recorded = [json.loads((tmp_path / run / "result.json").read_text())["torch_threads"] for run in ("default", "two")]
        assert recorded == [1, 2]
    finally:
        torch.set_num_threads(1)


def test_compress_command_writes_result_and_a_loadable_model(capsys, tmp_path, digits):
    torch.set_num_threads(1)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "1.5",
                             "--epochs", "6", "--finetune-epochs", "2", "--batch-size", "32", "--lr", "0.02",
                             "--distill", "0.5", "--distill-mixup", "--grad-clip", "100", "--seed", "0",
                             "--out", str(out_dir))
    assert code == 0, err
    result = json.loads((out_dir / "result.json").read_text())
    jsonschema.validate(result, results.load_schema())
    assert result["command"] == "compress" and result["model"] == "lenet300" and result["seed"] == 0
    assert result["config"]["distill"] == 0.5 and result["config"]["distill_temperature"] == 4.0
    assert result["config"]["distill_mixup"] is True and result["config"]["grad_clip"] == 100.0
    assert result["params_after"] < result["params_before"] == 50610
    assert result["budget_met"] is None  # no --max-params
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
    (["--model", "lenet5", "--dataset", "digits", "--epochs", "2", "--finetune-epochs", "1"],
     "epochs=2 with finetune_epochs=1 leaves 1 epoch(s)"),
    (["--model", "lenet5", "--dataset", "digits", "--max-params", "1.5"], "--max-params"),
    (["--model", "lenet5", "--dataset", "digits", "--retrain", "rewind"], "--retrain"),
    (["--model", "lenet5", "--dataset", "digits", "--distill", "1.5"], "--distill"),
    (["--model", "lenet5", "--dataset", "digits", "--distill", "0.5", "--no-baseline"], "--no-baseline"),
    (["--model", "lenet5", "--dataset", "digits", "--distill-mixup"], "--distill-mixup needs --distill"),
    (["--model", "lenet300", "--dataset", "digits", "--lr", "1e6", "--epochs", "3", "--finetune-epochs", "1",
      "--no-baseline"], "diverged"),
    (["--model", "lenet5", "--dataset", "digits", "--grad-clip", "-1"], "--grad-clip"),
])
def test_compress_errors_are_one_line(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "compress", *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "out" / "result.json").exists()


@pytest.mark.parametrize("epochs", [1, 2])
def test_too_few_epochs_name_an_epoch_count_the_command_takes(capsys, tmp_path, epochs):
    """Without --finetune-epochs a third of --epochs retrains, so the least count is not this run's
    finetune epochs plus the warm-up plus one: --epochs 1 was told to give 2, which was refused in
    turn, asking for 3."""
    import re
    from types import SimpleNamespace

    from naslib_bayes.commands.compress import compression_config

    code, _, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--epochs", str(epochs),
                           "--out", str(tmp_path / "out"))
    named = re.search(r"at least (\d+) epochs", err)
    assert code == 2 and named is not None, err
    least = int(named.group(1))
    args = SimpleNamespace(lam=1e-3, epochs=least, finetune_epochs=None, batch_size=64, lr=0.02, lam_scale="none",
                           max_params=None, retrain="finetune", distill=0.0, distill_temperature=None,
                           distill_mixup=False, grad_clip=10.0, no_baseline=False)
    compression_config(args)  # the count it names is taken
    args.epochs = least - 1
    # and is the least: one fewer is refused for the default finetune epochs, naming it again
    with pytest.raises(UserError, match=rf"^epochs={least - 1} with finetune_epochs={round((least - 1) / 3)} "
                                        r"\(a third of --epochs when --finetune-epochs is not given\) .* "
                                        rf"give at least {least} epochs"):
        compression_config(args)


def test_compress_overwrite_stopped_after_the_new_model_leaves_no_old_result_beside_it(capsys, tmp_path,
                                                                                       monkeypatch):
    """The old result.json (seed 1's network) stayed beside seed 2's model.pt and widths.json when
    the process stopped between writing the model files and the result."""
    argv = ["compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "0.5", "--epochs", "3",
            "--finetune-epochs", "1", "--batch-size", "32", "--no-baseline", "--out", str(tmp_path / "run")]
    assert run_cli(capsys, *argv, "--seed", "1")[0] == 0
    assert run_cli_stopped_before_its_result(capsys, monkeypatch, *argv, "--seed", "2", "--overwrite") == 130
    assert (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / "result.json").exists()


def test_val_size_with_digits_is_refused_before_out_is_made(capsys, tmp_path):
    """digits comes split 60/20/20 (359 validation images) whatever --val-size says: a value given
    there was ignored while result.json's config recorded it (--val-size 0 still held out 359)."""
    code, _, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--val-size", "0",
                           "--epochs", "3", "--out", str(tmp_path / "out"))
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and "--val-size" in errors[0] and "digits" in errors[0], err
    assert not (tmp_path / "out").exists()


def test_result_records_the_validation_images_digits_really_holds_out(capsys, tmp_path, digits):
    """digits holds out its fixed 20% (359 images) for validation: result.json's config recorded
    --val-size's default of 1000, which digits never uses."""
    torch.set_num_threads(1)
    code, _, err = run_cli(capsys, "compress", "--model", "lenet300", "--dataset", "digits", "--epochs", "3",
                           "--finetune-epochs", "1", "--no-baseline", "--out", str(tmp_path / "run"))
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "result.json").read_text())["config"]
    assert config["val_size"] == len(digits.val) == 359
    assert config["train_images"] + config["val_size"] + config["test_images"] == 1797


def test_mnist_split_keeps_the_held_out_images_apart(mnist_dir):
    splits = load_dataset("mnist", mnist_dir, seed=1, val_size=1000)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7000, 1000, 2000)
    seen = set(splits.train.indices.tolist()) | set(splits.val.indices.tolist())
    assert seen.isdisjoint(splits.test.indices.tolist())


def test_parameters_before_are_those_of_the_layers_the_forward_pass_uses(digits):
    """A module the model holds but never calls (an unused head) is no part of the network that
    compression sees, slims and counts after: counting it before would overstate what was removed."""
    torch.set_num_threads(1)

    class WithUnusedHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = build_model("lenet300", digits.train.image_shape, 10)
            self.unused_head = torch.nn.Linear(300, 10)

        def forward(self, x):
            return self.body(x)

    torch.manual_seed(0)
    model = WithUnusedHead()
    used = sum(p.numel() for p in model.body.parameters())
    cfg = CompressionConfig(lam=1e-6, epochs=2, finetune_epochs=0, batch_size=64, lr=0.01, augment=False)
    outcome = compress(model, digits.train, cfg, seed=0)
    assert outcome.params_before == used
    assert outcome.widths_after == outcome.widths_before and outcome.inputs_after == outcome.inputs_before
    assert outcome.params_after == outcome.params_before  # nothing pruned: nothing removed


class _Written(torch.nn.Module):
    """conv ReLU POOL, conv ReLU HEAD, linear ReLU DROP, linear on 8x8 digits, where POOL, HEAD and
    DROP are modules or functions written in forward (DROP functions take the model's mode)."""

    def __init__(self, pool, head, drop):
        super().__init__()
        self.pool, self.head, self.drop = pool, head, drop
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 12, 3, padding=1)
        with torch.no_grad():
            features = self._features(torch.zeros(1, 1, 8, 8)).shape[1]
        self.fc1 = torch.nn.Linear(features, 24)
        self.fc2 = torch.nn.Linear(24, 10)

    def _features(self, x):
        x = self.pool(torch.nn.functional.relu(self.conv1(x)))
        return self.head(torch.nn.functional.relu(self.conv2(x)))

    def forward(self, x):
        x = torch.nn.functional.relu(self.fc1(self._features(x)))
        x = self.drop(x) if isinstance(self.drop, torch.nn.Module) else self.drop(x, self.training)
        return self.fc2(x)


def _flat(*modules):
    return torch.nn.Sequential(*modules, torch.nn.Flatten())


_F = torch.nn.functional
_MAX, _FLAT, _DROP = torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(0.3)
# (pool, head, drop) written with functions, then with the modules they stand for
FUNCTIONAL_TWINS = {
    "F.max_pool2d(x, 2)": ((lambda x: _F.max_pool2d(x, 2), _FLAT, _DROP), (torch.nn.MaxPool2d(2), _FLAT, _DROP)),
    "F.max_pool2d(x, (2, 2))": ((lambda x: _F.max_pool2d(x, (2, 2)), _FLAT, _DROP),
                                (torch.nn.MaxPool2d((2, 2)), _FLAT, _DROP)),
    "torch.max_pool2d(x, 2)": ((lambda x: torch.max_pool2d(x, 2), _FLAT, _DROP),
                               (torch.nn.MaxPool2d(2), _FLAT, _DROP)),
    "F.max_pool2d keywords": (
        (lambda x: _F.max_pool2d(x, kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True), _FLAT, _DROP),
        (torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), _FLAT, _DROP)),
    "F.avg_pool2d(x, 2)": ((lambda x: _F.avg_pool2d(x, 2), _FLAT, _DROP), (torch.nn.AvgPool2d(2), _FLAT, _DROP)),
    "F.avg_pool2d positional": ((lambda x: _F.avg_pool2d(x, 3, 2, 1, True, False, 4), _FLAT, _DROP),
                                (torch.nn.AvgPool2d(3, 2, 1, True, False, 4), _FLAT, _DROP)),
    "F.adaptive_avg_pool2d(x, 2)": ((_MAX, lambda x: torch.flatten(_F.adaptive_avg_pool2d(x, 2), 1), _DROP),
                                    (_MAX, _flat(torch.nn.AdaptiveAvgPool2d(2)), _DROP)),
    "x.mean((2, 3))": ((_MAX, lambda x: x.mean((2, 3)), _DROP), (_MAX, _flat(torch.nn.AdaptiveAvgPool2d(1)), _DROP)),
    "x.mean(dim=[2, 3], keepdim=True)": ((_MAX, lambda x: x.mean(dim=[2, 3], keepdim=True).flatten(1), _DROP),
                                         (_MAX, _flat(torch.nn.AdaptiveAvgPool2d(1)), _DROP)),
    "torch.mean(x, (-2, -1))": ((_MAX, lambda x: torch.mean(x, (-2, -1)), _DROP),
                                (_MAX, _flat(torch.nn.AdaptiveAvgPool2d(1)), _DROP)),
    "F.dropout(x, p, training=self.training)": (
        (_MAX, _FLAT, lambda x, training: _F.dropout(x, 0.3, training=training)), (_MAX, _FLAT, torch.nn.Dropout(0.3))),
    "torch.dropout(x, p, self.training)": ((_MAX, _FLAT, lambda x, training: torch.dropout(x, 0.3, training)),
                                           (_MAX, _FLAT, torch.nn.Dropout(0.3))),
}


@pytest.mark.parametrize("form", list(FUNCTIONAL_TWINS))
def test_functional_pooling_dropout_and_mean_compress_as_the_modules_they_stand_for(digits, tmp_path, form):
    from naslib_bayes.compression.io import save_compressed

    torch.set_num_threads(1)
    written, modules = FUNCTIONAL_TWINS[form]
    torch.manual_seed(0)
    functional = _Written(*written)
    twin = _Written(*modules)
    twin.load_state_dict(functional.state_dict())
    cfg = CompressionConfig(**{**FAST, "lam": 0.6, "epochs": 4, "finetune_epochs": 1})  # prunes every form
    outcome, expected = (compress(model, digits.train, cfg, seed=0) for model in (functional, twin))
    assert outcome.widths_after == expected.widths_after != outcome.widths_before  # something was pruned
    counts = lambda o: (o.params_before, o.params_after, o.flops_before, o.flops_after)  # noqa: E731
    assert counts(outcome) == counts(expected)
    x = digits.val.images[:128]
    with torch.no_grad():
        assert torch.equal(outcome.model(x), expected.model(x))
        scale = max(1.0, float(outcome.model(x).abs().max()))
    assert outcome.masked_max_abs_diff < 1e-5 * scale
    save_compressed(outcome.model, tmp_path, digits.train.image_shape)
    with torch.no_grad():
        assert torch.equal(load_compressed(tmp_path)(x), outcome.model.eval()(x))  # weights_only=True load
