"""The prepared-data store: one HDF5 file per split plus a JSON manifest.

Layout under a data root::

    <root>/<dataset>/<split>.h5      images, labels, keys, per-image SHA-256s
    <root>/<dataset>/manifest.json   counts, digests, skipped keys, source

Each split file contains the datasets `images` (uint8, N x H x W x C), `labels`
(int64), `keys` (UTF-8 source keys), `sha256` (the image SHA-256s as ASCII
hex) and, for stores prepared by streaming, `source_sha256` (SHA-256 of each
image's source value). The manifest keeps per split the count, the split
digest and the index digest, which together pin every per-image row of the
split file, so millions of images need no per-image JSON.

Hash rules (the manifest repeats them in its `hash_rules` field):

* Image SHA-256: SHA-256 of the image's uint8 bytes in C order, shape (H, W, C),
  written as 64 lowercase hex digits.
* Split digest: SHA-256 of the ASCII text made of the split's image SHA-256s,
  sorted, joined with a single newline and without a trailing newline. Sorting
  makes the digest independent of the order in which images are stored.
* Index digest: SHA-256 of the UTF-8 text with one line `key<TAB>label<TAB>
  sha256` per image, in store order, each line ending in a newline.
* Source digest: SHA-256 of the UTF-8 text with one line `key<TAB>value
  sha256` per source key (stored or skipped), sorted, each line ending in a
  newline.

A store is built in a hidden sibling directory (`<root>/.<dataset>.tmp-<random>`,
or `<root>/.<dataset>.partial` for a resumable build) and renamed to
`<root>/<dataset>` once every file is written and flushed, so the final
directory only ever appears complete. The manifest is the last file written
into the temporary directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import PIL
from PIL import features as pil_features

import benchmark
from benchmark.data.manifest import check_manifest
from benchmark.errors import UserError
from benchmark.fileio import (
    ensure_directory,
    fsync_directory,
    read_json,
    sha256_file,
    to_json,
)
from benchmark.progress import progress_bar
from benchmark.specs import DatasetSpec, as_dict

logger = logging.getLogger(__name__)

# Version 1 kept the per-image list in manifest.json; version 2 keeps it in
# the split files.
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
LOCK_SUFFIX = ".lock"
TEMPORARY_MARKER = ".tmp-"

HASH_RULES = {
    "image_sha256": "SHA-256 of the image's uint8 bytes in C order, shape (H, W, C)",
    "split_digest": (
        "SHA-256 of the ASCII text of the split's image SHA-256 hex digests, "
        "sorted, joined by '\\n', without a trailing newline"
    ),
    "index_sha256": (
        "SHA-256 of the UTF-8 lines 'key\\tlabel\\tsha256\\n' of the split's "
        "images in store order"
    ),
    "source_digest": (
        "SHA-256 of the UTF-8 lines 'key\\tvalue sha256\\n' of every source "
        "key, stored or skipped, sorted"
    ),
}

# Target size of one HDF5 chunk of images. Training reads minibatches of
# shuffled indices, so every requested image costs one whole chunk read: small
# chunks keep that waste low, while chunks far below ~10 KiB make the chunk
# index and per-chunk overhead dominate sequential reads. 64 KiB gives 16
# CIFAR-10 images (48 KiB) per chunk and a single image per chunk from 128x128
# RGB upwards.
CHUNK_TARGET_BYTES = 64 * 1024

# Chunk cache of each open split file: 1365 CIFAR-10 chunks, or 40 % of the
# train split. The slot count is a prime about ten times the chunk count, as
# the HDF5 documentation advises for few hash collisions.
CHUNK_CACHE_BYTES = 64 * 1024 * 1024
CHUNK_CACHE_SLOTS = 14009

# Bytes of images read per block during verification: 4096 CIFAR-10 images,
# 256 at 128x128. Two blocks are in memory at a time.
VERIFY_BLOCK_BYTES = 12 << 20

# Rows of a hash column converted to text at a time.
HEX_SLICE = 1 << 16

# How many mismatches an error message lists.
SHOWN_MISMATCHES = 3


@dataclass(frozen=True)
class SplitArrays:
    """Images, labels and source keys of one split, in store order.

    Attributes:
        images: uint8 array of shape (N, H, W, C), values in [0, 255].
        labels: int64 array of shape (N,), class indices.
        keys: N stable source keys, one per image, unique within the split.
    """

    images: np.ndarray
    labels: np.ndarray
    keys: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                "images must be a uint8 array of shape (N, H, W, C), got "
                f"{self.images.dtype} {self.images.shape}"
            )
        count = self.images.shape[0]
        if self.labels.dtype != np.int64 or self.labels.shape != (count,):
            raise ValueError(
                f"labels must be int64 of shape ({count},), got "
                f"{self.labels.dtype} {self.labels.shape}"
            )
        if len(self.keys) != count:
            raise ValueError(f"expected {count} keys, got {len(self.keys)}")


@dataclass(frozen=True)
class SourceData:
    """Everything a reader extracted from a source.

    Attributes:
        splits: arrays per split name.
        source: JSON-ready description of what was read (format, path, size,
            checksums); copied into the manifest.
    """

    splits: dict[str, SplitArrays]
    source: dict[str, Any]


# ----------------------------------------------------------------------------
# Hashes


def image_sha256(image: np.ndarray) -> str:
    """Return the hex SHA-256 of one uint8 image of shape (H, W, C)."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def image_hashes(images: np.ndarray) -> list[str]:
    """Return the hex SHA-256 of each image of a uint8 (N, H, W, C) array."""
    return [image_sha256(image) for image in images]


