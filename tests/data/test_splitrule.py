"""The hash-rank split rule on synthetic key sets."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.data.splitrule import (
    choose_ranked,
    rank_order,
    rank_positions,
    rank_value,
)

SALT = "gan-benchmark:test:"
KEYS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=80, unique=True)


def test_rank_value_is_sha256_of_salt_and_key():
    """Check the documented rule on a known key."""
    expected = hashlib.sha256(b"gan-benchmark:test:0001bccd").hexdigest()
    assert rank_value(SALT, "0001bccd") == expected


@settings(max_examples=200, deadline=None)
@given(keys=KEYS, data=st.data())
def test_split_counts_exact(keys, data):
    """Check that the ranked split has exactly `count` keys and the rest go to the other."""
    count = data.draw(st.integers(0, len(keys)))
    ranked, other = choose_ranked(SALT, keys, count)
    assert len(ranked) == count
    assert len(other) == len(keys) - count
    assert set(ranked).isdisjoint(other)
    assert set(ranked) | set(other) == set(keys)


@settings(max_examples=100, deadline=None)
@given(keys=KEYS, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_split_independent_of_key_order(keys, seed, data):
    """Check that shuffling the source's key order gives the same split."""
    count = data.draw(st.integers(0, len(keys)))
    shuffled = list(keys)
    random.Random(seed).shuffle(shuffled)
    assert choose_ranked(SALT, keys, count) == choose_ranked(SALT, shuffled, count)


@settings(max_examples=100, deadline=None)
@given(keys=KEYS, data=st.data())
def test_split_takes_first_decodable_keys(keys, data):
    """Check that undecodable keys are in neither split and the count stays exact."""
    broken = set(data.draw(st.lists(st.sampled_from(keys), unique=True)))
    decodable = [key for key in rank_order(SALT, keys) if key not in broken]
    count = data.draw(st.integers(0, len(decodable)))
    ranked, other = choose_ranked(SALT, keys, count, decodes=lambda k: k not in broken)
    assert ranked == decodable[:count]
    assert other == decodable[count:]


@settings(max_examples=100, deadline=None)
@given(keys=KEYS)
def test_rank_positions_match_rank_order(keys):
    """Check that the numpy ranking of sorted keys equals the reference ordering."""
    keys = sorted(keys)
    positions = rank_positions(SALT, keys)
    assert [keys[i] for i in positions] == rank_order(SALT, keys)


def test_salt_changes_split():
    """Check that another salt gives another test split of the same keys."""
    keys = [f"{index:05d}" for index in range(1000)]
    first, _ = choose_ranked(SALT, keys, 100)
    second, _ = choose_ranked("another salt:", keys, 100)
    assert first != second
