"""Killing a run right after one of its checkpoints, and counting the epochs a resumed run trains."""

from __future__ import annotations

import contextlib

from naslib_bayes.compression import compressor
from naslib_bayes.compression.resume import StageCheckpoint


class Killed(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


@contextlib.contextmanager
def killed_after_saves(monkeypatch, saves: int):
    """Within the block, every StageCheckpoint dies (raises :class:`Killed`) after ``saves`` saves in all."""
    original_put, left = StageCheckpoint.put, {"saves": saves}

    def put_then_die(self, stage, state):
        original_put(self, stage, state)
        left["saves"] -= 1
        if left["saves"] == 0:
            raise Killed

    monkeypatch.setattr(StageCheckpoint, "put", put_then_die)
    try:
        yield
    finally:
        monkeypatch.setattr(StageCheckpoint, "put", original_put)


def count_epochs(monkeypatch) -> dict:
    """Counts the training epochs run from now on (dense baseline and compression): ``["trained"]``."""
    count, train_epoch = {"trained": 0}, compressor._train_epoch

    def counted(*args, **kwargs):
        count["trained"] += 1
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(compressor, "_train_epoch", counted)
    return count


def mnist_elsewhere(mnist_dir, tmp_path) -> tuple:
    """(a copy of ``mnist_dir``'s files in another folder, a folder of other MNIST data: the same
    test files with training files beside them, which the loader then trains on)."""
    import shutil

    moved, other = tmp_path / "moved-mnist", tmp_path / "other-mnist"
    for folder in (moved, other):
        folder.mkdir()
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            shutil.copyfile(mnist_dir / name, folder / name)
    for name in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        shutil.copyfile(mnist_dir / f"t10k-{name}", other / f"train-{name}")
    return moved, other
