"""The command line: happy path and error paths (one line on stderr, exit code 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from naslib_bayes.commands.common import parse_seeds
from cli_runner import run_cli


def test_list_prints_names_with_kinds(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.strip().splitlines()}
    assert rows["rs"] == "black-box"


def test_search_rs_writes_a_result(capsys, tmp_path, nats_csv):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", str(nats_csv),
                             "--dataset", "cifar100", "--budget", "7", "--seed", "2", "--out", str(out_dir))
    assert code == 0, err
    result = json.loads((out_dir / "result.json").read_text())
    assert result["budget"] == 7 and len(result["trajectory"]) == 7 and result["seed"] == 2
    assert "searching on test accuracy" in err  # the CSV has no validation split
    assert result["final_architecture"] in out
    # A second run into the same folder must not overwrite the first result ...
    code, _, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", str(nats_csv),
                           "--dataset", "cifar100", "--budget", "3", "--out", str(out_dir))
    assert code == 2 and "already exists" in err
    assert json.loads((out_dir / "result.json").read_text()) == result


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--optimizer", "nope", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "3"], "unknown optimizer 'nope'; valid: "),
        (["search", "--optimizer", "rs", "--benchmark", "/no/such/file.csv", "--dataset", "cifar10", "--budget", "3"], "'/no/such/file.csv' does not exist"),
        (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "svhn", "--budget", "3"], "'svhn'"),
        (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "0"], "--budget"),
        (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10"], "--budget is required"),
        (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "3", "--search-metric", "val_accuracy"], "'val_accuracy'"),
        (["search", "--optimizer", "rs", "--benchmark", "{bad}", "--dataset", "cifar10", "--budget", "3"], "not a NAS-Bench-201 benchmark file"),
        (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "3", "--opt", "k"], "KEY=VALUE"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(capsys, tmp_path, nats_csv, argv, message):
    bad = tmp_path / "bench.txt"
    bad.write_text("not a benchmark")
    argv = [a.format(csv=nats_csv, bad=bad) for a in argv]
    if argv[0] == "search":
        argv += ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "result.json").exists()


def test_console_script_entry_point_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "naslib_bayes", "search", "--optimizer", "rs", "--benchmark",
                           str(tmp_path / "missing.csv"), "--dataset", "cifar10", "--budget", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.csv" in proc.stderr


@pytest.mark.parametrize("text, seeds", [("3", [0, 1, 2]), ("0,3,7", [0, 3, 7]), ("5,", [5])])
def test_seeds_take_a_count_or_a_list(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "a", "1,1", "-1,2"])
def test_bad_seeds_are_rejected(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_seeds(text)
