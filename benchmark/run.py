"""`benchmark run baseline`: train named baselines over seeds, evaluate, summarise.

Output folder layout:

    OUT/config.json           resolved settings, overrides, protocol (written once)
    OUT/seed-<s>/checkpoints/ latest checkpoint (atomic, older ones removed)
    OUT/seed-<s>/train.jsonl  losses every 100 steps and at each checkpoint
    OUT/seed-<s>/evals.jsonl  one line per evaluated checkpoint
    OUT/seed-<s>/record.json  the run record, written when the seed is done
    OUT/summary.json          medians over seeds

Every file is written atomically or appended line by line, so killing the
command and running it again resumes from the last checkpoint of the seed in
progress and skips finished seeds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.data.store import open_split
from benchmark.errors import DivergedError, UserError
from benchmark.fileio import (
    append_json_line,
    atomic_write_json,
    ensure_directory,
    read_json,
)
from benchmark.protocol import Evaluator, FeatureSet, GeneratedNonFinite
from benchmark.records import RECORD_FORMAT, environment
from benchmark.specs import BaselineSpec, ProtocolSpec, as_dict
from benchmark.training import determinism
from benchmark.training.checkpoint import state_digest
from benchmark.training.loop import TrainConfig, train

logger = logging.getLogger(__name__)

# Settings a user may override on the command line; any override makes the
# run "not the named baseline" in its records.
OVERRIDABLE = ("steps", "batch_size", "checkpoint_every", "eval_every")


def resolve_config(spec: BaselineSpec, overrides: dict[str, int]) -> TrainConfig:
    """Combine a baseline spec with command-line overrides."""
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise UserError(
            f"cannot override {unknown[0]!r}; overridable: {', '.join(OVERRIDABLE)}"
        )
    values = {
        "architecture": spec.architecture,
        "z_dim": spec.z_dim,
        "d_norm": spec.d_norm,
        "loss": spec.loss,
        "penalty": spec.penalty,
        "penalty_weight": spec.penalty_weight,
        "batch_size": spec.batch_size,
        "steps": spec.steps,
        "n_disc": spec.n_disc,
        "lr": spec.optimizer.lr,
        "beta1": spec.optimizer.beta1,
        "beta2": spec.optimizer.beta2,
        "checkpoint_every": spec.checkpoint_every,
        "eval_every": spec.eval_every,
    }
    for name, value in overrides.items():
        if not isinstance(value, int) or value < 1:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be a positive integer, got {value!r}")
        values[name] = value
    return TrainConfig(**values)


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on OUT so that two runs cannot write it at once."""
    ensure_directory(out_dir)
    with open(out_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another benchmark process is writing {str(out_dir)!r}; wait for it "
                "to finish or choose another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_config_once(path: Path, config: dict[str, Any]) -> None:
    """Write OUT/config.json, or check that an existing one matches."""
    if path.exists():
        existing = read_json(path)
        if existing != config:
            changed = sorted(
                key
                for key in set(existing) | set(config)
                if existing.get(key) != config.get(key)
            )
            raise UserError(
                f"{str(path)!r} contains a run with different settings ({', '.join(changed)} "
                "differ); resume with the same command or choose another --out"
            )
        return
    atomic_write_json(path, config)


def _read_evaluations(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    evaluations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            evaluations.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by an interruption; it is evaluated again
    by_step = {entry["step"]: entry for entry in evaluations}
    return [by_step[step] for step in sorted(by_step)]


def run_seed(
    config: TrainConfig,
    seed: int,
    run_dir: Path,
    train_images: torch.Tensor,
    evaluator: Evaluator,
    reference: FeatureSet,
    device: torch.device,
    shared: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Train, evaluate and record one seed; return its run record."""
    record_path = run_dir / "record.json"
    if record_path.exists():
        logger.info("seed %d already finished: %s", seed, record_path)
        return read_json(record_path)

    evals_path = run_dir / "evals.jsonl"
    ensure_directory(run_dir)
    started = time.perf_counter()

    def evaluate(step: int, generator: nn.Module) -> None:
        began = time.perf_counter()
        try:
            sample = evaluator.generator_features(
                generator, config.z_dim, config.batch_size, device
            )
            metrics = evaluator.metrics(reference, sample)
        except GeneratedNonFinite as error:
            metrics = {"fid": None, "error": str(error)}
        entry = {
            "step": step,
            "metrics": metrics,
            "seconds": round(time.perf_counter() - began, 3),
        }
        append_json_line(evals_path, entry)
        if metrics.get("fid") is None:
            logger.warning("seed %d step %d: %s", seed, step, metrics["error"])
        else:
            logger.info(
                "seed %d step %d: FID %.4f, KID %.6f",
                seed,
                step,
                metrics["fid"],
                metrics["kid"],
            )

    def evaluated_steps() -> set[int]:
        return {entry["step"] for entry in _read_evaluations(evals_path)}

    status = "completed"
    diverged_at = None
    try:
        state = train(
            config,
            seed,
            train_images,
            run_dir,
            device,
            evaluate=evaluate,
            evaluated_steps=evaluated_steps,
            progress=progress,
        )
        weights = {
            "generator_sha256": state_digest(state.generator.state_dict()),
            "discriminator_sha256": state_digest(state.discriminator.state_dict()),
        }
    except DivergedError as error:
        status = "diverged"
        diverged_at = error.step
        weights = None
        logger.warning("seed %d diverged: %s", seed, error)

    evaluations = _read_evaluations(evals_path)
    finite = [e for e in evaluations if e["metrics"].get("fid") is not None]
    final = evaluations[-1]["metrics"] if evaluations else {}
    best = min(finite, key=lambda e: e["metrics"]["fid"]) if finite else None
    record = {
        "format": RECORD_FORMAT,
        "status": status,
        "diverged_at_step": diverged_at,
        "seed": seed,
        "stream_seeds": determinism.stream_seeds(seed),
        "steps": config.steps,
        "final": final,
        "best": ({"step": best["step"], **best["metrics"]} if best else None),
        "evaluations": evaluations,
        "weights": weights,
        "wall_seconds_last_session": round(time.perf_counter() - started, 3),
        **shared,
    }
    atomic_write_json(record_path, record)
    return record


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(records: list[dict[str, Any]], shared: dict[str, Any]) -> dict[str, Any]:
    """Return medians over seeds of the best and final metrics."""
    completed = [r for r in records if r["status"] == "completed"]

    def collect(which: str, metric: str) -> list[float]:
        values = []
        for record in completed:
            value = (record.get(which) or {}).get(metric)
            if value is not None:
                values.append(value)
        return values

    per_seed = [
        {
            "seed": r["seed"],
            "status": r["status"],
            "fid_best": (r.get("best") or {}).get("fid"),
            "fid_best_step": (r.get("best") or {}).get("step"),
            "fid_final": (r.get("final") or {}).get("fid"),
            "kid_final": (r.get("final") or {}).get("kid"),
            "inception_score_final": (r.get("final") or {}).get("inception_score"),
        }
        for r in records
    ]
    return {
        "baseline": shared["baseline"]["name"],
        "named_baseline": shared["named_baseline"],
        "overrides": shared["overrides"],
        "protocol": shared["evaluation"]["protocol"],
        "extractor": shared["evaluation"]["extractor"],
        "store": shared["evaluation"]["store"],
        "dataset": shared["dataset"],
        "seeds": [r["seed"] for r in records],
        "diverged_seeds": [r["seed"] for r in records if r["status"] == "diverged"],
        # compare_gan v2 wrote the minimum FID over evaluated checkpoints as a
        # run's result, and Kurach et al. report the median of it over seeds.
        "median_fid_best": _median(collect("best", "fid")),
        "median_fid_final": _median(collect("final", "fid")),
        "median_kid_final": _median(collect("final", "kid")),
        "median_inception_score_final": _median(collect("final", "inception_score")),
        "published": shared["baseline"].get("published"),
        "per_seed": per_seed,
    }


def run_baseline(
    spec: BaselineSpec,
    protocol: ProtocolSpec,
    dataset: str,
    data_root: Path,
    seeds: list[int],
    out_dir: Path,
    overrides: dict[str, int],
    device: torch.device,
    cache_dir: Path,
    extractor_path: str | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate `spec` for each seed; write records and the summary.

    Returns:
        The summary (also written to OUT/summary.json).
    """
    if dataset != spec.dataset:
        raise UserError(
            f"baseline {spec.name!r} is defined on {spec.dataset!r}, not {dataset!r}; "
            f"pass --dataset {spec.dataset}"
        )
    config = resolve_config(spec, overrides)
    determinism.enable_deterministic_mode()

    with output_lock(out_dir):
        with open_split(data_root, dataset, "train") as reader:
            train_images = torch.from_numpy(reader.load_all())
            train_digest = reader.digest
        evaluator = Evaluator(
            protocol,
            dataset,
            data_root,
            cache_dir,
            extractor_path,
            device,
            allow_download=allow_download,
            progress=progress,
        )
        reference = evaluator.reference_features()
        shared = {
            "baseline": as_dict(spec),
            "named_baseline": not overrides,
            "overrides": overrides,
            "config": asdict(config),
            "dataset": {
                "name": dataset,
                "train_split_digest": train_digest,
                "reference": reference.description,
            },
            "evaluation": evaluator.describe(),
        }
        _write_config_once(out_dir / "config.json", shared)
        shared = {**shared, "environment": environment(device)}

        records = []
        for seed in seeds:
            records.append(
                run_seed(
                    config,
                    seed,
                    out_dir / f"seed-{seed}",
                    train_images,
                    evaluator,
                    reference,
                    device,
                    shared,
                    progress,
                )
            )
        summary = summarise(records, shared)
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Return a short human-readable table of a summary."""
    lines = [
        f"baseline {summary['baseline']} on {summary['dataset']['name']}, protocol "
        f"{summary['protocol']['name']} v{summary['protocol']['version']} "
        f"({summary['protocol']['real_count']} real vs "
        f"{summary['protocol']['fake_count']} fake), extractor "
        f"{summary['extractor']['name']}",
    ]
    store = summary["store"]
    lines.append(
        f"data: {store['source_format']} source (sha256 "
        f"{(store['source_sha256'] or 'n/a')[:12]}), "
        + (
            "the reference split"
            if store["reference_split"]
            else "NOT the reference split"
        )
    )
    if not summary["named_baseline"]:
        lines.append(f"overrides {summary['overrides']}: not the named baseline")
    lines.append(
        f"{'seed':>6} {'status':>10} {'FID best':>10} {'at step':>8} "
        f"{'FID final':>10} {'KID final':>11} {'IS final':>9}"
    )

    def number(value: float | None, width: int, digits: int) -> str:
        return (
            f"{value:>{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"
        )

    for row in summary["per_seed"]:
        lines.append(
            f"{row['seed']:>6} {row['status']:>10} {number(row['fid_best'], 10, 4)} "
            f"{row['fid_best_step'] if row['fid_best_step'] is not None else 'n/a':>8} "
            f"{number(row['fid_final'], 10, 4)} {number(row['kid_final'], 11, 6)} "
            f"{number(row['inception_score_final'], 9, 4)}"
        )
    lines.append(
        f"median FID best {number(summary['median_fid_best'], 0, 4)}, final "
        f"{number(summary['median_fid_final'], 0, 4)}; median KID final "
        f"{number(summary['median_kid_final'], 0, 6)}; median IS final "
        f"{number(summary['median_inception_score_final'], 0, 4)}"
    )
    published = summary.get("published")
    if published:
        lines.append(
            f"published FID {published['fid']} under protocol {published['protocol']} "
            f"({published['source']})"
        )
    return "\n".join(lines)
