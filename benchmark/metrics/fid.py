"""Fréchet Inception Distance as TF-GAN computed it for compare_gan.

compare_gan v2 called TF-GAN's `frechet_classifier_distance` (commit 209c7c8,
`tensorflow_gan/python/eval/classifier_metrics.py`). It works in float64 and
uses the unbiased (n - 1) covariance. Its trace term does not form
sqrtm(sigma1 @ sigma2), which is not symmetric. It takes the symmetric root
A = sqrt(sigma1) by SVD, then uses tr(sqrt(sigma1 sigma2)) = tr(sqrt(A sigma2 A)),
where A sigma2 A is symmetric positive semi-definite, and roots that matrix by
SVD as well. Singular values below 1e-10 are left as they are, not rooted.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from benchmark.errors import UserError

# Singular values below this are kept unrooted, as in TF-GAN, because the
# square root is unstable near 0.
SQRT_EPSILON = 1e-10


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compute the mean and unbiased covariance of a set of feature vectors.

    Args:
        features: Array of shape `(n, d)` with n >= 2, any real dtype; it is
            converted to float64 before any arithmetic.

    Returns:
        `(mu, sigma)`: float64 mean of shape `(d,)` and float64 covariance of
        shape `(d, d)`, normalised by n - 1.

    Raises:
        UserError: If `features` is not 2-D, has fewer than 2 rows, or contains
            NaN or infinite values.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise UserError(f"features must have shape (n, d), got shape {features.shape}")
    count = features.shape[0]
    if count < 2:
        raise UserError(
            f"a covariance needs at least 2 feature vectors, got {count}; "
            "evaluate more images"
        )
    if not np.isfinite(features).all():
        raise UserError(
            "features contain NaN or infinite values; check the images fed to "
            "the extractor"
        )
    mu = features.mean(axis=0)
    centered = features - mu
    sigma = centered.T @ centered / (count - 1)
    return mu, sigma


def symmetric_matrix_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Compute the square root of a symmetric positive semi-definite matrix.

    The root is `U diag(sqrt(s)) V^T` from the SVD `matrix = U diag(s) V^T`.
    Singular values below `SQRT_EPSILON` stay unrooted, as TF-GAN does.

    Args:
        matrix: float64 array of shape `(d, d)`, symmetric up to rounding.

    Returns:
        float64 array `R` of shape `(d, d)` with `R @ R` close to `matrix`.
    """
    u, singular_values, vh = scipy.linalg.svd(matrix)
    rooted = np.where(
        singular_values < SQRT_EPSILON, singular_values, np.sqrt(singular_values)
    )
    return (u * rooted) @ vh


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Compute the Fréchet distance between two Gaussians, in TF-GAN's way.

    FID = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(A sigma2 A))
    with A = sqrt(sigma1). Exchanging the two Gaussians changes the result
    only by rounding. TF-GAN passes the real statistics as `mu1`, `sigma1`.

    Args:
        mu1: Mean of shape `(d,)`.
        sigma1: Covariance of shape `(d, d)`, symmetric positive semi-definite.
        mu2: Mean of shape `(d,)`.
        sigma2: Covariance of shape `(d, d)`, symmetric positive semi-definite.

    Returns:
        The distance as a Python float, computed in float64. It can be
        slightly negative for nearly identical inputs because of rounding.

    Raises:
        UserError: If the shapes do not agree.
    """
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    dim = mu1.shape[0] if mu1.ndim == 1 else 0
    shapes = {
        "mu1": mu1.shape,
        "mu2": mu2.shape,
        "sigma1": sigma1.shape,
        "sigma2": sigma2.shape,
    }
    expected = {
        "mu1": (dim,),
        "mu2": (dim,),
        "sigma1": (dim, dim),
        "sigma2": (dim, dim),
    }
    if dim < 1 or shapes != expected:
        found = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise UserError(
            "Fréchet distance needs means of shape (d,) and covariances of shape "
            f"(d, d) with the same d >= 1, got {found}; the two statistics come "
            "from different extractors or files"
        )

    sqrt_sigma1 = symmetric_matrix_sqrt(sigma1)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt_product = np.trace(symmetric_matrix_sqrt(product))
    mean_term = float(np.sum((mu1 - mu2) ** 2))
    return mean_term + float(
        np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product
    )


def fid_from_features(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """Compute the FID between two sets of pool_3 features.

    Args:
        real_features: Array of shape `(n_real, d)`, n_real >= 2.
        fake_features: Array of shape `(n_fake, d)`, n_fake >= 2.

    Returns:
        The FID as a Python float, with the real statistics in the place of
        `mu1`, `sigma1` as in TF-GAN.
    """
    mu_real, sigma_real = feature_statistics(real_features)
    mu_fake, sigma_fake = feature_statistics(fake_features)
    return frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)
