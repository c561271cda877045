"""Setting medians, top fractions and budget curves on tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.study.analysis import (
    budget_curve,
    median_fid,
    setting_scores,
    summarise_method,
    top_fraction,
)


def trial(method, round_number, position, seed, status="completed", fid=None, **extra):
    """Return a trial row shaped like StudyStorage.trials() returns it."""
    row = {
        "method": method,
        "phase": "grid" if round_number == 0 else "bayesian",
        "round": round_number,
        "position": position,
        "key": f"k{round_number}-{position}",
        "lr": 1e-4 * (position + 1),
        "beta1": 0.5,
        "beta2": 0.999,
        "n_disc": 1,
        "penalty_weight": 0.0,
        "seed": seed,
        "status": status,
        "fid": fid,
    }
    row.update(extra)
    return row


def table(method, grid_fids, bayesian_fids, shift=0.0):
    """Return trials of one method: each setting a list of per-seed FIDs (None = failed)."""
    rows = []
    for round_number, settings in ((0, grid_fids), (1, bayesian_fids)):
        for position, seeds in enumerate(settings):
            for seed, value in enumerate(seeds):
                if value is None:
                    rows.append(trial(method, round_number, position, seed, "diverged"))
                else:
                    rows.append(
                        trial(method, round_number, position, seed, fid=value + shift)
                    )
    return rows


@pytest.mark.parametrize(
    "values, expected",
    [
        ([3.0, 1.0, 2.0], 2.0),
        ([4.0, 1.0, 2.0, 3.0], 2.5),
        ([1.0, 2.0, math.inf], 2.0),
        ([1.0, math.inf, math.inf], math.inf),
        ([1.0, math.inf], math.inf),
        ([1.0, 2.0, 3.0, math.inf], 2.5),
        ([], math.inf),
    ],
)
def test_median_counts_failures_as_worst(values, expected):
    """Check the median with failed seeds as +inf."""
    assert median_fid(values) == expected


def test_top_fraction_takes_ceil_of_five_percent():
    """Check 5 % of 100 values is the 5 smallest and of 30 values the 2 smallest."""
    values = np.arange(100, 0, -1, dtype=float)
    assert list(top_fraction(values, 0.05)) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(top_fraction(np.arange(30.0), 0.05)) == [0.0, 1.0]
    assert list(top_fraction([7.0], 0.05)) == [7.0]
    assert top_fraction([], 0.05).size == 0


def test_top_fraction_counts_failures_in_the_total():
    """Check failed trials enlarge n but never enter before a finite FID."""
    values = [5.0, 3.0] + [math.inf] * 38
    top = top_fraction(values, 0.05)
    assert list(top) == [3.0, 5.0]


def test_budget_curve_tries_grid_before_bayesian():
    """Check k = 2 sees both grid settings and k = 3 the Bayesian one, in every order."""
    curve = budget_curve([10.0, 20.0], [1.0], simulations=200, seed=0)
    assert curve.mean[0] == pytest.approx(15.0, abs=1.5)
    assert curve.mean[1] == 10.0
    assert curve.std[1] == 0.0
    assert curve.mean[2] == 1.0
    assert list(curve.budgets) == [1, 2, 3]


def test_budget_curve_matches_exact_expectation():
    """Check the simulated mean against the exact expected minimum of a random subset.

    For values 1..n in random order, E[min of the first k] = sum over v of
    v * P(v is the minimum), which has a closed form; 4000 orders put the
    estimate within about 0.03 of it (4 standard errors of the k = 1 case).
    """
    values = np.arange(1.0, 11.0)
    curve = budget_curve(values, [], simulations=4000, seed=3)
    n = len(values)
    for k in range(1, n + 1):
        # P(min = v) = C(n - v, k - 1) / C(n, k) for values 1..n.
        exact = sum(v * math.comb(n - int(v), k - 1) / math.comb(n, k) for v in values)
        assert curve.mean[k - 1] == pytest.approx(exact, abs=0.12)
    assert curve.mean[-1] == 1.0


def test_budget_curve_is_infinite_until_a_finite_setting():
    """Check a failed grid gives an infinite mean until Bayesian settings start."""
    curve = budget_curve([math.inf, math.inf], [40.0, 30.0], simulations=50, seed=1)
    assert np.isinf(curve.mean[:2]).all()
    assert np.isnan(curve.std[:2]).all()
    assert curve.mean[3] == 30.0


def test_budget_curve_is_reproducible():
    """Check the same seed gives the same curve and another seed another one."""
    values = np.linspace(10, 50, 24)
    first = budget_curve(values, values[:10], simulations=100, seed=7)
    second = budget_curve(values, values[:10], simulations=100, seed=7)
    third = budget_curve(values, values[:10], simulations=100, seed=8)
    assert np.array_equal(first.mean, second.mean)
    assert not np.array_equal(first.mean, third.mean)


def test_setting_scores_skip_unfinished_settings():
    """Check medians per setting, failure counts and that running settings are left out."""
    rows = table("sn", [[30.0, 20.0, 10.0], [5.0, None, None]], [[1.0, 2.0, 3.0]])
    rows.append(trial("sn", 1, 1, 0, status="running"))
    scores = setting_scores(rows)
    assert [(s.round, s.position) for s in scores] == [(0, 0), (0, 1), (1, 0)]
    assert scores[0].median_fid == 20.0
    assert scores[1].median_fid == math.inf
    assert scores[1].failed_seeds == 2
    assert scores[2].median_fid == 2.0
    assert scores[2].phase == "bayesian"


def test_shifted_copy_shifts_every_summary():
    """Check a method whose FIDs are another's plus 7.5 has curves and top FIDs 7.5 higher."""
    rng = np.random.default_rng(0)
    grid = [list(rng.uniform(20, 200, 5)) for _ in range(24)]
    grid[3][1] = None  # a diverged seed
    bayesian = [list(rng.uniform(20, 200, 5)) for _ in range(30)]
    rows = table("a", grid, bayesian) + table("b", grid, bayesian, shift=7.5)
    first = summarise_method("a", "A", rows, 0.05, simulations=1000, seed=0)
    second = summarise_method("b", "B", rows, 0.05, simulations=1000, seed=0)

    assert first.trials == second.trials == 54 * 5
    assert first.statuses == {"completed": 269, "diverged": 1}
    assert (first.grid_settings, first.bayesian_settings) == (24, 30)
    np.testing.assert_allclose(second.top, first.top + 7.5, rtol=0, atol=1e-9)
    assert first.top.size == math.ceil(0.05 * 270)
    np.testing.assert_allclose(
        second.curve.mean, first.curve.mean + 7.5, rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(second.curve.std, first.curve.std, rtol=0, atol=1e-9)
    assert second.best.median_fid == pytest.approx(first.best.median_fid + 7.5)
    assert second.best.key == first.best.key
