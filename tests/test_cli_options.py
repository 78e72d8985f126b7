"""Options the command line must not ignore or choke on: the other kind of search's options,
devices this machine lacks, output folders that cannot exist, unfinished runs, file modes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
import stat
import subprocess
import sys

import jsonschema
import pytest
import torch

from naslib_bayes import results
from naslib_bayes.errors import UserError
from cli_runner import run_cli

ONE_SHOT_FAST = ["--search-images", "128", "--batch-size", "64", "--warmup-epochs", "0", "--seed", "3"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("optimizer, extra, flag", [
    ("rs", ["--epochs", "3"], "--epochs"),
    ("re", ["--lambda", "0.1"], "--lambda"),
    ("tnas", ["--data-root", "somewhere"], "--data-root"),
    ("rs", ["--resume"], "--resume"),
    ("rs", ["--search-space", "darts"], "--search-space"),
    ("rs", ["--batch-size", "32"], "--batch-size"),
    ("rs", ["--device", "cpu"], "--device"),
    ("tnas", ["--threads", "2"], "--threads"),  # BO's threads are --opt threads=N
])
def test_black_box_search_refuses_one_shot_options(capsys, tmp_path, nats_csv, optimizer, extra, flag):
    code, _, err = run_cli(capsys, "search", "--optimizer", optimizer, "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", *extra, "--out", tmp_path / "out")
    assert code == 2
    assert f"{flag} applies to one-shot search, not to --optimizer {optimizer}" in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("optimizer, hint", [("bananas", True), ("gp-bo", True), ("tnas", True), ("rs", False),
                                             ("re", False)])
def test_black_box_search_refusing_threads_names_opt_threads_where_the_optimizer_has_it(capsys, tmp_path, nats_csv,
                                                                                       optimizer, hint):
    """--threads with bananas, gp-bo or tnas said only that it applies to one-shot search, and a
    user took their torch threads for fixed, though --opt threads=N sets them."""
    code, _, err = run_cli(capsys, "search", "--optimizer", optimizer, "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", "--threads", "2", "--out", tmp_path / "out")
    assert code == 2
    line = one_error_line(err)
    assert f"--threads applies to one-shot search, not to --optimizer {optimizer}" in line
    assert ("--opt threads=2" in line) == hint, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("optimizer, extra, flag", [
    ("bayesnas", ["--budget", "5"], "--budget"),
    ("darts", ["--search-metric", "val_accuracy"], "--search-metric"),
    ("random-cell", ["--surrogate", "s.pt"], "--surrogate"),
    ("bayesnas", ["--encoder-hidden", "512"], "--encoder-hidden"),
])
def test_one_shot_search_refuses_black_box_options(capsys, tmp_path, optimizer, extra, flag):
    code, _, err = run_cli(capsys, "search", "--optimizer", optimizer, "--dataset", "digits", *extra,
                           "--out", tmp_path / "out")
    assert code == 2
    assert f"{flag} applies to black-box search, not to --optimizer {optimizer}" in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--opt", "curvature_batches=0"], "curvature_batches must be >= 1"),
    (["--opt", "no_such_setting=1"], "BayesNAS: unknown hyper-parameter 'no_such_setting'"),
    (["--dataset", "cifar 10"], "unknown dataset 'cifar 10'"),
    (["--dataset", "mnist"], "dataset mnist needs the folder holding its files: --data-root DIR"),
    (["--search-images", "1"], "--search-images must be at least 2"),
])
def test_one_shot_settings_are_refused_before_out_is_made(capsys, tmp_path, extra, message):
    # they were refused only once the search was being built, beside an --out folder made for it
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits", *extra,
                           "--out", tmp_path / "out")
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("optimizer, setting, message", [
    ("re", "sample_size=30", "sample_size must be in 1..population_size, got 30 and 20"),
    ("ls", "improvement=worst", "improvement 'worst': expected one of best, first"),
    ("bananas", "acq_fn_type=ucb", "acq_fn_type 'ucb': expected one of its, ei"),
    ("gp-bo", "acquisition=pi", "acquisition 'pi': expected one of ei, ucb"),
    ("tnas", "prior_beta=-1", "prior_beta=-1: expected a number >= 0"),
    ("tnas", "target_units=raw", "target_units 'raw': expected one of own, prior"),
])
def test_black_box_settings_are_refused_before_out_is_made(capsys, tmp_path, nats_csv, optimizer, setting, message):
    # they were checked once the search was bound to its problem, beside an --out folder made for it
    code, _, err = run_cli(capsys, "search", "--optimizer", optimizer, "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", "--opt", setting, "--out", tmp_path / "out")
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [
    ["search", "--optimizer", "rs", "--dataset", "cifar10", "--budget", "3"],
    ["search", "--optimizer", "bayesnas", "--dataset", "digits"],
    ["compare", "--optimizers", "rs", "--seeds", "1", "--budget", "3"],
])
def test_an_empty_report_metric_is_refused_not_taken_for_the_default(capsys, tmp_path, nats_csv, command):
    # an unset variable ($METRIC) silently reported test accuracy
    code, _, err = run_cli(capsys, *command, "--benchmark", nats_csv, "--report-metric", "", "--out", tmp_path / "out")
    assert code == 2 and "''" in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [
    ["search", "--optimizer", "rs", "--dataset", "cifar10", "--budget", "3"],
    ["compare", "--optimizers", "rs", "--datasets", "cifar10", "--seeds", "1", "--budget", "3"],
])
def test_a_default_report_metric_the_benchmark_lacks_names_the_option(capsys, tmp_path, zc_json, command):
    # the zero-cost JSON has no test accuracy: the error named 'test_accuracy', which the user never gave
    code, _, err = run_cli(capsys, *command, "--benchmark", zc_json, "--search-metric", "val_accuracy",
                           "--out", tmp_path / "out")
    assert code == 2 and "test_accuracy" in one_error_line(err) and "--report-metric" in one_error_line(err)
    assert not (tmp_path / "out").exists()


NB201_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.mark.parametrize("command", [
    ["search", "--optimizer", "bayesnas"],
    ["compress", "--model", "lenet5"],
    ["train", "--arch", NB201_CELL, "--epochs", "1"],
])
def test_a_data_root_given_with_digits_is_refused_before_out_is_made(capsys, tmp_path, command):
    # digits comes with scikit-learn: the folder was ignored, yet recorded in result.json as the data's
    code, _, err = run_cli(capsys, *command, "--dataset", "digits", "--data-root", tmp_path, "--out", tmp_path / "out")
    assert code == 2
    assert f"--data-root {tmp_path}: dataset digits comes with scikit-learn and reads no folder" in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--lr", "0.1", "--opt", "lr=0.2"], "--lr and --opt lr both set lr; give one"),
    (["--epochs", "1", "--opt", "epochs=2"], "--epochs and --opt epochs both set epochs; give one"),
    (["--lambda", "0.1", "--opt", "lambda_origin=0.2"], "--lambda and --opt lambda_origin both set lambda_origin; give one"),
])
def test_a_one_shot_setting_given_by_its_option_and_by_opt_is_refused(capsys, tmp_path, extra, message):
    # --opt silently won: the search ran with the --opt value, ignoring the option typed beside it
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits", *extra,
                           "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err) == f"naslib-bayes: error: {message}"
    assert not (tmp_path / "out").exists()


def test_one_shot_report_metric_is_checked_before_training(capsys, tmp_path, zc_json):
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits",
                           "--report-metric", "val_accuracy", "--out", tmp_path / "a")
    assert code == 2 and "--report-metric scores the derived cell on --benchmark" in one_error_line(err)
    # The zero-cost file has no test accuracy: the default report metric cannot score the cell.
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits",
                           "--benchmark", zc_json, "--out", tmp_path / "b")
    line = one_error_line(err)
    assert code == 2 and "has no 'test_accuracy' for any dataset" in line and "val_accuracy" in line
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits",
                           "--benchmark", zc_json, "--report-metric", "flops", "--out", tmp_path / "c")
    assert code == 2 and "is a cost" in one_error_line(err)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_one_shot_search_scores_the_cell_by_the_report_metric(capsys, tmp_path, nats_csv):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "search", "--optimizer", "random-cell", "--dataset", "digits",
                                "--benchmark", nats_csv, "--report-metric", "test_accuracy", *ONE_SHOT_FAST,
                                "--out", out)
    assert code == 0, err
    result = json.loads((out / "result.json").read_text())
    assert result["report_metric"] == "test_accuracy"
    assert set(result["benchmark_accuracy"]) == {"cifar10", "cifar100", "ImageNet16-120"}
    assert f"cifar10 test_accuracy={result['benchmark_accuracy']['cifar10']}" in stdout


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "not-a-device"])
def test_a_device_this_machine_lacks_is_refused_before_anything_is_written(capsys, tmp_path, device):
    import torch

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight CUDA devices")
    code, _, err = run_cli(capsys, "search", "--optimizer", "bayesnas", "--dataset", "digits", "--device", device,
                           "--out", tmp_path / "out")
    assert code == 2 and "argument --device: " in one_error_line(err) and device in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "2"],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
     "--epochs", "1"],
    ["compare", "--benchmark", "{csv}", "--optimizers", "rs", "--datasets", "cifar10", "--seeds", "1",
     "--budget", "2"],
])
def test_an_out_folder_that_cannot_be_made_is_a_one_line_error(capsys, tmp_path, nats_csv, argv):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    argv = [a.format(csv=nats_csv) for a in argv]
    code, _, err = run_cli(capsys, *argv, "--out", blocker / "sub")
    assert code == 2
    assert f"--out {blocker / 'sub'}: cannot create the folder (NotADirectoryError" in one_error_line(err)


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "2"],
    ["compare", "--benchmark", "{csv}", "--optimizers", "rs", "--datasets", "cifar10", "--seeds", "1", "--budget", "2"],
])
@pytest.mark.parametrize("out", ["", " "])
def test_a_blank_out_is_refused_instead_of_writing_into_the_working_folder(capsys, tmp_path, monkeypatch, nats_csv,
                                                                             argv, out):
    # Path("") is ".": an unset variable in --out "$RUN_DIR" wrote the results where the command was typed
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *[a.format(csv=nats_csv) for a in argv], "--out", out)
    assert code == 2
    assert one_error_line(err) == f"naslib-bayes: error: argument --out: expected a folder, got {out!r}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "2"],
    ["compare", "--benchmark", "{csv}", "--optimizers", "rs", "--datasets", "cifar10", "--seeds", "1", "--budget", "2"],
])
def test_an_out_name_too_long_for_the_file_system_is_a_one_line_error(capsys, tmp_path, nats_csv, argv):
    # checking whether it existed raised OSError's traceback before the folder was ever made
    out = tmp_path / ("x" * 300)
    code, _, err = run_cli(capsys, *[a.format(csv=nats_csv) for a in argv], "--out", out)
    assert code == 2
    assert one_error_line(err).startswith(f"naslib-bayes: error: --out {out}: cannot create the folder (OSError: ")


def _folder_of_an_unfinished_run(tmp_path) -> tuple[Path, Path]:
    """``tmp_path/out`` holding a (stand-in) checkpoint.pt of a run not yet finished, and that checkpoint."""
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(b"an unfinished run")
    return out, checkpoint


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "bayesnas", "--dataset", "digits", *ONE_SHOT_FAST],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
     "--epochs", "1"],
])
def test_an_unfinished_run_is_not_thrown_away_without_overwrite(capsys, tmp_path, argv):
    out, checkpoint = _folder_of_an_unfinished_run(tmp_path)
    code, _, err = run_cli(capsys, *argv, "--out", out)
    assert code == 2
    assert f"{checkpoint} holds an unfinished run: continue it with --resume" in one_error_line(err)
    assert checkpoint.read_bytes() == b"an unfinished run"
    code, _, err = run_cli(capsys, *argv, "--resume", "--out", tmp_path / "empty")
    assert code == 2 and "--resume: no checkpoint.pt in" in one_error_line(err)


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "2", "--overwrite"],
    ["search", "--optimizer", "bayesnas", "--dataset", "digits", *ONE_SHOT_FAST, "--resume"],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
     "--epochs", "1", "--resume"],
    ["compress", "--model", "lenet300", "--dataset", "digits", "--epochs", "4", "--overwrite"],
    ["meta-train", "--benchmark", "{csv}", "--datasets", "cifar100", "--overwrite"],
    ["compare", "--benchmark", "{csv}", "--optimizers", "rs", "--datasets", "cifar10", "--seeds", "1",
     "--budget", "2"],
    ["compare", "--benchmark", "{csv}", "--oneshot", "random-cell", "--dataset", "digits", "--seeds", "1",
     "--epochs", "1"],
])
def test_a_folder_another_run_is_writing_in_is_refused_and_left_as_it_is(capsys, tmp_path, nats_csv, argv):
    # A job submitted again while it still runs, or --resume of a run that is not dead: the two
    # would interleave their checkpoints, and each would delete the other's write under way as
    # a killed run's leftover. The holder here is this process (flock excludes a second open).
    out = tmp_path / "out"
    out.mkdir()
    files = {"checkpoint.pt": b"the running job's checkpoint", ".checkpoint.pt.k3j2h1ab.tmp": b"its write under way",
             "result.json": b"{}"}
    for name, content in files.items():
        (out / name).write_bytes(content)
    argv = [a.format(csv=nats_csv) for a in argv]
    with results.exclusive_use(out):
        code, _, err = run_cli(capsys, *argv, "--out", out)
    assert code == 2
    assert one_error_line(err) == (f"naslib-bayes: error: --out {out} is in use by another naslib-bayes process "
                                   f"(pid {os.getpid()}); wait for it to end or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != results.LOCK_FILE} == files


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "bayesnas", "--dataset", "digits", *ONE_SHOT_FAST],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
     "--epochs", "1"],
    ["compress", "--model", "lenet300", "--dataset", "digits", "--epochs", "4"],
])
def test_a_resume_of_a_run_still_before_its_first_checkpoint_names_the_process_that_holds_it(capsys, tmp_path, argv):
    # A job submitted again with --resume while the first is in its first epoch: "no checkpoint.pt"
    # would send the user to start a run over beside the one still writing there.
    out = tmp_path / "out"
    out.mkdir()
    with results.exclusive_use(out):
        code, _, err = run_cli(capsys, *argv, "--resume", "--out", out)
    assert code == 2
    assert one_error_line(err) == (f"naslib-bayes: error: --out {out} is in use by another naslib-bayes process "
                                   f"(pid {os.getpid()}); wait for it to end or choose another --out")
    code, _, err = run_cli(capsys, *argv, "--resume", "--out", out)  # once free, the folder has no run to resume
    assert code == 2 and "--resume: no checkpoint.pt in" in one_error_line(err)


def test_a_folder_is_free_again_once_its_holder_is_killed(tmp_path):
    hold = ("import sys, time; from naslib_bayes import results; "
            "held = results.exclusive_use(sys.argv[1]); held.__enter__(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"is in use by another naslib-bayes process \(pid {holder.pid}\)"):
            with results.exclusive_use(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with results.exclusive_use(tmp_path):  # the system dropped the killed process's lock
        assert (tmp_path / results.LOCK_FILE).read_text() == f"{os.getpid()}\n"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = results.atomic_write_json(tmp_path / "result.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_opt_keeps_a_hyphenated_optimizer_prefix(capsys, tmp_path, nats_csv):
    from naslib_bayes.commands.common import key_value

    assert key_value("gp-bo.finetune-steps=5") == ("gp-bo.finetune_steps", 5)
    assert key_value("initial-design=3") == ("initial_design", 3)
    code, _, err = run_cli(capsys, "compare", "--benchmark", nats_csv, "--optimizers", "gp-bo,transfer-topk",
                           "--datasets", "cifar10", "--seeds", "1", "--budget", "4",
                           "--opt", "gp-bo.initial-design=3", "--out", tmp_path / "cmp")
    assert code == 0, err
    run = json.loads((tmp_path / "cmp" / "runs" / "gp-bo-cifar10-0.json").read_text())
    assert run["config"]["initial_design"] == 3


@pytest.mark.parametrize("extra, flag", [(["--encoder-hidden", "512"], "--encoder-hidden"),
                                         (["--feature-extractor", "pixels"], "--feature-extractor"),
                                         (["--dataset-encoder", "learned"], "--dataset-encoder")])
def test_surrogate_settings_are_refused_with_a_surrogate_file(capsys, tmp_path, nats_csv, extra, flag):
    (tmp_path / "surrogate.pt").write_bytes(b"refused before it is read")
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", "--surrogate", tmp_path / "surrogate.pt", *extra, "--out", tmp_path / "out")
    assert code == 2
    assert f"{flag} applies when meta-training here; a --surrogate file already has one" in one_error_line(err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opt", ["encoder_hidden=512", "dataset_encoder=learned", "meta_output_transform=robust",
                                 "meta_iterations=3000", "meta_evidence_top=200"])
def test_meta_training_hyperparameters_are_refused_with_a_surrogate_file(capsys, tmp_path, nats_csv, opt):
    # The file was meta-trained with its own settings: these would be ignored, yet recorded in
    # result.json's config as if the search had used them (--encoder-hidden is refused the same way).
    (tmp_path / "surrogate.pt").write_bytes(b"refused before it is read")
    key = opt.split("=")[0]
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", "--surrogate", tmp_path / "surrogate.pt", "--opt", opt,
                           "--out", tmp_path / "out")
    assert code == 2
    assert f"--opt {key} applies when meta-training here; a surrogate file already has one" in one_error_line(err)
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", "--opt", f"surrogate={tmp_path / 'surrogate.pt'}", "--opt", opt,
                           "--out", tmp_path / "out")
    assert code == 2 and f"--opt {key} applies when meta-training here" in one_error_line(err)


def test_a_missing_surrogate_is_the_only_line_and_makes_no_folder(capsys, tmp_path, nats_csv):
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "3", "--surrogate", tmp_path / "missing", "--out", tmp_path / "out")
    assert code == 2 and err.strip() == f"naslib-bayes: error: surrogate file '{tmp_path / 'missing'}' does not exist"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, number", [("1e-3", 1e-3), ("5E2", 500.0), ("-2.5e+1", -25.0), ("3.", 3.0)])
def test_opt_reads_exponent_notation_as_a_number(text, number):
    # YAML 1.1 (PyYAML) reads "1e-3" as a string, so a learning rate written the usual way was
    # refused as "expected float"
    from naslib_bayes.commands.common import key_value

    key, value = key_value(f"bananas.lr={text}")
    assert key == "bananas.lr" and isinstance(value, float) and value == number


def test_opt_keeps_text_that_only_looks_like_a_number():
    from naslib_bayes.commands.common import key_value

    assert key_value("acq_fn_type=ei") == ("acq_fn_type", "ei")
    assert key_value("name=1e") == ("name", "1e")
    assert key_value("name='1e-3'") == ("name", "1e-3")  # quoted: the user asked for text


def test_train_refuses_a_cutout_larger_than_the_images(capsys, tmp_path):
    # a square wider than the image blanks most images, and every one from twice the side on
    code, _, err = run_cli(capsys, "train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
                           "--dataset", "digits", "--epochs", "1", "--cutout", "9", "--out", tmp_path / "out")
    assert code == 2
    assert one_error_line(err) == "naslib-bayes: error: --cutout 9 is larger than the 8x8 images of digits"
    assert not (tmp_path / "out" / "result.json").exists()


DARTS_GENOTYPE = json.dumps({"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                             "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]] * 4})


def test_train_refuses_batches_of_one_image_for_the_darts_auxiliary_head(capsys, tmp_path):
    # the head pools to 2x2 and convolves to 1x1, so its last BatchNorm saw one value per channel
    # and torch's ValueError came out as a traceback after the network was built
    argv = ["train", "--arch", DARTS_GENOTYPE, "--dataset", "digits", "--epochs", "1", "--channels", "4",
            "--cells", "3", "--batch-size", "1"]
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "aux")
    assert code == 2
    assert one_error_line(err) == ("naslib-bayes: error: --batch-size 1: the DARTS auxiliary head normalises "
                                   "one value per channel (1x1 maps), which a batch of one image cannot; "
                                   "use --batch-size 2 or more, or --auxiliary-weight 0")
    assert not (tmp_path / "aux").exists()
    from naslib_bayes.training.evaluate import TrainConfig, resolve_settings

    for batch_size, weight, cells in ((2, None, 3), (1, 0.0, 3), (1, None, 2)):  # a head that can train, or none
        resolve_settings(TrainConfig(DARTS_GENOTYPE, "digits", 1, cells=cells, batch_size=batch_size,
                                     auxiliary_weight=weight))


@pytest.mark.parametrize("option, value, message", [
    ("--weight-decay", "-1", "argument --weight-decay: expected a non-negative number, got '-1'"),
    ("--weight-decay", "nan", "argument --weight-decay: expected a non-negative number, got 'nan'"),
    ("--weight-decay", "inf", "argument --weight-decay: expected a non-negative number, got 'inf'"),
    ("--auxiliary-weight", "-0.4", "argument --auxiliary-weight: expected a non-negative number, got '-0.4'"),
    ("--drop-path", "1", "argument --drop-path: expected a probability in [0, 1), got '1'"),
    ("--drop-path", "-0.2", "argument --drop-path: expected a probability in [0, 1), got '-0.2'"),
])
def test_train_refuses_out_of_range_numbers_before_making_out(capsys, tmp_path, option, value, message):
    # torch raised a negative weight decay as a traceback; nan or inf ran the whole training
    # and then failed to write result.json (JSON has no inf)
    code, _, err = run_cli(capsys, "train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
                           "--dataset", "digits", "--epochs", "1", option, value, "--out", tmp_path / "out")
    assert code == 2
    assert one_error_line(err) == f"naslib-bayes: error: {message}"
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_a_finished_result(capsys, tmp_path, nats_csv):
    out = tmp_path / "run"
    search = ["search", "--optimizer", "rs", "--benchmark", nats_csv, "--dataset", "cifar10", "--budget", "2"]
    assert run_cli(capsys, *search, "--seed", "1", "--out", out)[0] == 0
    code, _, err = run_cli(capsys, *search, "--seed", "5", "--overwrite", "--out", out)
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["seed"] == 5


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "bayesnas", "--dataset", "mnist", *ONE_SHOT_FAST],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "mnist",
     "--epochs", "1"],
])
def test_overwrite_with_data_that_cannot_load_keeps_the_unfinished_run(capsys, tmp_path, argv):
    """A mistyped --data-root must not cost the run --overwrite would have replaced: its
    checkpoint goes only when the new run writes its own."""
    out, checkpoint = _folder_of_an_unfinished_run(tmp_path)
    code, _, err = run_cli(capsys, *argv, "--data-root", tmp_path / "no-such-folder", "--overwrite", "--out", out)
    assert code == 2
    assert "no-such-folder" in one_error_line(err)
    assert checkpoint.read_bytes() == b"an unfinished run"


def test_overwrite_replaces_the_unfinished_runs_checkpoint_with_its_own(capsys, tmp_path):
    from naslib_bayes.training import checkpoint as ckpt

    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an unfinished run")
    train = ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
             "--epochs", "1", "--channels", "4", "--cells", "1", "--seed", "2"]
    code, _, err = run_cli(capsys, *train, "--overwrite", "--out", out)
    assert code == 0, err
    state = ckpt.load(out / "checkpoint.pt")
    assert state["run"]["--seed"] == 2 and state["run"]["--epochs"] == 1


OVERWRITTEN_RUNS = [
    ["search", "--optimizer", "bayesnas", "--dataset", "digits", *ONE_SHOT_FAST, "--checkpoint-every", "1"],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
     "--epochs", "2", "--channels", "4", "--cells", "1"],
    ["compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "0.5", "--epochs", "3",
     "--finetune-epochs", "1", "--batch-size", "32", "--no-baseline"],
]


def checkpoint_seed(path) -> int:
    from naslib_bayes.training import checkpoint as ckpt

    return ckpt.load(path)["run"]["--seed"]


@pytest.mark.parametrize("argv", OVERWRITTEN_RUNS, ids=lambda argv: argv[0])
def test_an_overwrite_killed_after_its_first_checkpoint_leaves_no_old_result_beside_it(capsys, tmp_path,
                                                                                     monkeypatch, argv):
    """Killed after its first checkpoint, an --overwrite of a finished run left the old run's
    result.json (train's naming checkpoint.pt as its weights) beside the new run's checkpoint, and
    the next command in the folder called it finished ('result.json already exists') instead of
    offering --resume of the unfinished one."""
    from naslib_bayes.training import checkpoint as ckpt

    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *argv, "--seed", "1", "--out", out)
    assert code == 0, err
    save, saves = ckpt.save, []

    def killed_at_the_second_checkpoint(path, state):
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # the process killed in its second epoch (or step)
        return save(path, state)

    with monkeypatch.context() as patched:
        patched.setattr(ckpt, "save", killed_at_the_second_checkpoint)
        assert run_cli(capsys, *argv, "--seed", "2", "--overwrite", "--out", out)[0] == 130
    assert checkpoint_seed(out / "checkpoint.pt") == 2
    assert not (out / "result.json").exists()
    code, _, err = run_cli(capsys, *argv, "--seed", "2", "--out", out)
    assert code == 2 and f"{out / 'checkpoint.pt'} holds an unfinished run" in one_error_line(err)


@pytest.mark.parametrize("argv", OVERWRITTEN_RUNS, ids=lambda argv: argv[0])
def test_an_overwrite_whose_first_checkpoint_cannot_be_written_keeps_the_finished_run(capsys, tmp_path,
                                                                                     monkeypatch, argv):
    """A full disk at the new run's first checkpoint: one line, and the finished run's result.json
    and checkpoint stay as they were (its result is retired only once a new checkpoint replaced its own)."""
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *argv, "--seed", "1", "--out", out)
    assert code == 0, err
    before = {name: (out / name).read_bytes() for name in ("result.json", "checkpoint.pt")}

    def disk_full(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(torch, "save", disk_full)
        code, _, err = run_cli(capsys, *argv, "--seed", "2", "--overwrite", "--out", out)
    assert code == 2
    assert one_error_line(err).endswith("checkpoint.pt: cannot write the file (OSError: [Errno 28] No space left on device)")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [results.LOCK_FILE]


UNCHECKPOINTED_RUNS = [
    ["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "2"],
    ["meta-train", "--benchmark", "{csv}", "--datasets", "cifar100", "--iterations", "3", "--encoder-hidden", "8"],
]


@pytest.mark.parametrize("argv", UNCHECKPOINTED_RUNS, ids=lambda argv: argv[0] + "-" + argv[2])
def test_a_command_without_checkpoints_keeps_an_unfinished_run_apart_from_its_result(capsys, tmp_path, nats_csv,
                                                                                    argv):
    """A black-box search or meta-training wrote its result.json, unasked, beside another command's
    unfinished checkpoint (a killed train or one-shot search given the same --out), and that
    command's --resume later replaced the result with its own, silently. Now the folder is refused
    without --overwrite; with it, the unfinished run's checkpoint goes once the new result is written."""
    argv = [a.format(csv=nats_csv) for a in argv]
    out, checkpoint = _folder_of_an_unfinished_run(tmp_path)
    code, _, err = run_cli(capsys, *argv, "--out", out)
    assert code == 2
    assert one_error_line(err) == (f"naslib-bayes: error: {checkpoint} holds an unfinished run of another command; "
                                   "continue it with that command's --resume, choose another --out or pass --overwrite")
    assert checkpoint.read_bytes() == b"an unfinished run" and not (out / "result.json").exists()
    code, _, err = run_cli(capsys, *argv, "--overwrite", "--out", out)
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["command"] == argv[0]
    assert not checkpoint.exists()  # a later --resume there would have replaced this result with the other run's


def test_preparing_out_removes_the_temporaries_of_writes_that_were_killed(tmp_path):
    """A write killed before its rename leaves '.NAME.<random>.tmp' (a checkpoint's size) beside the
    intact file; the next run in the folder removes those, and nothing else."""
    from naslib_bayes.commands.common import prepare_resumable_out

    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"the last whole checkpoint")
    (out / ".checkpoint.pt.k3j2h1ab.tmp").write_bytes(b"half a checkpoint")
    (out / ".result.json.x9y8z7w6.tmp").write_text("{")
    (out / "notes.tmp").write_text("the user's own file")
    with contextlib.ExitStack() as held:
        assert prepare_resumable_out(out, overwrite=False, resume=True, held=held) == out
    assert sorted(p.name for p in out.iterdir()) == [results.LOCK_FILE, "checkpoint.pt", "notes.tmp"]
    assert (out / "checkpoint.pt").read_bytes() == b"the last whole checkpoint"


