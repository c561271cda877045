"""Default locations of prepared data, caches and runs.

Each default can be changed by an environment variable, and every command
that uses one also takes a flag that overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_VARIABLE = "BENCHMARK_DATA"
CACHE_VARIABLE = "BENCHMARK_CACHE"
EXTRACTOR_VARIABLE = "BENCHMARK_EXTRACTOR"


def default_data_root() -> Path:
    """Return where prepared datasets live: $BENCHMARK_DATA or ./data."""
    return Path(os.environ.get(DATA_ROOT_VARIABLE, "data"))


def default_cache_dir() -> Path:
    """Return the cache folder for extractor weights and feature statistics.

    $BENCHMARK_CACHE if set, else $XDG_CACHE_HOME/gan-benchmark, else
    ~/.cache/gan-benchmark.
    """
    if CACHE_VARIABLE in os.environ:
        return Path(os.environ[CACHE_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gan-benchmark"
