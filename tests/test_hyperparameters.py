"""Optimizer hyper-parameters: unknown names and values of the wrong type are one-line errors."""

from __future__ import annotations

import pytest

from cli_runner import run_cli
from naslib_bayes.errors import UserError, cause
from naslib_bayes.optimizers.hyperparameters import merge_hyperparameters

DEFAULTS = {"steps": 5, "lr": 0.01, "only": False, "mode": "own", "path": None}


def test_values_take_the_type_of_their_default():
    merged = merge_hyperparameters("Opt", DEFAULTS, {"steps": 7.0, "lr": 1, "only": "True", "path": 3})
    assert merged == {"steps": 7, "lr": 1.0, "only": True, "mode": "own", "path": 3}
    assert type(merged["steps"]) is int and type(merged["lr"]) is float


def test_a_float_in_exponent_notation_read_as_text_by_yaml_is_a_number():
    # PyYAML and NASLib's config files (YAML 1.1) hand "3e-4" on as text: a float all the same
    merged = merge_hyperparameters("Opt", DEFAULTS, {"lr": "3e-4"})
    assert merged["lr"] == 3e-4 and type(merged["lr"]) is float
    with pytest.raises(UserError, match="lr='3e'"):
        merge_hyperparameters("Opt", DEFAULTS, {"lr": "3e"})


@pytest.mark.parametrize("given, message", [
    ({"step": 1}, "Opt: unknown hyper-parameter 'step' (known: lr, mode, only, path, steps)"),
    ({"steps": "abc"}, "Opt: hyper-parameter steps='abc': expected int (default 5)"),
    ({"steps": 2.5}, "Opt: hyper-parameter steps=2.5: expected int"),
    ({"steps": True}, "Opt: hyper-parameter steps=True: expected int"),
    ({"lr": "fast"}, "Opt: hyper-parameter lr='fast': expected float"),
    ({"only": "yes"}, "Opt: hyper-parameter only='yes': expected bool"),
    ({"mode": 3}, "Opt: hyper-parameter mode=3: expected str"),
    ({"steps": None}, "Opt: hyper-parameter steps has no value: expected int (default 5)"),
    ({"only": None}, "Opt: hyper-parameter only has no value: expected bool (default False)"),
])
def test_wrong_names_and_types_are_named(given, message):
    with pytest.raises(UserError) as info:
        merge_hyperparameters("Opt", DEFAULTS, given)
    assert str(info.value).startswith(message)


def test_a_bad_opt_value_on_the_command_line_is_one_line_and_writes_nothing(capsys, tmp_path, nats_csv):
    code, _, err = run_cli(capsys, "search", "--optimizer", "re", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "5", "--opt", "population_size=abc", "--out", tmp_path / "re")
    assert code == 2
    assert err.strip().splitlines()[-1] == ("naslib-bayes: error: RegularizedEvolution: hyper-parameter "
                                            "population_size='abc': expected int (default 20)")
    assert not (tmp_path / "re" / "result.json").exists()


@pytest.mark.parametrize("text", ["", "null"])
def test_an_empty_opt_value_on_the_command_line_is_one_line(capsys, tmp_path, nats_csv, text):
    code, _, err = run_cli(capsys, "search", "--optimizer", "re", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "5", "--opt", f"population_size={text}", "--out", tmp_path / "re")
    assert code == 2
    assert err.strip().splitlines()[-1] == ("naslib-bayes: error: RegularizedEvolution: hyper-parameter "
                                            "population_size has no value: expected int (default 20)")


def test_cause_is_the_first_line_shortened():
    assert cause(ValueError("bad value\nmore detail")) == "ValueError: bad value"
    assert cause(KeyError()) == "KeyError"
    long = cause(RuntimeError("x" * 500))
    assert len(long) == 160 and long.endswith("...")


