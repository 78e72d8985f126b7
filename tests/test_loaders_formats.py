"""Every benchmark file format, written here in its real layout and loaded back.

The official ``.pth`` is built with ``nas_201_api``'s own ``ArchResults``/``ResultsCount``
classes; NASLib's pickles follow NASLib's layout. Expected values are computed in the test
from the numbers written, not through the loaders.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from naslib_bayes.errors import UserError
from naslib_bayes.search_spaces.nasbench201 import cell as nb201
from naslib_bayes.search_spaces.nasbench201 import loaders, official
from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark

nas_201_api = pytest.importorskip("nas_201_api")
from nas_201_api.api_utils import ArchResults, ResultsCount  # noqa: E402

ARCH_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ARCH_B = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
ARCH_C = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ARCH_D = "|skip_connect~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"  # listed, not evaluated
ARCH_ABSENT = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"

EVAL_SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}


def run_spec(base: float, seed: int) -> dict:
    """Final-epoch numbers of one training run, distinct per (base, seed)."""
    shift = 0.7 * seed
    return {
        "train": base + 5 + shift,
        "x-valid": base + shift,
        "x-test": base - 1 + shift,
        "ori-test": base + 1 + shift,
        "epoch_time": 2.0 + seed,
        "params": 1.5 + base / 100,
        "flops": 200 + base,
        "latency": 0.01 + seed / 1000,
    }


# arch -> {setting: {seed: spec}}; ARCH_B has one seed on some settings and no ImageNet run.
SPECS = {
    ARCH_A: {s: {777: run_spec(80 + i, 0), 888: run_spec(80 + i, 1)} for i, s in enumerate(EVAL_SETS)},
    ARCH_B: {
        "cifar10-valid": {777: run_spec(60, 0), 888: run_spec(60, 2)},
        "cifar10": {888: run_spec(62, 1)},
        "cifar100": {777: run_spec(40, 0)},
    },
    ARCH_C: {s: {777: run_spec(10, 0)} for s in EVAL_SETS},
}


# ---- building a real official .pth -----------------------------------------------------
def make_run(setting: str, seed: int, spec: dict, epochs: int, arch: str) -> ResultsCount:
    """A ResultsCount whose curves end on ``spec``'s numbers (earlier epochs differ)."""
    ramp = [(e + 1) / epochs for e in range(epochs)]
    run = ResultsCount(
        setting,
        None,
        {e: spec["train"] * r for e, r in enumerate(ramp)},
        {e: 1 - r for e, r in enumerate(ramp)},
        spec["params"],
        spec["flops"],
        {"arch_str": arch, "channel": 16, "num_cells": 5, "class_num": 10},
        seed,
        epochs,
        [spec["latency"]],
    )
    run.reset_pseudo_train_times(spec["epoch_time"])
    accs, losses, times = {}, {}, {}
    for name in EVAL_SETS[setting]:
        for e, r in enumerate(ramp):
            accs[f"{name}@{e}"] = spec[name] * r
            losses[f"{name}@{e}"] = 1 - r
            times[f"{name}@{e}"] = 0.5
    run.update_eval(accs, losses, times)
    return run


def arch_results(index: int, arch: str, epochs: int, scale: float) -> dict:
    results = ArchResults(index, arch)
    for setting, seeds in SPECS[arch].items():
        for seed, spec in seeds.items():
            scaled = {k: v * scale for k, v in spec.items()}
            results.update(setting, seed, make_run(setting, seed, scaled, epochs, arch))
    return results.state_dict()


def official_dict(archs=(ARCH_A, ARCH_B, ARCH_C), listed_only=(ARCH_D,), scale: float = 1.0) -> dict:
    """The official dict: ``meta_archs`` lists every arch, ``arch2infos`` the evaluated ones.

    The 12-epoch ("less") results are given other numbers, so reading them by mistake shows.
    """
    meta_archs = list(archs) + list(listed_only)
    arch2infos = {
        i: {"less": arch_results(i, arch, 12, scale * 0.5), "full": arch_results(i, arch, 200, scale)}
        for i, arch in enumerate(archs)
    }
    return {"meta_archs": meta_archs, "arch2infos": arch2infos, "evaluated_indexes": set(arch2infos)}


def expected(arch: str, setting: str, key: str, scale: float = 1.0) -> float:
    seeds = SPECS[arch].get(setting)
    if not seeds:
        return math.nan
    if key == "train_time":
        return statistics.mean(200 * s["epoch_time"] for s in seeds.values()) * scale
    return statistics.mean(s[key] for s in seeds.values()) * scale


@pytest.fixture
def pth(tmp_path):
    path = tmp_path / "NAS-Bench-201-v1_1-test.pth"
    torch.save(official_dict(), path)
    return path


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def assert_close(actual: float, wanted: float):
    if math.isnan(wanted):
        assert math.isnan(actual)
    else:
        assert actual == pytest.approx(wanted, rel=1e-12)


