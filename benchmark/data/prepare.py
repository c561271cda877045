"""Prepare a dataset's store from a source, or verify an existing store.

`prepare_dataset` is idempotent: on a complete store it re-hashes the images
against the manifest and writes nothing. Small datasets (CIFAR-10) are read
into memory and written at once. Datasets with a hash-rank split (LSUN,
CelebA-HQ) are streamed block by block in worker processes, and resume after
an interruption (`benchmark.data.streaming`). Both functions return
JSON-ready summaries for the command line and raise `UserError` with
one-line messages.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.data import celebahq, cifar10, lsun
from benchmark.data.store import (
    SourceData,
    is_complete,
    read_manifest,
    remove_stale_temporaries,
    store_lock,
    store_path,
    verify_store,
    write_store,
)
from benchmark.data.streaming import Pipeline, prepare_streaming, work_path
from benchmark.errors import UserError, unknown_name
from benchmark.fileio import sha256_file
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

# Reader per dataset name: (source path, spec, partial, progress) -> arrays.
Reader = Callable[[str | os.PathLike, DatasetSpec, bool, bool], SourceData]
READERS: dict[str, Reader] = {"cifar10": cifar10.read_source}

# Planner per streamed dataset name: (source path, spec) -> listed pipeline.
Planner = Callable[[str | os.PathLike, DatasetSpec], Pipeline]
PLANNERS: dict[str, Planner] = {
    "lsun": lsun.plan_source,
    "celebahq": celebahq.plan_source,
}


def prepare_dataset(
    spec: DatasetSpec,
    source: str | os.PathLike | None,
    root: str | os.PathLike,
    partial: bool = False,
    progress: bool = True,
    test_count: int | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Build `<root>/<spec.name>` from a source, or verify it if it exists.

    Stale temporary directories of interrupted in-memory runs are removed
    first (logged as warnings). The store is written atomically, so an
    interrupted run leaves no store behind. An interrupted streamed run
    leaves its work folder, which the same command resumes.

    Args:
        spec: the dataset spec.
        source: a file or folder the dataset's reader accepts. May be None when
            the store already exists.
        root: data root directory.
        partial: allow a source with fewer images than the spec; the store is
            then marked `reference_split: false`.
        progress: show progress bars on stderr.
        test_count: size of the hash-ranked split instead of the spec's
            count (implies `partial`); only for specs with a split rule.
        workers: processes that decode images of a streamed dataset, and
            threads that hash images during verification.

    Returns:
        Summary: `dataset`, `spec_version`, `store` (path), `already_prepared`,
        `reference_split`, `source` (format and path), `skipped`,
        `expected_digests`, `seconds`, and per split `count` and `digest`.

    Raises:
        UserError: no reader for the dataset, no source and no store, a source
            that differs from the one the existing store was built from, or
            any error of the reader, the writer or the verification.
    """
    start = time.monotonic()
    planner = PLANNERS.get(spec.name)
    reader = None if planner is not None else _reader_for(spec)
    ranked_count = _ranked_count(spec, test_count, streamed=planner is not None)
    partial = partial or test_count is not None
    store_dir = store_path(root, spec.name)
    if is_complete(store_dir):
        summary = _check_existing(
            spec, source, root, partial, progress, test_count, workers
        )
        return _finish(summary, start, already_prepared=True)
    if store_dir.exists():
        raise UserError(
            f"{str(store_dir)!r} exists but is not a complete store (no "
            "manifest.json); delete it and run the command again"
        )
    if source is None:
        resumable = work_path(root, spec.name)
        hint = (
            f"; an unfinished prepare is in {str(resumable)!r}, pass the same "
            "--source to resume it"
            if resumable.exists()
            else ""
        )
        raise UserError(
            f"no prepared store for {spec.name!r} at {str(store_dir)!r} and no "
            f"source given; pass --source PATH to a downloaded copy{hint}"
        )

    with store_lock(root, spec.name):
        remove_stale_temporaries(root, spec.name)
        if is_complete(store_dir):
            # Another process finished the same store while this one waited.
            summary = _check_existing(
                spec, source, root, partial, progress, test_count, workers
            )
            return _finish(summary, start, already_prepared=True)
        logger.info("Preparing %s v%d from %s", spec.name, spec.version, source)
        if planner is not None:
            pipeline = planner(source, spec)
            _check_source_size(spec, pipeline, ranked_count, partial)
            prepare_streaming(
                root,
                spec,
                pipeline,
                ranked_count,
                partial,
                workers=workers,
                progress=progress,
            )
        else:
            data = reader(source, spec, partial, progress)
            write_store(root, spec, data, partial=partial)
    summary = verify_store(
        root, spec, progress=progress and planner is not None, threads=workers
    )
    return _finish(summary, start, already_prepared=False)


