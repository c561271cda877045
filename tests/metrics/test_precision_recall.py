"""Tests for improved precision and recall against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_prc import calculate_precision_recall_full

from benchmark.errors import UserError
from benchmark.metrics.precision_recall import precision_recall, squared_knn_radii


def _features(seed: int, count: int, dim: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dim)) + shift


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall from Kynkäänniemi et al.'s definition, pair by pair."""

    def radius(points: np.ndarray, index: int) -> float:
        others = [
            float(np.linalg.norm(points[index] - points[j]))
            for j in range(len(points))
            if j != index
        ]
        return sorted(others)[k - 1]

    def coverage(queries: np.ndarray, support: np.ndarray) -> float:
        radii = [radius(support, j) for j in range(len(support))]
        inside = 0
        for query in queries:
            distances = [float(np.linalg.norm(query - point)) for point in support]
            inside += any(d <= r for d, r in zip(distances, radii, strict=True))
        return inside / len(queries)

    return coverage(fake, real), coverage(real, fake)


def test_precision_recall_one_dimension_by_hand():
    """Check a 1-D case worked out by hand with k = 1."""
    # Real points 0, 1, 2, 10: 1-NN radii 1, 1, 1, 8, so the real manifold is
    # [-1, 3] and [2, 18]. Fake points 2.5, 20, 30: radii 17.5, 10, 10, so
    # the fake manifold covers [-15, 40].
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[2.5], [20.0], [30.0]])
    precision, recall = precision_recall(real, fake, neighbours=1)
    assert precision == pytest.approx(1 / 3)
    assert recall == 1.0


@pytest.mark.parametrize(
    ("seed", "n_real", "n_fake", "dim", "shift"),
    [(0, 40, 40, 8, 0.5), (1, 30, 50, 3, 1.0), (2, 60, 25, 32, 0.2)],
    ids=["equal-counts", "more-fakes", "wide"],
)
def test_precision_recall_matches_brute_force(seed, n_real, n_fake, dim, shift):
    """Check against pairwise distances computed one at a time (k = 3)."""
    real = _features(seed, n_real, dim)
    fake = _features(seed + 100, n_fake, dim, shift=shift) * 1.3
    expected = _brute_force(real, fake, 3)
    assert precision_recall(real, fake) == expected


def test_precision_recall_matches_torch_fidelity():
    """Check against torch-fidelity 0.4.0's precision/recall on 2048-d features."""
    real = np.abs(_features(3, 300, 2048))
    fake = np.abs(_features(4, 250, 2048, shift=0.05)) * 1.02
    # torch-fidelity takes the generated set first and computes in float32,
    # so use values whose float32 distances keep the same order.
    expected = calculate_precision_recall_full(
        torch.from_numpy(fake.astype(np.float32)),
        torch.from_numpy(real.astype(np.float32)),
        neighborhood=3,
    )
    result = precision_recall(real.astype(np.float32), fake.astype(np.float32))
    assert result == pytest.approx(expected, abs=1e-7)
    assert 0.0 < result[0] < 1.0
    assert 0.0 < result[1] < 1.0


def test_precision_recall_independent_of_block_rows():
    """Check that the distance blocks change memory use, not the result."""
    real = _features(5, 70, 16)
    fake = _features(6, 90, 16, shift=0.4)
    whole = precision_recall(real, fake, block_rows=1000)
    for block_rows in (1, 7, 64):
        assert precision_recall(real, fake, block_rows=block_rows) == whole


def test_precision_recall_float32_matches_float64():
    """Check that float32 sets, converted block by block, give the result of
    their float64 copies and are not modified."""
    real = _features(11, 80, 16).astype(np.float32)
    fake = _features(12, 70, 16, shift=0.3).astype(np.float32)
    real_before, fake_before = real.copy(), fake.copy()
    expected = precision_recall(real.astype(np.float64), fake.astype(np.float64))
    assert precision_recall(real, fake, block_rows=9) == expected
    assert np.array_equal(real, real_before)
    assert np.array_equal(fake, fake_before)


def test_precision_recall_identical_sets_are_one():
    """Check that a set compared with itself is fully precise and complete."""
    features = _features(7, 50, 12)
    assert precision_recall(features, features) == (1.0, 1.0)


def test_knn_radii_count_duplicates_but_not_self():
    """Check that a duplicate is a neighbour at distance 0 but a point is not its own."""
    points = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    radii = squared_knn_radii(points, neighbours=1)
    np.testing.assert_array_equal(radii, [0.0, 0.0, 25.0, 25.0])


@pytest.mark.parametrize(
    ("real_shape", "fake_shape", "neighbours", "message"),
    [
        ((10, 4), (10, 5), 3, "different widths"),
        ((3, 4), (10, 4), 3, "more than 3 features"),
        ((10,), (10, 4), 3, "shape \\(n, d\\)"),
        ((10, 4), (10, 4), 0, "neighbours must be >= 1"),
    ],
    ids=["widths", "too-few", "not-2d", "zero-k"],
)
def test_precision_recall_rejects_invalid_input(
    real_shape, fake_shape, neighbours, message
):
    """Check that bad shapes and settings raise one-line UserErrors."""
    with pytest.raises(UserError, match=message):
        precision_recall(np.ones(real_shape), np.ones(fake_shape), neighbours)


def test_precision_recall_rejects_nan():
    """Check that NaN features are rejected, not counted as outside."""
    real = _features(8, 10, 4)
    real[3, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        precision_recall(real, _features(9, 10, 4))
