"""Resumable, parallel preparation of a store from a large image source.

Used for the datasets whose test split is chosen by the hash-rank rule
(`benchmark.data.splitrule`). Work happens in `<root>/.<dataset>.partial`:

1. Plan: list the source keys and record the request (spec, source, split
   count, pipeline) in `plan.json`. A later run resumes only with the same
   request.
2. Ranked split: keys in rank order, in blocks of `block_images`, until the
   split has its count of decodable images.
3. Other split: every key ranked after the last one the ranked split
   consumed, in ascending key order, in blocks.
4. Assembly: each split file is created with its exact count, and the
   images are copied into it from the scratch file of step 2 or 3.
5. manifest.json, then the folder is renamed to `<root>/<dataset>`.

Worker processes read, decode and transform the images of a block and hash
them; the main process writes finished blocks in block order. Each block's
pixels go to `<split>.raw` and are flushed to disk before its line (keys,
hashes, skipped keys) is appended to `journal.jsonl`, so after any
interruption, SIGKILL included, a run continues after the last journaled
block. The output depends neither on the number of workers nor on where a
run was interrupted: block contents are fixed by the plan, and blocks are
written in order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from benchmark.data import sources
from benchmark.data.imageops import (
    ADDRESS,
    UndecodableImage,
    box_downsample,
    decode_rgb,
    resize_with_crop_or_pad,
)
from benchmark.data.sources import SourceListing
from benchmark.data.splitrule import rank_positions
from benchmark.data.store import (
    MANIFEST_NAME,
    build_manifest,
    create_split_file,
    image_sha256,
    reference_split_status,
    source_digest,
    spec_sha256,
    split_entry,
    store_path,
    write_manifest,
)
from benchmark.errors import UserError
from benchmark.fileio import (
    FILE_MODE,
    append_json_line,
    atomic_write_json,
    fsync_directory,
    read_json,
)
from benchmark.progress import progress_bar
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

PLAN_VERSION = 1
WORK_SUFFIX = ".partial"
PLAN_NAME = "plan.json"
JOURNAL_NAME = "journal.jsonl"
RAW_SUFFIX = ".raw"
# Images per block: the unit of work, of resumption and of progress. 256
# LSUN images are 12 MiB of output.
BLOCK_IMAGES = 256
# Blocks submitted ahead per worker; bounds memory at about this many blocks
# of decoded images per worker.
BLOCKS_AHEAD_PER_WORKER = 2
# Bytes copied from a scratch file into a split file per step of assembly.
COPY_BYTES = 64 << 20


@dataclass(frozen=True)
class Pipeline:
    """A listed source and the pinned transform that turns its values into images.

    Attributes:
        listing: the source's keys and how to read them.
        transform: name in `TRANSFORMS`.
        options: settings of the transform (output resolution, expected size).
        description: JSON-ready description of the preprocessing for the
            manifest.
    """

    listing: SourceListing
    transform: str
    options: dict[str, Any]
    description: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------
# Transforms, run in worker processes


def _check_size(pixels: np.ndarray, size: int) -> None:
    height, width = pixels.shape[:2]
    if (height, width) != (size, size):
        raise UndecodableImage(f"image is {width}x{height}, expected {size}x{size}")


def _decode_crop_or_pad(
    value: bytes, options: dict[str, Any]
) -> tuple[np.ndarray, str]:
    pixels, image_format = decode_rgb(value)
    size = options["resolution"]
    return resize_with_crop_or_pad(pixels, size, size), image_format


def _decode_box_downsample(
    value: bytes, options: dict[str, Any]
) -> tuple[np.ndarray, str]:
    pixels, image_format = decode_rgb(value)
    _check_size(pixels, options["source_size"])
    return box_downsample(
        pixels, options["source_size"] // options["resolution"]
    ), image_format


def _planes_to_pixels(value: np.ndarray) -> np.ndarray:
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[0] != 3:
        raise UndecodableImage(
            f"HDF5 row is {value.dtype} {value.shape}, expected uint8 (3, H, W)"
        )
    return np.ascontiguousarray(value.transpose(1, 2, 0))


def _planes_box_downsample(
    value: np.ndarray, options: dict[str, Any]
) -> tuple[np.ndarray, str]:
    pixels = _planes_to_pixels(value)
    _check_size(pixels, options["source_size"])
    return box_downsample(
        pixels, options["source_size"] // options["resolution"]
    ), "HDF5"


def _planes(value: np.ndarray, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    pixels = _planes_to_pixels(value)
    _check_size(pixels, options["resolution"])
    return pixels, "HDF5"


TRANSFORMS: dict[str, Callable[[Any, dict[str, Any]], tuple[np.ndarray, str]]] = {
    "decode_crop_or_pad": _decode_crop_or_pad,
    "decode_box_downsample": _decode_box_downsample,
    "planes_box_downsample": _planes_box_downsample,
    "planes": _planes,
}


def value_sha256(value: Any) -> str:
    """Return the SHA-256 of a source value: its bytes, or an array's C-order bytes."""
    if isinstance(value, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return hashlib.sha256(value).hexdigest()


@dataclass
class BlockResult:
    """What a worker returns for one block, item by item in block order.

    Attributes:
        keys: every key of the block.
        reasons: per key, None when the image was stored, else why it was
            skipped.
        source_hashes: per key, SHA-256 of its value, or None when the value
            could not be read.
        formats: per key, the detected container format of a stored image.
        images: uint8 (stored count, H, W, C), the stored images in order.
        image_hashes: SHA-256 of each stored image.
    """

    keys: list[str]
    reasons: list[str | None]
    source_hashes: list[str | None]
    formats: list[str | None]
    images: np.ndarray
    image_hashes: list[str]


def process_block(
    kind: str,
    path: str,
    options: dict[str, Any],
    transform: str,
    transform_options: dict[str, Any],
    items: list[tuple[str, Any]],
) -> BlockResult:
    """Read, transform and hash the (key, ref) items of one block.

    A failure of one item, reading or decoding, is recorded as its reason
    and never stops the block.
    """
    function = TRANSFORMS[transform]
    size = transform_options["resolution"]
    reasons: list[str | None] = []
    source_hashes: list[str | None] = []
    formats: list[str | None] = []
    stored: list[np.ndarray] = []
    for _, ref in items:
        try:
            value = sources.read_value(kind, path, options, ref)
        except Exception as error:  # noqa: BLE001 - one unreadable item is skipped
            reasons.append(f"read failed: {type(error).__name__}: {_one_line(error)}")
            source_hashes.append(None)
            formats.append(None)
            continue
        source_hashes.append(value_sha256(value))
        try:
            pixels, image_format = function(value, transform_options)
        except UndecodableImage as error:
            reasons.append(_one_line(error))
            formats.append(None)
            continue
        except Exception as error:  # noqa: BLE001 - decoders raise many types
            reasons.append(f"{type(error).__name__}: {_one_line(error)}")
            formats.append(None)
            continue
        reasons.append(None)
        formats.append(image_format)
        stored.append(pixels)
    images = (
        np.stack(stored) if stored else np.empty((0, size, size, 3), dtype=np.uint8)
    )
    return BlockResult(
        keys=[key for key, _ in items],
        reasons=reasons,
        source_hashes=source_hashes,
        formats=formats,
        images=images,
        image_hashes=[image_sha256(image) for image in images],
    )


def _one_line(error: BaseException) -> str:
    return " ".join(ADDRESS.sub("", str(error)).split())


# ----------------------------------------------------------------------------
# Journal and scratch files


@dataclass
class _Phase:
    """Journal lines of one split, and where its next block starts."""

    split: str
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(len(entry["keys"]) for entry in self.entries)

    @property
    def consumed(self) -> int:
        return sum(entry["consumed"] for entry in self.entries)

    @property
    def done(self) -> bool:
        return bool(self.entries) and bool(self.entries[-1]["phase_done"])

    def column(self, name: str) -> list[Any]:
        return [item for entry in self.entries for item in entry[name]]


def _read_journal(path: Path, splits: Sequence[str]) -> dict[str, _Phase]:
    """Read the journal; drop a last line cut short by an interruption.

    Raises:
        UserError: a complete line is invalid or out of order.
    """
    phases = {split: _Phase(split) for split in splits}
    if not path.exists():
        return phases
    data = path.read_bytes()
    lines = data.split(b"\n")
    # Every complete line ends in a newline, so the last piece is either
    # empty or a line whose write was interrupted.
    if lines[-1]:
        logger.warning("Dropping an incomplete last line of %s", path)
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(lines[-1]))
            os.fsync(handle.fileno())
    for number, line in enumerate(lines[:-1], start=1):
        try:
            entry = json.loads(line)
            phase = phases[entry["split"]]
            valid = entry["block"] == len(phase.entries) and not phase.done
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            raise UserError(
                f"line {number} of {str(path)!r} is not a valid journal line; the "
                f"folder {str(path.parent)!r} is damaged, delete it to start over"
            )
        phase.entries.append(entry)
    return phases


