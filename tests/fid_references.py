"""Float64 reference computations shared by the metric agreement tests."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def eigh_reference_fid(mu1, sigma1, mu2, sigma2) -> float:
    """FID via symmetric eigendecompositions, a third route to the trace term.

    tr sqrt(sigma1 sigma2) = sum of sqrt(eigenvalues of R sigma2 R) with
    R = sqrt(sigma1) from `eigh`; negative rounding residues are clipped to 0.
    """
    values, vectors = scipy.linalg.eigh(sigma1)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product_values = scipy.linalg.eigvalsh(root @ sigma2 @ root)
    trace_root = np.sqrt(np.clip(product_values, 0.0, None)).sum()
    difference = mu1 - mu2
    return float(
        difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root
    )


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)
