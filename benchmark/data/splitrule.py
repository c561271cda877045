"""The hash-rank split rule: which source keys form the test split.

Rule, for a spec salt S and a count N: every source key K gets the rank value
SHA-256 of the UTF-8 bytes of S + K, written as 64 lowercase hex digits. Keys
are ordered by (rank value, key) ascending. The first N keys whose image
decodes form the ranked split, and all other decodable keys form the other
split. Anyone with the key list can recompute the split, and it depends neither on
the order in which the source lists its keys nor on how the work is divided.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np


def rank_value(salt: str, key: str) -> str:
    """Return the hex SHA-256 of `salt + key` that orders keys for the split."""
    return hashlib.sha256((salt + key).encode("utf-8")).hexdigest()


def rank_order(salt: str, keys: Iterable[str]) -> list[str]:
    """Return `keys` sorted by (rank value, key)."""
    return sorted(keys, key=lambda key: (rank_value(salt, key), key))


def rank_positions(salt: str, keys: list[str]) -> np.ndarray:
    """Return the indices into `keys` in rank order, for long key lists.

    Equal to `[keys.index(k) for k in rank_order(salt, keys)]` but sorts a
    numpy array of fixed-width hex strings, which keeps millions of keys fast
    and small. Keys must be unique and sorted, so that ties in the rank value
    fall back to key order.
    """
    values = np.array([rank_value(salt, key) for key in keys], dtype="S64")
    return np.argsort(values, kind="stable")


def choose_ranked(
    salt: str,
    keys: Iterable[str],
    count: int,
    decodes: Callable[[str], bool] = lambda key: True,
) -> tuple[list[str], list[str]]:
    """Split keys by the rule; return (ranked split, other split), each in rank order.

    Args:
        salt: the spec's salt.
        keys: unique source keys, in any order.
        count: size of the ranked split; fewer when too few keys decode.
        decodes: whether a key's image decodes; keys that do not are in
            neither split.
    """
    ranked: list[str] = []
    other: list[str] = []
    for key in rank_order(salt, keys):
        if not decodes(key):
            continue
        if len(ranked) < count:
            ranked.append(key)
        else:
            other.append(key)
    return ranked, other