class _ScratchImages:
    """Append-only file of raw uint8 images, cut back to what the journal lists."""

    def __init__(self, path: Path, image_bytes: int, count: int):
        self.path = path
        self.image_bytes = image_bytes
        self.count = count
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        size = os.fstat(self._fd).st_size
        expected = count * image_bytes
        if size < expected:
            os.close(self._fd)
            raise UserError(
                f"{str(path)!r} has {size} bytes but the journal lists {count} "
                f"images ({expected} bytes); the folder {str(path.parent)!r} is "
                "damaged, delete it to start over"
            )
        if size > expected:
            # Pixels of a block whose journal line was never written.
            os.ftruncate(self._fd, expected)
            os.fsync(self._fd)

    def append(self, images: np.ndarray) -> None:
        """Write images after the last ones and flush them to disk."""
        data = memoryview(np.ascontiguousarray(images)).cast("B")
        offset = self.count * self.image_bytes
        while data:
            written = os.pwrite(self._fd, data, offset)
            data = data[written:]
            offset += written
        os.fsync(self._fd)
        self.count += len(images)

    def close(self) -> None:
        os.close(self._fd)


# ----------------------------------------------------------------------------
# Running blocks


def _blocks_in_order(
    pool: Executor | None,
    tasks: Iterator[tuple],
    ahead: int,
) -> Iterator[BlockResult]:
    """Yield the results of `process_block(*task)` in task order.

    At most `ahead` tasks are submitted beyond the one being consumed. When
    the consumer stops early, tasks not yet started are cancelled.
    """
    if pool is None:
        for task in tasks:
            yield process_block(*task)
        return
    pending: deque = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(process_block, *task))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def _make_pool(workers: int) -> Executor | None:
    if workers <= 1:
        return None
    # spawn: a forked child would share the parent's open LMDB and HDF5
    # handles, which neither library allows.
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


