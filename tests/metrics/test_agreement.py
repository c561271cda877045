"""Agreement of FID, KID and IS with clean-fid, torch-fidelity and float64 NumPy.

Every metric is fed the same arrays as the outside implementation. The
outside references are clean-fid 0.1.35 (`frechet_distance`,
`kernel_distance`), torch-fidelity 0.4.0 (`fid_statistics_to_metric`,
`kid_features_to_metric`, `mmd2`, `isc_features_to_metric`) and direct
float64 formulas written here with NumPy and SciPy.

Tolerances:

* FID: relative error <= 1e-6. Each reference takes another route to the
  trace of sqrt(sigma1 sigma2). clean-fid uses scipy's Schur-based `sqrtm` of
  the non-symmetric product, torch-fidelity the eigenvalues of the product,
  and the route here symmetric eigendecompositions. Each loses a few digits
  to the conditioning of 2048-d covariances. 1e-6 is also the FID tolerance
  torch-fidelity states against the TensorFlow original.
* KID and IS: relative error <= 1e-9. All implementations sum the same float64
  terms in another order; only that order differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from cleanfid.fid import kernel_distance as cleanfid_kernel_distance
from fid_references import eigh_reference_fid, relative_error
from torch_fidelity.metric_fid import (
    fid_features_to_statistics,
    fid_statistics_to_metric,
)
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kernel_poly, kid_features_to_metric, mmd2

from benchmark.metrics.fid import feature_statistics, frechet_distance
from benchmark.metrics.inception_score import inception_score
from benchmark.metrics.kid import block_sizes, kernel_inception_distance
from benchmark.metrics.precision_recall import precision_recall

FID_RTOL = 1e-6
SUM_ORDER_RTOL = 1e-9

# torch-fidelity's KID defaults for the polynomial kernel: degree 3,
# gamma = 1 / d (None here), coef0 1, which is compare_gan's kernel.
TORCH_FIDELITY_POLY = {
    "kid_kernel": "poly",
    "kid_kernel_poly_degree": 3,
    "kid_kernel_poly_gamma": None,
    "kid_kernel_poly_coef0": 1,
}


def pool3_like_features(seed: int, count: int, dim: int, shift: float = 0.0):
    """Return non-negative, correlated features shaped like pool_3 averages."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return np.abs(rng.normal(size=(count, dim)) @ mixing + shift).astype(np.float32)


def _statistics_pair(dim: int, count: int):
    real = pool3_like_features(0, count, dim)
    fake = pool3_like_features(1, count, dim, shift=0.05)
    return feature_statistics(real), feature_statistics(fake)


