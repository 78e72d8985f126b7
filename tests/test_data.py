"""Tests for naslib_bayes.data: real MNIST, digits, written CIFAR/ImageNet16 pickles, augmentation."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import warnings

import numpy as np
import pytest
import torch

from naslib_bayes.data import (
    Augment,
    ImageDataset,
    batches,
    cutout,
    default_augment,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_imagenet16,
    load_mnist,
    random_crop,
    random_flip,
)
from naslib_bayes.data.formats import read_idx, read_pickle_dict
from naslib_bayes.errors import UserError

# Class counts of the MNIST test set, counted from t10k-labels-idx1-ubyte.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
IDENTITY_RGB = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # fixed stats that leave pixels on [0, 1]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def write_pickle(path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def random_pixels(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)


def as_pixels(dataset: ImageDataset, max_value: float = 255.0) -> torch.Tensor:
    """Undo normalisation: back to the file's integer pixel values, (N, C, H, W)."""
    return (dataset.unnormalize(dataset.images) * max_value).round()


# ---------------------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def mnist_raw(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", ndim=1)
    return images, labels


@pytest.fixture(scope="module")
def mnist_splits(mnist_dir):
    return load_mnist(mnist_dir, seed=0)


def test_mnist_idx_parses_to_the_known_test_set(mnist_raw):
    images, labels = mnist_raw
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == MNIST_TEST_COUNTS


def test_mnist_default_split_is_8000_2000_disjoint_and_complete(mnist_splits):
    train, test = mnist_splits.train, mnist_splits.test
    assert mnist_splits.val is None
    assert train.images.shape == (8000, 1, 28, 28) and test.images.shape == (2000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    both = torch.cat([train.indices, test.indices])
    assert torch.equal(both.sort().values, torch.arange(10000))
    labels = torch.cat([train.labels, test.labels])
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert mnist_splits.describe()["sizes"] == {"train": 8000, "test": 2000}


def test_mnist_images_and_labels_are_the_file_rows(mnist_splits, mnist_raw):
    images, labels = mnist_raw
    test = mnist_splits.test
    assert torch.equal(test.labels, torch.from_numpy(labels[test.indices.numpy()]).long())
    assert torch.equal(as_pixels(test)[:, 0], torch.from_numpy(images[test.indices.numpy()]).float())


def test_mnist_normalised_with_train_statistics(mnist_splits, mnist_raw):
    train = mnist_splits.train
    raw = mnist_raw[0][train.indices.numpy()] / 255.0
    assert train.mean[0] == pytest.approx(raw.mean(), rel=1e-6)
    assert train.std[0] == pytest.approx(raw.std(), rel=1e-6)
    assert mnist_splits.test.mean == train.mean  # test reuses the train statistics
    assert train.images.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert train.images.std().item() == pytest.approx(1.0, abs=1e-3)


def test_mnist_split_depends_on_seed_only(mnist_dir, mnist_splits):
    again = load_mnist(mnist_dir, seed=0)
    other = load_mnist(mnist_dir, seed=1)
    assert torch.equal(again.test.indices, mnist_splits.test.indices)
    assert torch.equal(again.train.images, mnist_splits.train.images)
    assert not torch.equal(other.test.indices, mnist_splits.test.indices)


def test_mnist_validation_is_carved_from_train_and_keeps_test(mnist_dir, mnist_splits):
    splits = load_dataset("MNIST", root=mnist_dir, seed=0, val_size=1000)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7000, 1000, 2000)
    assert torch.equal(splits.test.indices, mnist_splits.test.indices)
    carved = torch.cat([splits.train.indices, splits.val.indices]).sort().values
    assert torch.equal(carved, mnist_splits.train.indices)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_truncated_file_is_a_user_error_naming_it(mnist_dir, tmp_path, gz):
    original = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    # An interrupted download: the gzip stream (or the plain IDX payload) stops half way.
    payload = original if gz else gzip.decompress(original)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    (tmp_path / name).write_bytes(payload[: len(payload) // 2])
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(UserError, match=name):
        load_mnist(tmp_path)


def test_mnist_bad_magic_number_is_a_user_error_naming_the_file(mnist_dir, tmp_path):
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", tmp_path)
    payload = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + payload[4:]))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz.*magic"):
        load_mnist(tmp_path)


def test_idx_header_whose_size_overflows_64_bits_is_a_user_error_naming_the_file(tmp_path):
    # 2**31 * 2**31 * 4 elements: a 64-bit product wraps to 0, which a header-only file would "match"
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 2**31, 2**31, 4))
    with pytest.raises(UserError, match=f"{path}.*truncated.*{2**64 + 16}"):
        read_idx(path, ndim=3)


