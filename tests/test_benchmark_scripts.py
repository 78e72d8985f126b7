"""The TNAS benchmark's run cache: a cached run is reused only for the surrogate it searched with."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import tnas_nb201  # noqa: E402

from naslib_bayes.results import source_fingerprint  # noqa: E402
from resume_helpers import Killed, count_epochs, killed_after_saves  # noqa: E402


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_search_unit_reuses_a_cached_run_only_for_the_same_surrogate(nats_csv, nats_benchmark, tmp_path, monkeypatch):
    from naslib_bayes import experiment
    from naslib_bayes.comparison.records import benchmark_fingerprint

    folder = tmp_path / "cache" / "surrogates" / "cifar10" / "seed0"
    _write(folder / "meta.json", {"seed": 0, "wall_s": 30.0})
    surrogate = str(folder / "surrogate.pt")
    out = tmp_path / "seed0.json"
    cached = {"surrogate": tnas_nb201.surrogate_id(surrogate), "accuracies": [1.0, 2.0], "architectures": [],
              "code": source_fingerprint(*tnas_nb201.SCRIPTS), "settings": tnas_nb201.run_settings("tnas", benchmark_fingerprint(nats_benchmark))}
    assert cached["surrogate"].startswith("surrogates/cifar10/seed0@")
    _write(out, cached)
    assert tnas_nb201.search_unit(str(nats_csv), "cifar10", "tnas", 0, 3, surrogate, str(out)) == cached
    # the same run made by other code is not handed back: it is searched anew
    _write(out, {**cached, "code": "other-code"})

    def searched_anew(*args, **kwargs):
        raise RuntimeError("searched anew")

    monkeypatch.setattr(experiment, "run_blackbox_search", searched_anew)
    with pytest.raises(RuntimeError, match="searched anew"):
        tnas_nb201.search_unit(str(nats_csv), "cifar10", "tnas", 0, 3, surrogate, str(out))
    monkeypatch.undo()
    assert tnas_nb201.cached_run(out, surrogate) is not None  # --report-only still reads it ...
    assert tnas_nb201.other_code([json.loads(out.read_text()), cached]) == 1  # ... and counts it as other code's
    _write(out, cached)
    # meta-trained again in the same folder: another surrogate (no run here, the file does not exist)
    _write(folder / "meta.json", {"seed": 0, "wall_s": 31.0})
    assert tnas_nb201.surrogate_id(surrogate) != cached["surrogate"]
    # the same file asked for by a method without a surrogate is another run: it is searched anew
    fresh = tnas_nb201.search_unit(str(nats_csv), "cifar10", "transfer-topk", 0, 3, None, str(out))
    assert fresh["surrogate"] is None and len(fresh["accuracies"]) == 3 and fresh["accuracies"] != cached["accuracies"]
    assert json.loads(out.read_text()) == fresh


@pytest.fixture
def cached_surrogate(tmp_path, monkeypatch):
    """A cached surrogate's folder and meta.json record (cifar10 left out, this code, benchmark "abc");
    meta-training anew raises RuntimeError("meta-trained anew")."""
    from naslib_bayes.optimizers import tnas

    folder = tmp_path / "surrogates" / "cifar10" / "seed0"
    record = {"target": "cifar10", "seed": 0, "settings": {}, "wall_s": 30.0, "code": source_fingerprint(*tnas_nb201.SCRIPTS),
              "benchmark_sha256": "abc"}
    _write(folder / "meta.json", record)

    def meta_trained_anew(*args, **kwargs):
        raise RuntimeError("meta-trained anew")

    monkeypatch.setattr(tnas, "meta_train_surrogate", meta_trained_anew)
    return folder, record


def test_a_surrogate_is_reused_only_when_this_code_meta_trained_it_on_this_benchmark(nats_csv, cached_surrogate):
    folder, record = cached_surrogate
    assert tnas_nb201.meta_train_unit(str(nats_csv), "cifar10", 0, str(folder), benchmark_sha256="abc") == record
    _write(folder / "meta.json", {**record, "code": "other-code"})
    with pytest.raises(RuntimeError, match="meta-trained anew"):
        tnas_nb201.meta_train_unit(str(nats_csv), "cifar10", 0, str(folder), benchmark_sha256="abc")
    # a surrogate meta-trained on another benchmark file's accuracies is meta-trained anew
    _write(folder / "meta.json", record)
    with pytest.raises(RuntimeError, match="meta-trained anew"):
        tnas_nb201.meta_train_unit(str(nats_csv), "cifar10", 0, str(folder), benchmark_sha256="other-file")


def test_a_surrogate_is_reused_only_for_the_datasets_and_settings_it_was_meta_trained_with(nats_csv, cached_surrogate):
    # The leave-one-out benchmark's surrogates/cifar10/seed0 left cifar10 out; the validation script's
    # is meta-trained on cifar10 alone. With one --cache for both, reusing the first for the second
    # would search cifar100 with a surrogate meta-trained on it.
    folder, record = cached_surrogate
    with pytest.raises(RuntimeError, match="meta-trained anew"):
        tnas_nb201.meta_train_unit(str(nats_csv), ("cifar100", "ImageNet16-120"), 0, str(folder), benchmark_sha256="abc")
    with pytest.raises(RuntimeError, match="meta-trained anew"):
        tnas_nb201.meta_train_unit(str(nats_csv), "cifar10", 0, str(folder), {"meta_evidence_top": 200}, "abc")
    left_out = {**record, "target": ["cifar100", "ImageNet16-120"], "settings": {"meta_evidence_top": 200}}
    _write(folder / "meta.json", left_out)
    assert tnas_nb201.meta_train_unit(str(nats_csv), ("cifar100", "ImageNet16-120"), 0, str(folder),
                                      {"meta_evidence_top": 200}, "abc") == left_out


#: What a kill or a full disk leaves of a record being written in place: nothing, or its beginning.
TORN_RECORDS = ["", '{"target": "cifar10", "se']


@pytest.mark.parametrize("torn", TORN_RECORDS)
def test_a_torn_surrogate_record_is_meta_trained_anew_and_left_out_of_the_report(nats_csv, cached_surrogate, tmp_path,
                                                                                  torn):
    folder, _ = cached_surrogate
    (folder / "meta.json").write_text(torn)
    with pytest.raises(RuntimeError, match="meta-trained anew"):
        tnas_nb201.meta_train_unit(str(nats_csv), "cifar10", 0, str(folder), benchmark_sha256="abc")
    args = SimpleNamespace(cache=tmp_path, seeds=1, budget=3)
    meta, runs = tnas_nb201.load_cache(args, ["cifar10"], ["tnas"], [0], n_surrogates=1)
    assert meta == {} and runs == {}


@pytest.mark.parametrize("torn", TORN_RECORDS)
def test_a_torn_run_record_is_searched_anew_and_left_out_of_the_report(nats_csv, tmp_path, torn):
    args = SimpleNamespace(cache=tmp_path, seeds=1, budget=3)
    path = tnas_nb201.run_path(args, "cifar10", "transfer-topk", 0, 1)
    _write(path, {})
    path.write_text(torn)
    assert tnas_nb201.load_cache(args, ["cifar10"], ["transfer-topk"], [0], n_surrogates=1) == ({}, {})
    record = tnas_nb201.search_unit(str(nats_csv), "cifar10", "transfer-topk", 0, 3, None, str(path))
    assert len(record["accuracies"]) == 3 and json.loads(path.read_text()) == record


def test_every_setting_meta_training_reads_gives_the_surrogates_a_folder_of_their_own(monkeypatch):
    from naslib_bayes.optimizers import tnas
    from naslib_bayes.predictors import meta_train

    class Recorder(dict):
        read: set = set()

        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(meta_train, "meta_datasets_from_benchmark", lambda *args, **kwargs: [])
    monkeypatch.setattr(meta_train, "meta_train", stop)
    config = Recorder(tnas.TNAS.defaults)
    with pytest.raises(Stop):
        tnas.meta_train_surrogate(SimpleNamespace(datasets=["cifar100"]), "test_accuracy", config, seed=0)
    assert config.read - {"threads"} == set(tnas_nb201.META_KEYS)  # threads: how fast, not what
    folders = {tnas_nb201.surrogate_folder(m) for m, (name, _) in tnas_nb201.METHODS.items() if name == "tnas"}
    assert {"surrogates_512", "surrogates_512_0.1_reptile_standardise"} <= folders


def test_a_file_with_validation_accuracy_is_searched_and_scored_on_test_accuracy(nats_benchmark, tmp_path):
    """Regrets are against the test optimum, so the accuracies recorded must be test accuracies too."""
    from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
    from naslib_bayes.search_spaces.nasbench201.loaders import save_npz

    test = {d: nats_benchmark.query_all(d, "test_accuracy") for d in nats_benchmark.datasets}
    tables = {d: {"test_accuracy": v, "val_accuracy": v[::-1].copy()} for d, v in test.items()}  # another order
    path = tmp_path / "both.npz"
    save_npz(Benchmark(nats_benchmark.cells, tables), path)
    record = tnas_nb201.search_unit(str(path), "cifar10", "transfer-topk", 0, 4, None, str(tmp_path / "run.json"))
    expected = [nats_benchmark.query(a, "cifar10", "test_accuracy") for a in record["architectures"]]
    assert record["accuracies"] == expected


def test_the_report_summarises_runs_as_worked_out_by_hand():
    """Best 95, budget 6. Run 1 reaches 95 at query 3 (a query without a value before it); run 2
    at query 6, within 1e-9; run 3 never (counted as 7). Regret after 5 queries: 0, 0.5, 22 (mean
    7.5); after all 6: 0, 1e-10, 21 (mean 7)."""
    runs = [[90.0, None, 95.0, 93.0, 91.0, 92.0], [80.0, 85.0, 85.0, 94.5, 94.5, 95.0 - 1e-10],
            [None, 70.0, 71.0, 72.0, 73.0, 74.0]]
    records = [{"accuracies": a, "architectures": [name]} for a, name in zip(runs, ("x", "y", "x"))]
    summary = tnas_nb201.summarise(records, best=95.0, budget=6)
    assert summary["queries"] == [3, 6, 7] and summary["median_queries"] == 6.0
    assert summary["regret"][5] == pytest.approx(7.5) and summary["final_regret"] == pytest.approx(7.0)
    assert summary["regret"][10] == summary["regret"][20] == pytest.approx(7.0)  # past the budget: all queries
    assert summary["distinct"] == 2
    assert math.isnan(tnas_nb201.regret_after([None, None], 95.0, 2))  # no value seen: no regret


def test_runs_with_shared_and_own_surrogates_are_cached_apart(tmp_path):
    args = argparse.Namespace(cache=tmp_path, budget=50, seeds=20, surrogate_seeds=5)
    shared, own = tnas_nb201.run_path(args, "cifar10", "tnas", 7, 5), tnas_nb201.run_path(args, "cifar10", "tnas", 7, 20)
    assert shared != own and shared.name == "seed7-surrogate2.json" and own.name == "seed7.json"
    assert tnas_nb201.run_path(args, "cifar10", "gp-bo", 7, 5).name == "seed7.json"  # no surrogate to tell apart
    surrogate = tnas_nb201.method_surrogate(args, "cifar10", 7, 5, "tnas")
    _write(shared, {"surrogate": tnas_nb201.surrogate_id(surrogate), "code": source_fingerprint(*tnas_nb201.SCRIPTS)})
    _write(tnas_nb201.run_path(args, "cifar10", "gp-bo", 7, 5), {"surrogate": None})
    _write(own, {"surrogate": "surrogates/cifar10/seed2@stale"})  # not what seed 7 searches with now
    _, runs = tnas_nb201.load_cache(args, ["cifar10"], ["tnas", "gp-bo"], [7], n_surrogates=5)
    assert set(runs) == {("cifar10", "tnas", 7), ("cifar10", "gp-bo", 7)}
    _, runs = tnas_nb201.load_cache(args, ["cifar10"], ["tnas", "gp-bo"], [7], n_surrogates=20)
    assert set(runs) == {("cifar10", "gp-bo", 7)}


# ---- benchmarks/compress_mnist.py: finished runs are kept, killed runs continue -------------------
import compress_mnist  # noqa: E402


def _job(mnist_dir, out, **options) -> dict:
    return dict(model="lenet300", seed=0, lam=1.0, epochs=4, finetune_epochs=1, val_size=1000, train_images=None,
                split="val",
                options={k: v for k, v in {**compress_mnist.DEFAULTS["lenet300"], **options}.items()
                         if k not in ("lam", "epochs", "finetune_epochs")},
                data_root=str(mnist_dir), threads=1, out=str(out))


def _comparable(record: dict) -> dict:
    history = [{k: v for k, v in h.items() if k != "time_s"} for h in record["history"]]
    return {**{k: v for k, v in record.items() if k != "wall_time_s"}, "history": history}


def test_compress_benchmark_reuses_a_run_only_for_the_same_data(mnist_dir, tmp_path, monkeypatch):
    """The data folder's files are a setting: the same files elsewhere are the same run, a changed
    label file (or added training files, which change the split) is another."""
    import gzip
    import shutil

    import naslib_bayes.compression as compression

    full = compress_mnist.run_one(_job(mnist_dir, tmp_path / "a"))
    copy = tmp_path / "copy"
    shutil.copytree(mnist_dir, copy)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(compression, "compress", must_not_run)
    assert compress_mnist.run_one(_job(copy, tmp_path / "a")) == full
    labels = copy / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[8] = (payload[8] + 1) % 10  # the first image's label
    labels.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(AssertionError, match="run again"):
        compress_mnist.run_one(_job(copy, tmp_path / "a"))


@pytest.mark.parametrize("subfolder, name", [("MNIST/raw", "t10k-labels-idx1-ubyte.gz"),
                                             ("mnist", "t10k-labels-idx1-ubyte.gz"),
                                             (".", "t10k-labels.idx1-ubyte.gz")])
def test_the_data_fingerprint_covers_the_files_the_loader_reads(mnist_dir, tmp_path, subfolder, name):
    """Wherever and however the loader finds MNIST (a subfolder of --data-root, the dotted names
    of some mirrors), another label file is another fingerprint, so a run of the old data is not reused."""
    import gzip
    import shutil

    folder = tmp_path / "root" / subfolder
    folder.mkdir(parents=True)
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", folder / name.replace("labels", "images").replace("idx1", "idx3"))
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / name).write_bytes(gzip.compress(labels))
    before = compress_mnist.data_fingerprint(str(tmp_path / "root"))
    (folder / name).write_bytes(gzip.compress(labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]))
    assert compress_mnist.data_fingerprint(str(tmp_path / "root")) != before


def test_the_data_fingerprint_of_the_documented_layout_is_unchanged(mnist_dir):
    # runs recorded before keep their folders: files in --data-root itself hash as they always did
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(mnist_dir.iterdir()):
        if path.name.startswith(("t10k-", "train-")) and "-idx" in path.name:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert compress_mnist.data_fingerprint(str(mnist_dir)) == digest.hexdigest()


def test_the_compression_benchmark_refuses_a_missing_data_root_in_one_line(tmp_path, capsys):
    # every run failed alike with "FileNotFoundError(2, 'No such file or directory')", naming no file
    missing = tmp_path / "no-mnist"
    message = _one_line_refusal(compress_mnist, ["--data-root", str(missing), "--split", "val", "--seeds", "0",
                                                 "--out", str(tmp_path / "out")], capsys)
    assert str(missing) in message
    assert not (tmp_path / "out").exists()


def test_compress_benchmark_keeps_finished_runs_and_continues_killed_ones(mnist_dir, tmp_path, monkeypatch):
    import naslib_bayes.compression as compression

    full = compress_mnist.run_one(_job(mnist_dir, tmp_path / "a"))
    assert full["epochs"] == 4 and full["params_after"] < full["params_before"]
    # killed after six saves (four dense epochs, two compression epochs), then run again
    with killed_after_saves(monkeypatch, 6), pytest.raises(Killed):
        compress_mnist.run_one(_job(mnist_dir, tmp_path / "b"))
    run_dir = next((tmp_path / "b").iterdir())
    (run_dir / ".checkpoint-val.pt.k1ll3d00.tmp").write_bytes(b"half")  # a write the kill cut short
    epochs = count_epochs(monkeypatch)
    assert _comparable(compress_mnist.run_one(_job(mnist_dir, tmp_path / "b"))) == _comparable(full)
    assert not list(run_dir.glob(".*.tmp"))  # the killed write's temporary is not left behind
    assert epochs["trained"] == full["epochs"] + full["epochs"] - 6  # only what the killed run had not done

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(compression, "compress", must_not_run)
    assert compress_mnist.run_one(_job(mnist_dir, tmp_path / "a")) == full  # finished: read back
    with pytest.raises(AssertionError, match="run again"):  # other settings: run anew, in a folder of their own
        compress_mnist.run_one(_job(mnist_dir, tmp_path / "a", lr=0.01))
    assert compress_mnist.run_one(_job(mnist_dir, tmp_path / "a")) == full  # the first setting's run is kept
    assert len(list((tmp_path / "a").iterdir())) == 2
    import naslib_bayes.results as results

    monkeypatch.setattr(results, "source_fingerprint", lambda *scripts: "other-code")
    with pytest.raises(AssertionError, match="run again"):  # a run made by other code is not handed back
        compress_mnist.run_one(_job(mnist_dir, tmp_path / "a"))
    monkeypatch.undo()
    monkeypatch.setattr(compression, "compress", must_not_run)
    record = next((tmp_path / "a").glob("*/record-val.json"))
    record.write_text(record.read_text()[:50])  # a torn record is a run to do again, not an error
    with pytest.raises(AssertionError, match="run again"):
        compress_mnist.run_one(_job(mnist_dir, tmp_path / "a"))


def test_the_compression_benchmark_lists_its_records_in_the_order_of_its_runs_whatever_finishes_first(monkeypatch):
    """records-<split>.json held the runs in the order they finished, which --jobs and reused runs
    change: the first run finishing last here was listed last."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import naslib_bayes.comparison.processes as processes

    jobs = [dict(model="lenet5", lam=0.02, seed=seed) for seed in range(3)]

    def slower_the_earlier(job: dict) -> dict:
        time.sleep(0.1 * (len(jobs) - job["seed"]))
        return {**job, "accuracy_dense": 99.0, "accuracy_compressed": 98.0, "params_before": 10, "params_after": 1,
                "wall_time_s": 0.0}

    monkeypatch.setattr(compress_mnist, "run_one", slower_the_earlier)
    monkeypatch.setattr(processes, "worker_pool", lambda jobs: ThreadPoolExecutor(max_workers=jobs))
    records = compress_mnist.run_jobs(jobs, processes=len(jobs))
    assert [r["seed"] for r in records] == [0, 1, 2]