# ----------------------------------------------------------------------------
# Entry point


def work_path(root: str | os.PathLike, dataset: str) -> Path:
    """Return the folder of a resumable prepare of `dataset` under `root`."""
    return Path(root) / f".{dataset}{WORK_SUFFIX}"


def prepare_streaming(
    root: str | os.PathLike,
    spec: DatasetSpec,
    pipeline: Pipeline,
    ranked_count: int,
    partial: bool,
    workers: int = 1,
    progress: bool = True,
    block_images: int = BLOCK_IMAGES,
) -> Path:
    """Build `<root>/<spec.name>` from a large source; resume an interrupted build.

    The caller must hold `store_lock`. The module docstring lists the steps.

    Args:
        root: data root.
        spec: a dataset spec with a split rule.
        pipeline: the listed source and its transform.
        ranked_count: size of the ranked split (the spec's count unless the
            user set another).
        partial: the user accepts a store that is not the reference split.
        workers: processes that decode images; 1 decodes in this process.
            The output is the same for any number.
        progress: show progress bars on stderr.
        block_images: images per block; part of the plan, so a resumed run
            must use the same number.

    Returns:
        The store directory.

    Raises:
        UserError: the request contradicts an unfinished build with other
            settings, the source has too few images, or nothing decodes.
    """
    rule = spec.split_rule
    if rule is None:
        raise UserError(f"spec {spec.name!r} has no split_rule to prepare by streaming")
    (other_split,) = [split for split in spec.splits if split != rule.split]
    listing = pipeline.listing
    keys = listing.keys
    if len(keys) <= ranked_count:
        raise UserError(
            f"the source {listing.path!r} has {len(keys)} images, too few for a "
            f"{rule.split} split of {ranked_count} and a non-empty {other_split} "
            "split; pass a smaller --test-count"
        )

    root = Path(root)
    work = work_path(root, spec.name)
    final = store_path(root, spec.name)
    if final.exists():
        raise UserError(
            f"store {str(final)!r} already exists; delete it to prepare again"
        )
    if (work / MANIFEST_NAME).is_file():
        # An earlier run finished everything but the rename.
        return _publish(work, final)

    plan = _plan(spec, pipeline, ranked_count, partial, block_images)
    _open_work(work, plan)
    started = time.monotonic()
    image_bytes = spec.resolution * spec.resolution * spec.channels
    phases = _read_journal(work / JOURNAL_NAME, (rule.split, other_split))
    consumed_before = sum(phase.consumed for phase in phases.values())
    order = rank_positions(rule.salt, keys)
    pool = _make_pool(workers)
    ahead = max(1, workers) * BLOCKS_AHEAD_PER_WORKER
    try:
        ranked = phases[rule.split]
        if not ranked.done:
            _run_ranked_phase(
                work,
                pipeline,
                order,
                ranked,
                ranked_count,
                image_bytes,
                block_images,
                pool,
                ahead,
                progress,
            )
        other = phases[other_split]
        remaining = np.sort(order[ranked.consumed :])
        if ranked.stored < ranked_count or len(remaining) == 0:
            raise _too_few_decode(work, listing, ranked.stored, rule.split, other_split)
        if not other.done:
            _run_other_phase(
                work,
                pipeline,
                remaining,
                other,
                image_bytes,
                block_images,
                pool,
                ahead,
                progress,
            )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        sources.close_handles()
    if other.stored == 0:
        raise _too_few_decode(work, listing, ranked.stored, rule.split, other_split)
    seconds = time.monotonic() - started
    decoded = sum(phase.consumed for phase in phases.values()) - consumed_before
    logger.info(
        "Decoded %d source images of %s in %.1f s (%.0f images/s, %d workers)",
        decoded,
        spec.name,
        seconds,
        decoded / max(seconds, 1e-9),
        workers,
    )

    splits = {}
    for split in spec.splits:
        splits[split] = _assemble_split(
            work, spec, phases[split], image_bytes, progress
        )
    manifest = _manifest(
        spec, pipeline, phases, splits, rule.split, ranked_count, partial
    )
    write_manifest(work, manifest)
    return _publish(work, final)


