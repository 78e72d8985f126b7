"""The command line: happy path and error paths (one line on stderr, exit code 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from naslib_bayes.commands.common import parse_seeds
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from cli_runner import run_cli, signal_once_written


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
        # beyond what torch's generators take (a traceback after the output folder was made)
        (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "3",
          "--seed", "99999999999999999999"], "argument --seed: expected an integer from 0 to 4294967295"),
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


@pytest.mark.parametrize("text, message", [
    # a count below 1 is said to be one: "seeds from 0 to ..." misled a user who had typed seed 0
    ("0", "--seeds 0: a count of seeds is at least 1"), ("-2", "--seeds -2: a count of seeds is at least 1"),
    ("a", "--seeds takes a count or a comma-separated list"), ("1,1", "--seeds needs distinct seeds"),
    ("-1,2", "--seeds needs distinct seeds"), ("0,4294967296", "--seeds needs distinct seeds")])
def test_bad_seeds_are_rejected(text, message):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="^" + re.escape(message)):
        parse_seeds(text)


def test_sigterm_unwinds_a_command_like_ctrl_c(capsys, monkeypatch, nats_csv, tmp_path):
    """SIGTERM raises where the command is, so its clean-up runs; the exit code is 143 (128 + 15)."""
    import os
    import signal
    import time

    from naslib_bayes.comparison import runner

    def terminated_mid_run(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not interrupt the command")

    def outside_the_command(signum, frame):  # stands in for the default, which would end pytest
        raise AssertionError("SIGTERM reached the handler of the caller, not the command's")

    monkeypatch.setattr(runner, "run_comparison", terminated_mid_run)
    previous = signal.signal(signal.SIGTERM, outside_the_command)
    try:
        code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--datasets", "cifar10", "--optimizers", "rs",
                               "--seeds", "1", "--budget", "3", "--out", tmp_path)
        assert code == 143 and err == "naslib-bayes: terminated\n"
        assert signal.getsignal(signal.SIGTERM) is outside_the_command  # the command's handler is gone again
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("signum, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_as_the_program_exits_after_its_result_is_one_line_and_the_result_stays(signum, code, said, nats_csv,
                                                                                         tmp_path):
    """The interpreter's exit after a command (torch's teardown) takes a second or more, most of it with the
    signals back at their default action: a Ctrl-C then killed the finished program by its signal (-2),
    saying nothing. It is answered as during the command, or finds the program already ended (0)."""
    for delay_s in (0.02, 0.2):
        out = tmp_path / f"run-{delay_s}"
        returncode, err = signal_once_written([sys.executable, "-m", "naslib_bayes", "search", "--optimizer", "rs",
                                               "--benchmark", str(nats_csv), "--dataset", "cifar10", "--budget", "5",
                                               "--out", str(out)], out / "result.json", delay_s, signum)
        said_lines = [line for line in err.splitlines() if "warning:" not in line]
        assert (returncode, said_lines) in ((code, [f"naslib-bayes: {said}"]), (0, [])), (delay_s, err)
        assert json.loads((out / "result.json").read_text())["budget"] == 5


@pytest.mark.parametrize("signum, code, said", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_whose_handler_runs_in_a_finalizer_still_stops_the_command(signum, code, said, capsys, monkeypatch,
                                                                             nats_csv, tmp_path):
    """Python runs a signal's handler at the next bytecode it executes, often a finalizer (a progress
    bar's ``__del__`` as the search's function returns, just after result.json); the exception it raises
    there is printed as 'Exception ignored' with a traceback and dropped, and the command went on as if
    never stopped (exit code 0). It is delivered again, outside the finalizer."""
    import signal

    from naslib_bayes import cli, results

    handler = {"SIGINT": signal.default_int_handler, "SIGTERM": cli._raise_terminated}[signum]
    write_result = results.write_result

    class StoppedWhileFinalized:
        def __del__(self):
            handler(getattr(signal, signum), None)  # what the signal's handler does when it runs here

    def written_then_stopped(*args, **kwargs):
        path = write_result(*args, **kwargs)
        StoppedWhileFinalized()  # dropped at once: its finalizer runs now
        return path

    monkeypatch.setattr(results, "write_result", written_then_stopped)
    out = tmp_path / "run"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a program
    try:
        returned, _, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", nats_csv, "--dataset",
                                   "cifar10", "--budget", "5", "--out", out)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (returned, [line for line in err.splitlines() if "warning:" not in line]) == (code, [f"naslib-bayes: {said}"])
    assert json.loads((out / "result.json").read_text())["budget"] == 5


def test_a_ctrl_c_dropped_in_a_finalizer_mid_work_stops_the_work_at_once(capsys, monkeypatch, nats_csv, tmp_path):
    """Not only once the command has ended: the work it was doing (here, before writing result.json)
    stops within moments, as for any Ctrl-C."""
    import signal
    import time

    from naslib_bayes import results

    class StoppedWhileFinalized:
        def __del__(self):
            signal.default_int_handler(signal.SIGINT, None)

    def stopped_mid_work(*args, **kwargs):
        StoppedWhileFinalized()
        time.sleep(30)  # the work goes on; the Ctrl-C ends it long before
        raise AssertionError("the Ctrl-C was lost")

    monkeypatch.setattr(results, "write_result", stopped_mid_work)
    out = tmp_path / "run"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.monotonic()
    try:
        code, _, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", nats_csv, "--dataset", "cifar10",
                               "--budget", "5", "--out", out)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and err.splitlines()[-1] == "naslib-bayes: interrupted" and time.monotonic() - start < 20
    assert not (out / "result.json").exists()


# ---- benchmarks with values for some cells only, and metrics a search must not maximise ---------
CSV_HEADER = "ArchitectureString,CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs"


def write_sample_csv(path, n: int, cifar10: bool = True):
    """``n`` cells with cifar100 values, and cifar10 values unless ``cifar10`` is False."""
    rows = [f"{nb201.to_string(c)},{50 + i % 40 if cifar10 else ''},{30 + i % 35}"
            for i, c in zip(range(n), nb201.all_cells())]
    path.write_text("\n".join([CSV_HEADER, *rows]) + "\n")
    return path


def write_sample_json(path):
    cells = [str(nb201.to_naslib(c)) for _, c in zip(range(5), nb201.all_cells())]
    per_cell = {key: {"val_accuracy": 80.0 + i, "params": 0.1 * (i + 1), "flops": 10.0 * (i + 1)} for i, key in enumerate(cells)}
    path.write_text(json.dumps({"nasbench201": {"cifar100": per_cell}}))
    return path


@pytest.mark.parametrize("make, argv, message", [
    (lambda d: write_sample_csv(d / "s.csv", 20), ["--dataset", "cifar10", "--budget", "21"],
     "s.csv has cifar10 test_accuracy for 20 of 15,625 cells and RandomSearch picks only among them: a budget of 21"),
    (lambda d: write_sample_csv(d / "s.csv", 0), ["--dataset", "cifar10", "--budget", "3"],
     "s.csv: the CSV has a header but no rows"),
    (lambda d: write_sample_csv(d / "s.csv", 20, cifar10=False), ["--dataset", "cifar10", "--budget", "3"],
     "s.csv has no cifar10 test_accuracy value for any cell"),
    (lambda d: write_sample_csv(d / "s.csv", 20), ["--dataset", "cifar10", "--budget", "15626"],
     "a budget of 15626 queries exceeds the 15,625 cells of the search space"),
    (lambda d: write_sample_json(d / "zc.json"),
     ["--dataset", "cifar100", "--budget", "3", "--search-metric", "params", "--report-metric", "val_accuracy"],
     "search metric 'params' is a cost"),
    (lambda d: write_sample_json(d / "zc.json"),
     ["--dataset", "cifar100", "--budget", "3", "--search-metric", "val_accuracy", "--report-metric", "flops"],
     "report metric 'flops' is a cost"),
])
def test_benchmarks_that_cannot_serve_the_search_are_one_line_errors(capsys, tmp_path, make, argv, message):
    path = make(tmp_path)
    code, _, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", path, *argv, "--out", tmp_path / "out")
    assert code == 2, err
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()  # refused before anything is made


@pytest.mark.parametrize("optimizer, opt, message", [
    ("re", "population_size=0", "population_size"),
    ("tnas", "initial_design=0", "initial_design=0"),
])
def test_a_bad_optimizer_setting_is_refused_before_the_out_folder_is_made(capsys, tmp_path, nats_csv, optimizer, opt,
                                                                           message):
    code, _, err = run_cli(capsys, "search", "--optimizer", optimizer, "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "5", "--opt", opt, "--out", tmp_path / "out")
    assert code == 2, err
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_partial_benchmark_is_warned_about_and_the_search_stays_within_it(capsys, tmp_path):
    path = write_sample_csv(tmp_path / "s.csv", 20)
    code, _, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", path, "--dataset", "cifar10",
                           "--budget", "20", "--out", tmp_path / "out")
    assert code == 0, err
    warning = f"{path} has cifar10 test_accuracy for 20 of 15,625 cells: random and model-based picks take cells with a value"
    assert warning in err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert any(warning in note for note in result["notes"])
    assert all(step["accuracy"] is not None for step in result["trajectory"])


def test_a_search_that_found_no_value_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    from naslib_bayes.optimizers import registry
    from naslib_bayes.optimizers.blackbox import BlackBoxOptimizer

    class OutsideTheDomain(BlackBoxOptimizer):
        def propose(self):
            domain = set(self.problem.objective.domain)
            return next(c for c in nb201.all_cells() if c not in domain and not self.is_queried(c))

    monkeypatch.setattr(registry, "create", lambda *args, **kwargs: OutsideTheDomain(seed=0))
    path = write_sample_csv(tmp_path / "s.csv", 20)
    code, _, err = run_cli(capsys, "search", "--optimizer", "rs", "--benchmark", path, "--dataset", "cifar10",
                           "--budget", "4", "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"naslib-bayes: error: none of the 4 cells queried has a cifar10 "
                                            f"test_accuracy value in {path}: the search found no incumbent")


@pytest.mark.parametrize("argv, message", [
    (["naslib-run", "--config", "c.yaml", "--set", "search.epochs"], "argument --set: expected KEY=VALUE, got 'search.epochs'"),
    (["naslib-run", "--config", "c.yaml", "--set", "search.epochs=[1"],
     "argument --set: search.epochs: cannot parse value '[1'"),
    (["search", "--optimizer", "rs", "--dataset", "cifar10", "--opt", "k"], "argument --opt: expected KEY=VALUE, got 'k'"),
])
def test_a_bad_key_value_names_the_option_it_was_given_to(capsys, tmp_path, argv, message):
    # naslib-run's --set shares --opt's parser, whose messages named --opt
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2 and err.strip() == f"naslib-bayes: error: {message}"


def test_output_into_a_pipe_closed_early_ends_quietly():
    # `naslib-bayes list | head -1`: the reader gone, print raised BrokenPipeError with a traceback
    process = subprocess.Popen([sys.executable, "-m", "naslib_bayes", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # before the program has written anything: every write meets a closed pipe
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert err == ""


@pytest.mark.parametrize("extra, message", [
    (["--surrogate", "{tmp}/missing.pt"], "--surrogate {tmp}/missing.pt: no such file or folder"),
    (["--data-root", "{tmp}"], "--data-root: it holds the --search-data files; no --search-data is given"),
    (["--benchmark", "{tmp}/missing.csv"], "benchmark path '{tmp}/missing.csv' does not exist"),
    (["--search-data", "svhn"], "unknown dataset 'svhn'; known: digits, mnist, cifar10, cifar100, ImageNet16-120"),
])
def test_naslib_run_refuses_what_needs_no_naslib_in_one_line_before_naslib_is_set_up(capsys, tmp_path, extra, message):
    """These refusals came after NASLib's set-up, below its six lines of compatibility fixes (or,
    without NASLib, behind the error that it is missing): a refusal is one line."""
    config = tmp_path / "rs.yaml"
    config.write_text("optimizer: rs\nsearch_space: nasbench201\ndataset: cifar10\n")
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    code, _, err = run_cli(capsys, "naslib-run", "--config", config, "--out", tmp_path / "out", *extra)
    assert code == 2 and err == f"naslib-bayes: error: {message.format(tmp=tmp_path)}\n", err
    assert not (tmp_path / "out").exists()