def test_lower_bounds_refuse_values_below_them_and_nan():
    from naslib_bayes.optimizers.hyperparameters import above, at_least

    bounds = {"steps": at_least(1), "lr": above(0), "unused": at_least(3)}
    assert merge_hyperparameters("Opt", DEFAULTS, {"steps": 1, "lr": 1e-9}, bounds)["steps"] == 1
    for given, message in [({"steps": 0}, "Opt: hyper-parameter steps=0: expected a number >= 1 (default 5)"),
                           ({"lr": 0}, "Opt: hyper-parameter lr=0.0: expected a number > 0 (default 0.01)"),
                           ({"lr": float("nan")}, "Opt: hyper-parameter lr=nan: expected a number > 0")]:
        with pytest.raises(UserError) as info:
            merge_hyperparameters("Opt", DEFAULTS, given, bounds)
        assert str(info.value).startswith(message)


@pytest.mark.parametrize("optimizer, name, value, message", [
    ("ls", "num_init", 0, "LocalSearch: hyper-parameter num_init=0: expected a number >= 1"),
    ("re", "population_size", 0, "RegularizedEvolution: hyper-parameter population_size=0: expected a number >= 1"),
    ("bananas", "num_init", 0, "Bananas: hyper-parameter num_init=0: expected a number >= 1"),
    ("bananas", "k", 0, "Bananas: hyper-parameter k=0: expected a number >= 1"),
    ("bananas", "num_arches_to_mutate", 0, "Bananas: hyper-parameter num_arches_to_mutate=0: expected a number >= 1"),
    ("bananas", "max_mutations", 0, "Bananas: hyper-parameter max_mutations=0: expected a number >= 1"),
    ("bananas", "num_ensemble", 0, "Bananas: hyper-parameter num_ensemble=0: expected a number >= 1"),
    ("bananas", "lr", 0.0, "Bananas: hyper-parameter lr=0.0: expected a number > 0"),
    ("gp-bo", "ucb_beta", -1, "GPBO: hyper-parameter ucb_beta=-1.0: expected a number >= 0"),
    ("gp-bo", "finetune_steps", -1, "GPBO: hyper-parameter finetune_steps=-1: expected a number >= 0"),
    ("gp-bo", "encoder_hidden", 0, "GPBO: hyper-parameter encoder_hidden=0: expected a number >= 1"),
    ("tnas", "finetune_lr", 0, "TNAS: hyper-parameter finetune_lr=0.0: expected a number > 0"),  # DeepKernelBO's bounds
    ("tnas", "initial_design", 0, "TNAS: hyper-parameter initial_design=0: expected a number >= 1"),
    # the GRU of the surrogate meta-trained at setup: 0 ended in a ZeroDivisionError traceback there
    ("tnas", "encoder_hidden", 0, "TNAS: hyper-parameter encoder_hidden=0: expected a number >= 1"),
])
def test_values_below_an_optimizers_bounds_are_named(optimizer, name, value, message):
    from naslib_bayes.optimizers import registry

    with pytest.raises(UserError) as info:
        registry.create(optimizer, kind=registry.BLACK_BOX, seed=0, **{name: value})
    assert str(info.value).startswith(message)


def test_a_negative_ucb_beta_on_the_command_line_is_one_line(capsys, tmp_path, nats_csv):
    code, _, err = run_cli(capsys, "search", "--optimizer", "gp-bo", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "25", "--opt", "acquisition=ucb", "--opt", "ucb_beta=-1", "--out", tmp_path / "gp")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("naslib-bayes: error: GPBO: hyper-parameter ucb_beta=-1.0: "
                                            "expected a number >= 0 (default 2.0)")