def test_idx_file_with_bytes_past_its_array_is_a_user_error_naming_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(path, np.arange(5), gz=False)
    assert read_idx(path, ndim=1).tolist() == [0, 1, 2, 3, 4]
    path.write_bytes(path.read_bytes() + b"\x00")  # e.g. two files concatenated, or a wrong header
    with pytest.raises(UserError, match=f"{path}.*trailing bytes.*need 13 bytes, file has 14"):
        read_idx(path, ndim=1)


def test_a_constant_channel_is_left_unscaled_instead_of_divided_by_zero():
    from naslib_bayes.data.dataset import channel_stats

    images = torch.stack([torch.full((2, 2), 0.5), torch.arange(4.0).view(2, 2)]).unsqueeze(0).repeat(3, 1, 1, 1)
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.5, 1.5)) and std == pytest.approx((1.0, 1.25 ** 0.5))


def test_mnist_with_training_files_uses_them(tmp_path):
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (50, 5, 5)), rng.integers(0, 256, (20, 5, 5))
    train_y, test_y = rng.integers(0, 10, 50), rng.integers(0, 10, 20)
    write_idx(tmp_path / "train-images-idx3-ubyte", train_x, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", train_y, gz=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_y)
    splits = load_mnist(tmp_path, seed=3, val_size=10)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 20)
    assert torch.equal(splits.test.labels, torch.from_numpy(test_y))
    assert torch.equal(as_pixels(splits.test)[:, 0], torch.from_numpy(test_x).float())
    for part in (splits.train, splits.val):
        assert torch.equal(part.labels, torch.from_numpy(train_y)[part.indices])
    assert set(splits.train.indices.tolist()).isdisjoint(splits.val.indices.tolist())


def test_mnist_test_images_of_another_size_than_the_training_images_are_named(tmp_path):
    """t10k files of another dataset (e.g. MNIST padded to 32x32): a pooled network would test on them silently."""
    rng = np.random.default_rng(10)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 5, 5)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 12))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 7, 7)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 6))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "t10k-images-idx3-ubyte.gz")) and "7x7" in message and "5x5" in message


def test_mnist_t10k_split_sizes_are_checked(tmp_path):
    rng = np.random.default_rng(1)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 3, 3)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 20))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path)  # the default 8,000 / 2,000 needs 10,000 images
    # the file is named: from the commands, whose users never set t10k_split, it is what is wrong
    assert str(info.value) == (f"{tmp_path / 't10k-images-idx3-ubyte.gz'}: t10k_split=(8000, 2000): "
                               "sizes [2000, 8000] do not fit in 20 images")
    splits = load_mnist(tmp_path, t10k_split=(12, 5), val_size=2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 2, 5)
    # the test part is drawn first: a smaller train part leaves it alone
    assert torch.equal(load_mnist(tmp_path, t10k_split=(8, 5)).test.indices, splits.test.indices)


@pytest.mark.parametrize("values, message", [([1.0, 2.7, 3.0, 0.0], "not whole numbers"), ([1.0, 2.0, 3.0, 0.0], None)])
def test_mnist_float_labels_must_be_whole_numbers(tmp_path, values, message):
    """An IDX labels file may store floats (type 0x0D); 2.7 must not become class 2."""
    rng = np.random.default_rng(2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 3, 3)))
    labels = np.asarray(values, dtype=">f4")
    header = bytes([0, 0, 0x0D, 1]) + len(labels).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    if message is None:
        splits = load_mnist(tmp_path, t10k_split=(3, 1), val_size=1)
        together = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
        assert together.dtype == torch.int64 and sorted(together.tolist()) == [0, 1, 2, 3]
        return
    with pytest.raises(UserError, match=f"t10k-labels-idx1-ubyte.*{message}"):
        load_mnist(tmp_path, t10k_split=(3, 1), val_size=1)


@pytest.mark.parametrize("code, dtype", [(0x0D, ">f4"), (0x0B, ">i2")])
def test_mnist_images_not_of_bytes_are_refused_naming_the_file(tmp_path, code, dtype):
    """Pixels are read as 0..255 (divided by 255): an image file of floats in 0..1, or of 16-bit
    values, would be scaled wrongly without a word."""
    pixels = np.random.default_rng(3).random((4, 3, 3)).astype(dtype)
    header = bytes([0, 0, code, 3]) + b"".join(int(d).to_bytes(4, "big") for d in pixels.shape)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + pixels.tobytes())
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    with pytest.raises(UserError) as err:
        load_mnist(tmp_path, t10k_split=(3, 1), val_size=1)
    assert str(err.value) == (f"{tmp_path / 't10k-images-idx3-ubyte'}: pixels of type {np.dtype(dtype).name}, "
                              "not the unsigned bytes (0..255) of MNIST's images")

