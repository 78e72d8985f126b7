"""Atomic checkpoint files: a reader sees the previous checkpoint or the new one, never a torn one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from naslib_bayes.errors import UserError, cause
from naslib_bayes.results import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"


def save(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename."""
    return atomic_write(path, lambda handle: torch.save(state, handle), binary=True)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` (our own files: full unpickling is allowed)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign files fail in many ways (pickle, zip, EOF, ...)
        raise UserError(f"{path}: cannot read the checkpoint ({cause(exc)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint (holds a {type(state).__name__})")
    return state


def random_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A loop's generator and torch's global generator (dropout draws from it), for a checkpoint."""
    return {"generator": generator.get_state(), "torch": torch.get_rng_state()}


def restore_random_state(generator: torch.Generator, state: dict[str, torch.Tensor]) -> None:
    """Put back what :func:`random_state` saved."""
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
