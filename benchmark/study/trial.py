"""One trial (one setting, one seed): train, evaluate, return the result.

This is the code a worker runs, in this process or in a Ray worker. It uses
the same training and evaluation as `benchmark run baseline`, so a trial's
folder holds the same files as a baseline seed (checkpoints, train.jsonl,
evals.jsonl, samples, record.json), and a trial interrupted mid-training
resumes from its last checkpoint when the study runs again.
"""

from __future__ import annotations

import logging
import platform
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.study.storage import (
    COMPLETED,
    DIVERGED,
    ERROR,
    NONFINITE,
    TrialResult,
    now_utc,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs to run one trial, as plain values."""

    trial_id: int
    method: str
    setting_key: str
    seed: int
    # The resolved TrainConfig as a dict.
    config: dict[str, Any]
    dataset: str
    data_root: str
    protocol_path: str
    cache_dir: str
    extractor: str | None
    run_dir: str
    # Study, method and setting, copied into the trial's record.json.
    shared: dict[str, Any]
    # A torch device name; None picks cuda when a GPU is visible, else cpu.
    device: str | None = None
    # Whether a worker without the extractor file in its cache may download it.
    allow_download: bool = True
    # torch's intra-op threads. CPU results depend on it (the order of float
    # sums in convolutions changes), so it is fixed per study run and recorded.
    threads: int = 1


# Per worker process: training images, evaluator and reference features of
# the last (data, protocol, extractor, device) used, so consecutive trials of
# one study load them once.
_CONTEXT: dict[tuple, dict[str, Any]] = {}


def _device(name: str | None) -> torch.device:
    if name is not None:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _context(task: TrialTask, device: torch.device) -> dict[str, Any]:
    from benchmark.protocol import Evaluator
    from benchmark.records import environment
    from benchmark.run import _train_images_in_hash_order
    from benchmark.specs import load_protocol

    key = (
        task.data_root,
        task.dataset,
        task.protocol_path,
        task.cache_dir,
        task.extractor,
        str(device),
    )
    if key in _CONTEXT:
        return _CONTEXT[key]
    _CONTEXT.clear()
    protocol = load_protocol(task.protocol_path)
    data_root = Path(task.data_root)
    train_images, train_digest = _train_images_in_hash_order(data_root, task.dataset)
    evaluator = Evaluator(
        protocol,
        task.dataset,
        data_root,
        Path(task.cache_dir),
        task.extractor,
        device,
        allow_download=task.allow_download,
        progress=False,
    )
    reference = evaluator.reference_features()
    _CONTEXT[key] = {
        "train_images": train_images,
        "evaluator": evaluator,
        "reference": reference,
        "shared": {
            "dataset": {
                "name": task.dataset,
                "train_split_digest": train_digest,
                "train_order": "ascending per-image sha256, then one seeded "
                "permutation per epoch",
                "reference": reference.description,
            },
            "evaluation": evaluator.describe(),
            "environment": environment(device),
        },
    }
    return _CONTEXT[key]


def result_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """Return the trial columns of a run record (status, FIDs, divergence step)."""
    best = record.get("best") or {}
    final = record.get("final") or {}
    if record["status"] == "diverged":
        status = DIVERGED
    elif best.get("fid") is None:
        status = NONFINITE
    else:
        status = COMPLETED
    return {
        "status": status,
        "fid": best.get("fid"),
        "fid_step": best.get("step"),
        "fid_final": final.get("fid"),
        "kid_final": final.get("kid"),
        "diverged_step": record.get("diverged_at_step"),
    }


def execute_trial(task: TrialTask) -> TrialResult:
    """Train and evaluate one trial; never raises for a failure of the trial.

    A diverged loss, NaN images at every evaluation and any exception are
    returned as results, so one bad trial does not stop the study.
    """
    from benchmark.run import run_seed
    from benchmark.training import determinism
    from benchmark.training.loop import TrainConfig

    started = now_utc()
    began = time.perf_counter()
    host = platform.node()
    # The in-process executor shares torch's thread setting with its caller,
    # so it is restored after the trial.
    caller_threads = torch.get_num_threads()
    try:
        determinism.enable_deterministic_mode()
        torch.set_num_threads(task.threads)
        device = _device(task.device)
        context = _context(task, device)
        record = run_seed(
            TrainConfig(**task.config),
            task.seed,
            Path(task.run_dir),
            context["train_images"],
            context["evaluator"],
            context["reference"],
            device,
            {**task.shared, **context["shared"]},
            progress=False,
        )
        columns = result_from_record(record)
        error = None
        if columns["status"] == NONFINITE:
            evaluations = record.get("evaluations") or [{}]
            error = (evaluations[-1].get("metrics") or {}).get("error")
    except Exception as caught:  # noqa: BLE001 - any failure is the trial's result
        logger.error(
            "trial %d (%s %s seed %d) failed:\n%s",
            task.trial_id,
            task.method,
            task.setting_key,
            task.seed,
            traceback.format_exc(),
        )
        columns = {"status": ERROR}
        error = f"{type(caught).__name__}: {caught}"
    finally:
        torch.set_num_threads(caller_threads)
    return TrialResult(
        error=error,
        seconds=round(time.perf_counter() - began, 3),
        host=host,
        threads=task.threads,
        run_dir=task.run_dir,
        started_utc=started,
        finished_utc=now_utc(),
        **columns,
    )