def test_fewer_training_images_keep_the_validation_and_held_out_images(mnist_dir):
    from naslib_bayes.data import load_dataset
    from naslib_bayes.errors import UserError

    splits = load_dataset("mnist", mnist_dir, seed=3, val_size=1000)
    small = compress_mnist._fewer_training_images(splits, 3500, seed=3)
    larger = compress_mnist._fewer_training_images(splits, 5000, seed=3)
    assert (len(small.train), len(larger.train)) == (3500, 5000)
    assert small.val is splits.val and small.test is splits.test
    full, part = set(splits.train.indices.tolist()), set(small.train.indices.tolist())
    assert part < set(larger.train.indices.tolist()) < full  # nested: a larger count adds images
    rows = [i for i, index in enumerate(splits.train.indices.tolist()) if index in part]
    assert torch.equal(small.train.images, splits.train.images[rows])  # each image with its label
    assert torch.equal(small.train.labels, splits.train.labels[rows])
    assert compress_mnist._fewer_training_images(splits, None, seed=3) is splits
    other = compress_mnist._fewer_training_images(splits, 3500, seed=4)
    assert set(other.train.indices.tolist()) != part  # the seed draws the subset
    with pytest.raises(UserError, match="--train-images 7001: expected 1 to 7000"):
        compress_mnist._fewer_training_images(splits, 7001, seed=3)


