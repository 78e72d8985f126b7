"""Readers for the on-disk formats of the image datasets: IDX (MNIST) and numpy pickles.

Both readers turn any damage (missing file, wrong magic number, truncation, missing field)
into a :class:`UserError` whose message starts with the offending path.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from naslib_bayes.errors import UserError, cause

# IDX type codes (third byte of the magic number) and the big-endian dtypes they stand for.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The only globals a pickle of plain numpy arrays needs (across numpy 1.x/2.x and pickle
# protocols 2-5). Refusing everything else keeps a tampered pickle from running code.
_SAFE_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


def read_bytes(path: Path) -> bytes:
    """Whole content of ``path``, gunzipped when it starts with the gzip magic bytes."""
    try:
        raw = path.read_bytes()
        # Decide by content, not by suffix: some mirrors ship gunzipped files named *.gz.
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: cannot read it ({cause(exc)})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) holding an array of ``ndim`` dimensions.

    Returns:
        The array, shaped as the header says (e.g. (N, 28, 28) for MNIST images, (N,) for
        labels), in native byte order.
    """
    data = read_bytes(path)
    if len(data) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    dtype = _IDX_DTYPES.get(data[2])
    if data[0] != 0 or data[1] != 0 or dtype is None or data[3] != ndim:
        raise UserError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x0000XX{ndim:02x} with XX a type code)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX file (header cut short)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims) * dtype.itemsize  # exact: np.prod would wrap at 64 bits
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise UserError(f"{path}: IDX file {state}: dims {dims} need {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, dicts, lists and scalars."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_data_pickle(handle, encoding: str = "ASCII") -> object:
    """Unpickle data only (numpy arrays, dicts, lists, scalars): a pickle that would construct
    anything else, i.e. run code, raises :class:`pickle.UnpicklingError` instead."""
    return _ArrayUnpickler(handle, encoding=encoding).load()


def read_pickle_dict(path: Path) -> dict[str, object]:
    """Load a dataset pickle (a dict of arrays/lists) with its keys as ``str``.

    ``latin1`` decoding reads the Python-2 pickles of the official releases; keys written as
    ``bytes`` (``b"data"``) and as ``str`` (``"data"``) both come back as ``str``.
    """
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    # A damaged pickle can fail in many ways; each one means "not a readable file". MemoryError:
    # a damaged length field (a frame's, a bytes object's) asks for exabytes; LookupError (KeyError,
    # IndexError and a damaged codec name of _codecs.encode).
    try:
        with open(path, "rb") as handle:
            content = load_data_pickle(handle, encoding="latin1")
    except (OSError, EOFError, ValueError, TypeError, LookupError, AttributeError, ImportError, MemoryError,
            pickle.UnpicklingError) as exc:
        raise UserError(f"{path}: cannot read it as a dataset pickle ({cause(exc)})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def pickle_field(content: dict[str, object], key: str, path: Path) -> object:
    """``content[key]``, or a :class:`UserError` naming the file and the missing field."""
    if key not in content:
        raise UserError(f"{path}: missing field {key!r} (has {sorted(content)})")
    return content[key]


def find_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    """First of ``names`` present in ``folder``, or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None
