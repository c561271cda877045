"""Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019).

Each feature set approximates its distribution's manifold by the union of
balls around its points, the radius of each ball being the distance to the
point's k-th nearest neighbour in the same set (the point itself excluded).
Precision is the fraction of fake features inside the real manifold, and
recall the fraction of real features inside the fake manifold. A point on the
boundary counts as inside (distance <= radius). The paper uses k = 3.

Kurach et al. (2019) name this metric as future work; compare_gan v2 does not
compute it, so no protocol number depends on it.

Distances are Euclidean and computed in float64 from ||a||^2 + ||b||^2 - 2 a.b
in blocks of rows. Only one set is converted whole to float64 at a time, so
the memory beyond the inputs is one float64 copy of a set plus two blocks of
`block_rows` x (number of rows) values. Squared distances are compared with
squared radii, which gives the same decisions as comparing the distances.
"""

from __future__ import annotations

import numpy as np

from benchmark.errors import UserError
from benchmark.metrics.arrays import checked_features

# The k that Kynkäänniemi et al. use in their experiments.
DEFAULT_NEIGHBOURS = 3

# Rows per block of the distance matrix: 256 x 10,000 float64 values is 20 MB.
# Results do not depend on it: tests compare blocks of 1, 7 and 64 rows with 1000.
DEFAULT_BLOCK_ROWS = 256


def _squared_distances(
    rows: np.ndarray,
    row_norms: np.ndarray,
    columns: np.ndarray,
    column_norms: np.ndarray,
) -> np.ndarray:
    """Return the squared Euclidean distances of every row to every column row."""
    # The same operations as (|r|^2 + |c|^2) - 2 r.c, done in place so that
    # at most two blocks are alive at once.
    products = rows @ columns.T
    products *= 2.0
    distances = row_norms[:, None] + column_norms[None, :]
    distances -= products
    del products
    # Cancellation can leave tiny negative values for (nearly) equal points.
    return np.maximum(distances, 0.0, out=distances)


def squared_knn_radii(
    features: np.ndarray,
    neighbours: int = DEFAULT_NEIGHBOURS,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> np.ndarray:
    """Compute each point's squared distance to its k-th nearest other point.

    Args:
        features: float64 array of shape `(n, d)` with n > `neighbours`.
        neighbours: k, at least 1.
        block_rows: Rows of the distance matrix computed at once.

    Returns:
        float64 array of shape `(n,)`. A duplicate of a point counts as a
        neighbour at distance 0; only the point itself is excluded.
    """
    norms = np.einsum("ij,ij->i", features, features)
    radii = np.empty(features.shape[0], dtype=np.float64)
    for start in range(0, features.shape[0], block_rows):
        stop = min(start + block_rows, features.shape[0])
        distances = _squared_distances(
            features[start:stop], norms[start:stop], features, norms
        )
        # Exclude each point from its own neighbours by its index, not by
        # its (rounded) zero distance, so duplicates still count.
        distances[np.arange(stop - start), np.arange(start, stop)] = np.inf
        distances.partition(neighbours - 1, axis=1)
        radii[start:stop] = distances[:, neighbours - 1]
    return radii


def manifold_coverage(
    queries: np.ndarray,
    support: np.ndarray,
    support_radii: np.ndarray,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> float:
    """Return the fraction of queries within the radius of some support point.

    Args:
        queries: Array of shape `(m, d)`, converted to float64 one block of
            rows at a time.
        support: float64 array of shape `(n, d)`.
        support_radii: Squared radius of each support point, shape `(n,)`.
        block_rows: Query rows handled at once.
    """
    support_norms = np.einsum("ij,ij->i", support, support)
    inside = 0
    for start in range(0, queries.shape[0], block_rows):
        stop = min(start + block_rows, queries.shape[0])
        rows = np.asarray(queries[start:stop], dtype=np.float64)
        row_norms = np.einsum("ij,ij->i", rows, rows)
        distances = _squared_distances(rows, row_norms, support, support_norms)
        inside += int((distances <= support_radii[None, :]).any(axis=1).sum())
    return inside / queries.shape[0]


def precision_recall(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    neighbours: int = DEFAULT_NEIGHBOURS,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> tuple[float, float]:
    """Compute improved precision and recall of fakes against reals.

    Args:
        real_features: Array of shape `(n_real, d)`, n_real > `neighbours`.
        fake_features: Array of shape `(n_fake, d)`, n_fake > `neighbours`.
        neighbours: k of the k-nearest-neighbour radii (the paper's 3).
        block_rows: Rows of each distance block; changes memory, not results.

    Returns:
        `(precision, recall)` as Python floats in [0, 1].

    Raises:
        UserError: If the shapes disagree, the features are not finite, a set
            has no more than `neighbours` rows, or `neighbours` or
            `block_rows` is below 1.
    """
    real = checked_features("real", real_features)
    fake = checked_features("fake", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise UserError(
            f"real and fake features have different widths ({real.shape[1]} and "
            f"{fake.shape[1]}); compute both with the same extractor"
        )
    if neighbours < 1:
        raise UserError(f"precision/recall neighbours must be >= 1, got {neighbours}")
    if block_rows < 1:
        raise UserError(f"precision/recall block rows must be >= 1, got {block_rows}")
    smallest = min(real.shape[0], fake.shape[0])
    if smallest <= neighbours:
        raise UserError(
            f"precision/recall with k = {neighbours} needs more than {neighbours} "
            f"features per set, got {real.shape[0]} real and {fake.shape[0]} fake; "
            "evaluate more images"
        )
    # Only one whole set is held in float64 at a time.
    support = np.asarray(real, dtype=np.float64)
    real_radii = squared_knn_radii(support, neighbours, block_rows)
    precision = manifold_coverage(fake, support, real_radii, block_rows)
    del support
    support = np.asarray(fake, dtype=np.float64)
    fake_radii = squared_knn_radii(support, neighbours, block_rows)
    recall = manifold_coverage(real, support, fake_radii, block_rows)
    return precision, recall