@pytest.mark.parametrize("empty", ["t10k", "train"])
def test_mnist_file_holding_no_images_is_a_user_error_naming_it(tmp_path, empty):
    """A header-only IDX file (0 images) would make an empty split: accuracy 0% on no test images."""
    rng = np.random.default_rng(7)
    for prefix in ("train", "t10k"):
        count = 0 if prefix == empty else 12
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 4, 4)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path)
    assert str(info.value).startswith(str(tmp_path / f"{empty}-images-idx3-ubyte.gz"))
    assert "no images" in str(info.value)


def test_folder_holding_mnist_twice_is_refused_naming_both_copies(tmp_path):
    """t10k files in the folder and a full set in its mnist/: which one trains must not be a silent guess."""
    rng = np.random.default_rng(14)
    for folder, prefixes in ((tmp_path, ["t10k"]), (tmp_path / "mnist", ["train", "t10k"])):
        folder.mkdir(exist_ok=True)
        for prefix in prefixes:
            write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (12, 4, 4)))
            write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, 12))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path, t10k_split=(8, 4))
    message = str(info.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") in message
    assert len(load_mnist(tmp_path / "mnist").train) == 12  # each copy loads when named


def test_mnist_training_files_beside_the_subfolder_of_the_test_files_are_not_left_out(tmp_path):
    """Training files in DIR, t10k files in DIR/mnist: the run read DIR/mnist alone and trained on
    8,000 test images, the 60,000 training images unread without a word."""
    rng = np.random.default_rng(21)
    (tmp_path / "mnist").mkdir()
    for folder, prefix, count in ((tmp_path, "train", 30), (tmp_path / "mnist", "t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 4, 4)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, count))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path, t10k_split=(15, 5))
    message = str(info.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") in message
    assert "two copies, or one set split between them" in message


def test_mnist_training_files_without_test_files_are_named_as_such(tmp_path):
    rng = np.random.default_rng(22)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 4, 4)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 30))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path)
    assert str(info.value) == (f"{tmp_path}: has train-images-idx3-ubyte.gz but no t10k-images-idx3-ubyte[.gz] "
                               "and t10k-labels-idx1-ubyte[.gz], the test images")


@pytest.mark.parametrize("plain_name", ["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"])
def test_gzipped_and_plain_copies_of_one_mnist_file_must_agree(tmp_path, plain_name):
    """A folder with a .gz and an unpacked copy (as torchvision leaves MNIST/raw): which one trains
    must not be a silent guess when they differ; identical ones are read as one."""
    rng = np.random.default_rng(19)
    images, labels = rng.integers(0, 256, (20, 4, 4)), rng.integers(0, 10, 20)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / plain_name, images, gz=False)
    reference = load_mnist(tmp_path, t10k_split=(15, 5))
    assert torch.equal(as_pixels(reference.test)[:, 0], torch.from_numpy(images[reference.test.indices]).float())
    write_idx(tmp_path / plain_name, 255 - images, gz=False)
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path, t10k_split=(15, 5))
    assert str(info.value) == (f"{tmp_path / 't10k-images-idx3-ubyte.gz'} and {tmp_path / plain_name}: two "
                               "different copies of one file; remove the one not to read")


def test_mnist_training_labels_without_their_images_are_refused_naming_the_missing_file(tmp_path):
    """A lost train-images file must not turn the run into the 8,000 / 2,000 split of t10k in silence."""
    rng = np.random.default_rng(17)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 4, 4)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 20))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 12))
    with pytest.raises(UserError) as info:
        load_mnist(tmp_path, t10k_split=(15, 5))
    assert str(info.value) == (f"{tmp_path}: has train-labels-idx1-ubyte.gz but no "
                               "train-images-idx3-ubyte[.gz]")


@pytest.mark.parametrize("name, archive", [("cifar10", "cifar-10-python.tar.gz"), ("mnist", "t10k-images-idx3-ubyte.gz")])
def test_data_root_naming_a_file_says_so_instead_of_that_it_does_not_exist(tmp_path, name, archive):
    """The downloaded archive, or one of the files, given as the folder: it exists, it is no folder."""
    (tmp_path / archive).write_bytes(b"\x1f\x8b")
    with pytest.raises(UserError) as info:
        load_dataset(name, root=tmp_path / archive)
    assert str(info.value) == (f"{tmp_path / archive}: is a file, not the folder holding {name}'s files "
                               "(--data-root, root= from Python)")


def test_mnist_missing_files_and_root_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(UserError, match="does-not-exist"):
        load_mnist(tmp_path / "does-not-exist")
    with pytest.raises(UserError, match="root"):
        load_dataset("mnist")


# ---------------------------------------------------------------------------- digits


