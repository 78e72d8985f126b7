"""The TNAS benchmark's run cache: a cached run is reused only for the surrogate it searched with."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import tnas_nb201  # noqa: E402


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_search_unit_reuses_a_cached_run_only_for_the_same_surrogate(nats_csv, tmp_path):
    out = tmp_path / "seed0.json"
    cached = {"surrogate": "surrogates/cifar10/seed0", "accuracies": [1.0, 2.0], "architectures": []}
    _write(out, cached)
    surrogate = str(tmp_path / "cache" / "surrogates" / "cifar10" / "seed0" / "surrogate.pt")
    assert tnas_nb201.search_unit(str(nats_csv), "cifar10", "tnas", 0, 3, surrogate, str(out)) == cached
    # the same file asked for by a method without a surrogate is another run: it is searched anew
    fresh = tnas_nb201.search_unit(str(nats_csv), "cifar10", "transfer-topk", 0, 3, None, str(out))
    assert fresh["surrogate"] is None and len(fresh["accuracies"]) == 3 and fresh["accuracies"] != cached["accuracies"]
    assert json.loads(out.read_text()) == fresh


def test_the_report_leaves_out_runs_of_other_surrogates(tmp_path):
    args = argparse.Namespace(cache=tmp_path, budget=50, seeds=20, surrogate_seeds=5)
    # seed 7 searched with surrogate 7 mod 5 = 2 in a five-surrogate benchmark
    _write(tnas_nb201.run_path(args, "cifar10", "tnas", 7), {"surrogate": "surrogates/cifar10/seed2"})
    _write(tnas_nb201.run_path(args, "cifar10", "gp-bo", 7), {"surrogate": None})
    _, runs = tnas_nb201.load_cache(args, ["cifar10"], ["tnas", "gp-bo"], [7], n_surrogates=5)
    assert set(runs) == {("cifar10", "tnas", 7), ("cifar10", "gp-bo", 7)}
    _, runs = tnas_nb201.load_cache(args, ["cifar10"], ["tnas", "gp-bo"], [7], n_surrogates=20)
    assert set(runs) == {("cifar10", "gp-bo", 7)}  # with one surrogate per seed, seed 7 has its own
