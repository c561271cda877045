"""Run-level helpers: medians over seeds, training order, named-baseline status."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import write_store_with_order as write_store_in_order

from benchmark.run import _median, _train_images_in_hash_order, named_baseline_status
from benchmark.specs import load_baseline


def test_median_counts_missing_seeds_as_worst():
    """Check that a diverged seed raises the median instead of dropping out."""
    assert _median([10.0, 20.0, math.inf]) == 20.0
    assert _median([10.0, math.inf, math.inf]) is None
    assert _median([10.0, 20.0]) == 15.0
    assert _median([]) is None


def test_training_order_ignores_store_order(tmp_path):
    """Check that the same pixels stored in two orders give the same tensor."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    write_store_in_order(tmp_path / "a", images, np.arange(10), "official")
    write_store_in_order(tmp_path / "b", images, rng.permutation(10), "folders")
    first, digest_a = _train_images_in_hash_order(tmp_path / "a", "cifar10")
    second, digest_b = _train_images_in_hash_order(tmp_path / "b", "cifar10")
    assert torch.equal(first, second)
    assert digest_a == digest_b


def test_named_baseline_requires_packaged_file_and_no_overrides(tmp_path):
    """Check the three ways a run stops being the named baseline."""
    spec = load_baseline("resnetcifar-ns-sn")
    assert named_baseline_status(spec, {})["named_baseline"] is True
    assert named_baseline_status(spec, {"steps": 5})["named_baseline"] is False
    edited = tmp_path / "resnetcifar-ns-sn.toml"
    edited.write_text(open(spec.path).read().replace("n_disc = 5", "n_disc = 1"))
    status = named_baseline_status(load_baseline(str(edited)), {})
    assert status["named_baseline"] is False
    assert "differs from the packaged" in status["not_named_because"][0]


@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0, 2.0]])
def test_median_matches_statistics(values):
    """Check the plain case against the definition."""
    assert _median(values) == sorted(values)[len(values) // 2]