def split_digest(hashes: Iterable[str]) -> str:
    """Return the order-free digest of a split from its image SHA-256s."""
    text = "\n".join(sorted(hashes))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def index_digest(
    keys: Sequence[str], labels: Sequence[int], hashes: Sequence[str]
) -> str:
    """Return the digest of a split's per-image rows (key, label, SHA-256) in order."""
    digest = hashlib.sha256()
    for key, label, sha in zip(keys, labels, hashes, strict=True):
        digest.update(f"{key}\t{int(label)}\t{sha}\n".encode())
    return digest.hexdigest()


def source_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """Return the digest of a source from (key, SHA-256 of its value) pairs."""
    digest = hashlib.sha256()
    for key, sha in sorted(pairs):
        digest.update(f"{key}\t{sha}\n".encode())
    return digest.hexdigest()


def spec_sha256(spec: DatasetSpec) -> str:
    """Return the SHA-256 of the spec file, or of its canonical JSON without one."""
    if spec.path:
        return sha256_file(spec.path)
    text = to_json({**as_dict(spec), "path": ""})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries that decode, hash and store images."""
    return {
        "benchmark": benchmark.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "libjpeg_turbo": pil_features.version("libjpeg_turbo") or "absent",
        "libwebp": pil_features.version("webp") or "absent",
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def chunk_rows(image_shape: Sequence[int], count: int) -> int:
    """Return the number of images per HDF5 chunk (at least 1, at most count)."""
    image_bytes = int(np.prod(image_shape))
    rows = 1
    while rows * 2 * image_bytes <= CHUNK_TARGET_BYTES:
        rows *= 2
    return max(1, min(rows, count))


# ----------------------------------------------------------------------------
# Paths, lock and stale temporary directories


def store_path(root: str | os.PathLike, dataset: str) -> Path:
    """Return the directory of a dataset's store under a data root."""
    return Path(root) / dataset


def is_complete(store_dir: str | os.PathLike) -> bool:
    """Return whether a store directory contains a manifest (written last)."""
    return (Path(store_dir) / MANIFEST_NAME).is_file()