def _ranked_count(
    spec: DatasetSpec, test_count: int | None, streamed: bool
) -> int | None:
    """Return the size of the hash-ranked split, or None for other datasets."""
    rule = spec.split_rule
    if not streamed or rule is None:
        if test_count is not None:
            raise UserError(
                f"--test-count applies to datasets whose test split is chosen by a "
                f"hash rank ({', '.join(sorted(PLANNERS))}), not to {spec.name!r}"
            )
        return None
    if test_count is None:
        return spec.splits[rule.split]
    if test_count < 1:
        raise UserError(f"--test-count must be at least 1, got {test_count}")
    return test_count


def _check_source_size(
    spec: DatasetSpec, pipeline: Pipeline, ranked_count: int, partial: bool
) -> None:
    """Reject a source with fewer keys than the release unless partial is allowed."""
    total = spec.source.images or sum(spec.splits.values())
    found = len(pipeline.listing.keys)
    if found > total:
        raise UserError(
            f"the source {pipeline.listing.path!r} has {found} images but spec "
            f"{spec.name!r} v{spec.version} expects {total}; check that the "
            "source is the right dataset"
        )
    if found < total and not partial:
        raise UserError(
            f"the source {pipeline.listing.path!r} has {found} images but the "
            f"complete release has {total}; pass the complete source, or pass "
            "--partial (or --test-count N for a small source) to build a store "
            "that is marked as not the reference split"
        )


def verify_dataset(
    spec: DatasetSpec,
    root: str | os.PathLike,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Re-hash a prepared store against its manifest and spec.

    Returns:
        The summary of `prepare_dataset`, without `already_prepared`.

    Raises:
        UserError: the store is missing, corrupt or differs from its manifest.
    """
    start = time.monotonic()
    summary = verify_store(root, spec, progress=progress, threads=workers)
    summary["seconds"] = round(time.monotonic() - start, 3)
    return summary


def _reader_for(spec: DatasetSpec) -> Reader:
    try:
        return READERS[spec.name]
    except KeyError:
        raise unknown_name("dataset reader", spec.name, READERS) from None


def _check_existing(
    spec: DatasetSpec,
    source: str | os.PathLike | None,
    root: str | os.PathLike,
    partial: bool,
    progress: bool,
    test_count: int | None,
    workers: int,
) -> dict[str, Any]:
    """Verify an existing store and check that it fits the request."""
    store_dir = store_path(root, spec.name)
    logger.info("Store %s exists; verifying it", store_dir)
    manifest = read_manifest(store_dir, spec.name)
    if source is not None:
        _check_same_source(manifest.get("source", {}), Path(source), store_dir)
    recorded_count = manifest.get("split_rule", {}).get("count")
    if test_count is not None and recorded_count != test_count:
        raise UserError(
            f"store {str(store_dir)!r} was prepared with a {spec.split_rule.split} "
            f"split of {recorded_count} images, not {test_count}; pass "
            f"--test-count {recorded_count} to use it, or delete it to prepare again"
        )
    summary = verify_store(root, spec, progress=progress, threads=workers)
    if not summary["reference_split"] and not partial:
        raise UserError(
            f"store {str(store_dir)!r} was built from a partial source and is "
            "not the reference split; delete it and prepare from a complete "
            "source, or pass --partial to accept it"
        )
    return summary


def _check_same_source(recorded: dict[str, Any], source: Path, store_dir: Path) -> None:
    """Raise when `source` is not the file or folder the store was built from.

    A file matches by SHA-256, so a moved or renamed copy is accepted. A
    folder matches by resolved path, because hashing every file would cost
    as much as preparing again.
    """
    recorded_path = recorded.get("path")
    if source.is_file() and "sha256" in recorded:
        same = sha256_file(source) == recorded["sha256"]
    else:
        same = str(source.resolve()) == recorded_path
    if not same:
        raise UserError(
            f"store {str(store_dir)!r} was prepared from {recorded_path!r}, not "
            f"from {str(source)!r}; omit --source to use the existing store, or "
            "delete it to prepare from the new source"
        )


def _finish(
    summary: dict[str, Any], start: float, already_prepared: bool
) -> dict[str, Any]:
    summary["already_prepared"] = already_prepared
    summary["seconds"] = round(time.monotonic() - start, 3)
    logger.info(
        "%s %s: %s",
        "Verified existing store" if already_prepared else "Prepared",
        summary["store"],
        ", ".join(
            f"{split} {entry['count']} images digest {entry['digest']}"
            for split, entry in summary["splits"].items()
        ),
    )
    return summary