# clean-fid 0.1.35 passes scipy's deprecated `disp` argument to sqrtm.
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated")
@pytest.mark.parametrize(
    "dim",
    [256, pytest.param(2048, marks=pytest.mark.slow)],
    ids=["256d", "2048d"],
)
def test_fid_agrees_with_three_references(dim):
    """Check FID against clean-fid, torch-fidelity and an eigh route to 1e-6."""
    (mu1, sigma1), (mu2, sigma2) = _statistics_pair(dim, count=dim + dim // 4)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    cleanfid = cleanfid_frechet_distance(mu1, sigma1, mu2, sigma2)
    fidelity = fid_statistics_to_metric(
        {"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}, verbose=False
    )["frechet_inception_distance"]
    reference = eigh_reference_fid(mu1, sigma1, mu2, sigma2)
    assert relative_error(ours, cleanfid) <= FID_RTOL
    assert relative_error(ours, fidelity) <= FID_RTOL
    assert relative_error(ours, reference) <= FID_RTOL


def test_feature_statistics_match_torch_fidelity():
    """Check mean and covariance against torch-fidelity's (np.cov, n - 1)."""
    features = pool3_like_features(2, 300, 64)
    mu, sigma = feature_statistics(features)
    theirs = fid_features_to_statistics(torch.from_numpy(features.astype(np.float64)))
    np.testing.assert_allclose(mu, theirs["mu"], rtol=SUM_ORDER_RTOL)
    np.testing.assert_allclose(sigma, theirs["sigma"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim", [64, 2048], ids=["64d", "2048d"])
def test_kid_one_block_agrees_with_both_libraries(dim):
    """Check one-block KID against clean-fid and torch-fidelity on one subset."""
    real = pool3_like_features(3, 400, dim).astype(np.float64)
    fake = pool3_like_features(4, 400, dim, shift=0.02).astype(np.float64)
    ours, _ = kernel_inception_distance(real, fake)
    # With one subset as large as the sets, both libraries draw a permutation
    # of the whole set, and the unbiased estimate does not depend on order.
    cleanfid = cleanfid_kernel_distance(real, fake, num_subsets=1, max_subset_size=400)
    fidelity = kid_features_to_metric(
        torch.from_numpy(real),
        torch.from_numpy(fake),
        kid_subsets=1,
        kid_subset_size=400,
        rng_seed=0,
        verbose=False,
        **TORCH_FIDELITY_POLY,
    )["kernel_inception_distance_mean"]
    assert relative_error(ours, cleanfid) <= SUM_ORDER_RTOL
    assert relative_error(ours, fidelity) <= SUM_ORDER_RTOL


def test_kid_blocks_agree_with_torch_fidelity_mmd2():
    """Check the block average against torch-fidelity's mmd2 on each block."""
    real = pool3_like_features(5, 2500, 32).astype(np.float64)
    fake = pool3_like_features(6, 2500, 32, shift=0.1).astype(np.float64)
    ours, stderr = kernel_inception_distance(real, fake, block_size=500)
    bounds = np.concatenate([[0], np.cumsum(block_sizes(2500, 5))])
    estimates = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        x = real[start:stop]
        y = fake[start:stop]
        estimates.append(
            mmd2(
                kernel_poly(x, x, **TORCH_FIDELITY_POLY),
                kernel_poly(x, y, **TORCH_FIDELITY_POLY),
                kernel_poly(y, y, **TORCH_FIDELITY_POLY),
            )
        )
    assert relative_error(ours, float(np.mean(estimates))) <= SUM_ORDER_RTOL
    expected_stderr = float(np.std(estimates) / np.sqrt(len(estimates)))
    assert relative_error(stderr, expected_stderr) <= SUM_ORDER_RTOL


@pytest.mark.parametrize("splits", [1, 10])
def test_inception_score_agrees_with_torch_fidelity(splits):
    """Check IS against torch-fidelity with the same contiguous splits."""
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=4.0, size=(500, 1008))
    ours, ours_std = inception_score(logits, splits=splits)
    theirs = isc_features_to_metric(
        torch.from_numpy(logits), splits=splits, shuffle=False
    )
    assert relative_error(ours, theirs["inception_score_mean"]) <= SUM_ORDER_RTOL
    if splits == 1:
        assert ours_std == 0.0
    else:
        assert ours_std == pytest.approx(theirs["inception_score_std"], rel=1e-7)


def test_metrics_repeat_to_the_last_bit():
    """Check that every metric gives identical bits on identical inputs."""
    real = pool3_like_features(8, 300, 128)
    fake = pool3_like_features(9, 300, 128, shift=0.1)
    logits = np.random.default_rng(10).normal(size=(300, 1008))
    first = (
        frechet_distance(*feature_statistics(real), *feature_statistics(fake)),
        kernel_inception_distance(real, fake, block_size=100),
        inception_score(logits, splits=3),
        precision_recall(real, fake),
    )
    second = (
        frechet_distance(*feature_statistics(real), *feature_statistics(fake)),
        kernel_inception_distance(real, fake, block_size=100),
        inception_score(logits, splits=3),
        precision_recall(real, fake),
    )
    assert first == second
