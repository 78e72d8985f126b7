"""Checkpoints of a compression run, so that a killed run continues where it stopped.

A run has stages (the dense baseline, then the compression); each saves what its loop needs to
continue after every epoch. All stages live in one file, written atomically, together with the
settings of the run: a checkpoint continues only the run it was written by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naslib_bayes.errors import UserError
from naslib_bayes.training import checkpoint as ckpt

FORMAT = "naslib-bayes compression"


class StageCheckpoint:
    """The checkpoint file of one run: ``get(stage)`` the saved state, ``put(stage, state)`` saves.

    Args:
        path: the checkpoint file.
        run: the settings that define the run (JSON-like), keyed by the names a user set them
            with (e.g. command-line options); a resumed checkpoint must match them.
        resume: load ``path`` (it must exist and be of this run); otherwise start empty.

    ``clock`` counts the run's wall time over its processes (each save records it): since the
    checkpoint was made, plus what a resumed checkpoint had recorded.
    """

    def __init__(self, path: str | Path, run: dict[str, Any], resume: bool = False):
        self.path = Path(path)
        self.run = run
        self.stages: dict[str, dict[str, Any]] = {}
        self.clock = ckpt.RunClock()
        if resume:
            self._load()

    def _load(self) -> None:
        if not self.path.exists():
            raise UserError(f"--resume: no checkpoint {self.path}")
        state = ckpt.load_run_checkpoint(self.path, FORMAT, "compression", self.run)
        self.stages = state["stages"]
        self.clock.earlier_s = float(state.get("wall_s", 0.0))  # older checkpoints did not record it

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.stages.get(stage)

    def put(self, stage: str, state: dict[str, Any]) -> None:
        self.stages[stage] = state
        ckpt.save(self.path, {"format": FORMAT, "run": self.run, "stages": self.stages, "wall_s": self.clock.total_s()})

