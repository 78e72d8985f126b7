"""Loaders for real image datasets, each returning seeded, normalised :class:`DataSplits`.

Every loader takes a ``seed``; all random splitting goes through one ``torch.Generator``
seeded with it, so the same seed gives the same split and the global RNG is left alone.
``stats`` (optional) fixes the normalisation ``(mean, std)`` per channel on the [0, 1]
pixel scale; by default they are computed from the training split only.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from naslib_bayes.data.dataset import DataSplits, RawPart, build_splits, carve_validation, make_generator, partition
from naslib_bayes.data.formats import find_file, pickle_field, read_bytes, read_idx, read_pickle_dict
from naslib_bayes.errors import UserError
from naslib_bayes.optimizers.hyperparameters import whole_number

StatsArg = Sequence[Sequence[float]] | None


def _existing_dir(root: str | os.PathLike, dataset: str) -> Path:
    path = Path(root).expanduser()
    if path.is_file():  # e.g. the downloaded archive: it exists, "does not exist" would mislead
        raise UserError(f"{path}: is a file, not the folder holding {dataset}'s files (--data-root, root= from Python)")
    if not path.is_dir():
        raise UserError(f"{path}: data folder for {dataset} does not exist")
    return path


def _subfolder(root: Path, names: Sequence[str], markers: Sequence[str]) -> Path:
    """``root`` or the ``root/name`` holding one of the files ``markers``; two of them holding one is
    a :class:`UserError`, since which copy (a full set or a partial one) is read, or which part of a
    set split over two folders, must not be a guess."""
    found = [find_file(folder, tuple(markers)) for folder in [root, *(root / name for name in names)]]
    found = list({path.parent.resolve(): path for path in found if path is not None}.values())  # mnist -> .: one
    if not found:
        raise UserError(f"{root}: no {' or '.join(markers)} here or in {', '.join(names)}/")
    if len(found) > 1:
        raise UserError(f"{found[0]} and {found[1]}: the dataset's files are in two folders (two copies, or one "
                        "set split between them); keep one full set in one folder and name it")
    return found[0].parent


# ---------------------------------------------------------------------------- digits


def load_digits(
    seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2, stats: StatsArg = None
) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1797 images, 1 channel, 10 classes; no download).

    Pixel values 0..16 are scaled to [0, 1]. The test part is drawn first, then validation,
    so the test images depend only on ``seed`` and ``test_fraction``. A fraction of 0 leaves
    that split out (None).
    """
    from sklearn.datasets import load_digits as sklearn_digits  # slow import: only when used

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: need each >= 0, sum < 1")
    bunch = sklearn_digits()
    pool = RawPart.whole(torch.from_numpy(bunch.images).unsqueeze(1), torch.from_numpy(bunch.target))
    n = len(pool.labels)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    test, val, train = partition(n, [n_test, n_val, n - n_test - n_val], make_generator(seed))
    parts = {"train": pool.select(train), "val": pool.select(val) if n_val else None}
    parts["test"] = pool.select(test) if n_test else None
    return build_splits("digits", parts, num_classes=10, max_value=16.0, stats=stats)


# ---------------------------------------------------------------------------- MNIST


def _idx_names(stem: str) -> tuple[str, ...]:
    # Official names use "-idx3-ubyte"; some mirrors write ".idx3-ubyte". Either may be gzipped.
    dotted = stem.replace("-idx", ".idx")
    return (stem + ".gz", stem, dotted + ".gz", dotted)


def _one_idx_copy(folder: Path, stem: str) -> Path | None:
    """The file of ``stem`` in ``folder`` (the first of :func:`_idx_names`), or None. Copies under
    other names (a .gz beside its unpacked file, as torchvision leaves them) must hold the same
    array: otherwise which one a run reads would be a silent guess."""
    copies = [folder / name for name in _idx_names(stem) if (folder / name).is_file()]
    content = read_bytes(copies[0]) if len(copies) > 1 else None
    for other in copies[1:]:
        if read_bytes(other) != content:
            raise UserError(f"{copies[0]} and {other}: two different copies of one file; remove the one not to read")
    return copies[0] if copies else None