def test_the_oneshot_benchmark_refuses_an_incomplete_file_before_any_search(zc_json, tmp_path, capsys, monkeypatch):
    import oneshot_nb201

    monkeypatch.setattr(oneshot_nb201, "run_oneshot_search", lambda *args, **kwargs: pytest.fail("searched"))
    with pytest.raises(SystemExit) as info:
        oneshot_nb201.main(["--benchmark", str(zc_json), "--data-root", str(tmp_path), "--seeds", "1"])
    assert info.value.code == 2
    assert f"{zc_json} lacks test accuracy of some or all cells on cifar10, cifar100, ImageNet16-120" in capsys.readouterr().err



def _fake_oneshot_result(cfg, benchmark=None, out_dir=None, resume=False):
    """A finished one-shot search's result, as much of it as the one-shot benchmark prints."""
    lam = cfg.hyperparameters.get("lambda_origin", 0.01)
    steps = 8000 // 2 // cfg.batch_size if cfg.optimizer == "darts" else 8000 // cfg.batch_size
    config = {"lr_schedule": "SGD", "batch_size": cfg.batch_size, "total_epochs": 2, "steps_per_epoch": steps,
              "augmentation": None, "channels": cfg.channels, "cells": cfg.cells,
              "optimizer_config": {"weight_decay": 3e-4, "grad_clip": 5.0, "warmup_epochs": 1, "rounds": 1, "epochs": 1,
                                   "lambda_child": lam}}
    cell = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    return {"optimizer": cfg.optimizer, "seed": cfg.seed, "config": config, "search_data": {"search_images": 8000},
            "final_architecture": cell, "op_counts": {"nor_conv_3x3": 6}, "parameter_free": False,
            "benchmark_accuracy": {"cifar10": 93.0, "cifar100": 70.0, "ImageNet16-120": 40.0},
            "epoch_times_s": [1.0, 1.0], "epoch_cpu_times_s": [1.0, 1.0], "repair_fraction": 0.6, "wall_time_s": 2.5,
            "architecture_update_times_s": [0.5], "relevance": [{"op": "nor_conv_3x3", "gamma": 1.0, "entropy": 1.0}],
            "architecture_updates": [{"mean_curvature": {"normal": [0.001, 0.001]}}]}


