"""Checkpoint files and what makes them safe to continue from.

Files are written atomically: a reader sees the previous checkpoint or the new one, never a torn
one. Each records its format and the settings of the run that wrote it
(:func:`load_run_checkpoint`): a checkpoint continues only a run of the same kind and settings.

A checkpoint holds tensors and plain values only and is read with ``weights_only=True``: reading
one never runs code from the file. One holding other Python objects (a checkpoint of an earlier
version, or a file made to run code) is refused, unless the environment variable
:data:`TRUST_ENV` names it: then it is read by full unpickling, after a line saying so.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from naslib_bayes.errors import UserError, cause
from naslib_bayes.results import atomic_write, retire_result

CHECKPOINT_FILE = "checkpoint.pt"
#: The environment variable naming checkpoints (``os.pathsep``-separated) trusted to be unpickled in full.
TRUST_ENV = "NASLIB_BAYES_TRUST_CHECKPOINT"

logger = logging.getLogger(__name__)


def save(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then an atomic rename; then the
    folder's ``result.json`` goes (:func:`~naslib_bayes.results.retire_result`).

    The checkpoint has replaced the one of the run that result describes (a finished run
    started over with ``--overwrite``): killed later, the folder would hold that result beside
    another run's checkpoint (train's naming it as its weights), and be taken for finished
    rather than resumable. Only once the new checkpoint is whole: a write that fails (a full
    disk) leaves the finished run as it was.
    """
    path = atomic_write(path, lambda handle: torch.save(state, handle), binary=True)
    retire_result(path.parent)
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` with ``weights_only=True``; one that holds other
    Python objects only when :data:`TRUST_ENV` names it (:func:`_load_trusted`)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        state = _load_trusted(path, exc)
    except Exception as exc:  # truncated or foreign files fail in many ways (pickle, zip, EOF, ...)
        raise UserError(f"{path}: cannot read the checkpoint ({cause(exc)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint (holds a {type(state).__name__})")
    return state


def _load_trusted(path: Path, refusal: pickle.UnpicklingError) -> Any:
    """``path`` unpickled in full if :data:`TRUST_ENV` names it; otherwise one line saying why it
    is not read and how to go on. Nothing is read before the check: unpickling may run code."""
    held = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(refusal))
    if held is None:  # damaged, or not a pickle at all: no object in it could run code
        raise UserError(f"{path}: cannot read the checkpoint ({_unpickler_reason(refusal)})") from None
    if not _trusted(path):
        raise UserError(f"{path}: the checkpoint holds Python objects ({held[1]}), not "
                        "only tensors and plain values, and reading it could run code from the file; a "
                        "checkpoint of an earlier naslib-bayes does: if you wrote it, resume with "
                        f"{TRUST_ENV}={path}, otherwise start anew") from None
    logger.warning("%s: read by full unpickling, as %s names it; the run's next checkpoint holds tensors "
                   "and plain values only", path, TRUST_ENV)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{path}: cannot read the checkpoint ({cause(exc)})") from None


def _unpickler_reason(refusal: pickle.UnpicklingError) -> str:
    """torch's reason for refusing a file, without its advice on loading the file in full."""
    _, found, reason = str(refusal).partition("WeightsUnpickler error:")
    return reason.strip().splitlines()[0] if found and reason.strip() else cause(refusal)


def _trusted(path: Path) -> bool:
    """Whether :data:`TRUST_ENV` names ``path``."""
    named = [entry for entry in os.environ.get(TRUST_ENV, "").split(os.pathsep) if entry]
    return any(Path(entry).resolve() == path.resolve() for entry in named)


def check_format(path: str | os.PathLike, state: dict[str, Any], file_format: str, what: str) -> None:
    """Unless ``state`` (read from ``path``) is of ``file_format``: "PATH: not a WHAT checkpoint"."""
    if state.get("format") != file_format:
        raise UserError(f"{path}: not a {what} checkpoint")


def check_same_run(path: str | os.PathLike, saved_run: Any, current_run: dict[str, Any]) -> None:
    """A :class:`UserError` unless the run a checkpoint was written by had the current settings.

    Both runs map setting names (as a user set them, e.g. ``--seed``) to values; every name whose
    values differ is named with both values, in sorted order (one option may set several, as
    BayesNAS's ``--lambda`` sets ``lambda_origin`` and ``lambda_child``: naming only the first
    would name one the user never typed). A checkpoint without its run's settings (written by an
    older version) cannot be checked and is refused too.
    """
    if not isinstance(saved_run, dict):
        raise UserError(f"{path}: the checkpoint does not record the settings of its run (an older file); "
                        "start anew")
    differing = [f"{key} {_setting_text(saved_run, key, 'none recorded')}, "
                 f"not {_setting_text(current_run, key, 'not set')}"
                 for key in sorted(set(saved_run) | set(current_run)) if saved_run.get(key) != current_run.get(key)]
    if not differing:
        return
    unrecorded = sorted(set(current_run) - set(saved_run))
    advice = (f"it was written before runs recorded {', '.join(unrecorded)}, so no settings resume it: start anew"
              if unrecorded else "resume with the same settings or start anew")
    raise UserError(f"{path}: the checkpoint is of a run with {'; '.join(differing)}; {advice}")


def _setting_text(run: dict[str, Any], key: str, missing: str) -> str:
    """A setting's value as a message shows it; ``(missing)`` where the run has no such setting (a
    checkpoint older than the setting, say), rather than a ``None`` the user never gave."""
    return repr(run[key]) if key in run else f"({missing})"


#: The run settings' key of the contents of the data files a run reads (see :func:`data_setting`).
DATA_KEY = "--data-root contents"


def data_setting(dataset: str, root: str | os.PathLike | None) -> dict[str, str]:
    """``{DATA_KEY: "sha256:..."}`` of the files a run of ``dataset`` reads from ``root`` (nothing
    for digits, which reads none), for its run settings.

    ``--data-root`` may change between a run and its resume (the files may have moved), but not
    the data: other files (MNIST with training files beside the test files, say) would train the
    rest of the run on other images. The path is not kept; the contents are.
    """
    from naslib_bayes.data.loaders import data_fingerprint

    fingerprint = data_fingerprint(dataset, root)
    return {} if fingerprint is None else {DATA_KEY: f"sha256:{fingerprint[:16]}"}


def load_run_checkpoint(path: str | os.PathLike, file_format: str, what: str, run: dict[str, Any]) -> dict[str, Any]:
    """:func:`load` a checkpoint of ``file_format`` written by a run with the settings ``run``.

    Checks happen before anything is restored: a refused checkpoint is left as it is.
    """
    state = load(path)
    check_format(path, state, file_format, what)
    check_same_run(path, state.get("run"), run)
    return state


#: The run settings' key of torch's CPU thread count (see :func:`thread_setting`).
THREADS_KEY = "--threads"


def thread_setting() -> dict[str, int]:
    """``{THREADS_KEY: n}``, torch's CPU threads now, for a run's settings.

    The count changes the order of float reductions: a run resumed with another would not be
    the run its checkpoint began (nor give the result an uninterrupted run gives).
    """
    return {THREADS_KEY: torch.get_num_threads()}


def environment_settings(dataset: str, root: str | os.PathLike | None) -> dict[str, Any]:
    """What defines a run besides its options, for its run settings: the contents of the data
    files it reads (:func:`data_setting`) and torch's thread count (:func:`thread_setting`)."""
    return {**data_setting(dataset, root), **thread_setting()}


@dataclass
class RunClock:
    """Wall time of a run over the processes it took: ``earlier_s``, what the earlier ones had run
    up to the checkpoint this one resumed (0 for a fresh run), plus this process's since ``started``."""

    earlier_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def total_s(self) -> float:
        return self.earlier_s + time.perf_counter() - self.started


def derived_seed(seed: int, *keys: int) -> int:
    """A seed that is a pure function of ``seed`` and position keys (distinct streams per purpose)."""
    value = int(seed)
    for k in keys:
        value = (value * 1_000_003 + int(k) + 1) % (2**62)
    return value


def generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded with :func:`derived_seed` of ``seed`` and position keys.

    A loop can draw the same batches again at any point (e.g. when resumed).
    """
    return torch.Generator().manual_seed(derived_seed(seed, *keys))


def random_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A loop's generator state, for a checkpoint."""
    return {"generator": generator.get_state()}


def restore_random_state(generator: torch.Generator, state: dict[str, torch.Tensor]) -> None:
    """Put back what :func:`random_state` saved (a saved global state, from older checkpoints, is
    not: no draw of a run comes from the global stream now)."""
    generator.set_state(state["generator"])
