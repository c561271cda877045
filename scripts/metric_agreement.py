"""Print the agreement of our metrics with clean-fid and torch-fidelity.

Takes two feature files as `benchmark.protocol` caches them (`.npz` with a
`features` array of float32 pool_3 features), the reference set first, and
computes on the same arrays:

* FID: ours, clean-fid's `frechet_distance` (scipy `sqrtm`), torch-fidelity's
  `fid_statistics_to_metric` (eigenvalues of the product), and a float64
  route through symmetric eigendecompositions; relative differences to ours;
* KID with our block estimator against the mean of torch-fidelity's `mmd2`
  over the same blocks. Also one-block KID of the first 1000 rows of each
  set against clean-fid's `kernel_distance` with one subset of all rows;
* precision and recall (k = 3) against torch-fidelity's;
* how far float32 rounding of the features moves FID: the FID after adding
  noise of relative size 2^-24 (one float32 rounding step) to every feature.

Usage:
    python scripts/metric_agreement.py REFERENCE.npz SAMPLE.npz

This is a measurement for REPRODUCING.md, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import scipy.linalg
import torch
from cleanfid.fid import frechet_distance as cleanfid_frechet_distance
from cleanfid.fid import kernel_distance as cleanfid_kernel_distance
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_kid import kernel_poly, mmd2
from torch_fidelity.metric_prc import calculate_precision_recall_full

from benchmark.metrics.fid import feature_statistics, frechet_distance
from benchmark.metrics.kid import (
    DEFAULT_BLOCK_SIZE,
    block_sizes,
    kernel_inception_distance,
)
from benchmark.metrics.precision_recall import precision_recall

POLY = {
    "kid_kernel_poly_degree": 3,
    "kid_kernel_poly_gamma": None,
    "kid_kernel_poly_coef0": 1,
}


def eigh_fid(mu1, sigma1, mu2, sigma2) -> float:
    values, vectors = scipy.linalg.eigh(sigma1)
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = scipy.linalg.eigvalsh(root @ sigma2 @ root)
    difference = mu1 - mu2
    return float(
        difference @ difference
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2.0 * np.sqrt(np.clip(product, 0.0, None)).sum()
    )


def block_mmd2_mean(real: np.ndarray, fake: np.ndarray) -> float:
    """torch-fidelity's mmd2 averaged over our blocks (equal counts only)."""
    n_bins = int(np.ceil(len(real) / DEFAULT_BLOCK_SIZE))
    bounds = np.concatenate([[0], np.cumsum(block_sizes(len(real), n_bins))])
    estimates = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        x = real[start:stop]
        y = fake[start:stop]
        estimates.append(
            mmd2(
                kernel_poly(x, x, **POLY),
                kernel_poly(x, y, **POLY),
                kernel_poly(y, y, **POLY),
            )
        )
    return float(np.mean(estimates))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="reference features (.npz)")
    parser.add_argument("sample", help="sample features (.npz)")
    arguments = parser.parse_args()
    real = np.load(arguments.reference)["features"]
    fake = np.load(arguments.sample)["features"]
    report: dict = {"reference_rows": len(real), "sample_rows": len(fake)}

    (mu1, sigma1), (mu2, sigma2) = feature_statistics(real), feature_statistics(fake)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleanfid = cleanfid_frechet_distance(mu1, sigma1, mu2, sigma2)
    fidelity = fid_statistics_to_metric(
        {"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}, verbose=False
    )["frechet_inception_distance"]
    eigh = eigh_fid(mu1, sigma1, mu2, sigma2)
    report["fid"] = {
        "ours": ours,
        "cleanfid": cleanfid,
        "torch_fidelity": fidelity,
        "eigh": eigh,
        "relative_cleanfid": abs(ours - cleanfid) / ours,
        "relative_torch_fidelity": abs(ours - fidelity) / ours,
        "relative_eigh": abs(ours - eigh) / ours,
    }

    rng = np.random.default_rng(0)
    noisy_real = real * (1 + rng.uniform(-1, 1, real.shape) * 2.0**-24)
    noisy_fake = fake * (1 + rng.uniform(-1, 1, fake.shape) * 2.0**-24)
    noisy = frechet_distance(
        *feature_statistics(noisy_real), *feature_statistics(noisy_fake)
    )
    report["fid_float32_rounding_shift"] = noisy - ours

    real64 = real.astype(np.float64)
    fake64 = fake.astype(np.float64)
    if len(real) == len(fake):
        kid, _ = kernel_inception_distance(real64, fake64)
        theirs = block_mmd2_mean(real64, fake64)
        report["kid_blocks"] = {
            "ours": kid,
            "torch_fidelity_mmd2": theirs,
            "relative": abs(kid - theirs) / abs(theirs),
        }
    head_real = real64[:1000]
    head_fake = fake64[:1000]
    kid_head, _ = kernel_inception_distance(head_real, head_fake)
    clean_head = cleanfid_kernel_distance(
        head_real, head_fake, num_subsets=1, max_subset_size=1000
    )
    report["kid_one_block_1000"] = {
        "ours": kid_head,
        "cleanfid": clean_head,
        "relative": abs(kid_head - clean_head) / abs(clean_head),
    }

    precision, recall = precision_recall(real, fake)
    their_precision, their_recall = calculate_precision_recall_full(
        torch.from_numpy(fake), torch.from_numpy(real), neighborhood=3
    )
    report["precision_recall"] = {
        "ours": [precision, recall],
        "torch_fidelity": [their_precision, their_recall],
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