def test_the_oneshot_benchmark_prints_the_bayesnas_lambda_it_searched_with_whichever_method_runs_first(
        nats_csv, tmp_path, capsys, monkeypatch):
    import oneshot_nb201

    monkeypatch.setattr(oneshot_nb201, "run_oneshot_search", _fake_oneshot_result)
    oneshot_nb201.main(["--benchmark", str(nats_csv), "--data-root", str(tmp_path), "--seeds", "1",
                        "--methods", "darts,bayesnas", "--lambda", "0.005"])
    assert "BayesNAS: lambda 0.005," in capsys.readouterr().out


def test_the_oneshot_benchmark_prints_the_steps_of_each_split_whichever_method_runs_first(
        nats_csv, tmp_path, capsys, monkeypatch):
    # the shared line gave the first run's steps: DARTS's 62 (weights on half the images) as everyone's
    import oneshot_nb201

    monkeypatch.setattr(oneshot_nb201, "run_oneshot_search", _fake_oneshot_result)
    oneshot_nb201.main(["--benchmark", str(nats_csv), "--data-root", str(tmp_path), "--seeds", "1",
                        "--methods", "darts,bayesnas"])
    shared = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("# shared training"))
    assert "125 steps/epoch (DARTS 62, on each half)" in shared, shared


