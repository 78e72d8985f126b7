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


@pytest.mark.parametrize("given, message", [
    ({"step": 1}, "Opt: unknown hyper-parameter 'step' (known: lr, mode, only, path, steps)"),
    ({"steps": "abc"}, "Opt: hyper-parameter steps='abc': expected int (default 5)"),
    ({"steps": 2.5}, "Opt: hyper-parameter steps=2.5: expected int"),
    ({"steps": True}, "Opt: hyper-parameter steps=True: expected int"),
    ({"lr": "fast"}, "Opt: hyper-parameter lr='fast': expected float"),
    ({"only": "yes"}, "Opt: hyper-parameter only='yes': expected bool"),
    ({"mode": 3}, "Opt: hyper-parameter mode=3: expected str"),
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


def test_cause_is_the_first_line_shortened():
    assert cause(ValueError("bad value\nmore detail")) == "ValueError: bad value"
    assert cause(KeyError()) == "KeyError"
    long = cause(RuntimeError("x" * 500))
    assert len(long) == 160 and long.endswith("...")