def _too_few_decode(
    work: Path, listing: SourceListing, ranked: int, ranked_split: str, other_split: str
) -> UserError:
    return UserError(
        f"only {ranked} {ranked_split} images and no {other_split} image of "
        f"{listing.path!r} could be used (the skipped keys and reasons are in "
        f"{str(work / JOURNAL_NAME)!r}); delete {str(work)!r} and pass a smaller "
        "--test-count"
    )


def _plan(
    spec: DatasetSpec,
    pipeline: Pipeline,
    ranked_count: int,
    partial: bool,
    block_images: int,
) -> dict[str, Any]:
    """Return everything that fixes the output, as recorded in plan.json."""
    keys_sha256 = hashlib.sha256("\n".join(pipeline.listing.keys).encode()).hexdigest()
    return {
        "plan_version": PLAN_VERSION,
        "dataset": spec.name,
        "spec_version": spec.version,
        "spec_sha256": spec_sha256(spec),
        "source": {
            **pipeline.listing.description,
            "keys": len(pipeline.listing.keys),
            "keys_sha256": keys_sha256,
        },
        "transform": pipeline.transform,
        "transform_options": pipeline.options,
        "ranked_count": ranked_count,
        "partial": partial,
        "block_images": block_images,
    }


def _open_work(work: Path, plan: dict[str, Any]) -> None:
    """Create the work folder with its plan, or check an existing plan."""
    plan_path = work / PLAN_NAME
    if plan_path.is_file():
        existing = read_json(plan_path)
        if existing != json.loads(json.dumps(plan)):
            differing = sorted(
                name
                for name in set(plan) | set(existing)
                if json.dumps(plan.get(name), sort_keys=True)
                != json.dumps(existing.get(name), sort_keys=True)
            )
            raise UserError(
                f"{str(work)!r} contains an unfinished prepare with other settings "
                f"(differing: {', '.join(differing)}); run the same command as "
                "before to resume it, or delete that folder to start over"
            )
        logger.info("Resuming the prepare in %s", work)
        return
    if work.exists():
        # Interrupted before its plan was written: nothing to keep.
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_json(plan_path, plan)
    fsync_directory(work.parent)


