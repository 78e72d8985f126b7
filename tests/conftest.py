"""Shared fixtures: where the real data files live, and how a missing one is handled.

Real data files are found under ``$NASLIB_BAYES_DATA`` (default: ``shared/data`` beside the
repository checkout). A test that needs a missing file is skipped with the reason shown,
except when ``CI=true``, where it fails: CI must exercise the real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("NASLIB_BAYES_DATA", REPO_ROOT.parent / "shared" / "data"))


def require_data(relative: str) -> Path:
    """Path of a real data file, or skip (fail under CI=true) when it is missing."""
    path = data_root() / relative
    if not path.exists():
        message = f"real data file {path} is missing (set NASLIB_BAYES_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def nats_csv() -> Path:
    return require_data("nasbench201/nats_bench.csv")


@pytest.fixture(scope="session")
def zc_json() -> Path:
    return require_data("nasbench201/zc_nasbench201.json")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    require_data("mnist/t10k-images-idx3-ubyte.gz")
    return require_data("mnist")


@pytest.fixture(scope="session")
def nats_benchmark(nats_csv):
    from naslib_bayes.search_spaces.nasbench201.loaders import load_benchmark

    return load_benchmark(nats_csv)


@pytest.fixture(scope="session")
def naslib():
    """NASLib's namespace (with naslib-bayes's runtime fixes), or skip when it is not importable.

    ``NASLIB_BAYES_REQUIRE_NASLIB=1`` turns the skip into a failure.
    """
    from naslib_bayes.integration import load_naslib, naslib_available

    ok, reason = naslib_available()
    if not ok:
        if os.environ.get("NASLIB_BAYES_REQUIRE_NASLIB") == "1":
            pytest.fail(f"NASLIB_BAYES_REQUIRE_NASLIB=1 but NASLib is not usable: {reason}")
        pytest.skip(f"NASLib is not importable: {reason}")
    return load_naslib()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs with one torch thread: the networks here are small, and several threads
    on a busy 2-core machine spin-wait for each other and run many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
