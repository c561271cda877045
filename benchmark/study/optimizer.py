"""Bayesian optimisation of a method's settings with Optuna's GPSampler.

Each round rebuilds an in-memory Optuna study from the study database: one
finished Optuna trial per finished setting, valued by its median FID over
seeds. It then asks for a batch of settings. The database stays the only
record, so a resumed study proposes nothing twice, and the proposal of a
round depends only on the stored results and the round's seed.

Why Optuna's GPSampler: it is a maintained Gaussian-process optimiser
(Matérn-5/2 kernel with per-parameter length scales) that handles the
log-scaled lr and lambda, the bounded betas and the categorical n_disc
together. It proposes a batch by conditioning on the points already chosen
in the batch (sequential greedy q-LogEI), and it models failures through
constraints, all on the torch the project already pins. The paper used
GP-UCB; GPSampler's acquisition is log expected improvement, the one
documented difference.

How failures reach the optimiser: every setting carries the constraint
`(failed seeds - (seeds - 1) // 2) / seeds`, which is <= 0 (feasible) exactly
when the median over seeds is finite. The sampler fits a second Gaussian
process to it and steers away from settings likely to diverge. An
infeasible setting still needs an objective value for the FID model; it gets
the worst finite median of the method so far. When no setting has a finite
median yet, failed settings are passed as failed Optuna trials, and the
sampler draws at random.
"""

from __future__ import annotations

import logging
import math
import warnings

from benchmark.study.analysis import SettingScore
from benchmark.study.spec import (
    MAX_BETA,
    MethodSpec,
    RangeSpec,
    Setting,
    StudySpec,
    penalty_weight_range,
)
from benchmark.training import determinism

logger = logging.getLogger(__name__)

# GPSampler needs this many finished settings before it fits a GP; below it,
# its independent (random) sampler proposes.
MIN_SETTINGS_FOR_GP = 2
CONSTRAINT_NAME = "failed_seeds"


def _distribution(value: RangeSpec, cap: float | None = None):
    from optuna.distributions import FloatDistribution

    high = value.high if cap is None else min(value.high, cap)
    return FloatDistribution(value.low, high, log=value.log)


def search_space(spec: StudySpec, method: MethodSpec) -> dict:
    """Return the Optuna distributions of a method's Bayesian search."""
    from optuna.distributions import CategoricalDistribution

    bayesian = spec.bayesian
    space = {
        "lr": _distribution(bayesian.lr),
        "beta1": _distribution(bayesian.beta1, cap=MAX_BETA),
        "beta2": _distribution(bayesian.beta2, cap=MAX_BETA),
        "n_disc": CategoricalDistribution(list(bayesian.n_disc)),
    }
    weight = penalty_weight_range(spec, method)
    if weight is not None:
        space["penalty_weight"] = _distribution(weight)
    return space


def failure_constraint(seeds: int, failed: int) -> float:
    """Return the constraint value: <= 0 exactly when the median FID is finite."""
    return (failed - (seeds - 1) // 2) / seeds


def round_seed(spec: StudySpec, method: MethodSpec, round_number: int) -> int:
    """Return the sampler seed of one method's round (31 bits, for NumPy)."""
    label = f"{spec.name}:{method.name}"
    return determinism.derive_seed(spec.seed, label, round_number) & (2**31 - 1)


def _inside(params: dict, space: dict) -> bool:
    """Tell whether every value lies in its distribution."""
    from optuna.distributions import CategoricalDistribution

    for name, distribution in space.items():
        value = params[name]
        if isinstance(distribution, CategoricalDistribution):
            if value not in distribution.choices:
                return False
        elif not distribution.low <= value <= distribution.high:
            return False
    return True


def propose(
    spec: StudySpec,
    method: MethodSpec,
    history: list[SettingScore],
    count: int,
    round_number: int,
) -> list[Setting]:
    """Propose `count` new settings from the finished settings of a method.

    Args:
        history: every finished setting of the method (grid and earlier rounds).
        count: the number of settings in the batch.
        round_number: the Bayesian round (1-based); with the spec's seed it
            seeds the sampler.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    # ERROR hides the notice that the optional greenlet package would speed
    # up the acquisition search.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = search_space(spec, method)
    finite = [s.median_fid for s in history if math.isfinite(s.median_fid)]
    worst = max(finite) if finite else None

    sampler = optuna.samplers.GPSampler(
        seed=round_seed(spec, method, round_number),
        n_startup_trials=MIN_SETTINGS_FOR_GP,
        warn_independent_sampling=False,
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    skipped = 0
    for score in history:
        params = {
            "lr": score.setting.lr,
            "beta1": score.setting.beta1,
            "beta2": score.setting.beta2,
            "n_disc": score.setting.n_disc,
        }
        if "penalty_weight" in space:
            params["penalty_weight"] = score.setting.penalty_weight
        if not _inside(params, space):
            # A grid value outside the search ranges cannot enter the model.
            skipped += 1
            continue
        constraint = failure_constraint(score.seeds, score.failed_seeds)
        attributes = {
            "median_fid": score.median_fid,
            "failed_seeds": score.failed_seeds,
            "seeds": score.seeds,
        }
        if math.isfinite(score.median_fid):
            trial = create_trial(
                params=params,
                distributions=space,
                value=score.median_fid,
                constraints={CONSTRAINT_NAME: constraint},
                user_attrs=attributes,
            )
        elif worst is not None:
            trial = create_trial(
                params=params,
                distributions=space,
                value=worst,
                constraints={CONSTRAINT_NAME: constraint},
                user_attrs=attributes,
            )
        else:
            trial = create_trial(
                state=TrialState.FAIL,
                params=params,
                distributions=space,
                user_attrs=attributes,
            )
        study.add_trial(trial)
    if skipped:
        logger.warning(
            "%s: %d settings lie outside the search ranges and were not given "
            "to the optimiser",
            method.name,
            skipped,
        )

    proposals = []
    with warnings.catch_warnings():
        # GPSampler's constraint handling is marked experimental.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for _ in range(count):
            # Asked trials stay running, so each later ask conditions on them.
            trial = study.ask(space)
            params = trial.params
            proposals.append(
                Setting(
                    lr=float(params["lr"]),
                    beta1=float(params["beta1"]),
                    beta2=float(params["beta2"]),
                    n_disc=int(params["n_disc"]),
                    penalty_weight=float(params.get("penalty_weight", 0.0)),
                )
            )
    return proposals
