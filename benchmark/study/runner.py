"""`benchmark study run`: the grid, then the Bayesian rounds, trial by trial.

Order of work for a study with R rounds:

1. store the grid settings of every method (round 0) with one pending trial
   per seed, and run all pending trials of round 0;
2. for r = 1 .. R: for each method, propose the round's settings from the
   median FIDs of all its finished settings of rounds < r and store them;
   then run all pending trials of round r.

Each step checks the database first, so running the same command again
after an interruption skips stored rounds and finished trials, and the
trials that were running start again (from their last checkpoint, when the
trial folder is reachable).

Study folder (OUT):

    OUT/study.db                      the SQLite database (unless --storage)
    OUT/trials/<method>/<setting>/seed-<s>/   one trial, as `run baseline` writes a seed
    OUT/report/                       written by `benchmark study report`
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmark.fileio import sha256_file
from benchmark.progress import progress_bar
from benchmark.run import output_lock
from benchmark.specs import as_dict, load_dataset
from benchmark.study.analysis import setting_scores
from benchmark.study.executors import Executor
from benchmark.study.optimizer import propose
from benchmark.study.spec import MethodSpec, Setting, StudySpec, grid_settings
from benchmark.study.storage import (
    BAYESIAN_PHASE,
    FINAL_STATES,
    GRID_PHASE,
    PENDING,
    StudyStorage,
    TrialResult,
    sqlite_url,
)
from benchmark.study.trial import TrialTask
from benchmark.training.loop import TrainConfig

logger = logging.getLogger(__name__)


def default_storage_url(out_dir: Path) -> str:
    """Return the SQLite URL of the study folder's database."""
    return sqlite_url(out_dir / "study.db")


def train_config(spec: StudySpec, method: MethodSpec, setting: Setting) -> TrainConfig:
    """Return the training settings of one trial."""
    return TrainConfig(
        architecture=spec.architecture_of(method),
        resolution=load_dataset(spec.dataset).resolution,
        z_dim=spec.z_dim,
        d_norm=method.d_norm,
        loss=method.loss,
        penalty=method.penalty,
        penalty_weight=setting.penalty_weight,
        batch_size=spec.batch_size,
        steps=spec.steps,
        n_disc=setting.n_disc,
        lr=setting.lr,
        beta1=setting.beta1,
        beta2=setting.beta2,
        checkpoint_every=spec.checkpoint_every,
        eval_every=spec.eval_every,
    )


def planned_trials(spec: StudySpec) -> int:
    """Return the number of trials of the whole study."""
    settings = sum(
        len(grid_settings(spec, method))
        + spec.bayesian.rounds * spec.bayesian.settings_per_round
        for method in spec.methods
    )
    return settings * spec.seeds