@contextlib.contextmanager
def store_lock(root: str | os.PathLike, dataset: str) -> Iterator[None]:
    """Hold an exclusive lock on building `dataset` under `root`.

    The lock is `<root>/.<dataset>.lock`, taken with flock, so the kernel
    releases it when the process dies. The file itself stays behind, empty.

    Raises:
        UserError: another process holds the lock.
    """
    folder = ensure_directory(root)
    lock_path = folder / f".{dataset}{LOCK_SUFFIX}"
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another process is preparing {dataset!r} in {str(folder)!r} "
                f"(lock {str(lock_path)!r} is held); wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_temporaries(root: str | os.PathLike, dataset: str) -> list[Path]:
    """Delete temporary build directories left by interrupted runs.

    Call this only while holding `store_lock`, because a live build of the same
    dataset would otherwise lose its directory.

    Returns:
        The directories removed.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.glob(f".{dataset}{TEMPORARY_MARKER}*")):
        if path.is_dir() and not path.is_symlink():
            logger.warning(
                "Removing stale temporary directory %s left by an interrupted prepare",
                path,
            )
            shutil.rmtree(path)
            removed.append(path)
    return removed


# ----------------------------------------------------------------------------
# Writing


def check_counts(spec: DatasetSpec, counts: Mapping[str, int], partial: bool) -> bool:
    """Check split counts against the spec and return whether they all match.

    Args:
        spec: the dataset spec with the expected count of each split.
        counts: image count per split found in the source.
        partial: allow fewer images than the spec lists.

    Returns:
        True when every split has exactly the spec's count.

    Raises:
        UserError: a split is missing or empty, has more images than the spec,
            or has fewer while `partial` is false.
    """
    for split, expected in spec.splits.items():
        found = counts.get(split, 0)
        if found == 0:
            raise UserError(
                f"the source has no images for split {split!r} of {spec.name!r}; "
                "pass a source that contains it"
            )
        if found > expected:
            raise UserError(
                f"the source has {found} images for split {split!r} but spec "
                f"{spec.name!r} v{spec.version} expects {expected}; "
                "check that the source is the right dataset"
            )
        if found < expected and not partial:
            raise UserError(
                f"the source has {found} images for split {split!r} but spec "
                f"{spec.name!r} v{spec.version} expects {expected}; pass the "
                "complete source, or pass --partial to build a store that is "
                "marked as not the reference split"
            )
    extra = sorted(set(counts) - set(spec.splits))
    if extra:
        raise UserError(
            f"the source has splits {', '.join(extra)} that spec {spec.name!r} "
            f"does not list (it lists {', '.join(spec.splits)})"
        )
    return all(counts[split] == expected for split, expected in spec.splits.items())


def write_store(
    root: str | os.PathLike,
    spec: DatasetSpec,
    data: SourceData,
    partial: bool = False,
) -> Path:
    """Write a complete store for `data` atomically and return its directory.

    Every split is written to `<split>.h5` in a temporary sibling directory,
    and the manifest is written after them. Each file and the directory are
    fsynced before the directory is renamed to `<root>/<dataset>`. On any
    exception the temporary directory is deleted. The caller should hold
    `store_lock`.

    `data` keeps every image in memory (184 MB for CIFAR-10), so large
    datasets go through `benchmark.data.streaming` instead.

    Args:
        root: data root; created if missing.
        spec: the dataset spec; image shapes must be (resolution, resolution,
            channels).
        data: the arrays and source description from a reader.
        partial: allow splits with fewer images than the spec.

    Raises:
        UserError: the counts or shapes do not fit the spec, the store already
            exists, or a write failed (for example a full disk).
    """
    root = ensure_directory(root)
    final = store_path(root, spec.name)
    if final.exists():
        raise UserError(
            f"store {str(final)!r} already exists; delete it to prepare again"
        )
    counts = {split: len(arrays.keys) for split, arrays in data.splits.items()}
    reference_split = check_counts(spec, counts, partial)
    expected_shape = (spec.resolution, spec.resolution, spec.channels)
    for split, arrays in data.splits.items():
        if arrays.images.shape[1:] != expected_shape:
            raise UserError(
                f"split {split!r} has images of shape {arrays.images.shape[1:]} "
                f"but spec {spec.name!r} expects {expected_shape}"
            )
        if len(set(arrays.keys)) != len(arrays.keys):
            raise UserError(
                f"split {split!r} of the source has duplicate image keys; "
                "check the source for repeated files"
            )

    temporary = _make_temporary_directory(root, spec.name)
    try:
        splits_manifest = {}
        for split in spec.splits:
            splits_manifest[split] = _write_split(
                temporary / f"{split}.h5", spec, split, data.splits[split]
            )
        manifest = build_manifest(
            spec, data.source, splits_manifest, reference_split, partial
        )
        write_manifest(temporary, manifest)
        os.rename(temporary, final)
        fsync_directory(root)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, UserError):
            raise UserError(
                f"failed to write the store {str(final)!r}: "
                f"{error.strerror or error}; check free space and permissions"
            ) from error
        raise
    logger.info("Wrote store %s (reference split: %s)", final, reference_split)
    return final


def _make_temporary_directory(root: Path, dataset: str) -> Path:
    """Create `<root>/.<dataset>.tmp-<random>` with the umask's permissions.

    tempfile.mkdtemp would create it readable by the owner only, and the
    rename would carry that mode over to the final store.
    """
    for _ in range(100):
        path = root / f".{dataset}{TEMPORARY_MARKER}{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise UserError(
                f"cannot create a directory in {str(root)!r}: "
                f"{error.strerror or error}; choose a writable --root"
            ) from error
        return path
    raise UserError(f"cannot find a free temporary directory name in {str(root)!r}")


def _write_split(
    path: Path, spec: DatasetSpec, split: str, arrays: SplitArrays
) -> dict[str, Any]:
    """Write one split file from arrays, fsync it, and return its manifest entry."""
    hashes = image_hashes(arrays.images)
    count = len(hashes)
    image_shape = arrays.images.shape[1:]
    with h5py.File(path, "w") as handle:
        # track_times=False keeps object timestamps out of the file, so the
        # same images give the same bytes with the same HDF5 version.
        handle.create_dataset(
            "images",
            data=arrays.images,
            chunks=(chunk_rows(image_shape, count), *image_shape),
            track_times=False,
        )
        entry = _write_index(handle, spec, split, arrays.keys, arrays.labels, hashes)
    with open(path, "rb") as written:
        os.fsync(written.fileno())
    logger.info("Wrote %s: %d images, digest %s", path.name, count, entry["digest"])
    return entry


def _write_index(
    handle: h5py.File,
    spec: DatasetSpec,
    split: str,
    keys: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    hashes: Sequence[str],
    source_hashes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the per-image datasets and attributes; return the manifest entry."""
    labels = np.asarray(labels, dtype=np.int64)
    entry = split_entry(spec, split, keys, labels, hashes)
    handle.create_dataset("labels", data=labels, track_times=False)
    handle.create_dataset(
        "keys",
        data=np.array(list(keys), dtype=object),
        dtype=h5py.string_dtype("utf-8"),
        track_times=False,
    )
    handle.create_dataset(
        "sha256", data=np.array(list(hashes), dtype="S64"), track_times=False
    )
    if source_hashes is not None:
        handle.create_dataset(
            "source_sha256",
            data=np.array(list(source_hashes), dtype="S64"),
            track_times=False,
        )
    handle.attrs["dataset"] = spec.name
    handle.attrs["spec_version"] = spec.version
    handle.attrs["split"] = split
    handle.attrs["count"] = entry["count"]
    handle.attrs["digest"] = entry["digest"]
    handle.attrs["format_version"] = FORMAT_VERSION
    return entry