def test_overwrite_starts_an_unfinished_run_over_and_resume_keeps_it(tmp_path):
    from naslib_bayes.commands.common import prepare_resumable_out
    from naslib_bayes.errors import UserError

    out, checkpoint = _folder_of_an_unfinished_run(tmp_path)
    with contextlib.ExitStack() as held, pytest.raises(UserError, match="holds an unfinished run"):
        prepare_resumable_out(out, overwrite=False, resume=False, held=held)
    (out / "result.json").write_text("{}")  # an earlier run's result, being replaced by the unfinished one
    with contextlib.ExitStack() as held:
        assert prepare_resumable_out(out, overwrite=False, resume=True, held=held) == out
    assert checkpoint.read_bytes() == b"an unfinished run"  # --resume continues it
    with contextlib.ExitStack() as held:
        assert prepare_resumable_out(out, overwrite=True, resume=False, held=held) == out
    assert checkpoint.read_bytes() == b"an unfinished run"  # until the new run writes its own
    assert (out / "result.json").read_text() == "{}"  # the finished result stays until the new one replaces it


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path):
    from naslib_bayes.commands.common import prepare_out
    from naslib_bayes.errors import UserError

    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with contextlib.ExitStack() as held, pytest.raises(UserError, match="^--out .*a-file is a file, not a directory$"):
        prepare_out(blocker, overwrite=True, held=held)
    assert blocker.read_text() == "in the way"