class StudyRunner:
    """Runs one study spec against a database with an executor."""

    def __init__(
        self,
        spec: StudySpec,
        out_dir: Path,
        storage: StudyStorage,
        data_root: Path,
        cache_dir: Path,
        extractor: str | None,
        allow_download: bool = True,
        progress: bool = True,
        threads: int = 1,
    ):
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.storage = storage
        self.data_root = Path(data_root).resolve()
        self.cache_dir = Path(cache_dir).resolve()
        self.extractor = extractor
        self.allow_download = allow_download
        self.progress = progress
        self.threads = threads
        self.protocol = spec.load_protocol()
        self.spec_sha256 = sha256_file(spec.path)
        self._bar = None

    # ------------------------------------------------------------------
    # Preparation

    def check_inputs(self) -> None:
        """Fail early on a missing store or extractor: load the reference features.

        This also fills the feature cache, so that local workers find it.
        """
        import torch

        from benchmark.protocol import Evaluator

        evaluator = Evaluator(
            self.protocol,
            self.spec.dataset,
            self.data_root,
            self.cache_dir,
            self.extractor,
            torch.device("cpu"),
            allow_download=self.allow_download,
            progress=self.progress,
        )
        evaluator.reference_features()

    def ensure_round(self, round_number: int) -> None:
        """Store the settings of a round for every method that lacks them."""
        bayesian = self.spec.bayesian
        for method in self.spec.methods:
            if self.storage.round_exists(method.name, round_number):
                continue
            if round_number == 0:
                settings = grid_settings(self.spec, method)
                phase = GRID_PHASE
            else:
                history = [
                    score
                    for score in setting_scores(
                        self.storage.trials(max_round=round_number - 1)
                    )
                    if score.method == method.name
                ]
                settings = propose(
                    self.spec,
                    method,
                    history,
                    bayesian.settings_per_round,
                    round_number,
                )
                phase = BAYESIAN_PHASE
                logger.info(
                    "round %d, %s: proposed %d settings from %d finished ones",
                    round_number,
                    method.name,
                    len(settings),
                    len(history),
                )
            self.storage.add_settings(
                method.name, phase, round_number, settings, self.spec.seeds
            )

    def task(self, trial: dict[str, Any]) -> TrialTask:
        """Return the worker task of a stored trial."""
        method = self.spec.method(trial["method"])
        setting = Setting(
            lr=trial["lr"],
            beta1=trial["beta1"],
            beta2=trial["beta2"],
            n_disc=trial["n_disc"],
            penalty_weight=trial["penalty_weight"],
        )
        config = train_config(self.spec, method, setting)
        run_dir = (
            self.out_dir.resolve()
            / "trials"
            / method.name
            / setting.key()
            / f"seed-{trial['seed']}"
        )
        shared = {
            "study": {
                "name": self.spec.name,
                "spec_file_sha256": self.spec_sha256,
                "method": as_dict(method),
                "setting": asdict(setting),
                "setting_key": setting.key(),
                "torch_threads": self.threads,
            },
            "config": asdict(config),
            "protocol": as_dict(self.protocol),
            "dataset_name": self.spec.dataset,
        }
        return TrialTask(
            trial_id=trial["id"],
            method=method.name,
            setting_key=setting.key(),
            seed=trial["seed"],
            config=asdict(config),
            dataset=self.spec.dataset,
            data_root=str(self.data_root),
            protocol_path=str(Path(self.protocol.path).resolve()),
            cache_dir=str(self.cache_dir),
            extractor=self.extractor,
            run_dir=str(run_dir),
            shared=shared,
            allow_download=self.allow_download,
            threads=self.threads,
        )

    # ------------------------------------------------------------------
    # Running

    def _on_start(self, task: TrialTask) -> None:
        self.storage.mark_running(task.trial_id)

    def _on_result(self, task: TrialTask, result: TrialResult) -> None:
        self.storage.record_result(task.trial_id, result)
        if self._bar is not None:
            self._bar.update(1)
        fid = "n/a" if result.fid is None else f"{result.fid:.4f}"
        message = (
            f"trial {task.trial_id} {task.method} {task.setting_key} seed "
            f"{task.seed}: {result.status}, FID {fid}"
        )
        if result.error:
            message += f" ({result.error})"
        logger.info(message)

    def run_round(self, executor: Executor, round_number: int) -> None:
        """Run every pending trial of rounds up to `round_number`."""
        pending = self.storage.trials(statuses=[PENDING], max_round=round_number)
        if not pending:
            return
        logger.info(
            "round %d: %d trials to run on %s",
            round_number,
            len(pending),
            executor.description,
        )
        executor.run(
            [self.task(trial) for trial in pending], self._on_start, self._on_result
        )

    def run(self, executor: Executor) -> dict[str, Any]:
        """Run the whole study; return the count of trials by status."""
        reset = self.storage.reset_unfinished()
        if reset:
            logger.info("%d trials interrupted earlier will run again", reset)
        finished = len(self.storage.trials(statuses=FINAL_STATES))
        self._bar = progress_bar(
            planned_trials(self.spec),
            self.spec.name,
            "trial",
            enabled=self.progress,
            initial=finished,
        )
        with self._bar:
            for round_number in range(self.spec.bayesian.rounds + 1):
                self.ensure_round(round_number)
                self.run_round(executor, round_number)
        self._bar = None
        return self.status_counts()

    def status_counts(self) -> dict[str, Any]:
        """Return the number of trials per status, with the planned total."""
        counts: dict[str, int] = {}
        for trial in self.storage.trials():
            counts[trial["status"]] = counts.get(trial["status"], 0) + 1
        return {
            "study": self.spec.name,
            "planned_trials": planned_trials(self.spec),
            "trials": counts,
        }


def run_study(
    spec: StudySpec,
    out_dir: Path,
    storage_url: str | None,
    executor_factory,
    data_root: Path,
    cache_dir: Path,
    extractor: str | None,
    allow_download: bool = True,
    progress: bool = True,
    threads: int = 1,
) -> dict[str, Any]:
    """Run a study in OUT, holding OUT's lock; return the trial counts.

    Args:
        executor_factory: a context manager factory yielding the executor;
            entered only after the inputs were checked.
        threads: torch threads per trial (see TrialTask.threads).
    """
    out_dir = Path(out_dir)
    with output_lock(out_dir):
        url = storage_url or default_storage_url(out_dir)
        storage = StudyStorage(url, spec.name)
        try:
            storage.register(sha256_file(spec.path), as_dict(spec))
            runner = StudyRunner(
                spec,
                out_dir,
                storage,
                data_root,
                cache_dir,
                extractor,
                allow_download=allow_download,
                progress=progress,
                threads=threads,
            )
            runner.check_inputs()
            with executor_factory() as executor:
                summary = runner.run(executor)
        finally:
            storage.close()
    summary["storage"] = url
    summary["out"] = str(out_dir)
    return summary
