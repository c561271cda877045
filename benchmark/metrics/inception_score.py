"""Inception Score from classifier logits, as TF-GAN computed it.

IS = exp(mean_i KL(p_i || q)) with p_i = softmax(logits_i) and q the mean of
the p_i, all in float64 (TF-GAN `classifier_score_from_logits`, commit
209c7c8). compare_gan v2 scores all fakes as one split, so its numbers are not
the usual 10-split Inception Score; pass `splits=10` for that one.
"""

from __future__ import annotations

import numpy as np
import scipy.special

from benchmark.errors import UserError


def _split_score(logits: np.ndarray) -> float:
    """Compute exp(mean KL(p || q)) for one split of float64 logits `(n, classes)`."""
    log_p = scipy.special.log_softmax(logits, axis=1)
    p = np.exp(log_p)
    q = p.mean(axis=0, keepdims=True)
    # xlogy gives 0 * log(0) = 0 where a class probability underflows to 0 in
    # every image. TF-GAN returns NaN there and the same value everywhere else.
    kl = (p * log_p).sum(axis=1) - scipy.special.xlogy(p, q).sum(axis=1)
    return float(np.exp(kl.mean()))


def inception_score(logits: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """Compute the Inception Score of a set of images from their logits.

    Args:
        logits: Array of shape `(n, classes)`, any real dtype; converted to
            float64. For the TF Inception network `classes` is 1008.
        splits: Number of contiguous splits, 1 <= splits <= n. Split `i` contains
            rows `i * n // splits` to `(i + 1) * n // splits`.

    Returns:
        `(mean, std)` of the per-split scores as Python floats. `std` is the
        population standard deviation, so it is 0.0 when `splits` is 1. Each
        score lies in [1, classes] up to rounding.

    Raises:
        UserError: If `logits` is not 2-D, contains NaN or infinite values, or
            has fewer rows than `splits`.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise UserError(
            f"logits must have shape (n, classes), got shape {logits.shape}"
        )
    if not np.isfinite(logits).all():
        raise UserError(
            "logits contain NaN or infinite values; check the images fed to the "
            "extractor"
        )
    count = logits.shape[0]
    if not 1 <= splits <= count:
        raise UserError(
            f"Inception Score splits must be between 1 and the number of images "
            f"({count}), got {splits}"
        )
    scores = [
        _split_score(logits[i * count // splits : (i + 1) * count // splits])
        for i in range(splits)
    ]
    return float(np.mean(scores)), float(np.std(scores))
