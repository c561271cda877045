"""`benchmark run baseline`: train named baselines over seeds, evaluate, summarise.

Output folder layout:

    OUT/config.json           resolved settings, overrides, protocol (written once)
    OUT/seed-<s>/checkpoints/ latest and best checkpoints (atomic, older ones
                              removed), each with a .sha256 file
    OUT/seed-<s>/train.jsonl  losses every 100 steps and at each checkpoint
    OUT/seed-<s>/evals.jsonl  one line per evaluated checkpoint
    OUT/seed-<s>/samples/     a PNG grid of 64 samples per evaluated checkpoint,
                              from the protocol's fixed evaluation latents
    OUT/seed-<s>/tensorboard/ losses and metrics, when tensorboard is installed
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
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark import faults
from benchmark.data.store import image_sha256, open_split, split_image_hashes
from benchmark.errors import DivergedError, UserError
from benchmark.fileio import (
    append_json_line,
    atomic_write_json,
    ensure_directory,
    read_json,
    sha256_file,
    to_json,
)
from benchmark.protocol import (
    GENERATOR_BATCH,
    Evaluator,
    FeatureSet,
    GeneratedNonFinite,
)
from benchmark.records import RECORD_FORMAT, environment
from benchmark.samples import save_sample_grid
from benchmark.specs import (
    BaselineSpec,
    ProtocolSpec,
    as_dict,
    load_dataset,
    spec_directory,
)
from benchmark.tensorboard import ScalarLog
from benchmark.training import determinism
from benchmark.training.checkpoint import list_checkpoints, state_digest
from benchmark.training.loop import TrainConfig, train

logger = logging.getLogger(__name__)

# Source formats whose pixels are checked against the official release.
OFFICIAL_FORMATS = ("official-archive", "official-folder")

# Settings a user may override on the command line; any override makes the
# run "not the named baseline" in its records.
OVERRIDABLE = ("steps", "batch_size", "checkpoint_every", "eval_every")


def resolve_config(
    spec: BaselineSpec, overrides: dict[str, int], resolution: int
) -> TrainConfig:
    """Combine a baseline spec with command-line overrides and the image size."""
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise UserError(
            f"cannot override {unknown[0]!r}; overridable: {', '.join(OVERRIDABLE)}"
        )
    values = {
        "architecture": spec.architecture,
        "resolution": resolution,
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
    try:
        handle = open(out_dir / ".lock", "w")  # noqa: SIM115 - closed below
    except OSError as error:
        raise UserError(
            f"cannot write in {str(out_dir)!r}: {error.strerror}; choose a writable --out"
        ) from error
    with handle:
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


def _without_paths(value: Any) -> Any:
    """Drop "path" keys: the same spec may be given by name or by file path."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list | tuple):
        return [_without_paths(item) for item in value]
    return value


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """List 'key: old -> new' for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _write_config_once(path: Path, config: dict[str, Any]) -> None:
    """Write OUT/config.json, or check that an existing one has the same settings."""
    config = json.loads(to_json(config))  # tuples become lists, as in the file
    if path.exists():
        existing = read_json(path)
        changed = _differences(_without_paths(existing), _without_paths(config))
        if changed:
            shown = "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "")
            raise UserError(
                f"{str(path)!r} contains a run with other settings ({shown}); "
                "resume with the same settings or choose another --out"
            )
        return
    atomic_write_json(path, config)


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Return the entries of a JSON-lines file, skipping lines cut short."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # an append cut short by an interruption
    return entries


def _read_evaluations(path: Path) -> list[dict[str, Any]]:
    # An evaluation whose line was cut short is run again on resumption.
    by_step = {entry["step"]: entry for entry in _read_json_lines(path)}
    return [by_step[step] for step in sorted(by_step)]


def _best_step(evaluations: list[dict[str, Any]]) -> int | None:
    """Return the step with the lowest finite FID (the earliest on a tie)."""
    finite = [e for e in evaluations if e["metrics"].get("fid") is not None]
    if not finite:
        return None
    return min(finite, key=lambda e: (e["metrics"]["fid"], e["step"]))["step"]


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
    sessions_path = run_dir / "sessions.jsonl"
    ensure_directory(run_dir)
    saved = list_checkpoints(run_dir / "checkpoints")
    append_json_line(
        sessions_path,
        {
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "start_step": saved[-1][0] if saved else 0,
            "environment": shared["environment"],
        },
    )
    started = time.perf_counter()
    scalars = ScalarLog(run_dir / "tensorboard")

    def evaluate(step: int, generator: nn.Module) -> None:
        began = time.perf_counter()
        save_sample_grid(
            generator,
            config.z_dim,
            evaluator.protocol.fake_seed,
            device,
            run_dir / "samples" / f"step-{step:09d}.png",
        )
        try:
            sample = evaluator.generator_features(
                generator, config.z_dim, GENERATOR_BATCH, device
            )
            metrics = evaluator.metrics(reference, sample)
        except GeneratedNonFinite as error:
            metrics = {"fid": None, "error": str(error)}
        entry = {
            "step": step,
            "metrics": metrics,
            "seconds": round(time.perf_counter() - began, 3),
        }
        faults.reach("evaluation")
        append_json_line(evals_path, entry)
        scalars.evaluation(step, metrics)
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

    def kept_steps() -> set[int]:
        best = _best_step(_read_evaluations(evals_path))
        return set() if best is None else {best}

    status = "completed"
    diverged_at = None
    weights = None
    try:
        state = train(
            config,
            seed,
            train_images,
            run_dir,
            device,
            evaluate=evaluate,
            evaluated_steps=evaluated_steps,
            kept_steps=kept_steps,
            progress=progress,
            on_log=scalars.training,
        )
        weights = {
            "generator_sha256": state_digest(state.generator.state_dict()),
            "discriminator_sha256": state_digest(state.discriminator.state_dict()),
        }
    except DivergedError as error:
        status = "diverged"
        diverged_at = error.step
        logger.warning("seed %d diverged: %s", seed, error)
    finally:
        scalars.close()

    evaluations = _read_evaluations(evals_path)
    best_step = _best_step(evaluations)
    best = next((e for e in evaluations if e["step"] == best_step), None)
    last = evaluations[-1] if evaluations else None
    final = last["metrics"] if status == "completed" and last else None
    sessions = _read_json_lines(sessions_path)
    record = {
        "format": RECORD_FORMAT,
        "status": status,
        "diverged_at_step": diverged_at,
        "seed": seed,
        "stream_seeds": determinism.stream_seeds(seed),
        "steps": config.steps,
        # Metrics of the last step; None when training did not finish.
        "final": final,
        # The evaluation with the lowest FID, which compare_gan v2 reported.
        "best": {"step": best["step"], **best["metrics"]} if best else None,
        "evaluations": evaluations,
        "weights": weights,
        "wall_seconds_last_session": round(time.perf_counter() - started, 3),
        **shared,
        # One entry per process that worked on this seed (resumptions).
        "sessions": sessions,
    }
    faults.reach("record-write")
    atomic_write_json(record_path, record)
    return record


def _median(values: list[float]) -> float | None:
    """Median that counts a missing value as the worst; None if that is the median."""
    if not values:
        return None
    middle = statistics.median(values)
    return None if math.isinf(middle) else middle


def summarise(records: list[dict[str, Any]], shared: dict[str, Any]) -> dict[str, Any]:
    """Return medians over all seeds of the best and final metrics.

    A seed without a value (diverged, or NaN images at every evaluation)
    counts as +infinity, the way compare_gan's NaN marker (FID 31337) counted
    as a very bad score, so it moves the median up instead of dropping out.
    """

    def collect(which: str, metric: str) -> list[float]:
        values = []
        for record in records:
            value = (record.get(which) or {}).get(metric)
            values.append(math.inf if value is None else value)
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
        "not_named_because": shared["not_named_because"],
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
        "median_inception_score_final": _median(
            [v for v in collect("final", "inception_score") if not math.isinf(v)]
        ),
        "published": shared["baseline"].get("published"),
        "per_seed": per_seed,
        "environment": shared["environment"],
    }


def named_baseline_status(spec: BaselineSpec, overrides: dict[str, int]) -> dict:
    """Tell whether a run is the named baseline: the packaged file, no overrides."""
    packaged = spec_directory("baselines") / f"{spec.name}.toml"
    reasons = []
    if overrides:
        reasons.append(f"overrides {overrides}")
    if not packaged.is_file():
        reasons.append("the spec is not one of the packaged baselines")
    elif sha256_file(packaged) != sha256_file(spec.path):
        reasons.append(f"{spec.path} differs from the packaged {spec.name}.toml")
    return {"named_baseline": not reasons, "not_named_because": reasons}


def _train_images_in_hash_order(
    data_root: Path, dataset: str
) -> tuple[torch.Tensor, str]:
    """Load the training split sorted by per-image SHA-256, checking every hash.

    The batch sampler permutes this order, so the same pixels give the same
    batches whatever layout the source had (a class-folder source stores
    CIFAR-10 sorted by class, the official archive in its own order).
    """
    hashes = split_image_hashes(data_root, dataset, "train")
    with open_split(data_root, dataset, "train") as reader:
        images = reader.load_all()
        digest = reader.digest
        if len(hashes) != len(images):
            raise UserError(
                f"the manifest of {dataset!r} lists {len(hashes)} training images but "
                f"the store holds {len(images)}; run `benchmark verify {dataset}`"
            )
        for index, (image, expected) in enumerate(zip(images, hashes, strict=True)):
            if image_sha256(image) != expected:
                raise UserError(
                    f"training image {index} (key {reader.keys[index]!r}) of "
                    f"{str(reader.path)!r} does not match its manifest hash; run "
                    f"`benchmark verify {dataset}` and prepare the store again"
                )
    order = np.argsort(np.asarray(hashes), kind="stable")
    return torch.from_numpy(images[order]), digest


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
    config = resolve_config(spec, overrides, load_dataset(dataset).resolution)
    protocol.for_dataset(dataset)
    determinism.enable_deterministic_mode()
    settings = {
        "baseline": as_dict(spec),
        "baseline_file_sha256": sha256_file(spec.path),
        **named_baseline_status(spec, overrides),
        "overrides": overrides,
        "config": asdict(config),
        "protocol": as_dict(protocol),
        "dataset_name": dataset,
    }

    with output_lock(out_dir):
        # Checked before any heavy work, so a wrong --out fails at once.
        _write_config_once(out_dir / "config.json", settings)
        train_images, train_digest = _train_images_in_hash_order(data_root, dataset)
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
            **settings,
            "dataset": {
                "name": dataset,
                "train_split_digest": train_digest,
                "train_order": "ascending per-image sha256, then one seeded "
                "permutation per epoch",
                "reference": reference.description,
            },
            "evaluation": evaluator.describe(),
            "environment": environment(device),
        }

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
    protocol = summary["protocol"]
    lines = [
        f"baseline {summary['baseline']} on {summary['dataset']['name']}, protocol "
        f"{protocol['name']} v{protocol['version']} ({protocol['real_count']} real vs "
        f"{protocol['fake_count']} fake), extractor {summary['extractor']['name']}",
    ]
    store = summary["store"]
    official = store["source_format"] in OFFICIAL_FORMATS
    lines.append(
        f"data: {store['source_format']} source (sha256 "
        f"{(store['source_sha256'] or 'n/a')[:12]}), "
        + ("all official counts" if store["reference_split"] else "a PARTIAL store")
        + ("" if official else ", pixels not checked against the official release")
    )
    if not summary["named_baseline"]:
        lines.append(
            "not the named baseline: " + "; ".join(summary["not_named_because"])
        )
    lines.append(
        f"{'seed':>6} {'status':>10} {'FID best':>10} {'at step':>8} "
        f"{'FID final':>10} {'KID final':>11} {'IS final':>9}"
    )

    def number(value: float | None, width: int, digits: int) -> str:
        return (
            f"{value:>{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"
        )

    for row in summary["per_seed"]:
        step = row["fid_best_step"] if row["fid_best_step"] is not None else "n/a"
        lines.append(
            f"{row['seed']:>6} {row['status']:>10} {number(row['fid_best'], 10, 4)} "
            f"{step:>8} {number(row['fid_final'], 10, 4)} "
            f"{number(row['kid_final'], 11, 6)} "
            f"{number(row['inception_score_final'], 9, 4)}"
        )
    lines.append(
        f"median over {len(summary['seeds'])} seeds: FID best "
        f"{number(summary['median_fid_best'], 0, 4)}, final "
        f"{number(summary['median_fid_final'], 0, 4)}; KID final "
        f"{number(summary['median_kid_final'], 0, 6)}; IS final "
        f"{number(summary['median_inception_score_final'], 0, 4)}"
    )
    for published in summary.get("published") or ():
        comparable = (
            summary["named_baseline"]
            and official
            and store["reference_split"]
            and published["protocol"] == protocol["name"]
        )
        lines.append(
            f"published FID {published['fid']} ({published['protocol']}, official "
            f"data; {published['source']})"
            + ("" if comparable else ": NOT comparable with this run")
        )
    return "\n".join(lines)
