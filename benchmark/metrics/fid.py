"""Fréchet Inception Distance as TF-GAN computed it for compare_gan.

compare_gan v2 called TF-GAN's `frechet_classifier_distance` (commit 209c7c8,
`tensorflow_gan/python/eval/classifier_metrics.py`). It works in float64 and
uses the unbiased (n - 1) covariance. Its trace term does not form
sqrtm(sigma1 @ sigma2), which is not symmetric. It takes the symmetric root
A = sqrt(sigma1) by SVD, then uses tr(sqrt(sigma1 sigma2)) = tr(sqrt(A sigma2 A)),
where A sigma2 A is symmetric positive semi-definite, and roots that matrix by
SVD as well. Singular values below 1e-10 are left as they are, not rooted.

We compute the same quantity from symmetric eigendecompositions, about three
times faster. For a symmetric matrix Q diag(l) Q^T, the SVD has singular
values |l| and a right vector that is the left one times sign(l), so TF-GAN's
root is Q diag(r) Q^T with r = sign(l) sqrt(|l|), or r = l where |l| < 1e-10.
Only the trace of the second root is needed, which is the sum of its r and
needs no eigenvectors. The two routes differ by rounding only (1.5e-12
relative on 10K real CIFAR-10 features; tests/metrics/test_fid.py checks
that they agree within 1e-9).
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
    original = features
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
    if np.may_share_memory(features, original):
        centered = features - mu
    else:
        # The float64 array is a copy made above, so center it in place: one
        # (n, d) array less at the peak, the same values.
        centered = np.subtract(features, mu, out=features)
    sigma = centered.T @ centered / (count - 1)
    return mu, sigma


def _root_of_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
    """Return what TF-GAN's SVD root makes of each eigenvalue l.

    sign(l) sqrt(|l|), or l itself where |l| is below `SQRT_EPSILON`.
    """
    magnitude = np.abs(eigenvalues)
    return np.where(
        magnitude < SQRT_EPSILON,
        eigenvalues,
        np.sign(eigenvalues) * np.sqrt(magnitude),
    )


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    """Average a matrix with its transpose: LAPACK's eigh reads one triangle."""
    return (matrix + matrix.T) / 2.0


def symmetric_matrix_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Compute the square root of a symmetric positive semi-definite matrix.

    Equal, up to rounding, to TF-GAN's `U diag(sqrt(s)) V^T` from the SVD
    `matrix = U diag(s) V^T`, with singular values below `SQRT_EPSILON` left
    unrooted; computed from the eigendecomposition (see the module notes).

    Args:
        matrix: float64 array of shape `(d, d)`, symmetric up to rounding.

    Returns:
        float64 array `R` of shape `(d, d)` with `R @ R` close to `matrix`.
    """
    eigenvalues, vectors = scipy.linalg.eigh(_symmetric(matrix), driver="evd")
    return (vectors * _root_of_eigenvalues(eigenvalues)) @ vectors.T


def trace_of_sqrt(matrix: np.ndarray) -> float:
    """Compute the trace of `symmetric_matrix_sqrt(matrix)` from eigenvalues only."""
    eigenvalues = scipy.linalg.eigvalsh(_symmetric(matrix), driver="evd")
    return float(np.sum(_root_of_eigenvalues(eigenvalues)))


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
    trace_sqrt_product = trace_of_sqrt(product)
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
