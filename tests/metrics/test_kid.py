"""Tests for the block KID estimator against plain and outside references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cleanfid.fid import kernel_distance as cleanfid_kernel_distance
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.errors import UserError
from benchmark.metrics.kid import block_sizes, kernel_inception_distance

# Relative error allowed between float64 computations of the same sums in a
# different order (matrix products against Python loops).
SUM_ORDER_RTOL = 1e-9


def _features(seed: int, count: int, dim: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=(count, dim))) + shift


def _kernel(x: np.ndarray, y: np.ndarray) -> float:
    return (float(np.dot(x, y)) / len(x) + 1.0) ** 3


def _plain_mmd2(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel, written as plain loops over pairs."""
    m = len(real)
    n = len(fake)
    real_real = sum(
        _kernel(real[i], real[j]) for i in range(m) for j in range(m) if i != j
    )
    fake_fake = sum(
        _kernel(fake[i], fake[j]) for i in range(n) for j in range(n) if i != j
    )
    real_fake = sum(_kernel(real[i], fake[j]) for i in range(m) for j in range(n))
    mean_real_real = real_real / (m * (m - 1))
    mean_fake_fake = fake_fake / (n * (n - 1))
    mean_real_fake = real_fake / (m * n)
    return mean_real_real + mean_fake_fake - 2 * mean_real_fake


def test_kid_single_block_matches_plain_loops():
    """Check one-block KID against the pairwise definition of unbiased MMD^2."""
    real = _features(0, 30, 8)
    fake = _features(1, 25, 8, shift=0.3)
    kid, stderr = kernel_inception_distance(real, fake)
    assert kid == pytest.approx(_plain_mmd2(real, fake), rel=SUM_ORDER_RTOL)
    assert math.isnan(stderr)