def test_the_oneshot_benchmark_prints_the_darts_optimiser_it_searched_with(nats_csv, tmp_path, capsys, monkeypatch):
    import oneshot_nb201

    monkeypatch.setattr(oneshot_nb201, "run_oneshot_search", _fake_oneshot_result)
    oneshot_nb201.main(["--benchmark", str(nats_csv), "--data-root", str(tmp_path), "--seeds", "1",
                        "--methods", "darts", "--opt", "arch_lr=0.001", "--opt", "arch_beta1=0.9"])
    assert "Adam(lr 0.001, betas (0.9, 0.999), wd 0.001)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--threads", "0"], "argument --threads: expected a positive integer, got '0'"),  # was set_num_threads' traceback
    (["--seeds", "0"], "argument --seeds: expected a positive integer, got '0'"),  # was fmean's traceback
    (["--channels", "0"], "argument --channels: expected a positive integer, got '0'"),  # ran the default C=8
    (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
    (["--lambda", "0"], "argument --lambda: expected a positive number, got '0'"),
    (["--methods", "darts,darts"], "--methods: darts is given 2 times; give each once"),
    (["--methods", "bayesnas,enas"], "unknown one-shot optimizer 'enas'"),
    # refused before the first search, not when the method it applies to comes up
    (["--methods", "random-cell,bayesnas", "--opt", "lr_min=1"], "lr_min=1.0 must not exceed lr=0.05"),
])
def test_the_oneshot_benchmark_refuses_bad_settings_before_any_search(nats_csv, tmp_path, capsys, monkeypatch,
                                                                       extra, message):
    import oneshot_nb201

    monkeypatch.setattr(oneshot_nb201, "run_oneshot_search", lambda *args, **kwargs: pytest.fail("searched"))
    argv = ["--benchmark", str(nats_csv), "--data-root", str(tmp_path), *extra, "--out", str(tmp_path / "out")]
    assert message in _one_line_refusal(oneshot_nb201, argv, capsys)
    assert not (tmp_path / "out").exists()


