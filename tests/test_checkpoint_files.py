"""Checkpoints are read without running code from the file; an earlier version's only when trusted."""

from __future__ import annotations

import json

import pytest
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.training import checkpoint as ckpt
from cli_runner import run_cli
from resume_helpers import Killed, killed_after_saves

ARCH = "|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|"
RESUMED_RUNS = [
    ["search", "--optimizer", "bayesnas", "--dataset", "digits", "--search-images", "128", "--batch-size", "64",
     "--warmup-epochs", "0"],
    ["train", "--arch", ARCH, "--dataset", "digits", "--epochs", "2", "--channels", "4", "--cells", "1"],
    ["compress", "--model", "lenet300", "--dataset", "digits", "--lambda", "0.5", "--epochs", "3",
     "--finetune-epochs", "1", "--batch-size", "32", "--no-baseline"],
]
COMPRESS = [*RESUMED_RUNS[2], "--distill", "0", "--seed", "0"]


class WritesAMarker:
    """Unpickled in full, it creates the file ``marker``: what a checkpoint made to run code does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _code_running_checkpoint(path, marker) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "anything", "run": WritesAMarker(marker)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("argv", RESUMED_RUNS, ids=lambda argv: argv[0])
def test_a_checkpoint_that_would_run_code_is_refused_unread(capsys, tmp_path, argv):
    """Checkpoints were unpickled in full: resuming from a shared or downloaded run folder ran any
    code its checkpoint.pt held."""
    out, marker = tmp_path / "out", tmp_path / "marker"
    checkpoint = out / ckpt.CHECKPOINT_FILE
    saved = _code_running_checkpoint(checkpoint, marker)
    code, _, err = run_cli(capsys, *argv, "--resume", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{checkpoint}: the checkpoint holds Python objects (io.open)" in err
    assert f"{ckpt.TRUST_ENV}={checkpoint}" in err
    assert not marker.exists()
    assert checkpoint.read_bytes() == saved
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == [ckpt.CHECKPOINT_FILE]  # the lock aside


def test_trust_in_one_checkpoint_is_not_trust_in_another(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint.pt"
    _code_running_checkpoint(path, marker)
    monkeypatch.setenv(ckpt.TRUST_ENV, str(tmp_path / "other.pt"))
    with pytest.raises(UserError, match="holds Python objects"):
        ckpt.load(path)
    assert not marker.exists()
    monkeypatch.setenv(ckpt.TRUST_ENV, str(path))
    ckpt.load(path)
    assert marker.exists()  # named: read in full, as the user asked


def _as_an_earlier_version_wrote_it(path) -> None:
    """Rewrites a compression checkpoint as earlier versions wrote it: the switched network pickled whole."""
    from naslib_bayes.compression.resume import restore_network

    state = torch.load(path, weights_only=True)
    stage = state["stages"]["compress"]
    stage["net"] = restore_network(stage["net"], torch.device("cpu"))
    torch.save(state, path)


def _result(out) -> dict:
    result = json.loads((out / "result.json").read_text())
    return {k: v for k, v in result.items() if k not in ("wall_time_s", "timestamp", "compression_history")}


def test_an_earlier_versions_checkpoint_resumes_once_trusted_to_the_uninterrupted_result(capsys, tmp_path,
                                                                                         monkeypatch):
    """Refused in one line saying how to go on (not silently unreadable), then, with the file
    named, resumed to the result an uninterrupted run gives, saying it was read in full."""
    torch.set_num_threads(1)
    assert run_cli(capsys, *COMPRESS, "--out", tmp_path / "full")[0] == 0
    out = tmp_path / "killed"
    with killed_after_saves(monkeypatch, 2), pytest.raises(Killed):
        run_cli(capsys, *COMPRESS, "--out", out)
    checkpoint = out / ckpt.CHECKPOINT_FILE
    _as_an_earlier_version_wrote_it(checkpoint)
    saved = checkpoint.read_bytes()
    code, _, err = run_cli(capsys, *COMPRESS, "--resume", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "SwitchedNetwork" in err and f"resume with {ckpt.TRUST_ENV}={checkpoint}" in err
    assert checkpoint.read_bytes() == saved
    monkeypatch.setenv(ckpt.TRUST_ENV, str(checkpoint))
    code, _, err = run_cli(capsys, *COMPRESS, "--resume", "--out", out)
    assert code == 0, err
    assert f"{checkpoint}: read by full unpickling, as {ckpt.TRUST_ENV} names it" in err
    assert _result(out) == _result(tmp_path / "full")


def test_a_damaged_checkpoint_is_called_unreadable_not_one_holding_objects(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as refused:
        ckpt.load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: cannot read the checkpoint (") and "Unsupported operand" in message
    assert "\n" not in message and "weights_only" not in message  # torch's advice to unpickle it in full left out