def test_a_failed_json_write_keeps_the_previous_file_whole(tmp_path):
    path = results.atomic_write_json(tmp_path / "result.json", {"a": 1})
    for unwritable in ({"a": [1, 2, object()]}, {"a": [1.0, float("nan")]}):  # no JSON for an object, nor for nan
        with pytest.raises((TypeError, ValueError)):
            results.atomic_write_json(path, unwritable)
        assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


class _FullDisk:
    """An open file on a disk with ``room`` bytes left: a write past them fails as the system's does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


def disk_fills_up(monkeypatch, whole_files: int, room: int = 600) -> None:
    """The files written atomically from now on: the first ``whole_files`` fit, then the disk is full
    (``room`` bytes left: torch.save fails part-way, in its own RuntimeError, as on a real disk)."""
    opened = {"files": 0}
    fdopen = os.fdopen

    def open_on_the_disk(*args, **kwargs):
        opened["files"] += 1
        handle = fdopen(*args, **kwargs)
        return handle if opened["files"] <= whole_files else _FullDisk(handle, room)

    monkeypatch.setattr(results.os, "fdopen", open_on_the_disk)


@pytest.mark.parametrize("write", [
    lambda path: results.atomic_write_json(path, {"a": list(range(1000))}),
    lambda path: results.atomic_write(path, lambda handle: torch.save({"a": torch.zeros(1000)}, handle), binary=True),
])
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, write):
    from naslib_bayes.errors import UserError

    path = tmp_path / "file"
    write(path)
    before = path.read_bytes()
    disk_fills_up(monkeypatch, whole_files=0)
    with pytest.raises(UserError) as info:
        write(path)
    assert str(info.value) == f"{path}: cannot write the file (OSError: [Errno 28] No space left on device)"
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no temporary left behind


def test_a_folder_that_cannot_hold_the_file_is_one_line_naming_it(tmp_path):
    from naslib_bayes.errors import UserError

    (tmp_path / "a-file").write_text("in the way")
    path = tmp_path / "a-file" / "result.json"
    with pytest.raises(UserError, match=f"^{path}: cannot write the file \\((FileExistsError|NotADirectoryError): "):
        results.atomic_write_json(path, {"a": 1})


def test_train_on_a_disk_that_fills_up_stops_in_one_line_and_resumes_from_its_last_checkpoint(
        capsys, tmp_path, monkeypatch):
    train = ["train", "--arch", "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_1x1~2|",
             "--dataset", "digits", "--epochs", "2", "--channels", "4", "--cells", "1"]
    assert run_cli(capsys, *train, "--out", tmp_path / "whole")[0] == 0
    with monkeypatch.context() as patched:
        disk_fills_up(patched, whole_files=1)  # the first epoch's checkpoint fits, the second's does not
        code, _, err = run_cli(capsys, *train, "--out", tmp_path / "full")
    assert code == 2
    assert one_error_line(err) == (f"naslib-bayes: error: {tmp_path / 'full' / 'checkpoint.pt'}: cannot write the file "
                                   "(OSError: [Errno 28] No space left on device)")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == [results.LOCK_FILE, "checkpoint.pt"]
    code, _, err = run_cli(capsys, *train, "--out", tmp_path / "full", "--resume")  # space freed
    assert code == 0, err
    whole, resumed = (json.loads((tmp_path / run / "result.json").read_text()) for run in ("whole", "full"))
    assert resumed["epoch_stats"] == whole["epoch_stats"] and resumed["test_accuracy"] == whole["test_accuracy"]


@pytest.mark.parametrize("text, ok", [("0", True), ("4294967295", True), ("-1", False), ("4294967296", False)])
def test_seed_bounds_are_inclusive(text, ok):
    import argparse

    from naslib_bayes.commands.common import parse_seeds, seed_int

    if ok:
        assert seed_int(text) == int(text) and parse_seeds(f"7,{text}") == [7, int(text)]
        return
    with pytest.raises(argparse.ArgumentTypeError):
        seed_int(text)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_seeds(f"7,{text}")


def test_zero_is_non_negative_but_not_positive():
    import argparse

    from naslib_bayes.commands.common import non_negative_float, positive_float

    assert non_negative_float("0") == 0.0 and positive_float("1e-9") == 1e-9
    with pytest.raises(argparse.ArgumentTypeError, match="expected a positive number, got '0'"):
        positive_float("0")


def test_a_cuda_index_past_the_last_device_is_refused(monkeypatch):
    import argparse

    import torch

    from naslib_bayes.commands.common import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_device("cuda:1") == "cuda:1" and torch_device("cuda") == "cuda"
    with pytest.raises(argparse.ArgumentTypeError, match="'cuda:2': this machine's torch sees 2 CUDA device"):
        torch_device("cuda:2")


def test_torch_threads_restores_the_callers_count_even_after_an_error():
    import torch

    from naslib_bayes.threads import torch_threads

    before = torch.get_num_threads()
    target = 2 if before != 2 else 3
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(target):
            assert torch.get_num_threads() == target
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(0):  # a count below one means one thread
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("word", ["off", "on", "yes", "no", "Off", "NO"])
def test_opt_keeps_yaml_1_1_boolean_words_as_text(word):
    # YAML 1.1 reads off/on/yes/no as booleans, so --opt dataset_encoder=off, the flag's own
    # value, was refused as "dataset_encoder=False: expected str"
    from naslib_bayes.commands.common import key_value

    assert key_value(f"dataset_encoder={word}") == ("dataset_encoder", word)
    assert key_value("initial_design_only=true") == ("initial_design_only", True)
    assert key_value("initial_design_only=False") == ("initial_design_only", False)


def test_search_takes_the_off_dataset_encoder_through_opt(capsys, tmp_path, nats_csv):
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--opt", "dataset_encoder=off", "--opt", "meta_iterations=2", "--budget", "6",
                           "--out", tmp_path / "out")
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["dataset_encoder"]["mode"] == "off"


@pytest.mark.parametrize("argv, threads", [
    (["search", "--optimizer", "random-cell", "--dataset", "digits", *ONE_SHOT_FAST, "--threads", "2"], 2),
    (["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
      "--epochs", "1"], 1),
    (["search", "--optimizer", "rs", "--benchmark", "{csv}", "--dataset", "cifar10", "--budget", "2"], None),
])
def test_a_result_records_the_torch_threads_a_network_trained_with(capsys, tmp_path, nats_csv, argv, threads):
    # the count changes the last digits of a trained network's numbers; a black-box search trains none
    import torch

    try:
        code, _, err = run_cli(capsys, *[a.format(csv=nats_csv) for a in argv], "--out", tmp_path / "run")
    finally:
        torch.set_num_threads(1)
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result.get("torch_threads") == threads
    jsonschema.validate(result, results.load_schema())  # optional: results written before it still validate


def test_a_killed_writes_cleanup_removes_only_the_temporaries_atomic_write_makes(tmp_path):
    """The cleanup matched any hidden '.*.*.tmp', so a user's own '.notes.v2.tmp' in --out went too."""
    import tempfile

    from naslib_bayes import results

    fd, ours = tempfile.mkstemp(prefix=".result.json.", suffix=".tmp", dir=tmp_path)  # as atomic_write names them
    os.close(fd)
    theirs = tmp_path / ".notes.v2.tmp"
    theirs.write_text("mine")
    results.remove_killed_writes(tmp_path)
    assert not Path(ours).exists() and theirs.read_text() == "mine"


