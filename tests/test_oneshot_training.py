"""The one-shot search loop: fair data split, checkpoints, resume, and the command line."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from naslib_bayes import results
from naslib_bayes.cli import main
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.bayesnas.optimizer import BayesNAS
from naslib_bayes.optimizers.darts import DARTS
from naslib_bayes.search_spaces.nasbench201.supernet import NB201SuperNet
from naslib_bayes.training import checkpoint as ckpt
from naslib_bayes.training.evaluate import TrainConfig, parse_arch, run_training
from naslib_bayes.training.oneshot import Interrupted, OneShotTrainer
from naslib_bayes.training.search import SearchConfig, run_oneshot_search, strip_timings
from cli_runner import run_cli
from resume_helpers import Killed, mnist_elsewhere

REPO = Path(__file__).resolve().parents[1]



class Recorder:
    """Wraps an optimizer's step to record which images it was given."""

    def __init__(self, opt):
        self.train, self.val = [], []
        step = opt.step

        def wrapped(data_train, data_val=None):
            self.train.append(data_train[0][:, 0, 0, 0].clone())
            if data_val is not None:
                self.val.append(data_val[0][:, 0, 0, 0].clone())
            return step(data_train, data_val)

        opt.step = wrapped


@pytest.mark.parametrize("cls", [BayesNAS, DARTS])
def test_both_methods_see_the_same_images_per_epoch(cls):
    n = 64
    images = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous()
    labels = torch.arange(n) % 10
    torch.manual_seed(0)
    opt = cls(seed=0, warmup_epochs=0, **({"curvature_batches": 1} if cls is BayesNAS else {}))
    opt.adapt_search_space(NB201SuperNet(4, 1, 10, 1))
    rec = Recorder(opt)
    trainer = OneShotTrainer(opt, images, labels, batch_size=16, seed=0)
    trainer.search()
    seen_train = torch.cat(rec.train).long()
    per_epoch = len(seen_train) // opt.total_epochs
    first_epoch = set(seen_train[:per_epoch].tolist())
    if cls is DARTS:  # weights on one half, architecture on the other: every image once per epoch
        seen_val = set(torch.cat(rec.val).long()[:per_epoch].tolist())
        assert len(first_epoch) == len(seen_val) == n // 2 and not first_epoch & seen_val
        assert first_epoch | seen_val == set(range(n))
    else:
        assert first_epoch == set(range(n)) and not rec.val


def run_search(out, stop=None, resume=False, optimizer="bayesnas", checkpoint_every=2, rounds=1):
    extra = {"curvature_batches": 2} if optimizer == "bayesnas" else {}
    cfg = SearchConfig(optimizer=optimizer, search_space="nb201", dataset="digits", seed=3, channels=4, cells=1,
                       batch_size=32, search_images=256, checkpoint_every=checkpoint_every,
                       hyperparameters={**extra, "rounds": rounds})
    return run_oneshot_search(cfg, out_dir=out, resume=resume, stop_after_steps=stop)


@pytest.mark.parametrize("optimizer", ["bayesnas", "darts"])
def test_resume_after_a_kill_gives_the_same_result(tmp_path, optimizer):
    """A 2-epoch run stopped mid-way (in the joint epoch, after a step checkpoint) and resumed
    ends with the same result.json as an uninterrupted run, timings aside."""
    full = run_search(tmp_path / "full", optimizer=optimizer)
    steps = full["config"]["steps_per_epoch"]
    with pytest.raises(Interrupted):
        run_search(tmp_path / "killed", stop=steps + 3, optimizer=optimizer)  # 3 steps into epoch 1
    state = ckpt.load(tmp_path / "killed" / ckpt.CHECKPOINT_FILE)
    assert (state["loop"]["epoch"], state["loop"]["step"]) == (1, 2)  # the last step checkpoint
    resumed = run_search(tmp_path / "killed", resume=True, optimizer=optimizer)
    assert json.dumps(strip_timings(resumed), sort_keys=True) == json.dumps(strip_timings(full), sort_keys=True)
    assert len(resumed["epoch_times_s"]) == 2