def test_digits_shapes_and_disjoint_complete_split():
    from sklearn.datasets import load_digits as sklearn_digits

    splits = load_digits(seed=0)
    sizes = {key: len(part) for key, part in splits.parts().items()}
    assert sizes == {"train": 1079, "val": 359, "test": 359}
    assert splits.train.images.shape == (1079, 1, 8, 8) and splits.train.num_classes == 10
    indices = torch.cat([part.indices for part in splits.parts().values()])
    assert torch.equal(indices.sort().values, torch.arange(1797))
    bunch = sklearn_digits()
    for part in splits.parts().values():
        assert torch.equal(part.labels, torch.from_numpy(bunch.target)[part.indices])
        assert torch.equal(as_pixels(part, 16.0)[:, 0], torch.from_numpy(bunch.images).float()[part.indices])


def test_digits_fractions_and_seeds():
    small = load_dataset("Digits", seed=0, val_fraction=0.0, test_fraction=0.5)
    assert small.val is None and len(small.test) == round(1797 * 0.5)
    assert not torch.equal(load_digits(seed=1).test.indices, load_digits(seed=0).test.indices)
    # the test part is drawn first: a different validation fraction leaves it alone
    assert torch.equal(load_digits(seed=0, val_fraction=0.1).test.indices, load_digits(seed=0).test.indices)
    with pytest.raises(UserError, match="test_fraction"):
        load_digits(val_fraction=0.5, test_fraction=0.5)


# ---------------------------------------------------------------------------- CIFAR / ImageNet16


def write_cifar10(folder, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_x, train_y = random_pixels(rng, 20, 32), rng.integers(0, 10, 20)
    test_x, test_y = random_pixels(rng, 6, 32), rng.integers(0, 10, 6)
    for i in range(5):
        rows = slice(4 * i, 4 * i + 4)
        write_pickle(folder / f"data_batch_{i + 1}", {b"batch_label": b"x", b"data": train_x[rows],
                                                      b"labels": train_y[rows].tolist()})
    write_pickle(folder / "test_batch", {b"data": test_x, b"labels": test_y.tolist()})
    return train_x, train_y, test_x, test_y


def test_cifar10_pickles_shapes_labels_and_channel_order(tmp_path):
    rng = np.random.default_rng(1)
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path / "cifar-10-batches-py", rng)
    # One known bright pixel: green channel (1), row 3, column 7 of training image 5.
    train_x[5] = 0
    train_x[5, 1 * 1024 + 3 * 32 + 7] = 255
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_2", {b"data": train_x[4:8],
                                                                     b"labels": train_y[4:8].tolist()})
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        splits = load_cifar10(root, stats=IDENTITY_RGB)
        assert splits.train.images.shape == (20, 3, 32, 32) and splits.test.images.shape == (6, 3, 32, 32)
        assert torch.equal(splits.train.labels, torch.from_numpy(train_y))
        assert torch.equal(splits.test.labels, torch.from_numpy(test_y))
        assert torch.equal(as_pixels(splits.train).reshape(20, -1), torch.from_numpy(train_x).float())
        assert torch.nonzero(splits.train.images[5]).tolist() == [[1, 3, 7]]


def test_cifar10_validation_split_and_train_statistics(tmp_path):
    train_x, *_ = write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(2))
    splits = load_dataset("CIFAR-10", root=tmp_path, seed=5, val_size=8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 8, 6)
    channels = train_x[splits.train.indices.numpy()].reshape(12, 3, -1) / 255.0
    assert splits.train.mean == pytest.approx(channels.mean(axis=(0, 2)).tolist(), rel=1e-6)
    assert splits.train.std == pytest.approx(channels.std(axis=(0, 2)).tolist(), rel=1e-6)


@pytest.mark.parametrize("stats", [((0.5, 0.5, float("nan")), (1.0, 1.0, 1.0)),
                                   ((0.5, 0.5, 0.5), (1.0, float("inf"), 1.0))])
def test_fixed_statistics_that_are_not_finite_are_refused(tmp_path, stats):
    """A NaN mean or infinite std would turn every image of that channel into NaN or 0."""
    write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(13))
    with pytest.raises(UserError, match="stats=.*finite"):
        load_cifar10(tmp_path, stats=stats)


def test_folder_holding_cifar10_twice_is_refused_naming_both_copies(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(15))
    write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(16))
    with pytest.raises(UserError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "test_batch") in message and str(tmp_path / "cifar-10-batches-py" / "test_batch") in message