@pytest.mark.parametrize("argv, message", [
    (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "3",
      "--opt", "seed=3"], "--opt seed: the seed is not a hyper-parameter; give it with --seed"),
    (["search", "--optimizer", "bayesnas", "--dataset", "digits", "--opt", "seed=3"],
     "--opt seed: the seed is not a hyper-parameter; give it with --seed"),
    (["compare", "--benchmark", "{csv}", "--optimizers", "rs", "--datasets", "cifar10", "--seeds", "1",
      "--budget", "3", "--opt", "rs.seed=3"], "--opt rs.seed: the seed is not a hyper-parameter; give seeds with --seeds"),
])
def test_a_seed_given_as_a_hyper_parameter_is_one_line(capsys, tmp_path, nats_csv, argv, message):
    # the optimizers take the seed as their own argument: passed twice, it was a TypeError's traceback
    argv = [str(a).format(csv=nats_csv) for a in argv]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"naslib-bayes: error: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("given, message", [
    ({"lr": float("inf")}, "Opt: hyper-parameter lr=inf: expected a finite number (default 0.01)"),
    ({"lr": float("-inf")}, "Opt: hyper-parameter lr=-inf: expected a finite number"),
    ({"lr": float("nan")}, "Opt: hyper-parameter lr=nan: expected a finite number"),
    ({"path": float("nan")}, "Opt: hyper-parameter path=nan: expected a finite number (default None)"),
])
def test_values_that_are_not_finite_are_named(given, message):
    # unbounded (or only lower-bounded) floats let inf and nan through to the run, whose result.json
    # then cannot be written (JSON has no inf), or to the GP, whose kernel matrix breaks
    with pytest.raises(UserError) as info:
        merge_hyperparameters("Opt", DEFAULTS, given)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("value", [".inf", ".nan"])
def test_a_search_with_a_non_finite_opt_value_is_refused_before_it_runs(capsys, tmp_path, nats_csv, value):
    code, _, err = run_cli(capsys, "search", "--optimizer", "gp-bo", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "12", "--opt", f"ei_xi={value}", "--out", tmp_path / "gp")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"naslib-bayes: error: GPBO: hyper-parameter ei_xi={float(value[1:])}: "
                                            "expected a finite number (default 0.0)")


@pytest.mark.parametrize("optimizer, name, value, message", [
    ("bayesnas", "lr", -1, "BayesNAS: hyper-parameter lr=-1.0: expected a number > 0"),
    ("random-cell", "lr_min", -1, "RandomCell: hyper-parameter lr_min=-1.0: expected a number >= 0"),
    ("darts", "momentum", -1, "DARTS: hyper-parameter momentum=-1.0: expected a number >= 0"),
    ("bayesnas", "weight_decay", -1, "BayesNAS: hyper-parameter weight_decay=-1.0: expected a number >= 0"),
    ("bayesnas", "grad_clip", -1, "BayesNAS: hyper-parameter grad_clip=-1.0: expected a number >= 0"),
    ("darts", "arch_lr", 0, "DARTS: hyper-parameter arch_lr=0.0: expected a number > 0"),
    ("darts", "arch_weight_decay", -1, "DARTS: hyper-parameter arch_weight_decay=-1.0: expected a number >= 0"),
    ("darts", "arch_beta1", 1, "DARTS: hyper-parameter arch_beta1=1.0: expected a number in [0, 1)"),
    ("darts", "arch_beta2", -0.5, "DARTS: hyper-parameter arch_beta2=-0.5: expected a number in [0, 1)"),
    ("bayesnas", "lambda_child", "abc", "BayesNAS: hyper-parameter lambda_child='abc': expected a positive number"),
    ("bayesnas", "lambda_child", True, "BayesNAS: hyper-parameter lambda_child=True: expected a positive number"),
])
def test_values_outside_a_one_shot_optimizers_range_are_named(optimizer, name, value, message):
    # torch's optimizers raised them as a ValueError's traceback, or (lr_min, weight_decay, grad_clip
    # below 0) the search ran on a negative learning rate, an anti-decay or no clipping, silently
    from naslib_bayes.optimizers import registry

    with pytest.raises(UserError) as info:
        registry.create(optimizer, kind=registry.ONE_SHOT, seed=0, **{name: value})
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("text", ["3e-4", " 3e-4 ", "3_0e-5", "3_e-4"])
def test_lambda_child_reads_exponent_text_as_every_float_hyper_parameter_does(text):
    # its default (None: lambda_origin's) leaves its type to BayesNAS, which reads such text as the
    # shared rule does (underscores included) instead of float() failing on "3_e-4" in a traceback
    from naslib_bayes.optimizers import registry

    bayesnas = registry.create("bayesnas", kind=registry.ONE_SHOT, seed=0, lambda_child=text)
    darts = registry.create("darts", kind=registry.ONE_SHOT, seed=0, arch_lr=text)
    assert bayesnas.config["lambda_child"] == darts.config["arch_lr"] == pytest.approx(3e-4)


