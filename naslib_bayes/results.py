"""The result.json every subcommand writes: construction, atomic writing, schema."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import tempfile
from importlib import metadata, resources
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from naslib_bayes.errors import UserError, cause

SCHEMA_VERSION = "1.0"
RESULT_FILE = "result.json"
#: The file in an output folder that the process writing there holds a lock on.
LOCK_FILE = ".naslib-bayes.lock"
_COMMON_KEYS = (
    "schema_version", "command", "optimizer", "search_space", "dataset", "seed", "budget",
    "search_metric", "report_metric", "final_architecture", "final_architecture_op_indices",
    "benchmark_accuracy", "trajectory", "wall_time_s", "config", "versions",
)


#: Key in ``versions`` of the fingerprint of naslib-bayes's own sources (see :func:`source_fingerprint`).
SOURCE_KEY = "naslib_bayes_source"


def versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on (None for those not installed), and the
    fingerprint of naslib-bayes's sources: its version number does not change with every edit."""
    found: dict[str, str | None] = {"python": platform.python_version(), SOURCE_KEY: source_fingerprint()}
    for dist, key in (("naslib-bayes", "naslib_bayes"), ("torch", "torch"), ("numpy", "numpy"),
                      ("gpytorch", "gpytorch"), ("torch-geometric", "torch_geometric")):
        try:
            found[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[key] = None
    return found


def source_fingerprint(*extra_files: Path) -> str:
    """A hash of this package's Python sources (12 hex digits): changes whenever its code does.

    The package version stays the same between releases, so a cache of results keyed on settings
    alone would hand back numbers computed by older code; keying it on this too does not.
    ``extra_files``: other code the cached results depend on (a benchmark script's own logic).
    """
    import hashlib

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for path in extra_files:
        digest.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def torch_threads() -> int:
    """torch's CPU threads now: the count changes the order of float sums, and so the last digits
    of what a network's training computes (recorded by the commands that train one)."""
    import torch

    return torch.get_num_threads()


def new_result(command: str, **fields: Any) -> dict[str, Any]:
    """A result dict with every common key (None where a command has no value) plus ``fields``."""
    result: dict[str, Any] = {key: None for key in _COMMON_KEYS}
    result.update(schema_version=SCHEMA_VERSION, command=command, config={}, wall_time_s=0.0, versions=versions())
    result.update(fields)
    return result


def check_folder(folder: Path, what: str) -> None:
    """A one-line error naming ``folder`` when it cannot be one: a file in the way, or a name the file
    system refuses (``exists()`` raises for a name longer than it allows)."""
    try:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{what} {folder} is a file, not a directory")
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot create the folder ({cause(exc)})") from None


def make_folder(folder: Path, what: str) -> None:
    """``mkdir -p`` whose failure (a file in the way, no permission) is a one-line error naming the folder."""
    check_folder(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot create the folder ({cause(exc)})") from None


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place, so that
    readers see the old file or the whole new one, never a torn one.

    The file gets the permissions of one opened normally (``0o666`` less the umask), not the
    owner-only mode of a temporary file, so results stay readable to a user's group. A file the
    system cannot write (a full disk, a read-only folder) is a :class:`UserError` naming it.
    """
    path = Path(path)
    try:
        _replace_atomically(path, write, binary)
    except Exception as exc:
        failure = _system_error(exc)
        if failure is None:
            raise
        raise UserError(f"{path}: cannot write the file ({cause(failure)})") from None
    return path


def retire_result(folder: str | os.PathLike) -> None:
    """Delete ``folder``'s result.json before a command writes the other files its new result will
    describe (a model, a surrogate): an ``--overwrite`` stopped between those writes would otherwise
    leave the old result beside the new files, describing what they replaced."""
    Path(folder, RESULT_FILE).unlink(missing_ok=True)


#: :func:`atomic_write`'s temporaries: ``.NAME.`` + mkstemp's 8 random characters + ``.tmp``; a
#: user's own hidden file of the same outline (``.notes.v2.tmp``) is not one of them.
_KILLED_WRITE = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_killed_writes(folder: str | os.PathLike) -> None:
    """Delete the temporaries (``.NAME.<random>.tmp``) that :func:`atomic_write` calls killed before
    their rename left in ``folder``; the files they were to replace are whole. Call it only where
    no write to ``folder`` is under way: a run starting in its own folder, held by :func:`exclusive_use`."""
    for stale in Path(folder).glob(".*.*.tmp"):
        if stale.is_file() and _KILLED_WRITE.fullmatch(stale.name):
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_use(folder: str | os.PathLike, what: str = "--out"):
    """Make ``folder`` (:func:`make_folder`) and hold it for this process while the block runs; a
    second process asking for it meanwhile gets a :class:`UserError` naming the folder and the
    process that holds it.

    Two runs in one folder (a job submitted again while it still runs, ``--resume`` of a run
    that is not dead) would interleave their checkpoints and results, and each would delete
    the other's half-written files as a killed run's leftovers. The lock is an advisory
    ``flock`` on :data:`LOCK_FILE`: the system drops it when the process ends, killed or not,
    so no stale lock outlives a run. Where there is no ``flock`` (Windows, some network file
    systems) the folder is used unlocked, as before.
    """
    make_folder(Path(folder), what)
    path = Path(folder, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(f"{what} {folder}: cannot write the folder ({cause(exc)})") from None
    try:
        _lock_or_refuse(fd, folder, what)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_or_refuse(fd: int, folder: str | os.PathLike, what: str) -> None:
    try:
        import fcntl
    except ImportError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise UserError(f"{what} {folder} is in use by another naslib-bayes process (pid {holder}); "
                        f"wait for it to end or choose another {what}") from None
    except OSError:
        return  # a file system without locks
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _system_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``, if any: torch.save reports a full disk as a RuntimeError of its
    own, raised while handling the OSError of the failed write."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _replace_atomically(path: Path, write: Callable[[IO], None], binary: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (see :func:`atomic_write`)."""

    def write(handle) -> None:
        json.dump(obj, handle, indent=2, allow_nan=False)
        handle.write("\n")

    return atomic_write(path, write)


def read_json_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object written by :func:`atomic_write_json`, or None when it is absent or unreadable
    (torn by a kill or a full disk in a version that wrote in place): a cache's caller makes it again."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_result(out_dir: str | os.PathLike, result: Mapping[str, Any]) -> Path:
    """Write ``out_dir/result.json`` atomically and return its path."""
    return atomic_write_json(Path(out_dir) / RESULT_FILE, dict(result))


def load_schema() -> dict[str, Any]:
    """The JSON schema shipped with the package."""
    text = resources.files("naslib_bayes").joinpath("schemas/result.schema.json").read_text()
    return json.loads(text)