def test_cifar10_missing_batch_and_bad_labels_name_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(3))
    write_pickle(folder / "test_batch", {b"data": random_pixels(np.random.default_rng(4), 2, 32), b"labels": [3, 10]})
    with pytest.raises(UserError, match="test_batch.*labels"):
        load_cifar10(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data_batch_4"):
        load_cifar10(tmp_path)


def test_the_data_fingerprint_covers_every_file_the_cifar10_loader_reads(tmp_path):
    from naslib_bayes.data.loaders import data_fingerprint, dataset_files

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(3))
    assert [p.name for p in dataset_files("cifar10", tmp_path)] == [*(f"data_batch_{i}" for i in range(1, 6)),
                                                                    "test_batch"]
    before = data_fingerprint("cifar10", tmp_path)
    write_cifar10(folder, np.random.default_rng(4))  # other images under the same names
    assert data_fingerprint("cifar10", folder) == data_fingerprint("cifar10", tmp_path) != before
    assert data_fingerprint("digits", None) is None  # bundled with scikit-learn: no file read
    (folder / "data_batch_4").unlink()
    with pytest.raises(UserError, match="data_batch_4: missing"):
        data_fingerprint("cifar10", tmp_path)


@pytest.mark.parametrize("name", ["test_batch", "data_batch_3"])
def test_cifar_batch_holding_no_images_is_a_user_error_naming_it(tmp_path, name):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(8))
    write_pickle(folder / name, {b"data": np.zeros((0, 3072), np.uint8), b"labels": []})
    with pytest.raises(UserError) as info:
        load_cifar10(tmp_path)
    assert str(info.value).startswith(str(folder / name)) and "no images" in str(info.value)


@pytest.mark.parametrize("data, labels, message", [
    ([[0] * 3072, [0] * 5], [1, 2], "field 'data' is not an array of images"),
    (None, [3, 2.7], "field 'labels' is not a list of integer labels"),
    (None, [3, 2**70], "field 'labels' is not a list of integer labels"),  # past int64: OverflowError
    (None, np.array([3, 2**63], dtype=np.uint64), "field 'labels' is not a list of integer labels"),  # wraps
])
def test_ragged_images_and_fractional_labels_are_one_line_errors_naming_the_file(tmp_path, data, labels, message):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(5))
    data = random_pixels(np.random.default_rng(6), 2, 32) if data is None else data
    write_pickle(folder / "test_batch", {b"data": data, b"labels": labels})
    with pytest.raises(UserError) as info:
        load_cifar10(tmp_path)
    assert str(info.value).startswith(str(folder / "test_batch")) and message in str(info.value)


