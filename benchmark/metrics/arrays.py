"""Input checks shared by the metrics that take feature sets."""

from __future__ import annotations

import numpy as np

from benchmark.errors import UserError


def checked_features(name: str, features: np.ndarray) -> np.ndarray:
    """Return one feature set as a float array `(n, d)` or raise a UserError.

    The array keeps its float dtype (other dtypes become float64). Callers
    convert to float64 one block or one set at a time, so two 10K sets are
    never both copied whole.
    """
    features = np.asarray(features)
    if not np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float64)
    if features.ndim != 2:
        raise UserError(
            f"{name} features must have shape (n, d), got shape {features.shape}"
        )
    if not np.isfinite(features).all():
        raise UserError(
            f"{name} features contain NaN or infinite values; check the images "
            "fed to the extractor"
        )
    return features