def _one_line_refusal(script, argv: list[str], capsys) -> str:
    """The error line of a benchmark script refusing ``argv`` with exit 2, as its command line would."""
    from naslib_bayes.comparison.processes import script_exit_code

    try:
        code = script_exit_code(lambda: script.main(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]  # argparse prints its usage first
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _tiny_mnist(mnist_dir: Path, folder: Path, train: int = 128, test: int = 32) -> Path:
    """A train and a test file cut from the MNIST test file: ``train`` images, then ``test``."""
    from naslib_bayes.data.formats import read_idx

    folder.mkdir()
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        array = read_idx(mnist_dir / f"t10k-{kind}-ubyte.gz", ndim=ndim)
        for split, part in (("train", array[:train]), ("t10k", array[train:train + test])):
            header = bytes([0, 0, 0x08, part.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in part.shape)
            (folder / f"{split}-{kind}-ubyte").write_bytes(header + part.astype("uint8").tobytes())
    return folder


def test_the_oneshot_benchmark_reads_finished_runs_back_from_out(mnist_dir, nats_csv, tmp_path, capsys, monkeypatch):
    # every run of the 15-run benchmark used to start again from scratch when the command was repeated
    import oneshot_nb201
    from naslib_bayes.training.oneshot import OneShotTrainer

    argv = ["--benchmark", str(nats_csv), "--data-root", str(_tiny_mnist(mnist_dir, tmp_path / "mnist")),
            "--seeds", "1", "--methods", "random-cell", "--channels", "2", "--batch-size", "32",
            "--out", str(tmp_path / "out")]
    assert oneshot_nb201.main(argv) == 0
    first = json.loads((tmp_path / "out" / "random-cell-0" / "result.json").read_text())
    capsys.readouterr()
    monkeypatch.setattr(OneShotTrainer, "_batch", lambda *args: pytest.fail("trained again"))
    assert oneshot_nb201.main(argv) == 0
    again = json.loads((tmp_path / "out" / "random-cell-0" / "result.json").read_text())
    assert again["final_architecture"] == first["final_architecture"] in capsys.readouterr().out
    assert again["epoch_stats"] == first["epoch_stats"]


def test_the_compression_benchmark_refuses_a_validation_split_without_images(mnist_dir, capsys):
    with pytest.raises(SystemExit) as info:
        compress_mnist.main(["--data-root", str(mnist_dir), "--split", "val", "--val-size", "0", "--seeds", "0"])
    assert info.value.code == 2 and "--split val needs validation images: --val-size 0" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--jobs", "0"), ("--threads", "0"), ("--epochs", "0"), ("--epochs", "-1"),
                                           ("--finetune-epochs", "-1"), ("--val-size", "-1")])