def _tasks(
    pipeline: Pipeline, positions: np.ndarray, first_block: int, block_images: int
) -> Iterator[tuple]:
    listing = pipeline.listing
    for start in range(first_block * block_images, len(positions), block_images):
        chosen = positions[start : start + block_images]
        items = [(listing.keys[i], listing.refs[i]) for i in chosen]
        yield (
            listing.kind,
            listing.path,
            listing.options,
            pipeline.transform,
            pipeline.options,
            items,
        )


def _check_first_block(work: Path, pipeline: Pipeline, result: BlockResult) -> None:
    """Stop early when not one image of the first block decodes."""
    if any(reason is None for reason in result.reasons):
        return
    shutil.rmtree(work)
    raise UserError(
        f"none of the first {len(result.keys)} images of {pipeline.listing.path!r} "
        f"could be used (first reason: {result.reasons[0]}); check that --source "
        "points at the dataset"
    )


def _journal_entry(
    split: str,
    block: int,
    result: BlockResult,
    consumed: int,
    phase_done: bool,
) -> dict[str, Any]:
    stored_keys = [
        key
        for key, reason in zip(result.keys[:consumed], result.reasons)
        if reason is None
    ]
    stored_sources = [
        sha
        for sha, reason in zip(result.source_hashes[:consumed], result.reasons)
        if reason is None
    ]
    skipped = [
        {"key": key, "reason": reason, "source_sha256": sha}
        for key, reason, sha in zip(
            result.keys[:consumed], result.reasons, result.source_hashes
        )
        if reason is not None
    ]
    formats = Counter(
        image_format
        for image_format in result.formats[:consumed]
        if image_format is not None
    )
    return {
        "split": split,
        "block": block,
        "consumed": consumed,
        "keys": stored_keys,
        "sha256": result.image_hashes[: len(stored_keys)],
        "source_sha256": stored_sources,
        "skipped": skipped,
        "formats": dict(sorted(formats.items())),
        "phase_done": phase_done,
    }


