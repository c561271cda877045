"""Small synthetic CIFAR-10 stores for tests, written through the real store code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data.store import SourceData, SplitArrays, store_lock, write_store
from benchmark.specs import load_dataset


def write_synthetic_cifar10(
    root: Path, train_count: int, test_count: int, seed: int = 0
):
    """Write a partial CIFAR-10 store of smooth random images and return its path."""
    return write_synthetic_store(root, "cifar10", train_count, test_count, seed)


def write_synthetic_store(
    root: Path, dataset: str, train_count: int, test_count: int, seed: int = 0
):
    """Write a partial store of smooth random images for `dataset`; return its path."""
    spec = load_dataset(dataset)
    size = spec.resolution
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", train_count), ("test", test_count)):
        # Low-frequency colour fields look more like photos than white noise,
        # which keeps Inception features in a sensible range.
        coarse = rng.integers(0, 256, size=(count, 4, 4, 3)).astype(np.float64)
        images = np.kron(coarse, np.ones((1, size // 4, size // 4, 1)))
        images += rng.normal(0.0, 8.0, size=images.shape)
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        labels = (np.arange(count) % 10).astype(np.int64)
        keys = [f"{split}/{index:05d}" for index in range(count)]
        splits[split] = SplitArrays(images, labels, keys)
    data = SourceData(splits, {"format": "synthetic", "seed": seed})
    with store_lock(root, spec.name):
        return write_store(root, spec, data, partial=True)


def write_store_with_order(root, images: np.ndarray, order: np.ndarray, prefix: str):
    """Write a store whose test split holds `images[order]` under other keys."""
    spec = load_dataset("cifar10")
    count = len(order)
    splits = {
        split: SplitArrays(
            images[order],
            np.zeros(count, dtype=np.int64),
            [f"{prefix}/{split}/{index}" for index in range(count)],
        )
        for split in ("train", "test")
    }
    with store_lock(root, spec.name):
        write_store(
            root, spec, SourceData(splits, {"format": "synthetic"}), partial=True
        )