@pytest.mark.parametrize("labels", [np.array([3.0, np.nan]), np.array([3.0, 1e30])])
def test_labels_beyond_integers_are_refused_in_one_line_without_a_cast_warning(tmp_path, labels):
    """numpy's 'invalid value encountered in cast' printed two lines of its own above the error."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(19))
    write_pickle(folder / "test_batch", {b"data": random_pixels(np.random.default_rng(20), 2, 32), b"labels": labels})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match="test_batch: field 'labels' is not a list of integer labels"):
            load_cifar10(tmp_path)


def test_cifar100_file_read_as_cifar10_names_the_missing_field_once(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, np.random.default_rng(11))
    write_pickle(folder / "test_batch", {b"data": random_pixels(np.random.default_rng(12), 2, 32),
                                         b"fine_labels": [1, 2], b"coarse_labels": [0, 0]})
    with pytest.raises(UserError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert message == f"{folder / 'test_batch'}: missing field 'labels' (has ['coarse_labels', 'data', 'fine_labels'])"


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(5)
    train_x, fine = random_pixels(rng, 12, 32), rng.integers(0, 100, 12)
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "train", {b"data": train_x, b"fine_labels": fine.tolist(), b"coarse_labels": [0] * 12})
    write_pickle(folder / "test", {b"data": train_x[:3], b"fine_labels": [99, 0, 42], b"coarse_labels": [1] * 3})
    splits = load_dataset("cifar_100", root=tmp_path, stats=IDENTITY_RGB)
    assert torch.equal(load_cifar100(folder, stats=IDENTITY_RGB).train.images, splits.train.images)
    assert splits.train.num_classes == 100 and splits.test.labels.tolist() == [99, 0, 42]
    assert torch.equal(splits.train.labels, torch.from_numpy(fine))
    assert torch.equal(as_pixels(splits.test).reshape(3, -1), torch.from_numpy(train_x[:3]).float())


def test_imagenet16_keeps_120_classes_shifted_to_zero_based(tmp_path):
    rng = np.random.default_rng(6)
    folder = tmp_path / "ImageNet16"
    raw_labels = [1, 120, 121, 1000, 60]  # 1-based over 1000 classes; 121 and 1000 are dropped
    batch_x = []
    for i in range(1, 11):
        data = random_pixels(rng, 5, 16)
        batch_x.append(data)
        write_pickle(folder / f"train_data_batch_{i}", {"data": data, "labels": raw_labels, "mean": data.mean(0)})
    val_x = random_pixels(rng, 4, 16)
    val_x[3] = 0
    val_x[3, 2 * 256 + 15 * 16 + 0] = 255  # blue channel, last row, first column
    write_pickle(folder / "val_data", {"data": val_x, "labels": [500, 7, 121, 120]})
    by_parent = load_dataset("ImageNet16", root=tmp_path, stats=IDENTITY_RGB)
    for splits in (by_parent, load_imagenet16(folder, stats=IDENTITY_RGB)):
        assert splits.train.name == "ImageNet16-120" and splits.train.num_classes == 120
        assert splits.train.images.shape == (30, 3, 16, 16)
        assert splits.train.labels.tolist() == [0, 119, 59] * 10
        assert splits.test.labels.tolist() == [6, 119] and splits.test.indices.tolist() == [1, 3]
        kept = np.concatenate(batch_x)[splits.train.indices.numpy()]
        assert torch.equal(as_pixels(splits.train).reshape(30, -1), torch.from_numpy(kept).float())
        assert torch.nonzero(splits.test.images[1]).tolist() == [[2, 15, 0]]


@pytest.mark.parametrize("part", ["train", "val"])
def test_imagenet16_files_without_any_of_the_120_classes_are_named(tmp_path, part):
    """Files of the other 880 classes only (e.g. a later slice of ImageNet) leave an empty split."""
    rng = np.random.default_rng(9)
    for i in range(1, 11):
        labels = [121, 500] if part == "train" else [3, 700]
        write_pickle(tmp_path / f"train_data_batch_{i}", {"data": random_pixels(rng, 2, 16), "labels": labels})
    write_pickle(tmp_path / "val_data", {"data": random_pixels(rng, 2, 16), "labels": [4, 121] if part == "train" else [999, 121]})
    first = "train_data_batch_1" if part == "train" else "val_data"
    with pytest.raises(UserError) as info:
        load_imagenet16(tmp_path)
    assert str(info.value).startswith(str(tmp_path / first)) and "1..120" in str(info.value)


@pytest.mark.parametrize("damage", ["frame length", "codec name"])
def test_pickle_whose_damage_asks_for_huge_memory_or_an_unknown_codec_is_one_line_naming_it(tmp_path, damage):
    """A flipped bit in a protocol-4 frame's length asked for exabytes (MemoryError traceback)."""
    path = tmp_path / "val_data"
    if damage == "frame length":
        raw = bytearray(pickle.dumps({"data": random_pixels(np.random.default_rng(18), 2, 16), "labels": [1, 2]},
                                     protocol=4))
        assert raw[2] == pickle.FRAME[0]
        raw[10] ^= 0x01  # top byte of the frame's 8-byte length
        path.write_bytes(bytes(raw))
    else:  # bytes of a protocol-2 pickle rebuilt through _codecs.encode, the codec's name damaged
        path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x07\x00\x00\x00latim-1\x86R.")
    with pytest.raises(UserError) as info:
        read_pickle_dict(path)
    assert str(info.value).startswith(f"{path}: cannot read it as a dataset pickle")


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    write_pickle(tmp_path / "val_data", {"data": Payload(), "labels": [1]})
    with pytest.raises(UserError, match="val_data.*builtins.print"):
        read_pickle_dict(tmp_path / "val_data")


def test_load_dataset_rejects_unknown_names_and_options():
    with pytest.raises(UserError, match="svhn"):
        load_dataset("svhn")
    with pytest.raises(UserError, match="val_sise"):
        load_dataset("digits", val_sise=3)


# ---------------------------------------------------------------------------- augmentation


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.randn(16, 3, 8, 8)
    assert random_crop(x, 0, gen()) is x
    out = random_crop(x, 2, gen(7))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(16):
        windows = [(top, left) for top in range(5) for left in range(5)]
        matches = [(t, l) for t, l in windows if torch.equal(out[i], padded[i, :, t : t + 8, l : l + 8])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 3  # offsets are drawn per sample
    assert torch.equal(random_crop(x, 2, gen(7)), out)
    assert not torch.equal(random_crop(x, 2, gen(8)), out)


def test_random_crop_draws_every_offset_pair_of_the_padded_image():
    """Padding 1 around 3x3 images: top and left are each any of 0, 1, 2, drawn apart, so all 9
    windows of the padded image occur."""
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3).expand(300, 1, 3, 3)
    out = random_crop(x, 1, gen(5))
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))
    windows = {(top, left): padded[:, top:top + 3, left:left + 3] for top in range(3) for left in range(3)}
    seen = {offset for image in out for offset, window in windows.items() if torch.equal(image, window)}
    assert seen == set(windows)


