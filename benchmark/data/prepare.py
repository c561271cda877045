"""Prepare a dataset's store from a source, or verify an existing store.

`prepare_dataset` is idempotent: on a complete store it re-hashes the images
against the manifest and writes nothing. Both functions return JSON-ready
summaries for the command line and raise `UserError` with one-line messages.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.data import cifar10
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
from benchmark.errors import UserError, unknown_name
from benchmark.fileio import sha256_file
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

# Reader per dataset name: (source path, spec, partial, progress) -> arrays.
Reader = Callable[[str | os.PathLike, DatasetSpec, bool, bool], SourceData]
READERS: dict[str, Reader] = {"cifar10": cifar10.read_source}


def prepare_dataset(
    spec: DatasetSpec,
    source: str | os.PathLike | None,
    root: str | os.PathLike,
    partial: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build `<root>/<spec.name>` from a source, or verify it if it exists.

    Stale temporary directories of interrupted runs are removed first (logged
    as warnings). The store is written atomically, so an interrupted run leaves
    no store behind.

    Args:
        spec: the dataset spec.
        source: a file or folder the dataset's reader accepts. May be None when
            the store already exists.
        root: data root directory.
        partial: allow a source with fewer images than the spec; the store is
            then marked `reference_split: false`.
        progress: show progress bars on stderr.

    Returns:
        Summary: `dataset`, `spec_version`, `store` (path), `already_prepared`,
        `reference_split`, `source` (format and path), `seconds`, and per
        split `count` and `digest`.

    Raises:
        UserError: no reader for the dataset, no source and no store, a source
            that differs from the one the existing store was built from, or
            any error of the reader, the writer or the verification.
    """
    start = time.monotonic()
    reader = _reader_for(spec)
    store_dir = store_path(root, spec.name)
    if is_complete(store_dir):
        summary = _check_existing(spec, source, root, partial, progress)
        return _finish(summary, start, already_prepared=True)
    if store_dir.exists():
        raise UserError(
            f"{str(store_dir)!r} exists but is not a complete store (no "
            "manifest.json); delete it and run the command again"
        )
    if source is None:
        raise UserError(
            f"no prepared store for {spec.name!r} at {str(store_dir)!r} and no "
            "source given; pass --source PATH to a downloaded copy"
        )

    with store_lock(root, spec.name):
        remove_stale_temporaries(root, spec.name)
        if is_complete(store_dir):
            # Another process finished the same store while this one waited.
            summary = _check_existing(spec, source, root, partial, progress)
            return _finish(summary, start, already_prepared=True)
        logger.info("Preparing %s v%d from %s", spec.name, spec.version, source)
        data = reader(source, spec, partial, progress)
        write_store(root, spec, data, partial=partial)
    summary = verify_store(root, spec, progress=False)
    return _finish(summary, start, already_prepared=False)


def verify_dataset(
    spec: DatasetSpec, root: str | os.PathLike, progress: bool = True
) -> dict[str, Any]:
    """Re-hash a prepared store against its manifest and spec.

    Returns:
        The summary of `prepare_dataset`, without `already_prepared`.

    Raises:
        UserError: the store is missing, corrupt or differs from its manifest.
    """
    start = time.monotonic()
    summary = verify_store(root, spec, progress=progress)
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
) -> dict[str, Any]:
    """Verify an existing store and check that it fits the request."""
    store_dir = store_path(root, spec.name)
    logger.info("Store %s exists; verifying it", store_dir)
    manifest = read_manifest(store_dir, spec.name)
    if source is not None:
        _check_same_source(manifest.get("source", {}), Path(source), store_dir)
    summary = verify_store(root, spec, progress=progress)
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