COMPRESSED = ["compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "0.5", "--epochs", "3",
              "--finetune-epochs", "1", "--batch-size", "32", "--no-baseline"]
META_TRAINED = ["meta-train", "--benchmark", "{csv}", "--datasets", "cifar100", "--iterations", "3",
                "--encoder-hidden", "8"]


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("argv", [*OVERWRITTEN_RUNS[:2], *UNCHECKPOINTED_RUNS],
                         ids=["one-shot-search", "train", "black-box-search", "meta-train"])
def test_an_overwrite_by_another_command_retires_the_old_runs_files_once_its_result_is_written(capsys, tmp_path,
                                                                                             monkeypatch, nats_csv,
                                                                                             argv):
    """compress's model.pt and widths.json stayed beside another command's result after its
    --overwrite, described by neither its result nor its checkpoint, and were taken for its own."""
    from cli_runner import run_cli_stopped_before_its_result

    argv, out = [a.format(csv=nats_csv) for a in argv], tmp_path / "out"
    code, _, err = run_cli(capsys, *COMPRESSED, "--seed", "0", "--out", out)
    assert code == 0, err
    (out / "notes.txt").write_text("the user's own file")
    assert run_cli_stopped_before_its_result(capsys, monkeypatch, *argv, "--seed", "1", "--overwrite",
                                             "--out", out) == 130
    assert {"model.pt", "widths.json"} <= set(_files(out))  # not before the new result is written
    code, _, err = run_cli(capsys, *argv, "--seed", "1", "--overwrite", "--out", out)
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["command"] == argv[0]
    assert not {"model.pt", "widths.json"} & set(_files(out)) and "notes.txt" in _files(out)


