"""From trials to the paper's summaries: setting medians, top 5 %, budget curves.

Conventions (Kurach et al. 2019, and compare_gan v2 for the per-trial value):

- A trial's FID is the lowest FID over its evaluated checkpoints. A trial
  that failed (diverged, NaN images at every evaluation, an error) counts
  as +infinity, so it never lands in a top fraction and it raises a median
  instead of dropping out.
- A setting's FID is the median over its seeds (+infinity when at least
  half of them failed).
- Top fraction: the `fraction` best trials of a method (all its settings and
  seeds), at least one.
- Budget curve: a practitioner tries the grid (Table 1) settings in random
  order, then the Bayesian-optimised ones in random order, and keeps the
  lowest setting FID seen after k settings. The curve is the mean over
  `simulations` random orders, with the standard deviation as its spread.
  Every method is simulated with the same seed, so two methods with the same
  number of settings are compared on identical orders.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.study.spec import Setting
from benchmark.study.storage import COMPLETED, FINAL_STATES, GRID_PHASE


@dataclass(frozen=True)
class SettingScore:
    """A finished setting: its values, place in the study and median FID."""

    method: str
    phase: str
    round: int
    position: int
    key: str
    setting: Setting
    median_fid: float  # +inf when at least half of the seeds failed
    seeds: int
    failed_seeds: int


@dataclass(frozen=True)
class BudgetCurve:
    """Minimum attainable FID after k settings, k = 1 .. len(mean)."""

    mean: np.ndarray
    std: np.ndarray
    simulations: int

    @property
    def budgets(self) -> np.ndarray:
        """Return the budgets k = 1 .. n."""
        return np.arange(1, len(self.mean) + 1)


def trial_fid(trial: dict[str, Any]) -> float:
    """Return a trial's FID, +inf for a failed trial."""
    if trial["status"] == COMPLETED and trial.get("fid") is not None:
        return float(trial["fid"])
    return math.inf


def median_fid(values: list[float]) -> float:
    """Return the median, +inf when at least half of the values are +inf."""
    if not values:
        return math.inf
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2 == 1:
        return ordered[middle]
    low, high = ordered[middle - 1], ordered[middle]
    return math.inf if math.isinf(high) else statistics.fmean((low, high))


def setting_scores(trials: Iterable[dict[str, Any]]) -> list[SettingScore]:
    """Group trials by setting and return each finished setting's median FID.

    A setting with an unfinished trial (pending or running) is left out.
    """
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for trial in trials:
        groups.setdefault(
            (trial["method"], trial["round"], trial["position"]), []
        ).append(trial)
    scores = []
    for (method, round_number, position), members in sorted(groups.items()):
        if any(member["status"] not in FINAL_STATES for member in members):
            continue
        first = members[0]
        values = [trial_fid(member) for member in members]
        scores.append(
            SettingScore(
                method=method,
                phase=first["phase"],
                round=round_number,
                position=position,
                key=first["key"],
                setting=Setting(
                    lr=first["lr"],
                    beta1=first["beta1"],
                    beta2=first["beta2"],
                    n_disc=first["n_disc"],
                    penalty_weight=first["penalty_weight"],
                ),
                median_fid=median_fid(values),
                seeds=len(values),
                failed_seeds=sum(math.isinf(value) for value in values),
            )
        )
    return scores


def top_fraction(values: Iterable[float], fraction: float) -> np.ndarray:
    """Return the lowest ceil(fraction * n) values (at least one), ascending.

    Failed trials enter as +inf, so they count in n but come last.
    """
    ordered = np.sort(np.asarray(list(values), dtype=np.float64))
    if ordered.size == 0:
        return ordered
    count = max(1, math.ceil(fraction * ordered.size - 1e-9))
    return ordered[:count]


def budget_curve(
    grid_fids: Iterable[float],
    bayesian_fids: Iterable[float],
    simulations: int,
    seed: int,
) -> BudgetCurve:
    """Simulate trying grid settings first, then Bayesian ones, in random orders.

    Args:
        grid_fids: median FID of each grid setting (+inf for a failed one).
        bayesian_fids: median FID of each Bayesian-optimised setting.
        simulations: number of random orders.
        seed: seed of the orders (NumPy's default generator).

    Returns:
        The mean and standard deviation over orders of the lowest FID among
        the first k settings. Where some order has seen only failed settings
        the mean is +inf and the spread NaN.
    """
    grid = np.asarray(list(grid_fids), dtype=np.float64)
    bayesian = np.asarray(list(bayesian_fids), dtype=np.float64)
    total = grid.size + bayesian.size
    if total == 0:
        return BudgetCurve(np.empty(0), np.empty(0), simulations)
    rng = np.random.default_rng(seed)
    orders = np.empty((simulations, total), dtype=np.float64)
    for index in range(simulations):
        orders[index, : grid.size] = grid[rng.permutation(grid.size)]
        orders[index, grid.size :] = bayesian[rng.permutation(bayesian.size)]
    minima = np.minimum.accumulate(orders, axis=1)
    finite = np.isfinite(minima).all(axis=0)
    mean = np.full(total, np.inf)
    std = np.full(total, np.nan)
    mean[finite] = minima[:, finite].mean(axis=0)
    std[finite] = minima[:, finite].std(axis=0)
    return BudgetCurve(mean, std, simulations)


@dataclass(frozen=True)
class MethodSummary:
    """Everything the report shows for one method."""

    method: str
    label: str
    trials: int
    statuses: dict[str, int]
    settings: int
    grid_settings: int
    bayesian_settings: int
    top: np.ndarray  # the top-fraction trial FIDs, ascending (+inf if failed)
    curve: BudgetCurve
    best: SettingScore | None


def summarise_method(
    method: str,
    label: str,
    trials: list[dict[str, Any]],
    fraction: float,
    simulations: int,
    seed: int,
) -> MethodSummary:
    """Summarise one method's trials (only finished settings enter the curves)."""
    mine = [trial for trial in trials if trial["method"] == method]
    statuses: dict[str, int] = {}
    for trial in mine:
        statuses[trial["status"]] = statuses.get(trial["status"], 0) + 1
    scores = setting_scores(mine)
    finished_trials = [t for t in mine if t["status"] in FINAL_STATES]
    grid = [s.median_fid for s in scores if s.phase == GRID_PHASE]
    bayesian = [s.median_fid for s in scores if s.phase != GRID_PHASE]
    finite = [s for s in scores if math.isfinite(s.median_fid)]
    best = min(finite, key=lambda s: (s.median_fid, s.round, s.position), default=None)
    return MethodSummary(
        method=method,
        label=label,
        trials=len(mine),
        statuses=statuses,
        settings=len(scores),
        grid_settings=len(grid),
        bayesian_settings=len(bayesian),
        top=top_fraction((trial_fid(t) for t in finished_trials), fraction),
        curve=budget_curve(grid, bayesian, simulations, seed),
        best=best,
    )