def test_crop_padding_takes_the_fill_value_and_keeps_the_image_exact():
    x = torch.randn(16, 2, 8, 8)
    fill = torch.tensor([-0.5, 1.25])
    out = random_crop(x, 2, gen(7), fill)
    plain = random_crop(x, 2, gen(7))  # same offsets, zero padding
    border = plain == 0
    assert border.any()
    assert torch.equal(out[~border], plain[~border])  # the image's own pixels, bit for bit
    assert torch.equal(out[border], fill.view(1, 2, 1, 1).expand_as(out)[border])


def test_default_crop_pads_mnist_with_its_black_background(mnist_dir):
    """Shifted training digits must look like test digits: black around them, not a grey frame."""
    splits = load_dataset("mnist", mnist_dir, seed=0)
    images = splits.train.images[:256]
    black = images.amin()  # MNIST's background: the smallest normalised value
    assert black == pytest.approx(-splits.train.mean[0] / splits.train.std[0])
    augment = default_augment("mnist", splits.train)
    out = augment(images, gen(3))
    shifted = (out != images).flatten(1).any(dim=1)
    assert shifted.sum() > 200
    # where the crop padded (found by padding with NaN under the same draws) the pixels are black
    padding = random_crop(images, augment.crop_padding, gen(3), torch.tensor([float("nan")])).isnan()
    assert padding.sum() > 1000 and torch.allclose(out[padding], torch.full_like(out[padding], black), atol=1e-6)
    # and no grey (mean-valued, 0) strip appears: 0 is a value no MNIST image holds
    assert not (images == 0).any() and not (out == 0).any()


def test_random_flip_matches_torch_flip_and_undoes_itself():
    x = torch.randn(64, 3, 5, 5)
    assert torch.equal(random_flip(x, gen(), p=1.0), torch.flip(x, dims=[-1]))
    assert torch.equal(random_flip(x, gen(), p=0.0), x)
    once = random_flip(x, gen(3))
    flipped = [torch.equal(once[i], x[i].flip(-1)) for i in range(64)]
    assert all(flipped[i] or torch.equal(once[i], x[i]) for i in range(64))
    assert 10 < sum(flipped) < 54
    assert torch.equal(random_flip(once, gen(3)), x)  # same generator state: same mask


def test_cutout_zeroes_a_square_clipped_at_the_border():
    size, x = 5, torch.ones(64, 2, 12, 12)
    out = cutout(x, size, gen(11))
    assert torch.equal(cutout(x, size, gen(11)), out) and torch.equal(cutout(x, 0, gen()), x)
    assert torch.equal(out[:, 0], out[:, 1])  # the same square on every channel
    inside, clipped = 0, set()
    for mask in out[:, 0] == 0:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask.sum() == height * width and height <= size and width <= size  # a clipped square
        touches = rows.min() == 0 or cols.min() == 0 or rows.max() == 11 or cols.max() == 11
        if not touches:
            assert height == width == size
            inside += 1
        clipped |= {side for side, cut in (("top", rows.min() == 0 and height < size),
                                           ("bottom", rows.max() == 11 and height < size),
                                           ("left", cols.min() == 0 and width < size),
                                           ("right", cols.max() == 11 and width < size)) if cut}
    assert inside > 10
    # the centre is any pixel: squares centred near any border reach past it
    assert clipped == {"top", "bottom", "left", "right"}


