"""Tests for the Fréchet distance against closed forms and outside references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.errors import UserError
from benchmark.metrics.fid import (
    SQRT_EPSILON,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    symmetric_matrix_sqrt,
    trace_of_sqrt,
)

# Relative error allowed against references that take a different route to the
# matrix square root (scipy's sqrtm of sigma1 @ sigma2). In float64 the two
# routes agree to about 1e-10 on well-conditioned covariances; 1e-6 is the
# FID tolerance torch-fidelity documents against TF and leaves room for BLAS.
REFERENCE_RTOL = 1e-6

# Relative error allowed where both sides follow the same formula in float64.
EXACT_RTOL = 1e-10


def _random_features(seed: int, count: int, dim: int, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(count, dim)) @ mixing + shift


def _sqrtm_reference(mu1, sigma1, mu2, sigma2) -> float:
    """FID with scipy.linalg.sqrtm of the non-symmetric product, as TTUR does."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    difference = mu1 - mu2
    return float(
        difference @ difference
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2.0 * np.trace(root)
    )


def test_fid_diagonal_closed_form():
    """Check FID against sum (sqrt a - sqrt b)^2 + |mu1 - mu2|^2 for diagonals."""
    a = np.array([1.0, 4.0, 9.0, 0.25])
    b = np.array([4.0, 1.0, 9.0, 2.25])
    mu1 = np.array([0.0, 1.0, 2.0, 3.0])
    mu2 = np.array([1.0, 1.0, 0.0, 3.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    # (1-2)^2 + (2-1)^2 + 0 + (0.5-1.5)^2 = 3, plus mean term 1 + 4 = 5.
    assert expected == pytest.approx(8.0, rel=EXACT_RTOL)
    result = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert result == pytest.approx(expected, rel=EXACT_RTOL)


def test_fid_commuting_covariances_closed_form():
    """Check FID for covariances sharing eigenvectors against the eigenvalue form."""
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a = rng.uniform(0.5, 3.0, size=6)
    b = rng.uniform(0.5, 3.0, size=6)
    sigma1 = basis @ np.diag(a) @ basis.T
    sigma2 = basis @ np.diag(b) @ basis.T
    mean = np.zeros(6)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    result = frechet_distance(mean, sigma1, mean, sigma2)
    assert result == pytest.approx(expected, rel=REFERENCE_RTOL)


def test_fid_matches_sqrtm_reference():
    """Check FID on random features against a float64 scipy sqrtm reference."""
    mu1, sigma1 = feature_statistics(_random_features(0, 400, 24))
    mu2, sigma2 = feature_statistics(_random_features(1, 300, 24, shift=0.3))
    expected = _sqrtm_reference(mu1, sigma1, mu2, sigma2)
    result = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert result == pytest.approx(expected, rel=REFERENCE_RTOL)


# clean-fid 0.1.35 passes scipy's deprecated `disp` argument to sqrtm.
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")
def test_fid_matches_cleanfid():
    """Check FID against clean-fid's frechet_distance on the same statistics."""
    mu1, sigma1 = feature_statistics(_random_features(4, 500, 32))
    mu2, sigma2 = feature_statistics(_random_features(5, 500, 32, shift=-0.2))
    expected = cleanfid_frechet_distance(mu1, sigma1, mu2, sigma2)
    result = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert result == pytest.approx(expected, rel=REFERENCE_RTOL)


def test_fid_from_features_uses_statistics():
    """Check that fid_from_features equals frechet_distance of the statistics."""
    real = _random_features(6, 100, 8)
    fake = _random_features(7, 120, 8, shift=1.0)
    expected = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    assert fid_from_features(real, fake) == expected


def test_statistics_float32_matches_float64_copy():
    """Check that float32 features (centered in a float64 copy, in place) give
    the bits of their float64 copy, and that neither input is modified."""
    features = _random_features(9, 60, 6).astype(np.float32)
    before = features.copy()
    as_float64 = features.astype(np.float64)
    before_float64 = as_float64.copy()
    mu32, sigma32 = feature_statistics(features)
    mu64, sigma64 = feature_statistics(as_float64)
    assert np.array_equal(mu32, mu64)
    assert np.array_equal(sigma32, sigma64)
    assert np.array_equal(features, before)
    assert np.array_equal(as_float64, before_float64)


def test_feature_statistics_match_numpy():
    """Check the mean and the unbiased (n - 1) covariance against numpy."""
    features = _random_features(8, 50, 5).astype(np.float32)
    mu, sigma = feature_statistics(features)
    assert mu.dtype == np.float64
    assert sigma.dtype == np.float64
    reference = features.astype(np.float64)
    np.testing.assert_allclose(mu, reference.mean(axis=0), rtol=EXACT_RTOL)
    np.testing.assert_allclose(
        sigma, np.cov(reference, rowvar=False, ddof=1), rtol=EXACT_RTOL
    )


def _tf_gan_svd_fid(mu1, sigma1, mu2, sigma2) -> float:
    """FID as TF-GAN's code computes it: SVD roots, small values left unrooted."""

    def svd_root(matrix):
        u, values, vh = scipy.linalg.svd(matrix)
        rooted = np.where(values < SQRT_EPSILON, values, np.sqrt(values))
        return (u * rooted) @ vh

    root = svd_root(sigma1)
    trace = np.trace(svd_root(root @ sigma2 @ root))
    difference = mu1 - mu2
    return float(
        difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace
    )


# The eigendecomposition and TF-GAN's SVD route agree to rounding; 1e-9
# relative leaves room for a 2048-d covariance's conditioning (measured 1.5e-12
# on 10K real CIFAR-10 features).
SVD_ROUTE_RTOL = 1e-9


@pytest.mark.parametrize(
    "count, dim", [(400, 64), (30, 64), (5, 8)], ids=["full-rank", "rank-30", "tiny"]
)
def test_fid_equals_tf_gan_svd_route(count, dim):
    """Check our eigendecomposition route against TF-GAN's SVD route.

    The rank-deficient cases give A sigma2 A eigenvalues near zero of either
    sign, where the two routes must still treat each one alike.
    """
    first = feature_statistics(_random_features(11, count, dim))
    second = feature_statistics(_random_features(12, count + 3, dim, 0.3))
    expected = _tf_gan_svd_fid(*first, *second)
    assert frechet_distance(*first, *second) == pytest.approx(
        expected, rel=SVD_ROUTE_RTOL, abs=1e-12
    )


def test_root_treats_each_eigenvalue_as_the_svd_does():
    """Check the root of a symmetric matrix with eigenvalues of both signs.

    TF-GAN's SVD root maps an eigenvalue l to sign(l) sqrt(|l|), and keeps l
    where |l| < 1e-10; rounding can leave such values in A sigma2 A.
    """
    rotation, _ = np.linalg.qr(np.random.default_rng(13).normal(size=(4, 4)))
    matrix = (rotation * np.array([4.0, -0.25, 1e-12, -1e-12])) @ rotation.T
    u, values, vh = scipy.linalg.svd(matrix)
    rooted = np.where(values < SQRT_EPSILON, values, np.sqrt(values))
    expected = (u * rooted) @ vh
    np.testing.assert_allclose(
        symmetric_matrix_sqrt(matrix), expected, rtol=0, atol=1e-12
    )
    assert trace_of_sqrt(matrix) == pytest.approx(2.0 - 0.5, abs=1e-12)
    assert trace_of_sqrt(matrix) == pytest.approx(np.trace(expected), abs=1e-12)


def test_symmetric_sqrt_squares_back():
    """Check that the square root of a PSD matrix squares to the matrix."""
    _, sigma = feature_statistics(_random_features(9, 60, 10))
    root = symmetric_matrix_sqrt(sigma)
    np.testing.assert_allclose(root @ root, sigma, rtol=0, atol=1e-12)
    np.testing.assert_allclose(root, root.T, rtol=0, atol=1e-12)


def test_fid_rank_deficient_covariance_is_finite():
    """Check that fewer samples than dimensions still give a finite FID near 0."""
    features = _random_features(10, 12, 40)
    mu, sigma = feature_statistics(features)
    result = frechet_distance(mu, sigma, mu, sigma)
    assert np.isfinite(result)
    assert abs(result) < 1e-6 * np.trace(sigma)


@pytest.mark.parametrize(
    "shapes",
    [
        ((4,), (4, 4), (5,), (5, 5)),
        ((4,), (4, 4), (4,), (4, 5)),
        ((4, 1), (4, 4), (4, 1), (4, 4)),
        ((0,), (0, 0), (0,), (0, 0)),
    ],
    ids=["different-d", "non-square", "2d-mean", "empty"],
)
def test_fid_rejects_mismatched_shapes(shapes):
    """Check that statistics of different shapes raise UserError."""
    arrays = [np.zeros(shape) for shape in shapes]
    with pytest.raises(UserError, match="Fréchet distance needs"):
        frechet_distance(*arrays)


@pytest.mark.parametrize(
    "features",
    [np.zeros((1, 4)), np.zeros(4), np.array([[0.0, np.nan], [1.0, 2.0]])],
    ids=["one-row", "one-dim", "nan"],
)
def test_feature_statistics_rejects_invalid_features(features):
    """Check that too few rows, wrong rank and NaN raise UserError."""
    with pytest.raises(UserError):
        feature_statistics(features)


def test_fid_keeps_tiny_singular_values_unrooted():
    """Check TF-GAN's rule that singular values below 1e-10 are not rooted."""
    # A sigma A has singular values 1 and 1e-12. The second stays 1e-12 in
    # place of its root 1e-6, so FID(x, x) = 2 * (1e-6 - 1e-12), not 0.
    sigma = np.diag([1.0, 1e-6])
    mean = np.zeros(2)
    result = frechet_distance(mean, sigma, mean, sigma)
    assert result == pytest.approx(2 * (1e-6 - 1e-12), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(3, 40), dim=st.integers(1, 12))
def test_fid_of_identical_sets_is_zero(seed, count, dim):
    """Check that FID(x, x) is zero up to rounding and the unrooted eigenvalues."""
    mu, sigma = feature_statistics(_random_features(seed, count, dim))
    result = frechet_distance(mu, sigma, mu, sigma)
    # An eigenvalue e of sigma gives e^2 in A sigma A. When e^2 < 1e-10 the
    # trace term keeps e^2 in place of e, which adds up to 2 e to FID(x, x).
    eigenvalues = np.clip(np.linalg.eigvalsh(sigma), 0.0, None)
    unrooted = eigenvalues[eigenvalues**2 < 10 * SQRT_EPSILON]
    bound = 2.0 * unrooted.sum() + 1e-9 * max(1.0, np.trace(sigma))
    assert abs(result) <= bound


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), dim=st.integers(1, 12))
def test_fid_is_symmetric(seed, dim):
    """Check that exchanging the two sets changes FID only by rounding."""
    first = feature_statistics(_random_features(seed, 3 * dim + 5, dim))
    second = feature_statistics(_random_features(seed + 1, 3 * dim + 7, dim, 0.5))
    forward = frechet_distance(*first, *second)
    backward = frechet_distance(*second, *first)
    assert forward >= 0
    assert forward == pytest.approx(backward, rel=REFERENCE_RTOL, abs=1e-12)