def test_kid_blocks_match_plain_loops():
    """Check that KID averages the plain MMD^2 over compare_gan's blocks."""
    real = _features(2, 23, 4)
    fake = _features(3, 23, 4, shift=0.2)
    # ceil(23 / 5) = 5 blocks; sizes 4, 4, 5, 5, 5 in order.
    bounds = [0, 4, 8, 13, 18, 23]
    estimates = [
        _plain_mmd2(real[start:stop], fake[start:stop])
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
    kid, stderr = kernel_inception_distance(real, fake, block_size=5)
    assert kid == pytest.approx(np.mean(estimates), rel=SUM_ORDER_RTOL)
    expected_stderr = np.std(estimates) / math.sqrt(len(estimates))
    assert stderr == pytest.approx(expected_stderr, rel=SUM_ORDER_RTOL)


def test_kid_float32_matches_float64_copy():
    """Check that float32 sets, converted block by block, give the bits of
    their float64 copies and are not modified."""
    real = _features(8, 40, 6).astype(np.float32)
    fake = _features(9, 40, 6, shift=0.2).astype(np.float32)
    real_before, fake_before = real.copy(), fake.copy()
    expected = kernel_inception_distance(
        real.astype(np.float64), fake.astype(np.float64), block_size=8
    )
    assert kernel_inception_distance(real, fake, block_size=8) == expected
    assert np.array_equal(real, real_before)
    assert np.array_equal(fake, fake_before)


def test_kid_unequal_counts_use_own_block_sizes():
    """Check that real and fake sets of different sizes are split separately."""
    real = _features(4, 12, 3)
    fake = _features(5, 18, 3, shift=0.5)
    # ceil(18 / 6) = 3 blocks: real 4, 4, 4 and fake 6, 6, 6.
    estimates = [
        _plain_mmd2(real[4 * i : 4 * i + 4], fake[6 * i : 6 * i + 6]) for i in range(3)
    ]
    kid, _ = kernel_inception_distance(real, fake, block_size=6)
    assert kid == pytest.approx(np.mean(estimates), rel=SUM_ORDER_RTOL)


def test_kid_matches_cleanfid_on_full_subset():
    """Check one-block KID against clean-fid's kernel_distance.

    clean-fid averages the estimate over random subsets drawn with the global
    numpy RNG. With one subset as large as both sets, the subset is the whole
    set in a random order, and the unbiased estimate does not depend on order,
    so both compute the same number.
    """
    real = _features(6, 40, 16)
    fake = _features(7, 40, 16, shift=0.1)
    expected = cleanfid_kernel_distance(real, fake, num_subsets=1, max_subset_size=40)
    kid, _ = kernel_inception_distance(real, fake)
    assert kid == pytest.approx(expected, rel=SUM_ORDER_RTOL)


@pytest.mark.parametrize(
    ("count", "n_bins", "expected"),
    [
        (10, 3, [3, 3, 4]),
        (10000, 10, [1000] * 10),
        (2049, 3, [683, 683, 683]),
        (2050, 3, [683, 683, 684]),
        (7, 1, [7]),
    ],
)
def test_block_sizes_split_like_compare_gan(count, n_bins, expected):
    """Check that the first blocks give up one row each until the sum fits."""
    sizes = block_sizes(count, n_bins)
    assert sizes.tolist() == expected
    assert sizes.sum() == count


def test_kid_stderr_needs_five_blocks():
    """Check that stderr is NaN with 4 blocks and finite with 5."""
    real = _features(8, 20, 4)
    fake = _features(9, 20, 4)
    _, four_blocks = kernel_inception_distance(real, fake, block_size=5)
    _, five_blocks = kernel_inception_distance(real, fake, block_size=4)
    assert math.isnan(four_blocks)
    assert math.isfinite(five_blocks)


@pytest.mark.parametrize(
    ("real_shape", "fake_shape", "block_size", "message"),
    [
        ((10, 4), (10, 5), 1024, "different widths"),
        ((10,), (10, 4), 1024, "shape"),
        ((10, 4), (10, 4), 1, "block size"),
        ((3, 4), (20, 4), 5, "at least 2 rows"),
        ((1, 4), (1, 4), 1024, "at least 2 rows"),
    ],
    ids=["width", "rank", "block-size", "small-block", "one-row"],
)
def test_kid_rejects_invalid_input(real_shape, fake_shape, block_size, message):
    """Check that bad shapes and block sizes raise UserError."""
    with pytest.raises(UserError, match=message):
        kernel_inception_distance(
            np.ones(real_shape), np.ones(fake_shape), block_size=block_size
        )


def test_kid_rejects_nan_features():
    """Check that NaN features raise UserError naming the set."""
    fake = np.ones((4, 2))
    fake[1, 1] = np.nan
    with pytest.raises(UserError, match="fake features contain NaN"):
        kernel_inception_distance(np.ones((4, 2)), fake)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(2, 30), dim=st.integers(1, 8))
def test_kid_of_identical_sets_is_not_positive(seed, count, dim):
    """Check that KID(x, x) <= 0, as for any positive semi-definite kernel.

    With the same rows on both sides the estimate is
    2 (sum_{i != j} k_ij / (n - 1) - sum_i k_ii) / n^2, and k_ij <= (k_ii + k_jj) / 2.
    """
    features = _features(seed, count, dim)
    kid, _ = kernel_inception_distance(features, features)
    assert kid <= 1e-12 * _kernel(features[0], features[0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(2, 30), dim=st.integers(1, 8))
def test_kid_is_symmetric(seed, count, dim):
    """Check that exchanging real and fake changes KID only by rounding."""
    real = _features(seed, count, dim)
    fake = _features(seed + 1, count, dim, shift=0.4)
    forward, _ = kernel_inception_distance(real, fake, block_size=8)
    backward, _ = kernel_inception_distance(fake, real, block_size=8)
    assert forward == pytest.approx(backward, rel=SUM_ORDER_RTOL, abs=1e-12)