def test_augment_pipeline_is_deterministic_and_leaves_the_global_rng_alone():
    x = torch.randn(8, 3, 16, 16)
    state = torch.random.get_rng_state()
    data = ImageDataset(x, torch.zeros(8, dtype=torch.long), 10, "cifar10", (0.5, 0.4, 0.3), (0.25, 0.2, 0.1),
                        torch.arange(8))
    pipeline = default_augment("cifar-10", data)
    assert pipeline == Augment(crop_padding=4, flip=True, pad_value=pipeline.pad_value)
    assert pipeline.pad_value == pytest.approx((-2.0, -2.0, -3.0))  # black: -mean / std
    assert not default_augment("mnist", data).flip
    # CIFAR pads 4 of 32 pixels, ImageNet16 2 of 16 (NAS-Bench-201's pipelines); digits are not
    # mirrored, and the 8x8 digits not cropped either
    settings = {name: (a.crop_padding, a.flip, a.cutout) for name in ("digits", "mnist", "cifar10", "cifar100",
                                                                      "ImageNet16-120")
                for a in [default_augment(name, data)]}
    assert settings == {"digits": (0, False, 0), "mnist": (2, False, 0), "cifar10": (4, True, 0),
                        "cifar100": (4, True, 0), "ImageNet16-120": (2, True, 0)}
    assert torch.equal(pipeline(x, gen(1)), pipeline(x, gen(1)))
    assert not torch.equal(pipeline(x, gen(1)), pipeline(x, gen(2)))
    load_digits(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(UserError, match="cutout"):
        Augment(cutout=-1)


# ---------------------------------------------------------------------------- batches


def numbered_dataset(n: int) -> ImageDataset:
    """Image i is filled with the value i + 1 (never 0, so cutout's zeros stand out)."""
    images = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ImageDataset(images, torch.arange(n) % 3, 3, "toy", (0.0,), (1.0,), torch.arange(n))


def test_batches_cover_the_dataset_once_per_pass():
    data = numbered_dataset(10)
    seen = [(x, y) for x, y in batches(data, 4, gen(0))]
    assert [len(y) for _, y in seen] == [4, 4, 2]
    order = torch.cat([x[:, 0, 0, 0] for x, _ in seen]).long() - 1
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert torch.equal(torch.cat([y for _, y in seen]), order % 3)
    again = torch.cat([x[:, 0, 0, 0] for x, _ in batches(data, 4, gen(0))]).long() - 1
    assert torch.equal(again, order)
    plain = [x[:, 0, 0, 0].tolist() for x, _ in batches(data, 4, None, shuffle=False, drop_last=True)]
    assert plain == [[1, 2, 3, 4], [5, 6, 7, 8]]
    whole = [len(y) for _, y in batches(numbered_dataset(8), 4, gen(0), drop_last=True)]
    assert whole == [4, 4]  # nothing to drop when the batches divide the dataset
    with pytest.raises(UserError, match="batch_size"):
        next(batches(data, 0, gen()))


def test_batches_apply_augmentation():
    data = numbered_dataset(6)
    x, _ = next(batches(data, 6, gen(0), shuffle=False, augment=Augment(cutout=2)))
    assert (x == 0).sum() > 0 and x.shape == (6, 1, 4, 4)


@pytest.mark.parametrize("options, message", [
    ({"val_size": 2.5}, "val_size must be a whole number, got 2.5"),  # was slicing's TypeError
    ({"val_size": "10"}, "val_size must be a whole number, got '10'"),
    ({"seed": "a"}, "seed must be a whole number, got 'a'"),  # was int()'s ValueError
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),  # was silently seed 1
])
def test_load_dataset_refuses_counts_that_are_not_whole_numbers(mnist_dir, options, message):
    with pytest.raises(UserError) as info:
        load_dataset("mnist", mnist_dir, **options)
    assert str(info.value) == message


def test_load_dataset_takes_whole_floats_and_numpy_integers_as_counts(mnist_dir):
    splits = load_dataset("mnist", mnist_dir, seed=np.int64(2), val_size=10.0)
    same = load_dataset("mnist", mnist_dir, seed=2, val_size=10)
    assert torch.equal(splits.val.labels, same.val.labels) and len(splits.val.labels) == 10


# ---------------------------------------------------------------------------- one split for every command


def test_search_train_and_compress_hold_out_the_same_mnist_images(mnist_dir):
    """With the t10k files alone, the images compress (seed 0) tests on are those search and train
    hold out (split seed 0, whatever their --seed): a search never sees the images its cell is tested
    on, and compress's validation images come out of the search images."""
    from naslib_bayes.commands.compress import DEFAULT_VAL_SIZE, load_splits
    from naslib_bayes.training.evaluate import TrainConfig, load_training_data, resolve_settings
    from naslib_bayes.training.search import SearchConfig, load_search_data

    search = load_search_data(SearchConfig("bayesnas", dataset="mnist", data_root=str(mnist_dir), seed=3)).train
    cfg = TrainConfig(arch="|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|", dataset="mnist", epochs=1,
                      data_root=str(mnist_dir), seed=3)
    trained = load_training_data(cfg, resolve_settings(cfg), torch.device("cpu"))
    compress = load_splits("mnist", mnist_dir, seed=0, val_size=DEFAULT_VAL_SIZE)
    assert torch.equal(trained.images, search.images) and torch.equal(trained.labels, search.labels)
    searched = set(search.indices.tolist())
    assert searched == set(compress.train.indices.tolist()) | set(compress.val.indices.tolist())
    assert set(compress.test.indices.tolist()) == set(range(10_000)) - searched
    assert torch.equal(trained.test_labels, compress.test.labels)


@pytest.mark.parametrize("name, folder, file, release", [
    ("cifar10", "cifar-10-batches-bin", "test_batch.bin", "cifar-10-python.tar.gz"),
    ("cifar100", "cifar-100-binary", "test.bin", "cifar-100-python.tar.gz")])
def test_cifar_binary_version_is_named_as_the_version_not_read(tmp_path, name, folder, file, release):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / file).write_bytes(bytes(3073))
    for root in (tmp_path, tmp_path / folder):
        with pytest.raises(UserError) as info:
            load_dataset(name, root=root)
        assert str(info.value) == (f"{tmp_path / folder / file}: the binary version of {name}, which is not read; "
                                   f"give the folder of the python version ({release})")