def _run_ranked_phase(
    work: Path,
    pipeline: Pipeline,
    order: np.ndarray,
    phase: _Phase,
    count: int,
    image_bytes: int,
    block_images: int,
    pool: Executor | None,
    ahead: int,
    progress: bool,
) -> None:
    """Fill the ranked split with the first `count` decodable keys in rank order."""
    scratch = _ScratchImages(
        work / f"{phase.split}{RAW_SUFFIX}", image_bytes, phase.stored
    )
    block = len(phase.entries)
    bar = progress_bar(
        count,
        f"{phase.split} (rank order)",
        "img",
        enabled=progress,
        initial=phase.stored,
    )
    results = _blocks_in_order(
        pool, _tasks(pipeline, order, block, block_images), ahead
    )
    with bar, contextlib.closing(results):
        for result in results:
            if block == 0:
                _check_first_block(work, pipeline, result)
            needed = count - phase.stored
            consumed = 0
            stored = 0
            for reason in result.reasons:
                if stored == needed:
                    break
                consumed += 1
                stored += reason is None
            last_block = (block + 1) * block_images >= len(order)
            done = stored == needed or last_block
            scratch.append(result.images[:stored])
            entry = _journal_entry(phase.split, block, result, consumed, done)
            append_json_line(work / JOURNAL_NAME, entry)
            phase.entries.append(entry)
            bar.update(stored)
            bar.set_postfix(skipped=sum(len(e["skipped"]) for e in phase.entries))
            block += 1
            if done:
                break
    scratch.close()


def _run_other_phase(
    work: Path,
    pipeline: Pipeline,
    positions: np.ndarray,
    phase: _Phase,
    image_bytes: int,
    block_images: int,
    pool: Executor | None,
    ahead: int,
    progress: bool,
) -> None:
    """Store every remaining key, in ascending key order."""
    scratch = _ScratchImages(
        work / f"{phase.split}{RAW_SUFFIX}", image_bytes, phase.stored
    )
    block = len(phase.entries)
    bar = progress_bar(
        len(positions), phase.split, "img", enabled=progress, initial=phase.consumed
    )
    skipped = sum(len(entry["skipped"]) for entry in phase.entries)
    results = _blocks_in_order(
        pool, _tasks(pipeline, positions, block, block_images), ahead
    )
    with bar, contextlib.closing(results):
        for result in results:
            consumed = len(result.keys)
            done = (block + 1) * block_images >= len(positions)
            scratch.append(result.images)
            entry = _journal_entry(phase.split, block, result, consumed, done)
            append_json_line(work / JOURNAL_NAME, entry)
            phase.entries.append(entry)
            skipped += len(entry["skipped"])
            bar.update(consumed)
            bar.set_postfix(skipped=skipped)
            block += 1
    scratch.close()
    if not phase.done:
        raise RuntimeError(f"the {phase.split} phase ended before its last block")


# ----------------------------------------------------------------------------
# Assembly, manifest and publication


def _assemble_split(
    work: Path, spec: DatasetSpec, phase: _Phase, image_bytes: int, progress: bool
) -> dict[str, Any]:
    """Create `<split>.h5` and move the scratch images into it; return its entry.

    The scratch file is copied from its end and cut back after each step,
    so the images take up disk space about once, and an interrupted copy
    continues where the scratch file now ends.
    """
    split = phase.split
    path = work / f"{split}.h5"
    scratch = work / f"{split}{RAW_SUFFIX}"
    keys = phase.column("keys")
    hashes = phase.column("sha256")
    entry = split_entry(spec, split, keys, np.zeros(len(keys), dtype=np.int64), hashes)
    if not path.exists():
        size = scratch.stat().st_size
        if size != len(keys) * image_bytes:
            raise UserError(
                f"{str(scratch)!r} has {size} bytes, expected {len(keys)} images; "
                f"the folder {str(work)!r} is damaged, delete it to start over"
            )
        creating = path.with_name(path.name + ".creating")
        create_split_file(
            creating, spec, split, keys, hashes, phase.column("source_sha256")
        )
        os.rename(creating, path)
        fsync_directory(work)
    if not scratch.exists():
        return entry

    with h5py.File(path, "r") as handle:
        data_offset = handle["images"].id.get_offset()
    remaining = scratch.stat().st_size
    bar = progress_bar(
        remaining, f"assemble {split}", "B", enabled=progress, unit_scale=True
    )
    source_fd = os.open(scratch, os.O_RDWR)
    target_fd = os.open(path, os.O_RDWR)
    try:
        with bar:
            while remaining > 0:
                start = max(0, remaining - COPY_BYTES)
                _copy_range(
                    source_fd, target_fd, start, data_offset + start, remaining - start
                )
                os.fsync(target_fd)
                os.ftruncate(source_fd, start)
                os.fsync(source_fd)
                bar.update(remaining - start)
                remaining = start
    finally:
        os.close(source_fd)
        os.close(target_fd)
    scratch.unlink()
    fsync_directory(work)
    return entry