def test_the_compression_benchmark_refuses_a_count_out_of_range_before_out_is_made(mnist_dir, tmp_path, capsys,
                                                                                     option, value):
    # --jobs 0 was ValueError's traceback beside a --out already made; --epochs 0 ran each model's
    # default epochs instead, as if the option had not been given
    with pytest.raises(SystemExit) as info:
        compress_mnist.main(["--data-root", str(mnist_dir), "--split", "val", "--seeds", "0", option, value,
                             "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: expected a " in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--seeds", "0,1,...,11", "argument --seeds: expected comma-separated seeds (integers), got '0,1,...,11'"),
    ("--models", "lenet5,vgg", "argument --models: 'vgg' has no benchmark settings; choose among lenet5, lenet300"),
    ("--lambdas", "0.02,-1", "argument --lambdas: expected comma-separated positive numbers, got '0.02,-1'"),
    # the same run twice would be one run counted twice in the means ("2 seeds")
    ("--seeds", "0,1,0", "argument --seeds: 0 given twice in '0,1,0'"),
    ("--lambdas", "0.02,2e-2", "argument --lambdas: 0.02 given twice in '0.02,2e-2'"),
    ("--models", "lenet5,lenet5", "argument --models: 'lenet5' given twice in 'lenet5,lenet5'"),
])
def test_the_compression_benchmark_refuses_a_bad_list_in_one_line(mnist_dir, capsys, option, value, message):
    with pytest.raises(SystemExit) as info:
        compress_mnist.main(["--data-root", str(mnist_dir), "--split", "val", option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err


def test_a_cached_run_is_reused_only_for_the_same_method_settings_and_benchmark(nats_csv, nats_benchmark, tmp_path,
                                                                                 monkeypatch):
    """The method table and the benchmark file are not part of the package's code fingerprint."""
    from naslib_bayes import experiment
    from naslib_bayes.search_spaces.nasbench201.benchmark import Benchmark
    from naslib_bayes.search_spaces.nasbench201.loaders import save_npz

    out = str(tmp_path / "seed0.json")
    first = tnas_nb201.search_unit(str(nats_csv), "cifar10", "transfer-topk", 0, 3, None, out)
    assert tnas_nb201.search_unit(str(nats_csv), "cifar10", "transfer-topk", 0, 3, None, out) == first

    def searched_anew(*args, **kwargs):
        raise RuntimeError("searched anew")

    monkeypatch.setattr(experiment, "run_blackbox_search", searched_anew)
    with monkeypatch.context() as patched:  # the method's row of the table changed since the run was cached
        patched.setitem(tnas_nb201.METHODS, "transfer-topk", ("gp-bo", {}))
        with pytest.raises(RuntimeError, match="searched anew"):
            tnas_nb201.search_unit(str(nats_csv), "cifar10", "transfer-topk", 0, 3, None, out)
    tables = {d: {"test_accuracy": nats_benchmark.query_all(d, "test_accuracy")[::-1].copy()}
              for d in nats_benchmark.datasets}
    other = tmp_path / "other.npz"  # the same cells with other accuracies
    save_npz(Benchmark(nats_benchmark.cells, tables), other)
    with pytest.raises(RuntimeError, match="searched anew"):
        tnas_nb201.search_unit(str(other), "cifar10", "transfer-topk", 0, 3, None, out)
    from naslib_bayes.comparison.records import benchmark_fingerprint

    # --report-only prints such a run as it is, counted in the note on runs made otherwise
    assert tnas_nb201.other_code([first], benchmark_fingerprint(nats_benchmark)) == 0
    assert tnas_nb201.other_code([first], benchmark_fingerprint(Benchmark(nats_benchmark.cells, tables))) == 1


def test_timings_skip_runs_without_bo_steps_and_count_early_stops_per_surrogate_folder(capsys):
    """A budget within the initial design leaves no BO iteration to time; surrogates meta-trained
    with another iteration cap are counted against that cap, in a line of their own."""
    within_design = {"timing": {"encode_all_cells_s": 0.2, "encode_all_cells_cpu_s": 0.2, "bo_iteration_mean_s": None,
                                "bo_iteration_max_s": None, "bo_iteration_mean_cpu_s": None}}
    meta = {("cifar10", 0, "surrogates"): {"wall_s": 20.0, "cpu_s": 18.0, "iterations": 800, "best_iteration": 700},
            ("cifar10", 0, "surrogates_meta3000"): {"wall_s": 70.0, "cpu_s": 60.0, "iterations": 1200,
                                                    "best_iteration": 900, "settings": {"meta_iterations": 3000}}}
    tnas_nb201.print_timings(["cifar10"], ["tnas"], [0], {("cifar10", "tnas", 0): within_design}, meta)
    out = capsys.readouterr().out
    assert "BO iteration" not in out and "encode all 15,625 cells" in out
    assert "meta-training (surrogates): median 20 s wall" in out and "0 of 1 stopped early (cap 800" in out
    assert "meta-training (surrogates_meta3000): median 70 s wall" in out and "1 of 1 stopped early (cap 3000" in out


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_terminated_benchmark_leaves_no_worker_running(mnist_dir, tmp_path):
    """SIGTERM to the compression benchmark stops its worker processes too: orphaned, they went on
    training (and a re-run started meanwhile trained the same runs beside them)."""
    import os
    import signal
    import subprocess
    import time

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compress_mnist.py"
    process = subprocess.Popen([sys.executable, str(script), "--data-root", str(mnist_dir), "--split", "val",
                                "--models", "lenet300", "--seeds", "0,1", "--epochs", "60", "--jobs", "2",
                                "--out", str(tmp_path / "out")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
        workers |= _children(process.pid)
        time.sleep(0.2)
    assert len(workers) >= 2, "the benchmark did not start its workers"
    time.sleep(2)  # into their runs
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert alive == []
    err = process.stderr.read().decode()
    assert "Traceback" not in err and "stopped by SIGTERM; finished runs are kept" in err


@pytest.mark.parametrize("script, folder_option", [("compress_mnist", "--out"), ("tnas_nb201", "--cache"),
                                                   ("tnas_nb201_validate", "--cache"), ("oneshot_nb201", "--out")])
def test_a_benchmark_folder_in_use_by_another_benchmark_is_refused_in_one_line(
        script, folder_option, mnist_dir, nats_csv, tmp_path, capsys, monkeypatch):
    """Two benchmarks in one folder would train the same runs' checkpoints beside each other."""
    import importlib
    import os

    from naslib_bayes import results
    from naslib_bayes.comparison.processes import script_exit_code

    module = importlib.import_module(script)
    data = {"compress_mnist": ["--data-root", str(mnist_dir)],
            "oneshot_nb201": ["--data-root", str(mnist_dir), "--benchmark", str(nats_csv)]}.get(
        script, ["--benchmark", str(nats_csv)])
    argv = [*data, "--seeds", "1" if script != "compress_mnist" else "0", folder_option, str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with results.exclusive_use(tmp_path):
        code = script_exit_code(lambda: module.main(argv))
    assert code == 2
    assert capsys.readouterr().err == (f"{script}.py: error: {folder_option} {tmp_path} is in use by another "
                                       f"naslib-bayes process (pid {os.getpid()}); wait for it to end or choose "
                                       f"another {folder_option}\n")
    assert [p.name for p in tmp_path.iterdir()] == [results.LOCK_FILE]


@pytest.mark.parametrize("script, extra, message", [
    ("tnas_nb201", ["--seeds", "0"], "argument --seeds: expected a positive integer, got '0'"),
    ("tnas_nb201", ["--budget", "0"], "argument --budget: expected a positive integer, got '0'"),
    # 0 silently meant one surrogate per seed, the default
    ("tnas_nb201", ["--surrogate-seeds", "0"], "argument --surrogate-seeds: expected a positive integer, got '0'"),
    ("tnas_nb201", ["--jobs", "-2"], "argument --jobs: expected a positive integer, got '-2'"),
    # the same row twice: two workers searching into one cache file
    ("tnas_nb201", ["--methods", "tnas,gp-bo,tnas"], "--methods: tnas is given 2 times; give each once"),
    ("tnas_nb201", ["--datasets", "cifar10,CIFAR10"], "--datasets: cifar10, CIFAR10 all name cifar10; give each once"),
    ("tnas_nb201", ["--methods", "bananas"], "--methods: unknown method 'bananas'"),
    ("tnas_nb201_validate", ["--first-seed", "-1"], "argument --first-seed: expected a non-negative integer, got '-1'"),
    ("tnas_nb201_validate", ["--methods", "gp-bo"], "--methods: 'gp-bo' is not a tnas method of tnas_nb201.py"),
])
def test_the_tnas_benchmarks_refuse_bad_input_in_one_line_before_the_cache_is_made(
        script, extra, message, nats_csv, tmp_path, capsys, monkeypatch):
    import importlib

    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    argv = ["--benchmark", str(nats_csv), *extra, "--cache", str(tmp_path / "cache")]
    assert message in _one_line_refusal(importlib.import_module(script), argv, capsys)
    assert not (tmp_path / "cache").exists()


# ---- how a benchmark script ends when stopped -----------------------------------------------------
@pytest.mark.parametrize("signum, code, said", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_a_signal_whose_handler_runs_in_a_finalizer_still_stops_a_benchmark(signum, code, said, capsys):
    """Python runs a signal's handler at the next bytecode it executes, often a finalizer's (a progress
    bar's ``__del__``); the exception raised there was printed as 'Exception ignored' and dropped, and
    the script went on as if never stopped (exit code 0). It is delivered again, as for the command."""
    import signal

    from naslib_bayes import cli
    from naslib_bayes.comparison.processes import script_exit_code

    handler = {"SIGINT": signal.default_int_handler, "SIGTERM": cli._raise_terminated}[signum]

    class StoppedWhileFinalized:
        def __del__(self):
            handler(getattr(signal, signum), None)  # what the signal's handler does when it runs here

    def main() -> int:
        StoppedWhileFinalized()  # dropped at once: its finalizer runs now
        return 0

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a script
    try:
        returned = script_exit_code(main)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    assert (returned, capsys.readouterr().err) == (code, f"stopped by {said}; finished runs are kept\n")


def test_sigterm_outside_the_worker_pool_stops_a_benchmark_with_its_line(capsys):
    """SIGTERM was turned into an interrupt only while the workers ran: before (reading the benchmark)
    or after them (the report) it ended the script where it stood, saying nothing (exit code -15)."""
    import os
    import signal
    import time

    from naslib_bayes.comparison.processes import script_exit_code

    def main() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not interrupt the script")

    def outside_the_script(signum, frame):  # stands in for the default, which would end pytest
        raise AssertionError("SIGTERM reached the handler of the caller, not the script's")

    previous = signal.signal(signal.SIGTERM, outside_the_script)
    try:
        returned = script_exit_code(main)
        assert signal.getsignal(signal.SIGTERM) is outside_the_script  # the script's handler is gone again
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (returned, capsys.readouterr().err) == (143, "stopped by SIGTERM; finished runs are kept\n")


@pytest.mark.parametrize("signum, code, said", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_a_signal_as_a_benchmark_exits_after_its_records_is_one_line_and_the_records_stay(signum, code, said,
                                                                                         mnist_dir, tmp_path):
    """Python's own exit after a script's work (torch's teardown) takes a second or more, most of it with
    the signals back at their default action: a Ctrl-C then killed the finished script by its signal
    (-2), saying nothing. It is answered as during the work, or finds the script already ended (0)."""
    from cli_runner import signal_once_written

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compress_mnist.py"
    for delay_s in (0.02, 0.2):
        out = tmp_path / f"out-{delay_s}"
        records = out / "records-val.json"
        returncode, err = signal_once_written([sys.executable, str(script), "--data-root", str(mnist_dir), "--split",
                                               "val", "--models", "lenet300", "--seeds", "0", "--epochs", "3",
                                               "--finetune-epochs", "1", "--train-images", "100", "--val-size", "50",
                                               "--out", str(out)], records, delay_s, signum)
        said_lines = [line for line in err.splitlines() if "parameter budget was not reached" not in line]
        assert (returncode, said_lines) in ((code, [f"stopped by {said}; finished runs are kept"]), (0, [])), \
            (delay_s, err)
        assert len(json.loads(records.read_text())) == 1


@pytest.mark.parametrize("script", ["compress_mnist", "tnas_nb201", "tnas_nb201_validate", "oneshot_nb201"])
def test_every_benchmark_script_ends_as_run_script_ends_it(script):
    """The answer to a late signal above is run_script's: each script's last line hands it its main."""
    source = (Path(__file__).resolve().parents[1] / "benchmarks" / f"{script}.py").read_text()
    assert source.rstrip().splitlines()[-1].strip() == "run_script(main)"


@pytest.mark.parametrize("script", [tnas_nb201, compress_mnist])
def test_a_cached_run_is_keyed_by_the_benchmark_scripts_own_code_too(script, tmp_path):
    """The code fingerprint covered the package only: an edit to a script's own logic (a seed
    offset, the metric it meta-trains on) handed back runs the old script had made."""
    assert Path(script.__file__).resolve() in script.SCRIPTS
    edited = tmp_path / Path(script.__file__).name
    edited.write_text(Path(script.__file__).read_text() + "\n# edited\n")
    assert source_fingerprint(*script.SCRIPTS) != source_fingerprint(edited)
    assert source_fingerprint(*script.SCRIPTS) != source_fingerprint()


@pytest.mark.parametrize("methods, own_settings", [
    ("bayesnas,random-cell", ["# BayesNAS: lambda 0.01, switches in the SGD optimiser without weight decay"]),
    ("random-cell", []),
    ("darts,bayesnas", ["# DARTS: same weight optimiser on half the images, Adam(lr 0.0003, betas (0.5, 0.999), "
                        "wd 0.001) on alpha with the other half; BayesNAS: lambda 0.01, switches in the SGD optimiser "
                        "without weight decay"]),
])
def test_the_oneshot_benchmark_prints_the_settings_of_the_methods_it_runs_only(nats_csv, tmp_path, capsys, monkeypatch,
                                                                                methods, own_settings):
    # DARTS's optimiser and steps were printed for a run of --methods bayesnas,random-cell, which searched no DARTS
    import oneshot_nb201

    monkeypatch.setattr(oneshot_nb201, "run_oneshot_search", _fake_oneshot_result)
    oneshot_nb201.main(["--benchmark", str(nats_csv), "--data-root", str(tmp_path), "--seeds", "1",
                        "--methods", methods])
    out = capsys.readouterr().out.splitlines()
    shared = next(line for line in out if line.startswith("# shared training"))
    assert ("DARTS" in shared) == ("darts" in methods), shared
    assert [line for line in out if line.startswith(("# DARTS", "# BayesNAS"))] == own_settings
