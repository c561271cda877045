"""Readers of large image sources: LMDB, image folders and ProgressiveGAN HDF5 files.

A source is listed once in the main process (`list_lmdb`, `list_image_folder`,
...), which returns every key in ascending order with what a worker needs to
find it. Worker processes then read values by key through `read_value`, which
keeps one open handle per source and process. Values are the encoded bytes of
an image file or LMDB entry, or a uint8 array (C, H, W) read from an HDF5
dataset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import UserError

logger = logging.getLogger(__name__)

LMDB_DATA_FILE = "data.mdb"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Keys that are not valid UTF-8 are stored as this prefix plus their hex bytes.
HEX_KEY_PREFIX = "hex:"


@dataclass(frozen=True)
class SourceListing:
    """Every key of a source, sorted ascending, and how to read each one.

    Attributes:
        kind: reader name for `read_value` ("lmdb", "folder", "hdf5").
        path: absolute path of the source.
        keys: unique keys in ascending order.
        refs: per key, what the reader looks up: the LMDB key, the file name
            relative to the folder, or the HDF5 row.
        options: reader settings, e.g. the HDF5 dataset name.
        description: JSON-ready facts for the manifest (format, size, ...).
    """

    kind: str
    path: str
    keys: list[str]
    refs: list[Any]
    options: dict[str, Any] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# ----------------------------------------------------------------------------
# LMDB


def lmdb_location(path: Path) -> tuple[Path, bool] | None:
    """Return (path to open, whether it is a folder) if `path` is an LMDB."""
    if path.is_dir() and (path / LMDB_DATA_FILE).is_file():
        return path, True
    if path.is_file() and path.suffix == ".mdb":
        return path, False
    return None


def _open_lmdb(path: Path, subdir: bool):
    import lmdb

    # lock=False: the environment is only read, and a read-only copy (or one
    # on a read-only disk) has no lock file to create.
    return lmdb.open(
        str(path),
        subdir=subdir,
        readonly=True,
        lock=False,
        readahead=False,
        meminit=False,
        max_readers=512,
    )


def decode_key(raw: bytes) -> str:
    """Return an LMDB key as text: its UTF-8 decoding, else `hex:` plus its hex.

    Keys with a tab or line break also take the hex form, because the index
    and source digests write one key per tab-separated line.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return HEX_KEY_PREFIX + raw.hex()
    if text.startswith(HEX_KEY_PREFIX) or any(c in text for c in "\t\n\r"):
        return HEX_KEY_PREFIX + raw.hex()
    return text


def list_lmdb(path: Path) -> SourceListing:
    """List the keys of an LMDB environment (a folder with data.mdb, or the file)."""
    import lmdb

    location = lmdb_location(path)
    if location is None:
        raise UserError(f"{str(path)!r} is not an LMDB folder or .mdb file")
    target, subdir = location
    try:
        env = _open_lmdb(target, subdir)
    except lmdb.Error as error:
        raise UserError(
            f"cannot open the LMDB {str(path)!r} ({_one_line(error)}); the "
            "download may be incomplete, unzip it again"
        ) from error
    try:
        entries = env.stat()["entries"]
        with env.begin(write=False) as transaction:
            raw_keys = list(transaction.cursor().iternext(keys=True, values=False))
    except lmdb.Error as error:
        raise UserError(
            f"cannot read the keys of the LMDB {str(path)!r} ({_one_line(error)}); "
            "the file is damaged, unzip the download again"
        ) from error
    finally:
        env.close()
    keys = [decode_key(raw) for raw in raw_keys]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    data_file = target / LMDB_DATA_FILE if subdir else target
    description = {
        "format": "lmdb",
        "path": str(path.resolve()),
        "entries": entries,
        "data_file_size": data_file.stat().st_size,
    }
    return SourceListing(
        kind="lmdb",
        path=str(target.resolve()),
        keys=[keys[i] for i in order],
        refs=[raw_keys[i] for i in order],
        options={"subdir": subdir},
        description=description,
    )


# ----------------------------------------------------------------------------
# Folders of image files


