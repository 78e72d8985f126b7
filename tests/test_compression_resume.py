"""Compression runs checkpoint after every epoch and a killed run resumes to the same result."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from naslib_bayes.compression import CompressionConfig, compress, train_dense
from naslib_bayes.compression.resume import StageCheckpoint
from naslib_bayes.data import default_augment, load_dataset
from naslib_bayes.errors import UserError
from naslib_bayes.training import checkpoint as ckpt
from cli_runner import run_cli
from resume_helpers import Killed, count_epochs, killed_after_saves, mnist_elsewhere

# Sparse enough that the budget is met after a few updates, so a run passes through warm-up,
# sparse epochs with updates, the cut-back to the budget and fine-tuning.
CFG = dict(lam=0.5, epochs=9, finetune_epochs=3, batch_size=32, lr=0.05, max_params=0.5)
RUN = {"test": "resume"}


class KilledAfter(StageCheckpoint):
    """A checkpoint whose run dies after its ``saves``-th save."""

    def __init__(self, path, saves: int):
        super().__init__(path, RUN)
        self.left = saves

    def put(self, stage, state):
        super().put(stage, state)
        self.left -= 1
        if self.left == 0:
            raise Killed


class CountingCheckpoint(StageCheckpoint):
    def __init__(self, path):
        super().__init__(path, RUN)
        self.saves = []

    def put(self, stage, state):
        super().put(stage, state)
        self.saves.append((stage, state.get("phase")))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _model(seed: int = 0) -> nn.Sequential:
    # with dropout: its masks are random draws a resumed run must make again
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.2), nn.Linear(48, 32), nn.ReLU(),
                             nn.Linear(32, 10))


def _run(digits, checkpoint, teacher=None, **overrides):
    cfg = CompressionConfig(**{**CFG, **overrides})
    return compress(_model(), digits.train, cfg, seed=0, augment=default_augment("digits", digits.train), teacher=teacher,
                    checkpoint=checkpoint)


def _history(outcome):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in outcome.history]


def _same_networks(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_killed_compression_resumes_to_the_uninterrupted_result(digits, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    counting = CountingCheckpoint(tmp_path / "full.pt")
    full = _run(digits, counting)
    phases = [phase for _, phase in counting.saves]
    assert "sparse" in phases and "finetune" in phases
    assert any(h["phase"] == "update" for h in full.history) and full.params_after <= 0.5 * full.params_before
    # killed in the sparse phase, just before and right after the switch to fine-tuning, and in it
    kill_points = [phases.index("sparse") + 1, phases.index("finetune"), phases.index("finetune") + 1, len(phases) - 1]
    for saves in kill_points:
        path = tmp_path / f"killed{saves}.pt"
        with pytest.raises(Killed):
            _run(digits, KilledAfter(path, saves))
        epochs = count_epochs(monkeypatch)
        resumed = _run(digits, StageCheckpoint(path, RUN, resume=True))
        # the epochs saved are not trained again (one save per epoch: the epoch that meets the
        # budget is saved by the switch to fine-tuning)
        assert epochs["trained"] == CFG["epochs"] - saves, saves
        assert _same_networks(resumed.model, full.model), saves
        assert _history(resumed) == _history(full) and resumed.widths_after == full.widths_after


def test_a_killed_dense_baseline_resumes_to_the_uninterrupted_weights(digits, tmp_path):
    torch.set_num_threads(1)
    cfg = CompressionConfig(**{**CFG, "epochs": 4, "finetune_epochs": 1})
    full = _model()
    full_history = train_dense(full, digits.train, cfg, seed=0, checkpoint=StageCheckpoint(tmp_path / "a.pt", RUN))
    killed = _model()
    with pytest.raises(Killed):
        train_dense(killed, digits.train, cfg, seed=0, checkpoint=KilledAfter(tmp_path / "b.pt", 2))
    resumed = _model()
    history = train_dense(resumed, digits.train, cfg, seed=0, checkpoint=StageCheckpoint(tmp_path / "b.pt", RUN,
                                                                                          resume=True))
    assert history == full_history and _same_networks(resumed, full)
    assert not _same_networks(resumed, _model())  # it did train


def test_compression_repeats_itself_whatever_the_global_random_stream_holds(digits):
    # Dropout draws its masks from torch's global generator: a run must seed its own, so that two
    # calls with one seed agree (and the dense baseline before it does not change it), and leave
    # the caller's stream where it was.
    torch.set_num_threads(1)
    cfg = CompressionConfig(**{**CFG, "epochs": 5, "finetune_epochs": 2})
    torch.manual_seed(5)
    before = torch.get_rng_state()
    first = compress(_model(), digits.train, cfg, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(7)  # the caller moves its stream on
    second = compress(_model(), digits.train, cfg, seed=0)
    assert _same_networks(first.model, second.model) and _history(first) == _history(second)
    state = torch.get_rng_state()
    dense_first = _model()
    train_dense(dense_first, digits.train, cfg, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(7)
    dense_second = _model()
    train_dense(dense_second, digits.train, cfg, seed=0)
    assert _same_networks(dense_first, dense_second)


def test_a_checkpoint_resumes_only_its_own_run(tmp_path):
    StageCheckpoint(tmp_path / "c.pt", {"lam": 0.5, "seed": 0}).put("dense", {"x": 1})
    assert StageCheckpoint(tmp_path / "c.pt", {"lam": 0.5, "seed": 0}, resume=True).get("dense") == {"x": 1}
    with pytest.raises(UserError, match="lam 0.5, not 0.2"):
        StageCheckpoint(tmp_path / "c.pt", {"lam": 0.2, "seed": 0}, resume=True)
    with pytest.raises(UserError, match="no checkpoint"):
        StageCheckpoint(tmp_path / "missing.pt", {}, resume=True)
    torch.save({"something": "else"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a compression checkpoint"):
        StageCheckpoint(tmp_path / "other.pt", {}, resume=True)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(UserError, match="not a checkpoint"):
        StageCheckpoint(tmp_path / "tensor.pt", {}, resume=True)
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "c.pt").read_bytes()[:100])
    with pytest.raises(UserError, match="cannot read the checkpoint"):
        StageCheckpoint(tmp_path / "truncated.pt", {}, resume=True)


ARGS = ["compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "1.5", "--epochs", "6",
        "--finetune-epochs", "2", "--batch-size", "32", "--lr", "0.02", "--distill", "0.5", "--seed", "0"]


def _result(out_dir):
    result = json.loads((out_dir / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in ("wall_time_s", "timestamp", "compression_history")}


def test_compress_command_resumes_a_killed_run(capsys, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    code, _, err = run_cli(capsys, *ARGS, "--out", tmp_path / "full")
    assert code == 0, err
    # killed after 9 saves: the 6 dense epochs, then 3 into the compression
    with killed_after_saves(monkeypatch, 9), pytest.raises(Killed):
        run_cli(capsys, *ARGS, "--out", tmp_path / "killed")
    assert not (tmp_path / "killed" / "result.json").exists()
    code, _, err = run_cli(capsys, *ARGS, "--out", tmp_path / "killed")  # forgot --resume: keep the work
    assert code == 2 and "unfinished run" in err and "--resume" in err and len(err.strip().splitlines()) == 1, err
    epochs = count_epochs(monkeypatch)
    code, _, err = run_cli(capsys, *ARGS, "--out", tmp_path / "killed", "--resume")
    assert code == 0, err
    assert epochs["trained"] == 3  # of 6 + 6: the dense baseline and 3 compression epochs were saved
    assert _result(tmp_path / "killed") == _result(tmp_path / "full")
    weights = [torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("killed", "full")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_resumed_compression_counts_the_wall_time_its_checkpoint_had_run(capsys, tmp_path, monkeypatch):
    """As a resumed search does: the killed process's time up to its last save is carried over."""
    torch.set_num_threads(1)
    with killed_after_saves(monkeypatch, 9), pytest.raises(Killed):
        run_cli(capsys, *ARGS, "--out", tmp_path / "killed")
    path = tmp_path / "killed" / "checkpoint.pt"
    state = ckpt.load(path)
    assert 0 < state["wall_s"] < 600
    state["wall_s"] = 1000.0  # as if the killed process had run for 1000 s
    ckpt.save(path, state)
    code, _, err = run_cli(capsys, *ARGS, "--out", tmp_path / "killed", "--resume")
    assert code == 0, err
    assert 1000.0 < json.loads((tmp_path / "killed" / "result.json").read_text())["wall_time_s"] < 1600.0