def test_a_bad_one_shot_opt_value_on_the_command_line_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits", "--opt", "lr=-1",
                           "--out", tmp_path / "bn")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("naslib-bayes: error: BayesNAS: hyper-parameter lr=-1.0: "
                                            "expected a number > 0 (default 0.05)")


@pytest.mark.parametrize("given, merged", [
    ({"only": "false"}, {"only": False}), ({"only": "TRUE"}, {"only": True}), ({"path": None}, {"path": None}),
    ({"lr": "1_e-3"}, {"lr": 1e-3}),  # YAML 1.1 digits may hold underscores; float() refuses a trailing one
])
def test_text_booleans_a_none_default_and_underscored_exponents(given, merged):
    assert merge_hyperparameters("Opt", DEFAULTS, given) == {**DEFAULTS, **merged}


def test_numpy_numbers_are_taken_as_the_python_numbers_they_hold():
    import numpy as np

    # a sweep over np.arange / np.linspace hands on numpy scalars, of which only float64 is a Python float
    merged = merge_hyperparameters("Opt", DEFAULTS, {"steps": np.int64(7), "lr": np.float32(0.5)})
    assert merged["steps"] == 7 and type(merged["steps"]) is int
    assert merged["lr"] == 0.5 and type(merged["lr"]) is float
    assert merge_hyperparameters("Opt", DEFAULTS, {"steps": np.float32(4.0), "lr": np.int32(2)})["lr"] == 2.0
    with pytest.raises(UserError, match="steps=np.float32.2.5.: expected int"):
        merge_hyperparameters("Opt", DEFAULTS, {"steps": np.float32(2.5)})
    with pytest.raises(UserError, match="lr=np.True_: expected float"):
        merge_hyperparameters("Opt", DEFAULTS, {"lr": np.bool_(True)})

@pytest.mark.parametrize("given, message", [
    ({"lr": True}, "Opt: hyper-parameter lr=True: expected float"),  # a bool is an int to Python, not a number here
    ({"only": 1}, "Opt: hyper-parameter only=1: expected bool"),
    ({"zeta": 1, "alpha": 2}, "Opt: unknown hyper-parameter 'alpha'"),  # the first unknown name in sorted order
])
def test_booleans_and_numbers_do_not_pass_for_each_other(given, message):
    with pytest.raises(UserError) as info:
        merge_hyperparameters("Opt", DEFAULTS, given)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("name, cls", [
    ("rs", "RandomSearch"), ("bayesnas", "BayesNAS"), ("darts", "DARTS"), ("random-cell", "RandomCell"),
    ("tnas", "TNAS"), ("gp-bo", "GPBO"), ("transfer-topk", "TransferTopK"), ("re", "RegularizedEvolution"),
    ("ls", "LocalSearch"), ("bananas", "Bananas"),
])
def test_each_registered_name_loads_its_own_optimizer(name, cls):
    from naslib_bayes.optimizers import registry

    assert registry.get_spec(name).load().__name__ == cls


def test_an_optimizer_of_the_other_kind_is_unknown_to_a_kind():
    from naslib_bayes.optimizers import registry

    with pytest.raises(UserError) as info:
        registry.get_spec("bayesnas", registry.BLACK_BOX)
    assert str(info.value) == ("unknown black-box optimizer 'bayesnas'; valid: rs, tnas, gp-bo, transfer-topk, re, "
                               "ls, bananas")
    with pytest.raises(UserError, match="^unknown one-shot optimizer 'rs'; valid: bayesnas, darts, random-cell$"):
        registry.get_spec("rs", registry.ONE_SHOT)