def _copy_range(
    source_fd: int, target_fd: int, source_offset: int, target_offset: int, length: int
) -> None:
    """Copy bytes between files, in the kernel where it can."""
    while length > 0:
        try:
            copied = os.copy_file_range(
                source_fd, target_fd, length, source_offset, target_offset
            )
        except (AttributeError, OSError):
            # No copy_file_range on this system or file system.
            data = os.pread(source_fd, min(length, COPY_BYTES), source_offset)
            copied = os.pwrite(target_fd, data, target_offset)
        if copied <= 0:
            raise OSError(
                f"copying into the split file stopped with {length} bytes left"
            )
        source_offset += copied
        target_offset += copied
        length -= copied


def _manifest(
    spec: DatasetSpec,
    pipeline: Pipeline,
    phases: dict[str, _Phase],
    splits: dict[str, dict[str, Any]],
    ranked_split: str,
    ranked_count: int,
    partial: bool,
) -> dict[str, Any]:
    listing = pipeline.listing
    skipped = sorted(
        (item for phase in phases.values() for item in phase.column("skipped")),
        key=lambda item: item["key"],
    )
    pairs = [
        (key, sha)
        for phase in phases.values()
        for key, sha in zip(phase.column("keys"), phase.column("source_sha256"))
    ]
    pairs.extend(
        (item["key"], item["source_sha256"])
        for item in skipped
        if item["source_sha256"]
    )
    formats: Counter = Counter()
    for phase in phases.values():
        for entry in phase.entries:
            formats.update(entry["formats"])
    source = {
        **listing.description,
        "keys": len(listing.keys),
        "keys_sha256": hashlib.sha256("\n".join(listing.keys).encode()).hexdigest(),
        "content_digest": source_digest(pairs),
        "image_formats": dict(sorted(formats.items())),
    }
    counts = {split: entry["count"] for split, entry in splits.items()}
    reference_split = reference_split_status(spec, counts, source, len(skipped))

    rule = spec.split_rule
    extra = {
        "split_rule": {
            "kind": rule.kind,
            "salt": rule.salt,
            "split": ranked_split,
            "count": ranked_count,
            "spec_count": spec.splits[ranked_split],
            "rule": (
                "rank each source key by the hex SHA-256 of the UTF-8 bytes of "
                "salt + key, ties by key; the first `count` keys whose image "
                "decodes form the split, every other decodable key the other "
                "split"
            ),
            "store_order": {
                ranked_split: "rank order",
                **{s: "ascending key" for s in spec.splits if s != ranked_split},
            },
        },
        "preprocessing": pipeline.description,
        "skipped": skipped,
    }

    if not reference_split:
        logger.warning(
            "%s is not the reference split: %d source keys (complete release: %d), "
            "%s split of %d (spec: %d)",
            spec.name,
            len(listing.keys),
            spec.source.images or sum(spec.splits.values()),
            ranked_split,
            ranked_count,
            spec.splits[ranked_split],
        )
    return build_manifest(spec, source, splits, reference_split, partial, extra)


def _publish(work: Path, final: Path) -> Path:
    """Delete the work files and rename the finished folder to the store path."""
    for name in (PLAN_NAME, JOURNAL_NAME):
        with contextlib.suppress(FileNotFoundError):
            (work / name).unlink()
    fsync_directory(work)
    os.rename(work, final)
    fsync_directory(final.parent)
    logger.info("Wrote store %s", final)
    return final