@pytest.mark.parametrize("optimizer", ["bayesnas", "darts"])
def test_resume_from_an_epoch_end_checkpoint_runs_each_epoch_once(tmp_path, optimizer):
    """Killed one step into epoch 1 of 3 with only epoch-end checkpoints: the resumed run redoes epoch 1
    from its start, on epoch 1's and then epoch 2's learning rate, and ends as an uninterrupted run."""
    full = run_search(tmp_path / "full", optimizer=optimizer, checkpoint_every=0, rounds=2)
    steps = full["config"]["steps_per_epoch"]
    with pytest.raises(Interrupted):
        run_search(tmp_path / "killed", stop=steps + 1, optimizer=optimizer, checkpoint_every=0, rounds=2)
    state = ckpt.load(tmp_path / "killed" / ckpt.CHECKPOINT_FILE)
    assert (state["loop"]["epoch"], state["loop"]["step"], len(state["loop"]["stats"])) == (1, 0, 1)
    resumed = run_search(tmp_path / "killed", resume=True, optimizer=optimizer, checkpoint_every=0, rounds=2)
    assert [s["epoch"] for s in resumed["epoch_stats"]] == [0, 1, 2]
    assert json.dumps(strip_timings(resumed), sort_keys=True) == json.dumps(strip_timings(full), sort_keys=True)