def test_a_surrogate_goes_with_an_overwrite_by_another_command_but_not_while_the_new_result_names_it(
        capsys, tmp_path, nats_csv):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *[a.format(csv=nats_csv) for a in META_TRAINED], "--out", out)
    assert code == 0, err
    code, _, err = run_cli(capsys, "search", "--optimizer", "tnas", "--benchmark", nats_csv, "--dataset", "cifar10",
                           "--budget", "2", "--surrogate", out, "--overwrite", "--out", out)
    assert code == 0, err
    assert "surrogate.pt" in _files(out)  # the search's own input, which its result names
    code, _, err = run_cli(capsys, *COMPRESSED, "--overwrite", "--out", out)
    assert code == 0, err
    assert _files(out) == ["checkpoint.pt", "model.pt", "result.json", "widths.json"]


def test_files_of_the_same_names_that_are_not_ours_stay(capsys, tmp_path, nats_csv):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.pt", "surrogate.pt", "widths.json"):
        (out / name).write_text(f"the user's own {name}")
    torch.save({"format": "another program's"}, out / "surrogate.pt")
    code, _, err = run_cli(capsys, *UNCHECKPOINTED_RUNS[0][:4], nats_csv, *UNCHECKPOINTED_RUNS[0][5:], "--out", out)
    assert code == 0, err
    assert _files(out) == ["model.pt", "result.json", "surrogate.pt", "widths.json"]
    assert (out / "model.pt").read_text() == "the user's own model.pt"