# ---- official .pth ---------------------------------------------------------------------
def test_official_metric_protocol(pth, cache_dir):
    bench = official.load_official(pth, cache_dir=cache_dir)
    assert bench.datasets == ("cifar10", "cifar100", "ImageNet16-120")
    sources = {
        "cifar10": {"test_accuracy": ("cifar10", "ori-test"), "val_accuracy": ("cifar10-valid", "x-valid")},
        "cifar100": {"test_accuracy": ("cifar100", "x-test"), "val_accuracy": ("cifar100", "x-valid")},
        "ImageNet16-120": {"test_accuracy": ("ImageNet16-120", "x-test"), "val_accuracy": ("ImageNet16-120", "x-valid")},
    }
    searched = {"cifar10": "cifar10-valid", "cifar100": "cifar100", "ImageNet16-120": "ImageNet16-120"}
    for arch in (ARCH_A, ARCH_B, ARCH_C):
        for dataset, metrics in sources.items():
            for metric, (setting, split) in metrics.items():
                assert_close(bench.query(arch, dataset, metric), expected(arch, setting, split))
            run = searched[dataset]
            assert_close(bench.query(arch, dataset, "train_accuracy"), expected(arch, run, "train"))
            assert_close(bench.query(arch, dataset, "train_time"), expected(arch, run, "train_time"))
            for metric in ("params", "flops", "latency"):
                assert_close(bench.query(arch, dataset, metric), expected(arch, run, metric))


def test_official_index_order_and_absent_cells(pth, cache_dir):
    bench = official.load_official(pth, cache_dir=cache_dir)
    assert [bench.index_of(a) for a in (ARCH_A, ARCH_B, ARCH_C, ARCH_D)] == [0, 1, 2, 3]
    assert bench.num_in_file == 4
    for arch in (ARCH_D, ARCH_ABSENT):  # listed but not evaluated / not in the file at all
        for dataset in bench.datasets:
            assert math.isnan(bench.query(arch, dataset, "test_accuracy"))
    assert math.isnan(bench.query(ARCH_B, "ImageNet16-120", "val_accuracy"))  # ARCH_B has no ImageNet run
    assert np.isfinite(bench.query_all("cifar10", "test_accuracy")).sum() == 3
    assert any("cifar10-valid" in note for note in bench.notes)


def test_official_missing_pieces_read_nan(tmp_path, cache_dir):
    data = official_dict()
    run = data["arch2infos"][2]["full"]["all_results"][("cifar100", 777)]  # ARCH_C's only cifar100 run
    run["latency"], run["train_times"], run["params"] = None, None, None
    run["eval_acc1es"] = {k: v for k, v in run["eval_acc1es"].items() if not k.startswith("x-test@")}
    path = tmp_path / "holes.pth"
    torch.save(data, path)
    bench = official.load_official(path, cache_dir=cache_dir)
    for metric in ("latency", "train_time", "params", "test_accuracy"):
        assert math.isnan(bench.query(ARCH_C, "cifar100", metric)), metric
    assert bench.query(ARCH_C, "cifar100", "val_accuracy") == pytest.approx(expected(ARCH_C, "cifar100", "x-valid"))
    assert bench.query(ARCH_C, "cifar100", "flops") == pytest.approx(expected(ARCH_C, "cifar100", "flops"))
    assert bench.query(ARCH_A, "cifar100", "latency") == pytest.approx(expected(ARCH_A, "cifar100", "latency"))


def test_official_dataset_absent_from_file_is_left_out(tmp_path, cache_dir):
    data = official_dict()
    for by_hp in data["arch2infos"].values():
        for state in by_hp.values():
            keys = [k for k in state["all_results"] if k[0] == "ImageNet16-120"]
            for key in keys:
                del state["all_results"][key]
            state["dataset_seed"].pop("ImageNet16-120", None)
    path = tmp_path / "no-imagenet.pth"
    torch.save(data, path)
    assert official.load_official(path, cache_dir=cache_dir).datasets == ("cifar10", "cifar100")


def test_official_second_load_reads_the_cache(pth, cache_dir, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger=official.__name__):
        first = official.load_official(pth, cache_dir=cache_dir)
    cache_file = official.cache_path(pth, cache_dir)
    assert cache_file.is_file() and str(cache_file) in caplog.text

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the cached load unpickled the .pth")

    monkeypatch.setattr(torch, "load", no_unpickling)
    second = official.load_official(pth, cache_dir=cache_dir)
    assert second.source == str(pth) and second.notes == first.notes
    np.testing.assert_array_equal(second.cells, first.cells)
    for dataset in first.datasets:
        assert second.metrics(dataset) == first.metrics(dataset)
        for metric in first.metrics(dataset):
            np.testing.assert_array_equal(second.query_all(dataset, metric), first.query_all(dataset, metric))


