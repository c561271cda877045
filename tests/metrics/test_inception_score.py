"""Tests for the Inception Score against hand values and a direct reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.errors import UserError
from benchmark.metrics.inception_score import inception_score

CLASSES = 1008

# Relative error allowed between float64 computations of the same sums in a
# different order.
SUM_ORDER_RTOL = 1e-10


def _reference_score(logits: np.ndarray) -> float:
    """exp(mean KL(p || q)) written directly from the definition."""
    logits = logits.astype(np.float64)
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = exponentials / exponentials.sum(axis=1, keepdims=True)
    q = p.mean(axis=0)
    divergences = [
        sum(p_i[c] * math.log(p_i[c] / q[c]) for c in range(len(q)) if p_i[c] > 0)
        for p_i in p
    ]
    return math.exp(sum(divergences) / len(divergences))


def test_is_uniform_logits_is_one():
    """Check that identical uniform predictions give IS = 1."""
    score, spread = inception_score(np.zeros((16, CLASSES)))
    assert score == pytest.approx(1.0, rel=SUM_ORDER_RTOL)
    assert spread == 0.0


@pytest.mark.parametrize("k", [1, 2, 10, 1000])
def test_is_confident_distinct_classes_is_k(k):
    """Check that k confident classes, each predicted equally often, give IS = k."""
    logits = np.zeros((2 * k, CLASSES))
    logits[np.arange(2 * k), np.arange(2 * k) % k] = 60.0
    score, _ = inception_score(logits)
    assert score == pytest.approx(k, rel=SUM_ORDER_RTOL)


def test_is_matches_direct_reference():
    """Check IS on random logits against the definition written as loops."""
    logits = np.random.default_rng(0).normal(scale=3.0, size=(40, 12))
    score, _ = inception_score(logits.astype(np.float32))
    expected = _reference_score(logits.astype(np.float32))
    assert score == pytest.approx(expected, rel=SUM_ORDER_RTOL)


def test_is_splits_are_contiguous():
    """Check that k splits score rows i n // k to (i + 1) n // k separately."""
    logits = np.random.default_rng(1).normal(scale=2.0, size=(23, 7))
    bounds = [0, 7, 15, 23]
    scores = [
        _reference_score(logits[start:stop])
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
    mean, spread = inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(scores), rel=SUM_ORDER_RTOL)
    assert spread == pytest.approx(np.std(scores), rel=1e-8)


def test_is_ignores_class_that_underflows_everywhere():
    """Check that a class with probability 0 in every image adds nothing.

    TF-GAN computes 0 * log(0) there and returns NaN. Here the class drops out.
    """
    logits = np.random.default_rng(2).normal(size=(10, 6))
    padded = np.concatenate([logits, np.full((10, 1), -2000.0)], axis=1)
    score, _ = inception_score(padded)
    assert math.isfinite(score)
    assert score == pytest.approx(inception_score(logits)[0], rel=SUM_ORDER_RTOL)


@pytest.mark.parametrize(
    ("logits", "splits", "message"),
    [
        (np.zeros(5), 1, "shape"),
        (np.zeros((5, 0)), 1, "shape"),
        (np.full((3, 4), np.inf), 1, "NaN or infinite"),
        (np.zeros((3, 4)), 4, "splits"),
        (np.zeros((3, 4)), 0, "splits"),
    ],
    ids=["one-dim", "no-classes", "infinite", "too-many-splits", "zero-splits"],
)
def test_is_rejects_invalid_input(logits, splits, message):
    """Check that bad logits and split counts raise UserError."""
    with pytest.raises(UserError, match=message):
        inception_score(logits, splits=splits)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    count=st.integers(1, 30),
    classes=st.integers(1, 20),
    scale=st.floats(0.0, 20.0),
)
def test_is_lies_between_one_and_classes(seed, count, classes, scale):
    """Check that 1 <= IS <= number of classes, up to rounding."""
    logits = np.random.default_rng(seed).normal(scale=scale, size=(count, classes))
    score, _ = inception_score(logits)
    assert 1.0 - 1e-12 <= score <= classes * (1.0 + 1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(2, 30))
def test_is_one_split_ignores_row_order(seed, count):
    """Check that one-split IS does not depend on the order of the images."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(count, 9))
    shuffled = logits[rng.permutation(count)]
    assert inception_score(shuffled)[0] == pytest.approx(
        inception_score(logits)[0], rel=SUM_ORDER_RTOL
    )
