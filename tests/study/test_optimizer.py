"""Bayesian proposals: ranges, determinism, use of results and of failures."""

from __future__ import annotations

import math

import pytest

from benchmark.study.analysis import SettingScore
from benchmark.study.optimizer import failure_constraint, propose
from benchmark.study.spec import MAX_BETA, Setting, grid_settings, load_study


def scores(method, settings, objective, seeds=5, failed=lambda s: 0):
    """Return finished settings scored by `objective`; `failed` gives failed seeds."""
    rows = []
    for position, setting in enumerate(settings):
        lost = failed(setting)
        median = math.inf if lost > (seeds - 1) // 2 else objective(setting)
        rows.append(
            SettingScore(
                method, "grid", 0, position, setting.key(), setting, median, seeds, lost
            )
        )
    return rows


def log_lr_bowl(setting: Setting) -> float:
    """An FID-like bowl with its minimum 30 at lr = 10**-3.5."""
    return 30.0 + 20.0 * (math.log10(setting.lr) + 3.5) ** 2


@pytest.fixture(scope="module")
def spec():
    return load_study("figure1-lsun")


@pytest.mark.parametrize(
    "seeds, failed, feasible",
    [
        (5, 0, True),
        (5, 2, True),
        (5, 3, False),
        (2, 0, True),
        (2, 1, False),
        (1, 1, False),
    ],
)
def test_failure_constraint_is_feasible_iff_median_finite(seeds, failed, feasible):
    """Check the constraint sign agrees with the median-over-seeds rule."""
    assert (failure_constraint(seeds, failed) <= 0) == feasible


def test_proposals_lie_in_table2_ranges(spec):
    """Check every proposed value lies in its range, and lambda only with a penalty."""
    for name, low, high in (("sn", None, None), ("gp", 0.1, 100.0), ("l2", 1e-4, 10.0)):
        method = spec.method(name)
        history = scores(name, grid_settings(spec, method), log_lr_bowl)
        proposed = propose(spec, method, history, 2, round_number=1)
        assert len(proposed) == 2
        assert len({s.key() for s in proposed}) == 2
        for setting in proposed:
            assert 1e-5 <= setting.lr <= 1e-2
            assert 0.0 <= setting.beta1 <= MAX_BETA
            assert 0.0 <= setting.beta2 <= MAX_BETA
            assert setting.n_disc in (1, 5)
            if low is None:
                assert setting.penalty_weight == 0.0
            else:
                assert low <= setting.penalty_weight <= high


def test_proposals_are_reproducible(spec):
    """Check the same history and round give the same batch, another round another one."""
    method = spec.method("gp")
    history = scores("gp", grid_settings(spec, method), log_lr_bowl)
    first = propose(spec, method, history, 2, round_number=1)
    assert propose(spec, method, history, 2, round_number=1) == first
    assert propose(spec, method, history, 2, round_number=2) != first


def test_proposals_improve_on_the_grid(spec):
    """Check the GP uses the results: a proposal beats the best grid setting of a bowl."""
    method = spec.method("sn")
    history = scores("sn", grid_settings(spec, method), log_lr_bowl)
    best_grid = min(s.median_fid for s in history)
    proposed = propose(spec, method, history, 10, round_number=1)
    assert min(log_lr_bowl(s) for s in proposed) < best_grid
    # Random proposals over lr in [1e-5, 1e-2] would mostly miss the bowl.
    close = [s for s in proposed if abs(math.log10(s.lr) + 3.5) < 0.5]
    assert len(close) >= 5


def test_failures_steer_proposals_away(spec):
    """Check settings that diverge at high lr keep proposals below the failing region.

    The FID falls with lr, so without the failure constraint the optimiser
    would push lr to the failing end of the range.
    """
    method = spec.method("sn")
    grid = [
        Setting(lr, beta1, beta2, n_disc, 0.0)
        for lr in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
        for beta1, beta2, n_disc in ((0.5, 0.999, 1), (0.5, 0.9, 5))
    ]

    def falling(setting):
        return 100.0 + 20.0 * math.log10(setting.lr)

    def failed(setting):
        return 5 if setting.lr >= 1e-3 else 0

    history = scores("sn", grid, falling, failed=failed)
    proposed = propose(spec, method, history, 10, round_number=1)
    risky = [s for s in proposed if s.lr >= 1e-3]
    assert len(risky) <= 2


def test_all_failed_history_falls_back_to_random(spec):
    """Check proposals still come when no setting has a finite median."""
    method = spec.method("sn")
    history = scores("sn", grid_settings(spec, method), log_lr_bowl, failed=lambda s: 5)
    proposed = propose(spec, method, history, 3, round_number=1)
    assert len(proposed) == 3