def _read_mnist_pair(folder: Path, prefix: str) -> RawPart | None:
    """Images and labels of ``prefix`` (``train`` or ``t10k``); None when both files are absent, a
    :class:`UserError` naming the missing one when only one is there (a lost train-images file
    must not switch the run to the t10k-only split in silence)."""
    images_path = _one_idx_copy(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _one_idx_copy(folder, f"{prefix}-labels-idx1-ubyte")
    if images_path is None and labels_path is None:
        return None
    if images_path is None:
        raise UserError(f"{folder}: has {labels_path.name} but no {prefix}-images-idx3-ubyte[.gz]")
    if labels_path is None:
        raise UserError(f"{folder}: has {images_path.name} but no {prefix}-labels-idx1-ubyte[.gz]")
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8:  # pixels are scaled as 0..255: floats in 0..1 would be darkened silently
        raise UserError(f"{images_path}: pixels of type {images.dtype}, not the unsigned bytes (0..255) of MNIST's images")
    if images.size == 0:  # a header alone: an empty split would train or test on nothing without a word
        raise UserError(f"{images_path}: holds no images (dims {images.shape})")
    if len(images) != len(labels):
        raise UserError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):  # 2.7 must not become 2
        raise UserError(f"{labels_path}: labels are not whole numbers (e.g. {labels[labels != np.round(labels)][0]})")
    if labels.size and not 0 <= labels.min() <= labels.max() <= 9:
        raise UserError(f"{labels_path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    return RawPart.whole(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))


def load_mnist(
    root: str | os.PathLike,
    seed: int = 0,
    val_size: int = 0,
    t10k_split: tuple[int, int] = (8000, 2000),
    stats: StatsArg = None,
) -> DataSplits:
    """MNIST from its IDX files (``train-*``/``t10k-*``, gzipped or not) in ``root``.

    With the training files present, train is the 60,000 training images (minus ``val_size``
    for validation) and test is the t10k set. With only the t10k files, those images are split
    at random into ``t10k_split = (train, test)`` sizes, by default 8,000 / 2,000 of the 10,000;
    the validation part, if ``val_size`` > 0, is then carved from the train part. The training
    files without the t10k ones are a :class:`UserError`: the test images are never guessed.
    ``root`` may also be a folder holding ``mnist/`` or ``MNIST/raw/``.
    """
    folder = mnist_folder(root)
    test = _read_mnist_pair(folder, "t10k")
    generator = make_generator(seed)
    train = _read_mnist_pair(folder, "train")
    if test is None:
        raise UserError(f"{folder}: has {find_file(folder, _idx_names('train-images-idx3-ubyte')).name} but no "
                        "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], the test images")
    if train is None:
        train_size, test_size = _two_sizes(t10k_split, "t10k_split")
        # Test drawn first: the held-out images depend only on seed and test size.
        sizes = [test_size, train_size]
        # Named by the file: the commands' users never set t10k_split, the file's size is what is wrong.
        what = f"{find_file(folder, _idx_names('t10k-images-idx3-ubyte'))}: t10k_split={t10k_split}"
        test_rows, train_rows = partition(len(test.labels), sizes, generator, what)
        train, test = test.select(train_rows), test.select(test_rows)
    else:
        _check_same_image_size(folder, train, test)
    train, val = carve_validation(train, val_size, generator)
    return build_splits("mnist", {"train": train, "val": val, "test": test}, 10, 255.0, stats)


def mnist_folder(root: str | os.PathLike) -> Path:
    """The folder :func:`load_mnist` reads: ``root``, ``root/mnist`` or ``root/MNIST/raw``, the one
    holding the t10k or the training images (a :class:`UserError` naming ``root`` when none do, and
    both files when two do: training images beside a subfolder of test images were left unread)."""
    markers = _idx_names("t10k-images-idx3-ubyte") + _idx_names("train-images-idx3-ubyte")
    return _subfolder(_existing_dir(root, "mnist"), ["mnist", "MNIST/raw"], markers)


def mnist_files(root: str | os.PathLike) -> list[Path]:
    """The IDX files :func:`load_mnist` reads from ``root``, by the names it looks for."""
    folder = mnist_folder(root)
    stems = [f"{split}-{kind}" for split in ("t10k", "train") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    return [path for path in (find_file(folder, _idx_names(stem)) for stem in stems) if path is not None]


def _check_same_image_size(folder: Path, train: RawPart, test: RawPart) -> None:
    """Refuse t10k images of another size than the training images: files of two datasets."""
    (height, width), (test_height, test_width) = train.pixels.shape[-2:], test.pixels.shape[-2:]
    if (height, width) != (test_height, test_width):
        test_path = find_file(folder, _idx_names("t10k-images-idx3-ubyte"))
        train_name = find_file(folder, _idx_names("train-images-idx3-ubyte")).name
        raise UserError(f"{test_path}: images are {test_height}x{test_width}, those of {train_name} "
                        f"{height}x{width}: the two files come from different datasets")


def _two_sizes(value, option: str) -> tuple[int, int]:
    try:
        first, second = value
    except (TypeError, ValueError):
        raise UserError(f"{option}={value!r} must be two image counts, e.g. (8000, 2000)") from None
    return whole_number(option, first), whole_number(option, second)  # int() made 7000.5 into 7000


# ---------------------------------------------------------------------------- pickled RGB sets


def _read_rgb_pickle(path: Path, label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``data`` as uint8 (N, 3, side, side) and ``label_key`` as int64 (N,) from one pickle.

    Each row of ``data`` stores the red plane, then green, then blue, each row-major.
    """
    content = read_pickle_dict(path)
    # Fields looked up outside the try blocks: a missing one is its own error, not "not an array".
    data_field, label_field = pickle_field(content, "data", path), pickle_field(content, label_key, path)
    try:
        data = np.asarray(data_field)
    except (TypeError, ValueError) as exc:  # e.g. rows of different lengths
        raise UserError(f"{path}: field 'data' is not an array of images ({exc})") from None
    try:
        raw = np.asarray(label_field).reshape(-1)
        with np.errstate(invalid="ignore"):  # NaN or 1e30: refused just below, without numpy's warning
            labels = raw.astype(np.int64)
        if not np.array_equal(labels, raw):  # 2.7 must not become 2, nor a uint64 2**63 wrap to -2**63
            raise ValueError("a label is not an integer of int64's range")
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: a Python int past int64
        raise UserError(f"{path}: field {label_key!r} is not a list of integer labels ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * side * side or data.dtype != np.uint8:
        raise UserError(f"{path}: field 'data' must be uint8 (N, {3 * side * side}), got {data.dtype} {data.shape}")
    if len(labels) != len(data):
        raise UserError(f"{path}: field {label_key!r} has {len(labels)} labels for {len(data)} images")
    if len(data) == 0:  # never so in a release: an empty split would train or test on nothing without a word
        raise UserError(f"{path}: field 'data' holds no images")
    return data.reshape(-1, 3, side, side), labels


def _check_labels(labels: np.ndarray, low: int, high: int, path: Path, key: str) -> None:
    if labels.size and not low <= labels.min() <= labels.max() <= high:
        raise UserError(f"{path}: field {key!r} must lie in {low}..{high}, found {labels.min()}..{labels.max()}")


def _read_cifar(folder: Path, names: Sequence[str], label_key: str, num_classes: int) -> RawPart:
    arrays, label_arrays = [], []
    for name in names:
        data, labels = _read_rgb_pickle(folder / name, label_key, side=32)
        _check_labels(labels, 0, num_classes - 1, folder / name, label_key)
        arrays.append(data)
        label_arrays.append(labels)
    return RawPart.whole(torch.from_numpy(np.concatenate(arrays)), torch.from_numpy(np.concatenate(label_arrays)))


class _PickledFiles(NamedTuple):
    """Where a pickled dataset's files lie: ``root`` or one of ``subfolders``, by its test file."""

    subfolders: tuple[str, ...]
    train: tuple[str, ...]
    test: str
    #: The release's binary version, which is not read: its folder, its test file, the python release.
    binary: tuple[str, str, str] | None = None


_PICKLED = {
    "cifar10": _PickledFiles(("cifar-10-batches-py",), tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                             ("cifar-10-batches-bin", "test_batch.bin", "cifar-10-python.tar.gz")),
    "cifar100": _PickledFiles(("cifar-100-python",), ("train",), "test",
                              ("cifar-100-binary", "test.bin", "cifar-100-python.tar.gz")),
    "ImageNet16-120": _PickledFiles(("ImageNet16", "ImageNet16-120"),
                                    tuple(f"train_data_batch_{i}" for i in range(1, 11)), "val_data"),
}


def _pickled_folder(root, name: str) -> Path:
    """The folder the loader of pickled dataset ``name`` reads (a :class:`UserError` naming ``root``
    when none or two hold its test file)."""
    files, root = _PICKLED[name], _existing_dir(root, name)
    if not any((folder / files.test).is_file() for folder in [root, *(root / sub for sub in files.subfolders)]):
        _refuse_binary_version(root, name, files.binary)
    return _subfolder(root, list(files.subfolders), [files.test])


def _refuse_binary_version(root: Path, name: str, binary: tuple[str, str, str] | None) -> None:
    """A :class:`UserError` naming the binary version's test file when ``root`` holds that version:
    "no test_batch here" would not tell its user that the files are there, in the other version."""
    if binary is None:
        return
    subfolder, test_file, release = binary
    for folder in (root, root / subfolder):
        if (folder / test_file).is_file():
            raise UserError(f"{folder / test_file}: the binary version of {name}, which is not read; "
                            f"give the folder of the python version ({release})")


def _load_cifar(root, seed, val_size, stats, *, name, label_key, num_classes):
    folder, files = _pickled_folder(root, name), _PICKLED[name]
    train = _read_cifar(folder, files.train, label_key, num_classes)
    test = _read_cifar(folder, [files.test], label_key, num_classes)
    train, val = carve_validation(train, val_size, make_generator(seed))
    return build_splits(name, {"train": train, "val": val, "test": test}, num_classes, 255.0, stats)


def load_cifar10(root: str | os.PathLike, seed: int = 0, val_size: int = 0, stats: StatsArg = None) -> DataSplits:
    """CIFAR-10 from the official python pickles (``data_batch_1..5``, ``test_batch``).

    ``root`` is the ``cifar-10-batches-py`` folder or its parent. Train: 50,000 images minus
    ``val_size`` carved off at random for validation; test: the 10,000 test images.
    """
    return _load_cifar(root, seed, val_size, stats, name="cifar10", label_key="labels", num_classes=10)


def load_cifar100(root: str | os.PathLike, seed: int = 0, val_size: int = 0, stats: StatsArg = None) -> DataSplits:
    """CIFAR-100 (fine labels) from the official python pickles (``train``, ``test``).

    ``root`` is the ``cifar-100-python`` folder or its parent; splits as for CIFAR-10.
    """
    return _load_cifar(root, seed, val_size, stats, name="cifar100", label_key="fine_labels", num_classes=100)


def _read_imagenet16(folder: Path, names: Sequence[str], num_classes: int = 120) -> RawPart:
    """Images whose 1-based label is in 1..num_classes, labels shifted to 0-based.

    Filtering happens file by file so the other ~880 classes never sit in memory together.
    ``indices`` are rows in the concatenated files before filtering.
    """
    arrays, label_arrays, index_arrays, offset = [], [], [], 0
    for name in names:
        data, labels = _read_rgb_pickle(folder / name, "labels", side=16)
        _check_labels(labels, 1, 1000, folder / name, "labels")
        keep = np.flatnonzero(labels <= num_classes)
        arrays.append(data[keep])
        label_arrays.append(labels[keep] - 1)
        index_arrays.append(keep + offset)
        offset += len(labels)
    if not sum(len(kept) for kept in index_arrays):  # an empty split would train or test on nothing
        files = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        raise UserError(f"{folder / files}: no image of the {num_classes} classes (labels 1..{num_classes})")
    pixels, labels, indices = (torch.from_numpy(np.concatenate(a)) for a in (arrays, label_arrays, index_arrays))
    return RawPart(pixels, labels, indices.to(torch.int64))


def load_imagenet16(root: str | os.PathLike, seed: int = 0, val_size: int = 0, stats: StatsArg = None) -> DataSplits:
    """ImageNet16-120 as used by NAS-Bench-201: the 16x16 downsampled ImageNet pickles.

    Reads ``train_data_batch_1..10`` (train) and ``val_data`` (test) from ``root`` or
    ``root/ImageNet16``; each holds ``data`` uint8 (N, 768) and 1-based ``labels`` over 1000
    classes. Only labels 1..120 are kept, shifted to 0..119.
    """
    name = "ImageNet16-120"
    folder, files = _pickled_folder(root, name), _PICKLED[name]
    train = _read_imagenet16(folder, files.train)
    test = _read_imagenet16(folder, [files.test])
    train, val = carve_validation(train, val_size, make_generator(seed))
    return build_splits(name, {"train": train, "val": val, "test": test}, 120, 255.0, stats)


# ---------------------------------------------------------------------------- dispatch

_LOADERS = {
    "digits": load_digits,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "ImageNet16-120": load_imagenet16,
}
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)
_ALIASES = {
    "digits": "digits",
    "sklearn-digits": "digits",
    "mnist": "mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar100": "cifar100",
    "cifar-100": "cifar100",
    "imagenet16-120": "ImageNet16-120",
    "imagenet16": "ImageNet16-120",
    "imagenet-16-120": "ImageNet16-120",
}


def canonical_name(name: str) -> str:
    """Canonical dataset name (case-insensitive, ``_`` read as ``-``), or :class:`UserError`."""
    canonical = _ALIASES.get(str(name).strip().lower().replace("_", "-"))
    if canonical is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return canonical


def load_dataset(name: str, root: str | os.PathLike | None = None, seed: int = 0, **options) -> DataSplits:
    """Load dataset ``name`` from ``root`` with a seeded split; ``options`` go to its loader.

    ``digits`` ships with scikit-learn and refuses a ``root`` (see :func:`require_root`); the
    others need it. Unknown
    names and options are a :class:`UserError` naming them.
    """
    canonical = canonical_name(name)
    loader = _LOADERS[canonical]
    accepted = set(inspect.signature(loader).parameters) - {"root", "seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(f"dataset {canonical}: unknown option(s) {unknown}; accepted: {sorted(accepted)}")
    require_root(canonical, root)
    if canonical == "digits":
        return loader(seed=seed, **options)
    return loader(root, seed=seed, **options)


def require_root(name: str, root: str | os.PathLike | None) -> None:
    """A :class:`UserError` when dataset ``name`` (canonical) is read from files and ``root`` names
    none, or is scikit-learn's digits, which reads no files, and ``root`` names one (a run would
    record a folder it never read)."""
    if name != "digits" and root is None:
        raise UserError(f"dataset {name} needs the folder holding its files: --data-root DIR (root= from Python)")
    if name == "digits" and root is not None:
        raise UserError(f"--data-root {root}: dataset digits comes with scikit-learn and reads no folder; "
                        "leave it out (root= from Python)")


# ---------------------------------------------------------------------------- what a loader reads


def dataset_files(name: str, root: str | os.PathLike | None) -> list[Path]:
    """The files :func:`load_dataset` reads for dataset ``name`` from ``root``, by the names it
    looks for (digits, bundled with scikit-learn: none); a missing one is a :class:`UserError`."""
    canonical = canonical_name(name)
    require_root(canonical, root)
    if canonical == "digits":
        return []
    if canonical == "mnist":
        return mnist_files(root)
    folder, files = _pickled_folder(root, canonical), _PICKLED[canonical]
    paths = [folder / file for file in (*files.train, files.test)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: missing; {canonical} reads {', '.join(p.name for p in paths)} in {folder}")
    return paths


def files_fingerprint(paths: Sequence[Path]) -> str:
    """SHA-256 of files' names and bytes, in name order: their contents, wherever they lie."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda path: path.name):
        digest.update(path.name.encode() + b"\0")
        try:
            with open(path, "rb") as handle:  # in chunks: CIFAR-10's files are 170 MB
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest()


#: Fingerprints already taken in this process, by the files' identities (:func:`_file_identity`).
_FINGERPRINTS: dict[tuple, str] = {}


def data_fingerprint(name: str, root: str | os.PathLike | None) -> str | None:
    """SHA-256 of the files :func:`load_dataset` reads for ``name`` from ``root`` (None for digits,
    which reads none): other images, labels or added training files are another fingerprint.

    Taken once per process for files unchanged since: a one-shot comparison hashes them before its
    searches, and each search's checkpoint settings would otherwise read CIFAR-10's 170 MB again.
    """
    paths = dataset_files(name, root)
    if not paths:
        return None
    key = tuple(_file_identity(path) for path in paths)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = files_fingerprint(paths)
    return _FINGERPRINTS[key]


def _file_identity(path: Path) -> tuple:
    """What the fingerprint depends on: the file's name (it is hashed) and what changes when the
    file it reaches is replaced or rewritten (a missing one is hashed, and refused, anew)."""
    try:
        stat = path.stat()
    except OSError:
        return (str(path), None)
    return (path.name, str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