def split_entry(
    spec: DatasetSpec,
    split: str,
    keys: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    hashes: Sequence[str],
) -> dict[str, Any]:
    """Return the manifest entry of a split from its per-image rows."""
    return {
        "file": f"{split}.h5",
        "count": len(hashes),
        "expected_count": spec.splits[split],
        "digest": split_digest(hashes),
        "index_sha256": index_digest(keys, labels, hashes),
    }


def create_split_file(
    path: Path,
    spec: DatasetSpec,
    split: str,
    keys: Sequence[str],
    hashes: Sequence[str],
    source_hashes: Sequence[str],
) -> tuple[int, dict[str, Any]]:
    """Create a split file whose images are still to be written; fsync it.

    The `images` dataset is contiguous and its space is allocated now. The
    caller writes the pixels of image i at byte offset `data offset + i *
    image bytes` with plain file writes. The file's HDF5 structure never
    changes after this call, so an interrupted write can be redone without
    damaging it. One image per chunk would read the same way
    (each image is one 48 KiB run of bytes) but cannot be filled like this.
    All labels are 0: the datasets prepared this way are unconditional.

    Returns:
        The byte offset of the images' data in the file, and the split's
        manifest entry.
    """
    count = len(hashes)
    shape = (count, spec.resolution, spec.resolution, spec.channels)
    with h5py.File(path, "w") as handle:
        properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        properties.set_layout(h5py.h5d.CONTIGUOUS)
        properties.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        properties.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        properties.set_obj_track_times(False)
        h5py.h5d.create(
            handle.id,
            b"images",
            h5py.h5t.NATIVE_UINT8,
            h5py.h5s.create_simple(shape),
            dcpl=properties,
        )
        offset = handle["images"].id.get_offset()
        entry = _write_index(
            handle,
            spec,
            split,
            keys,
            np.zeros(count, dtype=np.int64),
            hashes,
            source_hashes,
        )
    if offset is None:
        raise RuntimeError(f"HDF5 allocated no space for the images of {path}")
    with open(path, "rb") as written:
        os.fsync(written.fileno())
    return offset, entry