def walk_files(folder: Path) -> tuple[list[str], int]:
    """Return the relative POSIX paths of regular files under `folder`, sorted.

    Hidden files and folders (a name starting with '.') are left out; their
    count is returned second.
    """
    files = []
    hidden = 0
    for directory, subfolders, names in os.walk(folder):
        kept = [name for name in subfolders if not name.startswith(".")]
        hidden += len(subfolders) - len(kept)
        subfolders[:] = sorted(kept)
        relative = Path(directory).relative_to(folder)
        for name in sorted(names):
            if name.startswith("."):
                hidden += 1
            else:
                files.append((relative / name).as_posix())
    return files, hidden


def list_image_folder(path: Path) -> SourceListing:
    """List the image files under a folder; the key is the relative path without suffix.

    Files with other suffixes are ignored and counted in the description.

    Raises:
        UserError: two files give the same key, or there is no image file.
    """
    files, hidden = walk_files(path)
    by_key: dict[str, str] = {}
    ignored = 0
    for name in files:
        suffix = Path(name).suffix
        if suffix.lower() not in IMAGE_SUFFIXES:
            ignored += 1
            continue
        key = name[: -len(suffix)]
        if any(character in key for character in "\t\n\r"):
            raise UserError(
                f"file name {name!r} under {str(path)!r} contains a tab or line "
                "break; rename it"
            )
        if key in by_key:
            raise UserError(
                f"{str(path)!r} contains both {by_key[key]!r} and {name!r}, which "
                f"give the same key {key!r}; remove one of them"
            )
        by_key[key] = name
    if not by_key:
        raise UserError(
            f"no image files ({', '.join(IMAGE_SUFFIXES)}) found under {str(path)!r}"
        )
    if ignored or hidden:
        logger.info(
            "Ignored %d files without an image suffix and %d hidden entries in %s",
            ignored,
            hidden,
            path,
        )
    keys = sorted(by_key)
    description = {
        "format": "image-folder",
        "path": str(path.resolve()),
        "files": len(keys),
        "ignored_files": ignored,
        "size": sum((path / by_key[key]).stat().st_size for key in keys),
    }
    return SourceListing(
        kind="folder",
        path=str(path.resolve()),
        keys=keys,
        refs=[by_key[key] for key in keys],
        description=description,
    )


# ----------------------------------------------------------------------------
# Reading values in worker processes

# One open handle per (kind, path, options) and process; workers reuse them
# across blocks. Handles opened before a fork must not be used in the child,
# and workers are started with the spawn method, so each opens its own.
_HANDLES: dict[tuple, Any] = {}


def _handle(kind: str, path: str, options: dict[str, Any]) -> Any:
    cache_key = (kind, path, tuple(sorted(options.items())))
    handle = _HANDLES.get(cache_key)
    if handle is None:
        if kind == "lmdb":
            handle = _open_lmdb(Path(path), options["subdir"])
        elif kind == "hdf5":
            import h5py

            handle = h5py.File(path, "r")
        else:
            raise ValueError(f"reader {kind!r} keeps no handle")
        _HANDLES[cache_key] = handle
    return handle


def close_handles() -> None:
    """Close every handle `read_value` opened in this process."""
    for handle in _HANDLES.values():
        handle.close()
    _HANDLES.clear()


def read_value(kind: str, path: str, options: dict[str, Any], ref: Any) -> Any:
    """Return the value of one key: encoded bytes, or a uint8 (C, H, W) array.

    Raises:
        OSError, KeyError or ValueError: the value is missing or unreadable.
    """
    if kind == "folder":
        return (Path(path) / ref).read_bytes()
    if kind == "lmdb":
        environment = _handle(kind, path, options)
        with environment.begin(write=False, buffers=False) as transaction:
            value = transaction.get(ref)
        if value is None:
            raise KeyError("the key has no value in the LMDB")
        return value
    if kind == "hdf5":
        dataset = _handle(kind, path, options)[options["dataset"]]
        return np.asarray(dataset[int(ref)])
    raise ValueError(f"unknown source reader {kind!r}")