def test_official_changed_file_invalidates_the_cache(pth, cache_dir):
    before = official.load_official(pth, cache_dir=cache_dir)
    torch.save(official_dict(scale=1.01), pth)
    stat = pth.stat()
    os.utime(pth, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a distinct mtime even on coarse clocks
    after = official.load_official(pth, cache_dir=cache_dir)
    wanted = expected(ARCH_A, "cifar10", "ori-test", scale=1.01)
    assert after.query(ARCH_A, "cifar10") == pytest.approx(wanted, rel=1e-12)
    assert after.query(ARCH_A, "cifar10") != before.query(ARCH_A, "cifar10")
    assert len(list(cache_dir.iterdir())) == 2


def test_official_default_cache_dir_through_load_benchmark(pth, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    bench = loaders.load_benchmark(pth)
    assert bench.query(ARCH_A, "cifar100", "val_accuracy") == pytest.approx(expected(ARCH_A, "cifar100", "x-valid"))
    assert official.cache_path(pth).parent == tmp_path / "xdg" / "naslib-bayes"
    assert official.cache_path(pth).is_file()


def test_official_unwritable_cache_dir_only_warns(pth, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=official.__name__):
        bench = official.load_official(pth, cache_dir=blocker / "cache")
    assert bench.query(ARCH_C, "cifar10") == pytest.approx(expected(ARCH_C, "cifar10", "ori-test"))
    assert "not caching" in caplog.text


@pytest.mark.parametrize(
    "content, message",
    [
        ({"meta_archs": [ARCH_A]}, "missing key(s) arch2infos, evaluated_indexes"),
        ([ARCH_A], "expected the NAS-Bench-201 dict"),
        ({"meta_archs": ["|conv~0|+|"], "arch2infos": {}, "evaluated_indexes": set()}, "'|conv~0|+|'"),
        ({"meta_archs": [ARCH_A], "arch2infos": {0: {"full": {}}}, "evaluated_indexes": {0}}, "malformed"),
    ],
)
def test_official_malformed_file_names_it(tmp_path, cache_dir, content, message):
    path = tmp_path / "broken.pth"
    torch.save(content, path)
    with pytest.raises(UserError) as err:
        official.load_official(path, cache_dir=cache_dir)
    assert str(path) in str(err.value) and message in str(err.value)


def test_official_garbage_bytes_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(UserError, match="garbage.pth"):
        loaders.load_benchmark(path)


# ---- NASLib pickles --------------------------------------------------------------------
NASLIB_FILES = {
    "nb201_cifar10_full_training.pickle": ("cifar10-valid", "cifar10"),
    "nb201_cifar100_full_training.pickle": ("cifar100", "cifar100"),
    "nb201_ImageNet16_full_training.pickle": ("ImageNet16-120", "ImageNet16-120"),
}


def naslib_entry(final_eval: float, final_train: float, cost: float, epochs: int = 200) -> dict:
    return {
        "train_acc1es": [final_train * (e + 1) / epochs for e in range(epochs)],
        "eval_acc1es": [final_eval * (e + 1) / epochs for e in range(epochs)],
        "train_losses": [1.0 / (e + 1) for e in range(epochs)],
        "eval_losses": [1.5 / (e + 1) for e in range(epochs)],
        "cost_info": {"flops": 100 + cost, "params": 1 + cost / 10, "latency": 0.02 + cost / 1000, "train_time": 3000 + cost},
    }


def naslib_values(arch_number: int, file_number: int) -> tuple[float, float, float]:
    """(final eval acc, final train acc, cost offset) written for an arch in a file."""
    return 50 + 10 * file_number + arch_number, 70 + 10 * file_number + arch_number, 5 * arch_number + file_number


NASLIB_ARCHS = (ARCH_A, ARCH_B, ARCH_C)


def write_naslib_pickles(folder) -> None:
    for f, (name, (ds_key, _)) in enumerate(NASLIB_FILES.items()):
        data = {arch: {ds_key: naslib_entry(*naslib_values(a, f))} for a, arch in enumerate(NASLIB_ARCHS)}
        with open(folder / name, "wb") as handle:
            pickle.dump(data, handle)


def test_naslib_pickle_folder_is_one_multi_dataset_benchmark(tmp_path):
    write_naslib_pickles(tmp_path)
    bench = loaders.load_benchmark(tmp_path)
    assert bench.datasets == ("cifar10", "cifar100", "ImageNet16-120")
    for f, (_, dataset) in enumerate(NASLIB_FILES.values()):
        for a, arch in enumerate(NASLIB_ARCHS):
            final_eval, final_train, cost = naslib_values(a, f)
            assert bench.query(arch, dataset, "val_accuracy") == pytest.approx(final_eval)
            assert bench.query(arch, dataset, "test_accuracy") == pytest.approx(final_eval)
            assert bench.query(arch, dataset, "train_accuracy") == pytest.approx(final_train)
            assert bench.query(arch, dataset, "flops") == pytest.approx(100 + cost)
            assert bench.query(arch, dataset, "params") == pytest.approx(1 + cost / 10)
            assert bench.query(arch, dataset, "latency") == pytest.approx(0.02 + cost / 1000)
            assert bench.query(arch, dataset, "train_time") == pytest.approx(3000 + cost)
        assert math.isnan(bench.query(ARCH_ABSENT, dataset, "val_accuracy"))
    assert [bench.index_of(a) for a in NASLIB_ARCHS] == [0, 1, 2]
    assert any("last epoch of each curve (epoch 200 for cifar10, cifar100, ImageNet16-120)" in note
               for note in bench.notes), bench.notes


@pytest.mark.parametrize("field", ["eval_acc1es", "train_acc1es"])
def test_naslib_pickle_curves_of_another_length_are_refused(tmp_path, field):
    """The last value of a 12-epoch (or cut short) curve is another training than that of a
    200-epoch one: mixed, cells would be ranked on numbers of different schedules."""
    path = tmp_path / "nb201_cifar10_full_training.pickle"
    short = naslib_entry(60, 70, 2)
    short[field] = naslib_entry(60, 70, 2, epochs=12)[field]
    with open(path, "wb") as handle:
        pickle.dump({ARCH_A: {"cifar10-valid": naslib_entry(90, 95, 1)}, ARCH_B: {"cifar10-valid": short}}, handle)
    assert load_error(path) == (f"{path}: {ARCH_B} / cifar10-valid, {field}: 12 epochs where {ARCH_A} has 200: "
                                "its last value is another epoch or training schedule; keep curves of one length")


def test_single_naslib_pickle_is_a_one_dataset_benchmark(tmp_path):
    write_naslib_pickles(tmp_path)
    bench = loaders.load_benchmark(tmp_path / "nb201_cifar100_full_training.pickle")
    assert bench.datasets == ("cifar100",)
    assert bench.query(ARCH_B, "cifar100", "val_accuracy") == pytest.approx(naslib_values(1, 1)[0])


def test_naslib_pickle_with_two_keys_of_one_dataset_is_refused(tmp_path):
    """'cifar10' (trained on train+valid) and 'cifar10-valid' are different runs: reading both as
    cifar10 would let whichever key comes last overwrite the other's numbers, cell by cell."""
    path = tmp_path / "nb201_cifar10_full_training.pickle"
    data = {ARCH_A: {"cifar10-valid": naslib_entry(90, 95, 1), "cifar10": naslib_entry(93, 97, 1)}}
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    assert load_error(path) == (f"{path}: keys 'cifar10-valid' and 'cifar10' both hold cifar10 "
                                "results: keep one of them")


def test_naslib_pickles_holding_one_dataset_twice_are_refused(tmp_path):
    write_naslib_pickles(tmp_path)
    copy = tmp_path / "nb201_cifar10_copy.pickle"
    copy.write_bytes((tmp_path / "nb201_cifar10_full_training.pickle").read_bytes())
    first, second = sorted(tmp_path.glob("nb201_cifar10_*"))  # the order a folder is read in
    assert load_error(tmp_path) == (f"{second}: its cifar10 results (key 'cifar10-valid') are in {first} too: "
                                    "keep one of the files")


def test_zero_cost_json_with_two_keys_of_one_dataset_is_refused(tmp_path):
    path = tmp_path / "zc.json"
    write_zc(path, {"cifar10": {KEY_A: {"val_accuracy": 91.0}}, "cifar10-valid": {KEY_A: {"val_accuracy": 88.0}}})
    assert load_error(path) == f"{path}: keys 'cifar10' and 'cifar10-valid' both hold cifar10 results: keep one of them"


def test_naslib_pickle_with_one_cell_under_two_spellings_is_refused(tmp_path):
    """The inputs of a node may be listed in any order: both strings are ARCH_A, and the second
    entry would silently overwrite the first one's numbers."""
    path = tmp_path / "nb201_cifar10_full_training.pickle"
    reordered = ARCH_A.replace("|nor_conv_3x3~0|avg_pool_3x3~1|", "|avg_pool_3x3~1|nor_conv_3x3~0|")
    assert reordered != ARCH_A and nb201.from_string(reordered) == nb201.from_string(ARCH_A)
    data = {ARCH_A: {"cifar10-valid": naslib_entry(90, 95, 1)}, reordered: {"cifar10-valid": naslib_entry(10, 15, 1)}}
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    assert load_error(path) == f"{path}: {reordered} / cifar10-valid: the same cell as {ARCH_A}: keep one of them"


def test_naslib_pickle_with_a_bad_arch_string(tmp_path):
    path = tmp_path / "nb201_cifar10_full_training.pickle"
    with open(path, "wb") as handle:
        pickle.dump({"|nor_conv_3x3~0|+|bogus~0|": {"cifar10-valid": naslib_entry(50, 60, 1)}}, handle)
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    assert str(path) in str(err.value) and "|nor_conv_3x3~0|+|bogus~0|" in str(err.value)


def test_naslib_pickle_keyed_by_op_index_tuples_names_the_key(tmp_path):
    """NASLib's val_test pickles key cells by op-index tuples: a key must be named, not 'tuple has no strip'."""
    path = tmp_path / "nb201_cifar10-valid_val_test_v1_0.pickle"
    with open(path, "wb") as handle:
        pickle.dump({(0, 1, 2, 3, 4, 0): {"cifar10-valid": {"eval_acc1es": [90.1, 93.2]}}}, handle)
    assert load_error(path) == (f"{path}: key (0, 1, 2, 3, 4, 0) is not an architecture string; NASLib's "
                                "nb201_<dataset>_full_training.pickle maps strings like '|nor_conv_3x3~0|+...' to results")


@pytest.mark.parametrize("entry, place", [
    ({"eval_acc1es": [True]}, "eval_acc1es: True is not a number"),
    ({"eval_acc1es": ["abc"]}, "eval_acc1es: 'abc' is not a number"),
    ({"eval_acc1es": [90.0], "train_acc1es": ["q"]}, "train_acc1es: 'q' is not a number"),
    ({"eval_acc1es": [90.0], "cost_info": {"flops": "x"}}, "cost_info.flops: 'x' is not a number"),
    ({"eval_acc1es": [90.0], "cost_info": [1]}, "cost_info holds list, not a mapping"),
], ids=["bool", "text", "train_text", "cost_text", "cost_list"])
def test_naslib_pickle_bad_values_name_the_file_cell_dataset_and_field(tmp_path, entry, place):
    path = tmp_path / "nb201_cifar10_full_training.pickle"
    with open(path, "wb") as handle:
        pickle.dump({ARCH_A: {"cifar10-valid": entry}}, handle)
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    assert str(err.value) == f"{path}: {ARCH_A} / cifar10-valid, {place}"


def test_corrupt_pickle_in_a_folder_names_the_file(tmp_path):
    write_naslib_pickles(tmp_path)
    broken = tmp_path / "nb201_cifar100_full_training.pickle"
    broken.write_bytes(b"\x80\x04truncated")
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(tmp_path)
    assert str(broken) in str(err.value)


def test_wrongly_shaped_pickle_in_a_folder_is_a_user_error_naming_the_file(tmp_path):
    """As a corrupt pickle in a folder is named by its file, so is one of the wrong shape: the
    folder holds three pickles, and the message must say which to fix."""
    write_naslib_pickles(tmp_path)
    wrong = tmp_path / "nb201_cifar100_full_training.pickle"
    with open(wrong, "wb") as handle:
        pickle.dump({ARCH_A: ["not", "a", "dict"]}, handle)
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(tmp_path)
    assert str(err.value).startswith(f"{wrong}: {ARCH_A} holds list, not a mapping"), str(err.value)


class _RunsCode:
    """Unpickling this calls ``Path.touch``: what a malicious pickle would do, harmlessly."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_naslib_pickle_that_would_run_code_is_refused_before_running_it(tmp_path):
    write_naslib_pickles(tmp_path)
    marker = tmp_path / "ran"
    with open(tmp_path / "nb201_cifar100_full_training.pickle", "wb") as handle:
        pickle.dump({ARCH_A: {"cifar100": _RunsCode(marker)}}, handle)
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(tmp_path)
    assert not marker.exists()
    assert "nb201_cifar100_full_training.pickle" in str(err.value) and "refusing to load global" in str(err.value)


def test_official_pth_in_a_folder_is_never_loaded(tmp_path, caplog):
    marker = tmp_path / "ran"
    with open(tmp_path / "NAS-Bench-201-v1_1-test.pth", "wb") as handle:
        pickle.dump(_RunsCode(marker), handle)
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(tmp_path)
    assert str(err.value) == (f"{tmp_path}: NAS-Bench-201-v1_1-test.pth is the official benchmark, a pickle that runs "
                              f"code when loaded, so it is read only when named: --benchmark {tmp_path / 'NAS-Bench-201-v1_1-test.pth'}")
    write_csv(tmp_path / "nats.csv", HEADER, [f"{ARCH_A},93.5,70.0"])
    with caplog.at_level(logging.WARNING, logger="naslib_bayes"):
        bench = loaders.load_benchmark(tmp_path)
    assert bench.source == str(tmp_path / "nats.csv") and not marker.exists()
    assert "ignoring NAS-Bench-201-v1_1-test.pth" in caplog.records[0].getMessage()


# ---- .npz round trip -------------------------------------------------------------------
def test_npz_round_trip_keeps_order_tables_and_notes(tmp_path):
    cells = [nb201.from_string(a) for a in (ARCH_C, ARCH_A, ARCH_B)]
    tables = {
        "cifar10": {"test_accuracy": [1.0, 2.0, np.nan], "val_accuracy": [3.0, 4.0, 5.0]},
        "ImageNet16-120": {"synflow": [-1.5, 0.0, 7.25]},
    }
    bench = Benchmark(cells, tables, source="memory", notes=["first note", "second, with ünicode"])
    path = tmp_path / "bench.npz"
    loaders.save_npz(bench, path)
    back = loaders.load_benchmark(path)
    np.testing.assert_array_equal(back.cells, bench.cells)
    assert back.num_in_file == 3 and back.notes == bench.notes
    assert back.datasets == bench.datasets
    for dataset in bench.datasets:
        assert back.metrics(dataset) == bench.metrics(dataset)
        for metric in bench.metrics(dataset):
            np.testing.assert_array_equal(back.query_all(dataset, metric), bench.query_all(dataset, metric))


@pytest.mark.parametrize("damage", [0.7, 7.0], ids=["fractional", "out_of_range"])
def test_an_invalid_cell_in_an_npz_is_refused_naming_the_file(tmp_path, damage):
    path = tmp_path / "bench.npz"
    cells = np.array([nb201.from_string(ARCH_A), nb201.from_string(ARCH_B)], dtype=np.float64)
    cells[1, 2] += damage  # 0.7 would be truncated to ARCH_B's op if op indices were cast with int()
    np.savez(path, cells=cells, **{"cifar10/val_accuracy": np.array([91.0, 88.0])})
    with pytest.raises(UserError) as error:
        loaders.load_benchmark(path)
    assert str(error.value).startswith(f"{path}: invalid NAS-Bench-201 cell")


@pytest.mark.parametrize("table, message", [
    ({"mnist/test_accuracy": np.array([91.0, 88.0])}, "unknown NAS-Bench-201 dataset 'mnist'"),
    ({"cifar10/test_accuracy": np.array([[91.0], [88.0]])}, "cifar10/test_accuracy has shape (2, 1)"),
    ({"cifar10-valid/test_accuracy": np.array([91.0, 88.0]), "cifar10/test_accuracy": np.array([93.0, 89.0])},
     "keys 'cifar10-valid' and 'cifar10' both hold cifar10 results"),
], ids=["unknown_dataset", "wrong_shape", "one_dataset_twice"])
def test_a_bad_table_in_an_npz_is_refused_naming_the_file(tmp_path, table, message):
    path = tmp_path / "bench.npz"
    np.savez(path, cells=np.array([nb201.from_string(ARCH_A), nb201.from_string(ARCH_B)]), **table)
    with pytest.raises(UserError) as error:
        loaders.load_benchmark(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_damaged_npz_is_a_user_error(tmp_path):
    path = tmp_path / "bench.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="bench.npz"):
        loaders.load_benchmark(path)


# ---- error paths of load_benchmark -----------------------------------------------------
def write_csv(path, header: str, rows: list[str]) -> None:
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "nats.csv"
    write_csv(path, "ArchitectureString,CIFAR10TestAccuracy200Epochs", [f"{ARCH_A},93.5", f"{ARCH_B},88.25"])
    return path


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="does-not-exist.csv' does not exist"):
        loaders.load_benchmark(tmp_path / "does-not-exist.csv")


def test_unknown_extension(tmp_path):
    path = tmp_path / "bench.txt"
    path.write_text("hello")
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    assert str(path) in str(err.value) and "not a NAS-Bench-201 benchmark file" in str(err.value)



@pytest.mark.parametrize("named", ["file", "folder"])
def test_nats_bench_archives_are_named_as_unread_with_the_formats_that_are(tmp_path, named):
    # NATS-Bench's own release is a folder of .pickle.pbz2 archives; a user pointing at it must
    # learn that this format is not read and which are, not that the folder holds no benchmark.
    folder = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    folder.mkdir()
    (folder / "meta.pickle.pbz2").write_bytes(b"BZh9")
    path = folder / "meta.pickle.pbz2" if named == "file" else folder
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and "NATS-Bench's .pickle.pbz2 archives are not read" in message
    assert ".pth" in message and "NASLib" in message and "CSV" in message and "\n" not in message

def test_csv_without_architecture_column(tmp_path):
    path = tmp_path / "bench.csv"
    write_csv(path, "Arch,CIFAR10TestAccuracy200Epochs", [f"{ARCH_A},93.5"])
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    assert str(path) in str(err.value) and "'ArchitectureString'" in str(err.value)


def test_csv_malformed_arch_string(tmp_path):
    path = tmp_path / "bench.csv"
    write_csv(path, "ArchitectureString,CIFAR10TestAccuracy200Epochs", [f"{ARCH_A},93.5", "|conv_5x5~0|+|x|,1.0"])
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    assert str(path) in str(err.value) and "line 3" in str(err.value) and "'|conv_5x5~0|+|x|'" in str(err.value)


def test_query_unknown_dataset(small_csv):
    bench = loaders.load_benchmark(small_csv)
    assert bench.query(ARCH_A, "cifar10") == pytest.approx(93.5)
    with pytest.raises(UserError, match="unknown NAS-Bench-201 dataset 'mnist'"):
        bench.query(ARCH_A, "mnist")
    with pytest.raises(UserError, match="no dataset 'cifar100'"):
        bench.query(ARCH_A, "cifar100")


def test_query_unknown_metric(small_csv):
    bench = loaders.load_benchmark(small_csv)
    with pytest.raises(UserError) as err:
        bench.query(ARCH_A, "cifar10", "val_acc")
    assert "no metric 'val_acc'" in str(err.value) and "test_accuracy" in str(err.value)


def test_query_malformed_arch_string(small_csv):
    bench = loaders.load_benchmark(small_csv)
    with pytest.raises(UserError, match="malformed NAS-Bench-201 architecture string"):
        bench.query("|nor_conv_3x3~0|+|none~0|", "cifar10")


# ---- what a text file may hold -----------------------------------------------------------------
HEADER = "ArchitectureString,CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs"


def load_error(path) -> str:
    with pytest.raises(UserError) as err:
        loaders.load_benchmark(path)
    return str(err.value)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "Infinity"])
def test_csv_non_finite_number_names_line_column_and_value(tmp_path, text):
    path = tmp_path / "bench.csv"
    write_csv(path, HEADER, [f"{ARCH_A},93.5,70.0", f"{ARCH_B},88.25,{text}"])
    assert load_error(path) == (f"{path}, line 3, column CIFAR100TestAccuracy200Epochs: {text!r} is not a finite "
                                "number (leave the field empty for no value)")


def test_csv_empty_field_is_a_missing_value(tmp_path):
    path = tmp_path / "bench.csv"
    write_csv(path, HEADER, [f"{ARCH_A},93.5,", f"{ARCH_B},,61.0"])
    bench = loaders.load_benchmark(path)
    assert math.isnan(bench.query(ARCH_A, "cifar100")) and math.isnan(bench.query(ARCH_B, "cifar10"))
    assert bench.query(ARCH_B, "cifar100") == 61.0


def test_csv_non_numeric_value_names_the_column_and_the_value(tmp_path):
    path = tmp_path / "bench.csv"
    write_csv(path, HEADER, [f"{ARCH_A},93.5,70.0", f"{ARCH_B},88.25,seventy"])
    assert load_error(path) == f"{path}, line 3, column CIFAR100TestAccuracy200Epochs: 'seventy' is not a number"


@pytest.mark.parametrize("row, fields", [("93.5,70.0", 2), ("{arch},93.5,70.0,extra", 4)])
def test_csv_row_of_the_wrong_width_names_its_line(tmp_path, row, fields):
    path = tmp_path / "bench.csv"
    write_csv(path, HEADER, [f"{ARCH_A},93.5,70.0", row.format(arch=ARCH_B)])
    assert load_error(path) == f"{path}, line 3: {fields} fields where the header has 3"


def test_csv_with_a_byte_order_mark_keeps_its_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("CIFAR10TestAccuracy200Epochs,ArchitectureString\n93.5," + ARCH_A + "\n", encoding="utf-8-sig")
    bench = loaders.load_benchmark(path)
    assert bench.query(ARCH_A, "cifar10") == 93.5


def test_csv_cell_listed_twice_is_named_with_both_lines(tmp_path):
    path = tmp_path / "dup.csv"
    write_csv(path, HEADER, [f"{ARCH_A},93.5,70.0", f"{ARCH_B},88.25,61.0", f"{ARCH_A},99.9,70.0"])
    assert load_error(path) == f"{path}, line 4: cell {ARCH_A} is listed twice (first on line 2)"


@pytest.mark.parametrize("column", ["ArchitectureString", "CIFAR100TestAccuracy200Epochs"])
def test_csv_with_a_column_named_twice_is_refused(tmp_path, column):
    """Only the first of two equally named columns would be read, the other silently ignored."""
    path = tmp_path / "twice.csv"
    write_csv(path, f"{HEADER},{column}", [f"{ARCH_A},93.5,70.0,{ARCH_B if column == 'ArchitectureString' else 40.0}"])
    assert load_error(path) == f"{path}: the CSV header names column {column!r} twice: keep one of them"


def test_csv_with_a_header_only_is_refused(tmp_path):
    path = tmp_path / "header.csv"
    write_csv(path, HEADER, [])
    assert load_error(path) == f"{path}: the CSV has a header but no rows: no cell to search"


def write_zc(path, per_dataset) -> None:
    import json

    path.write_text(json.dumps({"nasbench201": per_dataset}))


KEY_A = str(nb201.to_naslib(nb201.from_string(ARCH_A)))


@pytest.mark.parametrize("entry, message", [
    ({"val_accuracy": "abc"}, "val_accuracy: 'abc' is not a number"),
    ({"val_accuracy": True}, "val_accuracy: True is not a number"),
    ({"params": [1, 2]}, "params: [1, 2] is not a number"),
    ({"val_accuracy": float("inf")}, "val_accuracy: inf is not a finite number (use null for no value)"),
    ({"synflow": float("nan")}, "synflow: nan is not a finite number (use null for no value)"),
])
def test_zero_cost_json_bad_values_name_the_file_cell_and_metric(tmp_path, entry, message):
    path = tmp_path / "zc.json"
    write_zc(path, {"cifar10": {KEY_A: entry}})
    assert load_error(path) == f"{path}: cifar10 {KEY_A}, {message}"


def test_zero_cost_json_null_is_missing_and_objects_without_a_score_are_skipped(tmp_path):
    path = tmp_path / "zc.json"
    write_zc(path, {"cifar10": {KEY_A: {"val_accuracy": 91.0, "params": None, "synflow": {"time": 0.1}}}})
    bench = loaders.load_benchmark(path)
    assert bench.query(ARCH_A, "cifar10", "val_accuracy") == 91.0
    assert bench.metrics("cifar10") == ("val_accuracy",)


def test_zero_cost_json_in_naslibs_own_layout_reads_datasets_at_the_top_and_scores(tmp_path):
    """NASLib's ``get_zc_benchmark_api`` returns ``data[dataset]`` of its file (no 'nasbench201'
    level), and each proxy, FLOPs and params included, is ``{"score": ..., "time": ...}``."""
    import json

    path = tmp_path / "zc_nasbench201.json"
    entry = {"val_accuracy": 91.0, "flops": {"score": 15.6, "time": 0.0}, "params": {"score": 0.13, "time": 0.0},
             "synflow": {"score": 3.0, "time": 0.1}}
    path.write_text(json.dumps({"cifar10": {KEY_A: entry}, "ImageNet16-120": {KEY_A: {"val_accuracy": 40.0}}}))
    bench = loaders.load_benchmark(path)
    assert bench.datasets == ("cifar10", "ImageNet16-120")
    values = {m: bench.query(ARCH_A, "cifar10", m) for m in bench.metrics("cifar10")}
    assert values == {"val_accuracy": 91.0, "flops": 15.6, "params": 0.13, "synflow": 3.0}
    assert bench.query(ARCH_A, "ImageNet16-120", "val_accuracy") == 40.0


def test_zero_cost_json_score_objects_are_checked_like_numbers(tmp_path):
    path = tmp_path / "zc.json"
    write_zc(path, {"cifar10": {KEY_A: {"val_accuracy": 91.0, "flops": {"score": "x"}}}})
    assert load_error(path) == f"{path}: cifar10 {KEY_A}, flops: 'x' is not a number"


def test_zero_cost_json_key_written_twice_is_refused_not_overwritten(tmp_path):
    """json.load keeps the last of two equal keys: the first cell's numbers would vanish unseen."""
    path = tmp_path / "zc.json"
    path.write_text('{"cifar10": {"%s": {"val_accuracy": 91.0}, "%s": {"val_accuracy": 11.0}}}' % (KEY_A, KEY_A))
    assert load_error(path) == f"{path}: key {KEY_A!r} appears twice in one object: keep one of them"


def test_zero_cost_json_cell_spelled_twice_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "zc.json"
    other_spelling = KEY_A.replace(" ", "")
    write_zc(path, {"cifar10": {KEY_A: {"val_accuracy": 91.0}, other_spelling: {"val_accuracy": 11.0}}})
    assert load_error(path) == f"{path}: cifar10 {other_spelling}: the same cell as {KEY_A!r}: keep one of them"


def test_zero_cost_json_of_neither_layout_names_what_it_expected(tmp_path):
    path = tmp_path / "zc.json"
    path.write_text('{"nasbench101": {}}')
    assert load_error(path) == (f"{path}: expected NASLib's zero-cost JSON: an object of datasets (cifar10, cifar100, "
                                "ImageNet16-120), or one under a top-level 'nasbench201' key")


@pytest.mark.parametrize("per_dataset, message", [
    ({"svhn": {KEY_A: {"val_accuracy": 91.0}}}, "unknown NAS-Bench-201 dataset 'svhn'"),
    ({"cifar10": {"(1, 2, 3)": {"val_accuracy": 91.0}}}, "cifar10 (1, 2, 3): invalid NAS-Bench-201 cell"),
    ({"cifar10": {"(a, b)": {"val_accuracy": 91.0}}}, "cifar10 (a, b): not an op-index tuple"),
    ({"cifar10": {KEY_A: [1, 2]}}, f"cifar10 {KEY_A}: list, not an object of metrics"),
    ({"cifar10": [1, 2]}, "'cifar10' holds list, not an object mapping cells to metrics"),
])
def test_zero_cost_json_bad_keys_and_shapes_name_the_file(tmp_path, per_dataset, message):
    path = tmp_path / "zc.json"
    write_zc(path, per_dataset)
    assert load_error(path).startswith(f"{path}: {message}")


def test_folder_with_several_benchmark_files_names_the_one_loaded_and_the_ones_ignored(tmp_path, caplog):
    write_csv(tmp_path / "nats.csv", HEADER, [f"{ARCH_A},93.5,70.0"])
    write_csv(tmp_path / "other.csv", HEADER, [f"{ARCH_B},88.0,60.0"])
    write_zc(tmp_path / "zc.json", {"cifar10": {KEY_A: {"val_accuracy": 91.0}}})
    with caplog.at_level(logging.WARNING, logger="naslib_bayes"):
        bench = loaders.load_benchmark(tmp_path)
    assert bench.source == str(tmp_path / "nats.csv")
    expected = (f"{tmp_path} holds several benchmark files: loading nats.csv, ignoring other.csv, zc.json "
                "(preference: .npz > NASLib pickles > .csv > .json; a .pth only when named)")
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_folder_with_one_benchmark_file_loads_it_silently(tmp_path, caplog):
    write_csv(tmp_path / "nats.csv", HEADER, [f"{ARCH_A},93.5,70.0"])
    (tmp_path / "notes.txt").write_text("not a benchmark")
    with caplog.at_level(logging.INFO, logger="naslib_bayes"):
        loaders.load_benchmark(tmp_path)
    assert not caplog.records


def test_zero_cost_json_with_a_byte_order_mark_is_read_as_without(tmp_path):
    """Editors on Windows write one; the CSV loader reads past it, and the JSON loader refused it."""
    plain, marked = tmp_path / "zc.json", tmp_path / "zc_bom.json"
    write_zc(plain, {"cifar10": {KEY_A: {"val_accuracy": 91.0}}})
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    read = loaders.load_benchmark(marked).query_all("cifar10", "val_accuracy")
    assert np.nanmax(read) == 91.0  # the one cell with a value; the others have none (NaN)
    np.testing.assert_array_equal(read, loaders.load_benchmark(plain).query_all("cifar10", "val_accuracy"))