def build_manifest(
    spec: DatasetSpec,
    source: dict[str, Any],
    splits: dict[str, dict[str, Any]],
    reference_split: bool,
    partial: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a store manifest from its parts (see the module docstring)."""
    return {
        "format_version": FORMAT_VERSION,
        "dataset": spec.name,
        "spec_version": spec.version,
        "spec_sha256": spec_sha256(spec),
        "reference_split": reference_split,
        "partial": partial,
        "source": source,
        "hash_rules": HASH_RULES,
        "libraries": library_versions(),
        "splits": splits,
        **(extra or {}),
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json into a store folder and fsync the file and folder.

    The manifest marks the store as complete, so it is written last. The
    folder's rename to its final name is the commit, so a plain write will do.
    """
    with open(folder / MANIFEST_NAME, "w", encoding="utf-8") as handle:
        handle.write(to_json(manifest))
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(folder)


# ----------------------------------------------------------------------------
# Reading


def _rerun_hint(dataset: str, store_dir: Path) -> str:
    return f"delete {str(store_dir)!r} and re-run `benchmark prepare {dataset}`"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class SplitReader:
    """Read access to one prepared split.

    Images come back as uint8 arrays of shape (N, H, W, C) with values in
    [0, 255]. The reader wraps an open HDF5 file, so close it (or use it as a
    context manager) and open a new one in each worker process after a fork.
    """

    def __init__(self, path: Path, dataset: str, split: str):
        self.path = path
        self.dataset = dataset
        self.split = split
        self._store_dir = path.parent
        try:
            self._file = h5py.File(
                path,
                "r",
                rdcc_nbytes=CHUNK_CACHE_BYTES,
                rdcc_nslots=CHUNK_CACHE_SLOTS,
            )
        except OSError as error:
            raise self._corrupt(error) from error
        try:
            self._images = self._file["images"]
            self._labels_dataset = self._file["labels"]
            self._keys_dataset = self._file["keys"]
            self.count = int(self._file.attrs["count"])
            self.digest = str(self._file.attrs["digest"])
            self.spec_version = int(self._file.attrs["spec_version"])
        except (KeyError, OSError) as error:
            self._file.close()
            raise self._corrupt(error) from error
        if (
            self._images.dtype != np.uint8
            or self._images.ndim != 4
            or self._images.shape[0] != self.count
            or self._labels_dataset.shape != (self.count,)
            or self._keys_dataset.shape != (self.count,)
        ):
            self._file.close()
            raise self._corrupt(f"datasets do not match the stored count {self.count}")
        self._labels: np.ndarray | None = None
        self._keys: list[str] | None = None

    def _corrupt(self, error: BaseException | str) -> UserError:
        reason = error if isinstance(error, str) else _one_line(error)
        return UserError(
            f"cannot read {str(self.path)!r}: the file is truncated or corrupt "
            f"({reason}); {_rerun_hint(self.dataset, self._store_dir)}"
        )

    def __len__(self) -> int:
        return self.count

    def __enter__(self) -> SplitReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HDF5 file; further reads raise."""
        self._file.close()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape (H, W, C) of one image."""
        return tuple(self._images.shape[1:])

    @property
    def labels(self) -> np.ndarray:
        """Class indices, int64 of shape (N,)."""
        if self._labels is None:
            self._labels = self._read_dataset(self._labels_dataset, slice(None))
        return self._labels

    @property
    def keys(self) -> list[str]:
        """Source key of each image, in store order."""
        if self._keys is None:
            raw = self._read_dataset(self._keys_dataset, slice(None))
            self._keys = [
                key.decode("utf-8") if isinstance(key, bytes) else str(key)
                for key in raw
            ]
        return self._keys

    @property
    def image_hashes(self) -> list[str]:
        """Stored SHA-256 (hex) of each image, in store order."""
        return self._hex_column("sha256")

    @property
    def source_hashes(self) -> list[str] | None:
        """SHA-256 of each image's source value, or None if the store has none."""
        if "source_sha256" not in self._file:
            return None
        return self._hex_column("source_sha256")

    def _hex_column(self, name: str) -> list[str]:
        try:
            dataset = self._file[name]
        except KeyError as error:
            raise self._corrupt(f"no {name!r} dataset") from error
        if dataset.shape != (self.count,):
            raise self._corrupt(
                f"{name!r} does not match the stored count {self.count}"
            )
        hashes: list[str] = []
        # Converted in slices: a numpy unicode copy of all 3 million LSUN
        # hashes would take 4 bytes per character.
        for start in range(0, self.count, HEX_SLICE):
            raw = self._read_dataset(dataset, slice(start, start + HEX_SLICE))
            hashes.extend(item.decode("ascii") for item in raw.tolist())
        return hashes

    def _read_dataset(self, dataset: h5py.Dataset, selection: Any) -> np.ndarray:
        try:
            return dataset[selection]
        except OSError as error:
            raise self._corrupt(error) from error

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Return images [start, stop) as uint8 (stop - start, H, W, C).

        Raises:
            IndexError: the range is not inside [0, N].
        """
        if not 0 <= start <= stop <= self.count:
            raise IndexError(
                f"range [{start}, {stop}) is outside split {self.split!r} "
                f"with {self.count} images"
            )
        return self._read_dataset(self._images, slice(start, stop))

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return the images at `indices`, in the requested order.

        Args:
            indices: integers in [0, N), in any order, repeats allowed.

        Returns:
            uint8 array of shape (len(indices), H, W, C).

        Raises:
            IndexError: an index is outside [0, N).
        """
        index_array = np.asarray(indices)
        if index_array.size == 0:
            return np.empty((0, *self.image_shape), dtype=np.uint8)
        if index_array.ndim != 1 or not np.issubdtype(index_array.dtype, np.integer):
            raise TypeError(
                f"indices must be a 1-D sequence of integers, got {index_array.dtype} "
                f"of shape {index_array.shape}"
            )
        low, high = int(index_array.min()), int(index_array.max())
        if low < 0 or high >= self.count:
            bad = low if low < 0 else high
            raise IndexError(
                f"index {bad} is outside split {self.split!r} with {self.count} images"
            )
        unique, inverse = np.unique(index_array, return_inverse=True)
        # Read whole chunks with slices, one slice per run of adjacent needed
        # chunks: h5py's point selection costs about 0.5 ms per index, a
        # chunk slice about 0.05 ms (measured on CIFAR-10, 16 images a chunk).
        rows = self._images.chunks[0] if self._images.chunks else 1
        chunk_ids = unique // rows
        breaks = np.flatnonzero(np.diff(chunk_ids) > 1) + 1
        firsts = np.concatenate([[0], breaks])
        lasts = np.concatenate([breaks, [len(unique)]])
        found = np.empty((len(unique), *self.image_shape), dtype=np.uint8)
        for first, last in zip(firsts, lasts):
            start = int(chunk_ids[first]) * rows
            stop = min((int(chunk_ids[last - 1]) + 1) * rows, self.count)
            block = self._read_dataset(self._images, slice(start, stop))
            found[first:last] = block[unique[first:last] - start]
        return found[inverse]

    def load_all(self) -> np.ndarray:
        """Return every image as uint8 (N, H, W, C)."""
        return self.read_range(0, self.count)


def read_manifest(store_dir: str | os.PathLike, dataset: str) -> dict[str, Any]:
    """Read a store's manifest, raising a one-line error when it is missing."""
    store_dir = Path(store_dir)
    manifest_path = store_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise _missing_store(store_dir, dataset)
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("dataset") != dataset:
        raise UserError(
            f"{str(manifest_path)!r} is not a manifest of {dataset!r}; "
            f"{_rerun_hint(dataset, store_dir)}"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{str(manifest_path)!r} has format version "
            f"{manifest.get('format_version')!r}, this version of the harness "
            f"reads {FORMAT_VERSION}; {_rerun_hint(dataset, store_dir)}"
        )
    check_manifest(
        manifest, str(manifest_path), dataset, _rerun_hint(dataset, store_dir)
    )
    return manifest


def split_image_hashes(root: str | os.PathLike, dataset: str, split: str) -> list[str]:
    """Return the per-image SHA-256 of a split, in store order.

    The hashes come from the split file and are checked against the split
    digest in the manifest, so a list edited after `benchmark prepare` fails.

    Raises:
        UserError: the store or the split is missing, or the hashes do not
            give the manifest's digest.
    """
    store_dir = store_path(root, dataset)
    manifest = read_manifest(store_dir, dataset)
    try:
        expected = str(manifest["splits"][split]["digest"])
    except (KeyError, TypeError) as error:
        raise UserError(
            f"manifest of {str(store_dir)!r} has no digest for split {split!r} "
            f"({error!r}); {_rerun_hint(dataset, store_dir)}"
        ) from error
    with open_split(root, dataset, split) as reader:
        hashes = reader.image_hashes
    if split_digest(hashes) != expected:
        raise UserError(
            f"the image hashes in {str(store_dir / (split + '.h5'))!r} do not give "
            f"the manifest's digest {expected}; run `benchmark verify {dataset}`"
        )
    return hashes


def _missing_store(store_dir: Path, dataset: str) -> UserError:
    if store_dir.exists():
        return UserError(
            f"{str(store_dir)!r} has no {MANIFEST_NAME}, so it is not a complete "
            f"store; {_rerun_hint(dataset, store_dir)}"
        )
    return UserError(
        f"no prepared store for {dataset!r} at {str(store_dir)!r}; "
        f"run `benchmark prepare {dataset}` (or pass the right --root)"
    )


def open_split(root: str | os.PathLike, dataset: str, split: str) -> SplitReader:
    """Open one split of a prepared store for reading.

    Raises:
        UserError: the store is missing or incomplete, the split is not in it,
            or its file is truncated or corrupt.
    """
    store_dir = store_path(root, dataset)
    if not is_complete(store_dir):
        raise _missing_store(store_dir, dataset)
    path = store_dir / f"{split}.h5"
    if not path.is_file():
        found = sorted(p.stem for p in store_dir.glob("*.h5"))
        raise UserError(
            f"split {split!r} not found in store {str(store_dir)!r}; "
            f"available splits: {', '.join(found) or 'none'}"
        )
    return SplitReader(path, dataset, split)


# ----------------------------------------------------------------------------
# Verification


def reference_split_status(
    spec: DatasetSpec,
    counts: Mapping[str, int],
    source: Mapping[str, Any],
    skipped: int,
) -> bool:
    """Return whether a store has the spec's reference split.

    Without a split rule every split must have the spec's count. With one, the
    source must hold the complete release (`source.images` keys), the ranked
    split must have its full count, and every other key must be in the other
    split or skipped as undecodable.
    """
    rule = spec.split_rule
    if rule is None:
        return all(counts.get(split) == n for split, n in spec.splits.items())
    total = spec.source.images or sum(spec.splits.values())
    (other,) = [split for split in spec.splits if split != rule.split]
    return (
        source.get("keys") == total
        and counts.get(rule.split) == spec.splits[rule.split]
        and counts.get(other, 0) + skipped == spec.splits[other]
    )


def verify_store(
    root: str | os.PathLike,
    spec: DatasetSpec,
    progress: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Re-hash every image of a store and compare it with the manifest and spec.

    For each split of the spec, the count must agree between the manifest, the
    HDF5 attributes and the file. Every image must hash to its stored SHA-256,
    the stored rows (key, label, SHA-256) must give the manifest's index
    digest, and the split digest recomputed from the images must equal both
    the manifest's and the HDF5 attribute. Where the manifest has a source
    digest, the stored and skipped keys with their value hashes must give it.
    The store must come from the same spec version, and its `reference_split`
    flag must agree with the counts. A reference store must also match the
    spec's expected digests, where the spec lists any.

    Args:
        root: data root holding `<root>/<spec.name>`.
        spec: the dataset spec the store must match.
        progress: show a progress bar on stderr while hashing.
        threads: threads that hash images (default: one per CPU).

    Returns:
        Summary with `dataset`, `spec_version`, `store`, `reference_split`,
        `source` (format and path), `skipped` (count), `expected_digests`
        (what was checked) and per split `count` and `digest`.

    Raises:
        UserError: the store is missing or corrupt, or anything differs; the
            message names the split, the first differing images (index, key,
            expected and found hash) and the command that rebuilds the store.
    """
    store_dir = store_path(root, spec.name)
    manifest = read_manifest(store_dir, spec.name)
    hint = _rerun_hint(spec.name, store_dir)

    def fail(message: str) -> UserError:
        return UserError(
            f"store {str(store_dir)!r} failed verification: {message}; {hint}"
        )

    if manifest.get("spec_version") != spec.version:
        raise UserError(
            f"store {str(store_dir)!r} was prepared with spec version "
            f"{manifest.get('spec_version')!r} of {spec.name!r}, the spec is now "
            f"version {spec.version}; {hint}"
        )
    current_spec_sha256 = spec_sha256(spec)
    if manifest.get("spec_sha256") != current_spec_sha256:
        logger.warning(
            "Spec file %s changed since the store was prepared (sha256 %s, now "
            "%s) without a version change",
            spec.path,
            manifest.get("spec_sha256"),
            current_spec_sha256,
        )
    manifest_splits = manifest.get("splits")
    if not isinstance(manifest_splits, dict) or set(manifest_splits) != set(
        spec.splits
    ):
        found = sorted(manifest_splits) if isinstance(manifest_splits, dict) else []
        raise fail(
            f"manifest lists splits {', '.join(found) or 'none'}, spec lists "
            f"{', '.join(spec.splits)}"
        )
    source = manifest.get("source", {})
    skipped = manifest.get("skipped", [])
    if not isinstance(source, dict) or not isinstance(skipped, list):
        raise fail("manifest fields 'source' or 'skipped' are malformed")

    threads = threads or os.cpu_count() or 1
    summary_splits = {}
    counts = {}
    source_pairs: list[tuple[str, str]] = []
    for split in spec.splits:
        checked = _verify_split(
            store_dir, spec, split, manifest_splits[split], fail, progress, threads
        )
        summary_splits[split] = {"count": checked.count, "digest": checked.digest}
        counts[split] = checked.count
        source_pairs.extend(checked.source_pairs)

    if "content_digest" in source:
        try:
            source_pairs.extend(
                (str(item["key"]), str(item["source_sha256"]))
                for item in skipped
                if item.get("source_sha256")
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise fail(f"manifest 'skipped' list is malformed ({error!r})") from error
        found_source = source_digest(source_pairs)
        if found_source != source["content_digest"]:
            raise fail(
                f"source digest of the stored and skipped keys is {found_source}, "
                f"manifest says {source['content_digest']}"
            )

    reference_split = reference_split_status(spec, counts, source, len(skipped))
    if manifest.get("reference_split") is not reference_split:
        raise fail(
            f"manifest has reference_split={manifest.get('reference_split')!r} "
            f"but the counts {counts} give {reference_split}"
        )
    expected = _check_expected_digests(spec, summary_splits, reference_split, fail)
    logger.info("Verified store %s", store_dir)
    return {
        "dataset": spec.name,
        "spec_version": spec.version,
        "store": str(store_dir),
        "reference_split": reference_split,
        "source": {"format": source.get("format"), "path": source.get("path")},
        "skipped": len(skipped),
        "expected_digests": expected,
        "splits": summary_splits,
    }


def _check_expected_digests(
    spec: DatasetSpec,
    splits: dict[str, dict[str, Any]],
    reference_split: bool,
    fail: Callable[[str], UserError],
) -> str:
    """Compare a reference store's digests with the spec's; return what was done."""
    if not spec.expected_digests:
        return "none in the spec"
    if not reference_split:
        return "not checked: the store is not the reference split"
    for split, expected in spec.expected_digests.items():
        found = splits[split]["digest"]
        if found != expected:
            raise fail(
                f"split {split!r} has digest {found}, but spec {spec.name!r} "
                f"v{spec.version} expects {expected} for the complete release "
                "(the decoder version can change pixels: compare the manifest's "
                "libraries with the ones the spec's digests were measured with)"
            )
    return "match"


@dataclass(frozen=True)
class _CheckedSplit:
    count: int
    digest: str
    source_pairs: list[tuple[str, str]]


def _verify_split(
    store_dir: Path,
    spec: DatasetSpec,
    split: str,
    entry: Any,
    fail: Callable[[str], UserError],
    progress: bool,
    threads: int,
) -> _CheckedSplit:
    """Check one split file against its manifest entry."""
    try:
        listed_count = int(entry["count"])
        listed_digest = str(entry["digest"])
        listed_index = str(entry["index_sha256"])
    except (KeyError, TypeError, ValueError) as error:
        raise fail(
            f"split {split!r}: manifest entry is malformed ({error!r})"
        ) from error

    with open_split(store_dir.parent, spec.name, split) as reader:
        if reader.count != listed_count:
            raise fail(
                f"split {split!r}: file contains {reader.count} images, manifest "
                f"lists {listed_count}"
            )
        if reader.digest != listed_digest:
            raise fail(
                f"split {split!r}: file attribute digest {reader.digest}, "
                f"manifest digest {listed_digest}"
            )
        keys = reader.keys
        stored_hashes = reader.image_hashes
        source_hashes = reader.source_hashes
        found_index = index_digest(keys, reader.labels, stored_hashes)
        if found_index != listed_index:
            raise fail(
                f"split {split!r}: the file's keys, labels and hashes give index "
                f"digest {found_index}, manifest says {listed_index}"
            )
        if len(set(keys)) != len(keys):
            raise fail(f"split {split!r}: the file lists a key twice")
        found_hashes = _hash_split(reader, split, progress, threads)
    mismatches = [
        f"index {index} key {keys[index]!r}: expected sha256 {expected[:16]}..., "
        f"found {found[:16]}..."
        for index, (found, expected) in enumerate(
            zip(found_hashes, stored_hashes, strict=True)
        )
        if found != expected
    ]
    if mismatches:
        first_mismatches = "; ".join(mismatches[:SHOWN_MISMATCHES])
        raise fail(
            f"split {split!r}: {len(mismatches)} mismatches, first: {first_mismatches}"
        )
    found_digest = split_digest(found_hashes)
    if found_digest != listed_digest:
        raise fail(
            f"split {split!r}: digest of the images is {found_digest}, "
            f"manifest says {listed_digest}"
        )
    pairs = list(zip(keys, source_hashes, strict=True)) if source_hashes else []
    return _CheckedSplit(listed_count, found_digest, pairs)


def _hash_split(
    reader: SplitReader, split: str, progress: bool, threads: int
) -> list[str]:
    """Return the SHA-256 of every image, reading in blocks and hashing in threads.

    CPython's hashlib releases the GIL for buffers over 2 KiB (its
    HASHLIB_GIL_MINSIZE), so threads hash in parallel while the main thread
    reads the next block.
    """
    found: list[str] = []
    block_images = max(1, VERIFY_BLOCK_BYTES // int(np.prod(reader.image_shape)))
    bar = progress_bar(reader.count, f"verify {split}", "img", enabled=progress)
    with bar, ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[tuple[int, list]] = []
        for start in range(0, reader.count, block_images):
            stop = min(start + block_images, reader.count)
            block = reader.read_range(start, stop)
            step = max(1, -(-len(block) // threads))
            parts = [
                pool.submit(image_hashes, block[first : first + step])
                for first in range(0, len(block), step)
            ]
            pending.append((stop - start, parts))
            # Keep at most two blocks in flight to bound memory.
            while len(pending) > 1:
                size, done = pending.pop(0)
                for part in done:
                    found.extend(part.result())
                bar.update(size)
        for size, done in pending:
            for part in done:
                found.extend(part.result())
            bar.update(size)
    return found
