"""Reproducibility harness for "A Large-Scale Study on Regularization and
Normalization in GANs" (Kurach et al., ICML 2019).

Every number the harness reports is fixed by spec files (datasets, protocols,
baselines) that carry versions, and by the content digests and environment
recorded next to it.
"""

__version__ = "0.1.0"