def test_compress_resume_errors_are_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, *ARGS, "--out", tmp_path / "none", "--resume")
    assert code == 2 and "no checkpoint" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(capsys, *ARGS, "--epochs", "3", "--finetune-epochs", "1", "--out", tmp_path / "run")
    assert code == 0, err
    code, _, err = run_cli(capsys, *ARGS, "--epochs", "3", "--finetune-epochs", "1", "--lambda", "2",
                           "--out", tmp_path / "run", "--resume")
    assert code == 2 and "--lambda 1.5, not 2.0" in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, *ARGS, "--epochs", "3", "--finetune-epochs", "1", "--out", tmp_path / "run",
                           "--resume")
    assert code == 2 and "cannot read the checkpoint" in err and len(err.strip().splitlines()) == 1, err


def test_a_resume_with_other_threads_is_refused_naming_both_counts(capsys, tmp_path, monkeypatch):
    """Another thread count rounds the sums otherwise: the resumed run would not be the one begun."""
    argv = [*ARGS, "--epochs", "3", "--finetune-epochs", "1", "--no-baseline", "--distill", "0",
            "--out", tmp_path / "run"]
    with killed_after_saves(monkeypatch, 1), pytest.raises(Killed):
        run_cli(capsys, *argv, "--threads", "1")
    checkpoint = tmp_path / "run" / ckpt.CHECKPOINT_FILE
    saved = checkpoint.read_bytes()
    code, _, err = run_cli(capsys, *argv, "--threads", "2", "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{checkpoint}: the checkpoint is of a run with --threads 1, not 2; resume with the same settings" in err
    assert checkpoint.read_bytes() == saved and not (tmp_path / "run" / "result.json").exists()
    code, _, err = run_cli(capsys, *argv, "--threads", "1", "--resume")
    assert code == 0, err


def test_a_resume_on_other_data_files_is_refused_and_on_moved_ones_continues(capsys, tmp_path, monkeypatch, mnist_dir):
    """--data-root may change between a run and its resume (the files moved), the data may not:
    resumed on MNIST with training files, a run begun on the test files' split trained its
    remaining epochs on other images, and its result.json counted those alone."""
    torch.set_num_threads(1)
    argv = ["compress", "--model", "lenet300", "--dataset", "mnist", "--epochs", "3", "--finetune-epochs", "1",
            "--no-baseline", "--out", tmp_path / "run"]
    with killed_after_saves(monkeypatch, 1), pytest.raises(Killed):
        run_cli(capsys, *argv, "--data-root", mnist_dir)
    checkpoint = tmp_path / "run" / ckpt.CHECKPOINT_FILE
    saved = checkpoint.read_bytes()
    moved, other = mnist_elsewhere(mnist_dir, tmp_path)
    code, _, err = run_cli(capsys, *argv, "--data-root", other, "--resume")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{checkpoint}: the checkpoint is of a run with --data-root contents 'sha256:" in err
    assert checkpoint.read_bytes() == saved and not (tmp_path / "run" / "result.json").exists()
    code, _, err = run_cli(capsys, *argv, "--data-root", moved, "--resume")
    assert code == 0, err


def test_a_compression_checkpoint_holds_tensors_and_plain_values_only(digits, tmp_path):
    """The compression stage saved the switched network as a pickled module: reading such a
    checkpoint needs full unpickling, which runs any code a shared file holds."""
    torch.set_num_threads(1)
    path = tmp_path / "c.pt"
    with pytest.raises(Killed):
        _run(digits, KilledAfter(path, 2))
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["stages"]["compress"]["epoch"] == 2


def test_a_saved_switched_network_comes_back_whole(tmp_path):
    """What a pickled module kept and a description could lose: dtype, frozen layers, in-place ReLU."""
    from naslib_bayes.compression.resume import network_state, restore_network
    from naslib_bayes.compression.switched import SwitchedNetwork

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.ReLU(inplace=True), nn.Linear(6, 3)).double()
    model[0].requires_grad_(False)
    net = SwitchedNetwork(list(model.named_children()), (8,)).eval()
    torch.save(network_state(net), tmp_path / "net.pt")
    rebuilt = restore_network(torch.load(tmp_path / "net.pt", weights_only=True), torch.device("cpu"))
    assert _same_networks(rebuilt, net) and not rebuilt.training
    assert {n: (p.dtype, p.requires_grad) for n, p in rebuilt.named_parameters()} == \
        {n: (p.dtype, p.requires_grad) for n, p in net.named_parameters()}
    assert rebuilt.steps[2].inplace and rebuilt.names == net.names
    x = torch.randn(5, 8, dtype=torch.float64)
    assert torch.equal(rebuilt(x), net(x))