def test_a_resumed_search_counts_the_wall_time_its_checkpoint_had_run(tmp_path):
    """wall_time_s of a resumed search is the search's, not only the last process's: the time the
    killed process had run up to its last checkpoint is carried over."""
    with pytest.raises(Interrupted):
        run_search(tmp_path / "killed", stop=3)
    path = tmp_path / "killed" / ckpt.CHECKPOINT_FILE
    state = ckpt.load(path)
    assert 0 < state["loop"]["wall_s_before"] < 600  # the killed process's time to its checkpoint
    state["loop"]["wall_s_before"] = 1000.0  # as if it had run for 1000 s
    ckpt.save(path, state)
    resumed = run_search(tmp_path / "killed", resume=True)
    assert 1000.0 < resumed["wall_time_s"] < 1600.0


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, {"value": 1})

    def broken(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(UserError, match="checkpoint.pt: cannot write the file \\(OSError: disk full\\)$"):
        ckpt.save(path, {"value": 2})
    monkeypatch.undo()
    assert ckpt.load(path) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind


@pytest.mark.parametrize("saved, current, named", [
    ({"--seed": 1, "--epochs": 3}, {"--seed": 1}, "--epochs 3, not (not set)"),  # one the current run lacks
    # every one that differs, in sorted order: --lambda sets lambda_origin and lambda_child, and
    # naming only the first in sorted order named lambda_child, which the user had not typed
    ({"--b": 1, "--a": 1, "--c": 1}, {"--b": 2, "--a": 1, "--c": 2}, "--b 1, not 2; --c 1, not 2"),
])
def test_check_same_run_names_every_differing_setting(saved, current, named):
    from naslib_bayes.errors import UserError

    ckpt.check_same_run("ck.pt", saved, saved)  # the same settings: no error
    with pytest.raises(UserError) as info:
        ckpt.check_same_run("ck.pt", saved, current)
    assert str(info.value) == (f"ck.pt: the checkpoint is of a run with {named}; "
                               "resume with the same settings or start anew")


def test_a_checkpoint_older_than_a_setting_is_refused_with_start_anew_only():
    """No value of a setting the checkpoint never recorded (a run older than it) can match it:
    the refusal must not send the user to resume "with the same settings"."""
    from naslib_bayes.errors import UserError

    with pytest.raises(UserError) as info:
        ckpt.check_same_run("ck.pt", {"--seed": 1}, {"--seed": 2, "--threads": 1, "--data-root contents": "sha256:ab"})
    assert str(info.value) == ("ck.pt: the checkpoint is of a run with --data-root contents (none recorded), "
                               "not 'sha256:ab'; --seed 1, not 2; --threads (none recorded), not 1; it was written "
                               "before runs recorded --data-root contents, --threads, so no settings resume it: "
                               "start anew")


def test_cli_search_killed_by_sigkill_resumes_to_the_same_result(tmp_path):
    """The real thing: SIGKILL the CLI after its first step checkpoint, resume it, and compare with
    the same search run without interruption."""
    args = ["search", "--optimizer", "bayesnas", "--dataset", "digits", "--channels", "4", "--search-images", "96",
            "--batch-size", "32", "--checkpoint-every", "1", "--seed", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "naslib_bayes", *args, "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "killed" / ckpt.CHECKPOINT_FILE).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "result.json").exists(), "the run finished before it could be killed"
    subprocess.run([*cmd, "--resume"], env=env, check=True, capture_output=True)
    resumed = json.loads((tmp_path / "killed" / "result.json").read_text())
    code = main([*args, "--out", str(tmp_path / "full")])  # uninterrupted, in this process (also one thread)
    assert code == 0
    full = json.loads((tmp_path / "full" / "result.json").read_text())
    assert strip_timings(resumed) == strip_timings(full)
    jsonschema.validate(resumed, results.load_schema())


def test_list_shows_the_one_shot_optimizers(capsys):
    code, out, _ = run_cli(capsys, "list")
    rows = {line.split()[0]: line.split()[1] for line in out.strip().splitlines()}
    assert code == 0 and rows["bayesnas"] == rows["darts"] == rows["random-cell"] == "one-shot"


@pytest.mark.parametrize("argv, message", [
    (["--optimizer", "darts", "--lambda", "0.01"], "--lambda only applies to --optimizer bayesnas"),
    (["--optimizer", "bayesnas", "--search-space", "darts", "--benchmark", "x.csv"], "needs --search-space nb201"),
    (["--optimizer", "bayesnas", "--search-space", "nb301"], "unknown search space 'nb301'"),
    (["--optimizer", "bayesnas", "--resume"], "--resume: no checkpoint.pt"),
    (["--optimizer", "bayesnas", "--lambda", "-1"], "--lambda"),
    (["--optimizer", "bayesnas", "--dataset", "mnist"], "needs the folder holding its files: --data-root DIR"),
    (["--optimizer", "darts", "--search-images", "5000"], "--search-images 5000: digits has only 1079 search images"),
    (["--optimizer", "bayesnas", "--opt", "lr_min=0.1"], "lr_min=0.1 must not exceed lr=0.05"),  # a rising cosine
])
def test_search_errors_are_one_line(capsys, tmp_path, argv, message):
    argv = list(argv)
    if "--dataset" not in argv:
        argv += ["--dataset", "digits"]
    code, _, err = run_cli(capsys, "search", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [
    ["search", "--optimizer", "bayesnas"], ["search", "--optimizer", "darts"], ["search", "--optimizer", "random-cell"],
    ["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--epochs", "1"],
])
@pytest.mark.parametrize("root, message", [("missing", "data folder for mnist does not exist"),
                                           ("empty", "no t10k-images-idx3-ubyte.gz or")])
def test_a_data_root_without_the_dataset_is_refused_before_the_out_folder_is_made(capsys, tmp_path, command, root,
                                                                                  message):
    # the data was read after --out was made: the refusal left a folder holding only its lock file
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, *command, "--dataset", "mnist", "--data-root", tmp_path / root,
                           "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["search", "--optimizer", "darts", "--dataset", "digits", "--search-images", "5000"],
     "--search-images 5000: digits has only 1079 search images"),
    (["train", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", "--dataset", "digits",
      "--epochs", "1", "--cutout", "9"], "--cutout 9 is larger than the 8x8 images of digits"),
])
def test_settings_the_data_cannot_serve_are_refused_before_the_out_folder_is_made(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_train_parses_every_arch_form(tmp_path):
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert parse_arch(s)[0] == "nasbench201"
    genotype = {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4, "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]] * 4}
    assert parse_arch(json.dumps(genotype))[0] == "darts"
    (tmp_path / "g.json").write_text(json.dumps(genotype))
    assert parse_arch(str(tmp_path / "g.json"))[1].normal[0] == ("sep_conv_3x3", 0)
    (tmp_path / "result.json").write_text(json.dumps({"final_architecture": s}))
    assert parse_arch(str(tmp_path / "result.json")) == parse_arch(s)
    (tmp_path / "r2.json").write_text(json.dumps({"final_architecture": genotype}))
    assert parse_arch(str(tmp_path / "r2.json"))[0] == "darts"


def test_an_arch_file_that_is_missing_or_holds_no_cell_is_named(tmp_path):
    from naslib_bayes.errors import UserError

    missing = tmp_path / "runs" / "result.json"
    with pytest.raises(UserError, match=f"^--arch {missing}: no such file$"):
        parse_arch(str(missing))
    compressed = tmp_path / "compressed.json"  # a compression's result.json: its architecture is a width list
    compressed.write_text(json.dumps({"final_architecture": "1-20-50-500-10"}))
    with pytest.raises(UserError, match=f"^{compressed}: .*'1-20-50-500-10'"):
        parse_arch(str(compressed))


def test_cli_train_nb201_cell_and_bad_arch(capsys, tmp_path):
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    code, out, err = run_cli(capsys, "train", "--arch", s, "--dataset", "digits", "--epochs", "2", "--channels", "4",
                             "--cells", "1", "--batch-size", "128", "--out", str(tmp_path / "t"))
    assert code == 0, err
    result = json.loads((tmp_path / "t" / "result.json").read_text())
    jsonschema.validate(result, results.load_schema())
    assert result["final_architecture"] == s and 0 <= result["test_accuracy"] <= 100
    assert (tmp_path / "t" / result["checkpoint"]).exists() and len(result["epoch_times_s"]) == 2
    code, _, err = run_cli(capsys, "train", "--arch", "|bogus~0|", "--dataset", "digits", "--epochs", "1",
                           "--out", str(tmp_path / "u"))
    assert code == 2 and "malformed" in err
    code, _, err = run_cli(capsys, "train", "--arch", s, "--dataset", "digits", "--epochs", "1", "--drop-path", "0.2",
                           "--out", str(tmp_path / "v"))
    assert code == 2 and "DARTS networks only" in err


# ---- resuming only the same run ---------------------------------------------------------------------------
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SEARCH = ["search", "--optimizer", "bayesnas", "--dataset", "digits", "--channels", "4", "--search-images", "96",
          "--batch-size", "32", "--warmup-epochs", "0", "--opt", "curvature_batches=1", "--checkpoint-every", "1",
          "--seed", "3"]


def train_args(epochs: int, arch: str = CELL, dataset: str = "digits") -> list[str]:
    return ["train", "--arch", arch, "--dataset", dataset, "--epochs", str(epochs), "--channels", "4", "--cells", "1",
            "--batch-size", "256"]


def kill_after_first_checkpoint(monkeypatch) -> None:
    """From now on, writing a checkpoint is followed by :class:`Killed` (the process killed right then)."""
    save = ckpt.save

    def save_then_die(path, state):
        save(path, state)
        raise Killed

    monkeypatch.setattr(ckpt, "save", save_then_die)


def killed_run(capsys, monkeypatch, argv, out: Path) -> Path:
    """Run ``argv`` until its first checkpoint is written; the checkpoint's path."""
    with monkeypatch.context() as patched:
        kill_after_first_checkpoint(patched)
        with pytest.raises(Killed):
            run_cli(capsys, *argv, "--out", out)
    capsys.readouterr()
    assert not (out / results.RESULT_FILE).exists()
    return out / ckpt.CHECKPOINT_FILE


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("change, setting", [
    (["--seed", "4"], "--seed 3, not 4"),
    (["--opt", "curvature_batches=2"], "--opt curvature_batches 1, not 2"),
    (["--channels", "6"], "--channels 4, not 6"),  # another supernet: its weights would not even load
    (["--lambda", "0.02"], "--opt lambda_child 0.01, not 0.02; --opt lambda_origin 0.01, not 0.02"),
])
def test_search_resumed_with_other_settings_is_refused_naming_the_setting(capsys, tmp_path, monkeypatch, change,
                                                                          setting):
    checkpoint = killed_run(capsys, monkeypatch, SEARCH, tmp_path)
    saved = checkpoint.read_bytes()
    code, _, err = run_cli(capsys, *SEARCH, *change, "--out", tmp_path, "--resume")
    assert code == 2
    assert (f"{checkpoint}: the checkpoint is of a run with {setting}; resume with the same settings or start anew"
            in one_line(err))
    assert checkpoint.read_bytes() == saved and not (tmp_path / results.RESULT_FILE).exists()
    code, _, err = run_cli(capsys, *SEARCH, "--out", tmp_path, "--resume")  # the same settings: it continues
    assert code == 0, err


def test_train_resumed_with_other_epochs_is_refused(capsys, tmp_path):
    """The scheduler's state holds the epochs it anneals over: more --epochs would follow the old schedule."""
    code, _, err = run_cli(capsys, *train_args(epochs=1), "--out", tmp_path)
    assert code == 0, err
    checkpoint = tmp_path / ckpt.CHECKPOINT_FILE
    saved = checkpoint.read_bytes()
    code, _, err = run_cli(capsys, *train_args(epochs=2), "--out", tmp_path, "--resume")
    assert code == 2
    assert f"{checkpoint}: the checkpoint is of a run with --epochs 1, not 2; resume with" in one_line(err)
    assert checkpoint.read_bytes() == saved


THREADED_RUNS = {"search": SEARCH, "train": train_args(epochs=2)}


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_resume_with_other_threads_is_refused_naming_both_counts(capsys, tmp_path, monkeypatch, command):
    """The thread count changes the order of float sums: a run resumed with another one is not
    the run its checkpoint began, nor does it end in the result an uninterrupted run gives."""
    argv = [*THREADED_RUNS[command], "--threads", "1"]
    checkpoint = killed_run(capsys, monkeypatch, argv, tmp_path)
    saved = checkpoint.read_bytes()
    code, _, err = run_cli(capsys, *THREADED_RUNS[command], "--threads", "2", "--out", tmp_path, "--resume")
    assert code == 2
    assert (f"{checkpoint}: the checkpoint is of a run with --threads 1, not 2; resume with the same settings"
            in one_line(err))
    assert checkpoint.read_bytes() == saved and not (tmp_path / results.RESULT_FILE).exists()
    code, _, err = run_cli(capsys, *argv, "--out", tmp_path, "--resume")
    assert code == 0, err


def test_a_checkpoint_of_the_other_command_or_without_its_settings_is_refused(capsys, tmp_path, monkeypatch):
    search_checkpoint = killed_run(capsys, monkeypatch, SEARCH, tmp_path / "search")
    train_checkpoint = killed_run(capsys, monkeypatch, train_args(epochs=2), tmp_path / "train")
    search_state, train_state = ckpt.load(search_checkpoint), ckpt.load(train_checkpoint)
    ckpt.save(search_checkpoint, train_state)
    ckpt.save(train_checkpoint, search_state)
    code, _, err = run_cli(capsys, *SEARCH, "--out", tmp_path / "search", "--resume")
    assert code == 2 and f"{search_checkpoint}: not a one-shot search checkpoint" in one_line(err)
    code, _, err = run_cli(capsys, *train_args(epochs=2), "--out", tmp_path / "train", "--resume")
    assert code == 2 and f"{train_checkpoint}: not a train checkpoint" in one_line(err)
    del search_state["run"]  # as written before checkpoints recorded their run's settings
    ckpt.save(search_checkpoint, search_state)
    code, _, err = run_cli(capsys, *SEARCH, "--out", tmp_path / "search", "--resume")
    assert code == 2
    assert f"{search_checkpoint}: the checkpoint does not record the settings of its run" in one_line(err)


MNIST_RUNS = {"search": [*SEARCH[:3], "--dataset", "mnist", *SEARCH[5:]],
              "train": train_args(epochs=2, dataset="mnist")}


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_resume_on_other_data_files_is_refused_and_on_moved_ones_continues(capsys, tmp_path, monkeypatch, mnist_dir,
                                                                             command):
    """--data-root may change between a run and its resume (the files moved), the data may not:
    resumed on other MNIST files, the run trained the rest of its epochs on other images, silently."""
    argv, out = MNIST_RUNS[command], tmp_path / "run"
    checkpoint = killed_run(capsys, monkeypatch, [*argv, "--data-root", mnist_dir], out)
    saved = checkpoint.read_bytes()
    moved, other = mnist_elsewhere(mnist_dir, tmp_path)
    code, _, err = run_cli(capsys, *argv, "--data-root", other, "--out", out, "--resume")
    assert code == 2
    assert f"{checkpoint}: the checkpoint is of a run with --data-root contents 'sha256:" in one_line(err)
    assert checkpoint.read_bytes() == saved and not (out / results.RESULT_FILE).exists()
    code, _, err = run_cli(capsys, *argv, "--data-root", moved, "--out", out, "--resume")
    assert code == 0, err


def test_train_killed_after_an_epoch_resumes_to_the_same_result(capsys, tmp_path, monkeypatch):
    code, _, err = run_cli(capsys, *train_args(epochs=2), "--out", tmp_path / "full")
    assert code == 0, err
    checkpoint = killed_run(capsys, monkeypatch, train_args(epochs=2), tmp_path / "killed")
    assert ckpt.load(checkpoint)["epoch"] == 1
    search_result = tmp_path / "search.json"  # the same cell, named by a search's result.json this time
    search_result.write_text(json.dumps({"final_architecture": CELL}))
    code, _, err = run_cli(capsys, *train_args(epochs=2, arch=str(search_result)), "--out", tmp_path / "killed",
                           "--resume")
    assert code == 0, err

    def without_timings(run: str) -> dict:
        result = json.loads((tmp_path / run / results.RESULT_FILE).read_text())
        result["config"].pop("arch")
        return {k: v for k, v in result.items() if k not in ("wall_time_s", "epoch_times_s")}

    assert without_timings("killed") == without_timings("full")


def test_numpy_integer_seeds_search_as_python_ints_and_the_result_writes(tmp_path):
    from naslib_bayes.errors import UserError

    def search(seed, data_seed):  # search_images draws its subset with a generator seeded by data_seed
        cfg = SearchConfig(optimizer="random-cell", dataset="digits", seed=seed, data_seed=data_seed, channels=4,
                           cells=1, search_images=64, hyperparameters={"warmup_epochs": 1})
        return run_oneshot_search(cfg)

    plain, given = search(3, 1), search(np.int64(3), np.int64(1))
    assert strip_timings(given) == strip_timings(plain)
    loaded = json.loads(results.write_result(tmp_path, given).read_text())  # json refuses numpy integers
    assert (loaded["seed"], loaded["config"]["data_seed"]) == (3, 1)
    train = TrainConfig(CELL, "digits", epochs=np.int64(1), seed=np.int64(2), data_seed=np.int64(1), cells=np.int64(1))
    assert [type(getattr(train, name)) for name in ("epochs", "seed", "data_seed", "cells")] == [int] * 4
    with pytest.raises(UserError, match="seed must be a whole number, got 0.5"):
        SearchConfig(optimizer="random-cell", seed=0.5)


def test_a_resumed_training_counts_the_wall_time_its_checkpoint_had_run(capsys, tmp_path, monkeypatch):
    """As a resumed search does: the killed process's time up to its last checkpoint is carried over."""
    checkpoint = killed_run(capsys, monkeypatch, train_args(epochs=2), tmp_path / "killed")
    state = ckpt.load(checkpoint)
    assert 0 < state["wall_s"] < 600
    state["wall_s"] = 1000.0  # as if the killed process had run for 1000 s
    ckpt.save(checkpoint, state)
    code, _, err = run_cli(capsys, *train_args(epochs=2), "--out", tmp_path / "killed", "--resume")
    assert code == 0, err
    assert 1000.0 < json.loads((tmp_path / "killed" / results.RESULT_FILE).read_text())["wall_time_s"] < 1600.0


def test_train_statistics_count_the_images_trained_on(tmp_path):
    """A batch larger than the dataset trains on every image once per epoch, as a batch of exactly
    the dataset's size does: the same statistics, not ones divided by the unused part of the batch."""
    cfg = TrainConfig(CELL, "digits", epochs=1, channels=4, cells=1, batch_size=4096)
    larger = run_training(cfg, tmp_path / "larger")
    exact = run_training(TrainConfig(**{**cfg.__dict__, "batch_size": larger["config"]["train_images"]}),
                         tmp_path / "exact")
    assert larger["config"]["train_images"] < 4096
    assert larger["epoch_stats"] == exact["epoch_stats"]


def test_search_scored_on_a_benchmark_is_not_resumed_without_it(capsys, tmp_path, monkeypatch, nats_csv):
    """A resume without the first run's --benchmark would write a result.json without the cell's score."""
    scored = [*SEARCH, "--benchmark", str(nats_csv)]
    checkpoint = killed_run(capsys, monkeypatch, scored, tmp_path)
    saved = checkpoint.read_bytes()
    assert ckpt.load(checkpoint)["run"]["--report-metric"] == "test_accuracy"  # another metric: refused as any setting
    code, _, err = run_cli(capsys, *SEARCH, "--out", tmp_path, "--resume")
    assert code == 2
    assert (f"{checkpoint}: the run scores its derived cell by test_accuracy on a benchmark; resume with "
            "--benchmark (the file may have moved)" in one_line(err))
    assert checkpoint.read_bytes() == saved and not (tmp_path / results.RESULT_FILE).exists()
    code, _, err = run_cli(capsys, *scored, "--out", tmp_path, "--resume")
    assert code == 0, err
    assert json.loads((tmp_path / results.RESULT_FILE).read_text())["benchmark_accuracy"]["cifar10"] > 0


# ---- the evaluation training's loss, optimizer and schedules ------------------------------------------
GENOTYPE = json.dumps({"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]] * 4,
                       "reduce": [["max_pool_3x3", 0], ["skip_connect", 1]] * 4})


class LinearHeads(torch.nn.Module):
    """A stand-in network: linear logits and linear auxiliary logits of the flattened image, and
    the drop-path probability of every training forward pass recorded."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = torch.nn.Parameter(0.1 * torch.randn(features, classes, generator=g))
        self.v = torch.nn.Parameter(0.1 * torch.randn(features, classes, generator=g))
        self.drop_path_prob, self.generator, self.seen = 0.0, None, []

    def forward(self, x):
        if self.training:
            self.seen.append(self.drop_path_prob)
        f = x.flatten(1)
        return f @ self.w, (f @ self.v if self.training else None)


@pytest.fixture
def linear_heads(monkeypatch):
    from naslib_bayes.training import evaluate

    built = []

    def build(kind, arch, channels, cells, num_classes, in_channels, auxiliary, seed):
        built.append(LinearHeads(in_channels * 64, num_classes))
        return built[-1]

    monkeypatch.setattr(evaluate, "build_network", build)
    return built


def _cross_entropy_and_gradient(f: np.ndarray, w: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of logits f @ w and its gradient in w: f^T (softmax - onehot) / n."""
    z = f @ w
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(w.shape[1])[y]
    return float(-np.log((p * onehot).sum(1)).mean()), f.T @ (p - onehot) / len(y)


def test_darts_training_step_adds_the_auxiliary_loss_at_its_weight_and_takes_a_nesterov_step(linear_heads, tmp_path):
    """One batch of every training image: the loss is CE + 0.4 CE_aux, and Nesterov's first step with
    momentum 0.9 moves a weight by lr (1 + 0.9) (gradient + weight decay * weight)."""
    from naslib_bayes.data import load_dataset

    result = run_training(TrainConfig(GENOTYPE, "digits", epochs=1, batch_size=4096, cutout=0, lr=0.5,
                                      weight_decay=0.01, drop_path=0.0), tmp_path)
    splits = load_dataset("digits", None, seed=0)
    images = torch.cat([splits.train.images, splits.val.images])  # the validation split trains too
    labels = torch.cat([splits.train.labels, splits.val.labels]).numpy()
    assert result["config"]["train_images"] == len(labels)
    f = images.flatten(1).double().numpy()
    w0, v0 = (LinearHeads(64, 10).w.detach().double().numpy(), LinearHeads(64, 10).v.detach().double().numpy())
    loss, grad_w = _cross_entropy_and_gradient(f, w0, labels)
    aux_loss, grad_v = _cross_entropy_and_gradient(f, v0, labels)
    assert result["epoch_stats"][0]["train_loss"] == pytest.approx(loss + 0.4 * aux_loss, rel=1e-5)
    assert np.sqrt((grad_w ** 2).sum() + ((0.4 * grad_v) ** 2).sum()) < 5  # no clipping
    model = linear_heads[-1]
    np.testing.assert_allclose(model.w.detach().numpy(), w0 - 0.5 * 1.9 * (grad_w + 0.01 * w0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.v.detach().numpy(), v0 - 0.5 * 1.9 * (0.4 * grad_v + 0.01 * v0), rtol=0, atol=1e-5)


def test_darts_training_ramps_drop_path_from_zero_and_anneals_the_rate_to_zero(linear_heads, tmp_path):
    """DARTS: drop_path_prob = p * epoch / epochs at epoch 0, 1, ...; lr(e) = lr (1 + cos(pi e / E)) / 2."""
    epochs = 4
    result = run_training(TrainConfig(GENOTYPE, "digits", epochs=epochs, batch_size=512, cutout=0, lr=0.2,
                                      drop_path=0.3), tmp_path)
    seen = linear_heads[-1].seen
    steps = len(seen) // epochs
    assert seen == [0.3 * e / epochs for e in range(epochs) for _ in range(steps)]
    expected = [0.1 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs)]
    assert [s["lr"] for s in result["epoch_stats"]] == pytest.approx(expected, rel=1e-12)


def test_search_trains_each_epoch_at_the_cosine_rate_from_lr_to_lr_min():
    """NASLib's schedule: lr(e) = lr_min + (lr - lr_min) (1 + cos(pi e / E)) / 2 over E = warm-up + rounds x epochs."""
    cfg = SearchConfig(optimizer="random-cell", search_space="nb201", dataset="digits", seed=0, channels=4, cells=1,
                       batch_size=32, search_images=64,
                       hyperparameters={"warmup_epochs": 1, "rounds": 2, "lr": 0.08, "lr_min": 0.002})
    result = run_oneshot_search(cfg)
    lrs = [s["lr"] for s in result["epoch_stats"]]
    assert lrs == pytest.approx([0.002 + 0.078 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)], rel=1e-12)


def test_a_darts_network_without_reduction_cells_trains_and_records_no_auxiliary_head(capsys, tmp_path):
    """The head reads the second reduction cell: with fewer than 3 cells there is none, so the
    default weight is 0 in result.json (not 0.4 for a loss never added) and a weight asked for is refused."""
    result = run_training(TrainConfig(GENOTYPE, "digits", epochs=1, channels=4, cells=2, batch_size=512), tmp_path)
    assert result["config"]["auxiliary_weight"] == 0.0
    model = torch.load(tmp_path / ckpt.CHECKPOINT_FILE, weights_only=False)["model"]
    assert not any(name.startswith("auxiliary_head") for name in model)
    code, _, err = run_cli(capsys, "train", "--arch", GENOTYPE, "--dataset", "digits", "--epochs", "1", "--cells", "2",
                           "--auxiliary-weight", "0.4", "--out", tmp_path / "asked")
    assert code == 2 and not (tmp_path / "asked").exists()
    assert one_line(err) == ("naslib-bayes: error: --auxiliary-weight 0.4: a DARTS network of 2 cells has no "
                             "reduction cell for the auxiliary head to read; use --cells 3 or more, "
                             "or --auxiliary-weight 0")


@pytest.mark.parametrize("optimizer, split", [("bayesnas", "all images train weights and switches"),
                                              ("darts", "50/50 weights/architecture"),
                                              ("random-cell", "all images train the weights")])
def test_result_config_says_what_the_search_images_trained(optimizer, split):
    """random-cell has no switches: its result.json must not say the images trained them."""
    cfg = SearchConfig(optimizer=optimizer, search_space="nb201", dataset="digits", seed=0, channels=4, cells=1,
                       batch_size=32, search_images=64, hyperparameters={"warmup_epochs": 0})
    assert run_oneshot_search(cfg)["config"]["search_split"] == split


@pytest.mark.parametrize("field, value, message", [
    ("channels", 0, "--channels 0: expected a positive integer"),  # ran the default supernet size
    ("cells", -1, "--cells -1: expected a positive integer"),
    ("batch_size", 0, "--batch-size 0: expected a positive integer"),
    ("checkpoint_every", -5, "checkpoint_every -5: expected 0 (epochs only) or a positive integer"),
])
def test_a_search_config_out_of_range_is_refused_before_any_data_is_read(field, value, message):
    from naslib_bayes.training.search import SearchConfig, check_search_config

    cfg = SearchConfig(optimizer="random-cell", dataset="digits", **{field: value})
    with pytest.raises(UserError) as info:
        check_search_config(cfg)
    assert str(info.value) == message


@pytest.mark.parametrize("field, value, message", [
    ("channels", 0, "--channels 0: expected a positive integer"),  # trained C=36 and recorded it
    ("cells", 0, "--cells 0: expected a positive integer"),  # trained the 20-cell network
    ("batch_size", 0, "--batch-size 0: expected a positive integer"),  # trained at batch 96
    ("channels", -2, "--channels -2: expected a positive integer"),  # torch's negative-dimension traceback
    ("epochs", 0, "--epochs 0: expected a positive integer"),  # reported an untrained network's accuracy
    ("lr", 0.0, "--lr 0.0: expected a positive number"),
    ("lr", float("nan"), "--lr nan: expected a positive number"),
    ("weight_decay", -1.0, "--weight-decay -1.0: expected a non-negative number"),
    ("auxiliary_weight", -1.0, "--auxiliary-weight -1.0: expected a non-negative number"),  # no head, -1 recorded
    ("drop_path", 1.0, "--drop-path 1.0: expected a probability in [0, 1)"),
    ("drop_path", -0.5, "--drop-path -0.5: expected a probability in [0, 1)"),
    ("cutout", -1, "--cutout -1: expected a non-negative integer"),
])
def test_a_train_config_out_of_range_is_refused_naming_the_option(field, value, message):
    """run_training from Python (as examples/bayesnas_darts.py calls it) checks what the command's
    argument types check: a size of 0 fell back to the default network, 0 epochs tested an untrained one."""
    from naslib_bayes.training.evaluate import resolve_settings

    cfg = TrainConfig(GENOTYPE, "digits", **{"epochs": 1, field: value})
    with pytest.raises(UserError) as info:
        resolve_settings(cfg)
    assert str(info.value) == message


ARCH_WITH_CONVS = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.mark.parametrize("argv", [
    ["search", "--optimizer", "bayesnas"],
    ["search", "--optimizer", "darts"],
    ["train", "--arch", ARCH_WITH_CONVS],
])
def test_training_that_diverges_says_where_in_one_line(capsys, tmp_path, argv):
    """At learning rate 1e6 the loss is NaN within an epoch: the run went on to its end on NaN
    weights and then failed with a traceback, unable to write NaN statistics to result.json."""
    code, _, err = run_cli(capsys, *argv, "--dataset", "digits", "--epochs", "1", "--lr", "1e6",
                           "--out", tmp_path / "run")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert re.fullmatch(r"naslib-bayes: error: training diverged \(loss (nan|inf|-inf)\) in epoch 1, step \d+, "
                        r"at learning rate 1e\+06: run again with a lower learning rate \(--lr\)", lines[0])
    assert not (tmp_path / "run" / results.RESULT_FILE).exists()


@pytest.mark.parametrize("momentum, schedule", [
    (0.9, "SGD nesterov momentum 0.9, lr 0.1 cosine to 0 over 1 epochs"),
    (0.0, "SGD without momentum, lr 0.1 cosine to 0 over 1 epochs"),  # it said "nesterov momentum 0.0"
])
def test_train_records_the_sgd_it_ran(tmp_path, momentum, schedule):
    result = run_training(TrainConfig(CELL, "digits", epochs=1, channels=4, cells=1, batch_size=4096, lr=0.1,
                                      momentum=momentum), tmp_path / "run")
    assert result["config"]["schedule"] == schedule
