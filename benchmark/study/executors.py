"""Where trials run: in this process, or as Ray tasks.

Both executors take a list of trial tasks and call `on_result` in the
controller as each trial finishes, in finishing order; the controller stores
the result at once. Neither retries a trial: a failure is a result.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from benchmark.errors import UserError
from benchmark.study.storage import ERROR, TrialResult, now_utc
from benchmark.study.trial import TrialTask, execute_trial

logger = logging.getLogger(__name__)

ResultFn = Callable[[TrialTask, TrialResult], None]
StartFn = Callable[[TrialTask], None]

# Ray's shared-memory object store only carries small task arguments and
# results here, so a small one leaves memory to training.
OBJECT_STORE_BYTES = 256 * 1024 * 1024


class Executor(Protocol):
    """Runs trial tasks and reports each result as it arrives."""

    description: str

    def run(
        self, tasks: list[TrialTask], on_start: StartFn, on_result: ResultFn
    ) -> None: ...


class InProcessExecutor:
    """Runs trials one after another in the controller process.

    `trial_function` runs one task; tests pass a fast stand-in for the
    training and evaluation of `execute_trial`.
    """

    def __init__(
        self,
        device: str | None,
        trial_function: Callable[[TrialTask], TrialResult] = execute_trial,
    ):
        self.device = device
        self.trial_function = trial_function
        self.description = "in-process"

    def run(
        self, tasks: list[TrialTask], on_start: StartFn, on_result: ResultFn
    ) -> None:
        """Run each task in turn."""
        for task in tasks:
            if self.device is not None:
                task = _with_device(task, self.device)
            on_start(task)
            on_result(task, self.trial_function(task))


def _with_device(task: TrialTask, device: str) -> TrialTask:
    from dataclasses import replace

    return replace(task, device=device)


class RayExecutor:
    """Runs trials as Ray tasks on a local Ray instance or an existing cluster.

    A trial asks Ray for `cpus_per_trial` CPUs, and for one GPU when the
    cluster has GPUs; Ray decides where and how many run at once.
    """

    def __init__(self, ray_module, cpus_per_trial: int, gpus_per_trial: float):
        self.ray = ray_module
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        resources = ray_module.cluster_resources()
        self.description = (
            f"Ray ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} "
            f"GPUs; {cpus_per_trial:g} CPU and {gpus_per_trial:g} GPU per trial)"
        )

    def run(
        self, tasks: list[TrialTask], on_start: StartFn, on_result: ResultFn
    ) -> None:
        """Submit every task, then store results in the order they finish."""
        ray = self.ray
        remote = ray.remote(execute_trial).options(
            num_cpus=self.cpus_per_trial,
            num_gpus=self.gpus_per_trial,
            max_retries=0,
        )
        pending = {}
        for task in tasks:
            on_start(task)
            pending[remote.remote(task)] = task
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for reference in done:
                    task = pending.pop(reference)
                    try:
                        result = ray.get(reference)
                    except ray.exceptions.RayError as error:
                        # The worker process or its node died; execute_trial
                        # itself returns every other failure as a result.
                        message = str(error).strip().splitlines()[0]
                        logger.error("trial %d lost: %s", task.trial_id, message)
                        result = TrialResult(
                            status=ERROR,
                            error=f"{type(error).__name__}: {message}",
                            run_dir=task.run_dir,
                            finished_utc=now_utc(),
                        )
                    on_result(task, result)
        finally:
            for reference in pending:
                ray.cancel(reference, force=True)


@contextmanager
def ray_executor(
    address: str | None, num_cpus: int | None, cpus_per_trial: int
) -> Iterator[RayExecutor]:
    """Start (or connect to) Ray, yield an executor, then shut Ray down.

    Args:
        address: an existing cluster (`ray://host:10001`, `host:6379` or
            `auto`); None starts a local Ray with `num_cpus` CPUs.
        num_cpus: CPUs of the local Ray (default: all); ignored with an address.
        cpus_per_trial: CPUs each trial asks for (and its torch threads).
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise UserError(
            "Ray is not installed; install gan-benchmark[study] or pass "
            "--executor inprocess"
        ) from None
    if ray.is_initialized():
        raise UserError("Ray is already initialised in this process; run one study")
    # ray.init installs Ray's own SIGTERM handler, which aborts the process;
    # the caller's handler (SIGTERM as Ctrl-C) is put back after it.
    terminate_handler = signal.getsignal(signal.SIGTERM)
    try:
        if address is None:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=OBJECT_STORE_BYTES,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"cannot start or reach Ray at {address or 'a local instance'!r}: "
            f"{type(error).__name__}: {message}; check --address"
        ) from None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate_handler)
    try:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        yield RayExecutor(ray, cpus_per_trial, gpus)
    finally:
        ray.shutdown()