def _naslib_run_leftovers(out: Path) -> None:
    """What naslib-run leaves in --out besides result.json, as NASLib's Trainer writes it (checked
    against NASLib itself in test_naslib_integration.py)."""
    (out / "search").mkdir(parents=True)
    (out / "eval").mkdir()
    torch.save({"model": {}}, out / "search" / "model_final.pth")
    (out / "search" / "last_checkpoint").write_text("model_final.pth")
    (out / "errors.json").write_text(json.dumps([{"optimizer": "rs", "search_space": "nasbench201"},
                                                 {"train_acc": [], "valid_acc": []}]))
    (out / "result.json").write_text(json.dumps({"command": "naslib-run"}))


@pytest.mark.parametrize("users_own", [None, "search/notes.txt", "eval/notes.txt"])
def test_an_overwrite_by_another_command_retires_naslib_runs_folders_once_its_result_is_written(
        capsys, tmp_path, monkeypatch, nats_csv, users_own):
    """naslib-run's search/, eval/ and errors.json (NASLib's Trainer's) stayed beside another command's
    result after its --overwrite, so the folder held a mix of two runs; a folder holding a file of the
    user's stays whole."""
    from cli_runner import run_cli_stopped_before_its_result

    out = tmp_path / "out"
    _naslib_run_leftovers(out)
    if users_own:
        (out / users_own).write_text("the user's own file")
    argv = [a.format(csv=nats_csv) for a in UNCHECKPOINTED_RUNS[0]]
    assert run_cli_stopped_before_its_result(capsys, monkeypatch, *argv, "--overwrite", "--out", out) == 130
    assert {"errors.json", "eval", "search"} <= set(_files(out))  # not before the new result is written
    code, _, err = run_cli(capsys, *argv, "--overwrite", "--out", out)
    assert code == 0, err
    kept = {users_own.split("/")[0]} if users_own else set()
    assert set(_files(out)) == {"result.json"} | kept
    if users_own:
        assert (out / users_own).read_text() == "the user's own file"
