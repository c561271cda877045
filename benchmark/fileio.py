"""Atomic file writes and content hashes.

Every file the harness writes goes to a temporary name in the destination
folder, is flushed to disk with fsync, and is then renamed over the final name.
An interrupted write therefore leaves either the old file or no file, never a
truncated one that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from benchmark.errors import UserError

HASH_CHUNK_BYTES = 1 << 20


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; finished files get the
# permissions an ordinary open() would give them.
FILE_MODE = 0o666 & ~_read_umask()


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    """Return the hex MD5 of a file's bytes (only to match published checksums)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory entry so that a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_directory(path: str | os.PathLike) -> Path:
    """Create a directory (and parents), turning OS errors into one-line errors."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create directory {str(path)!r}: {error.strerror}; "
            "choose a writable location"
        ) from error
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` on success.

    The caller writes the temporary file; this function fsyncs it, renames it
    and fsyncs the folder. On any exception the temporary file is removed.
    """
    path = Path(path)
    folder = ensure_directory(path.parent)
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=folder
        )
    except OSError as error:
        raise UserError(
            f"cannot write in {str(folder)!r}: {error.strerror}; "
            "choose a writable location with free space"
        ) from error
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        os.chmod(temporary_path, FILE_MODE)
        yield temporary_path
        with open(temporary_path, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary_path, path)
        fsync_directory(folder)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            temporary_path.unlink()
        if isinstance(error, OSError):
            raise UserError(
                f"failed to write {str(path)!r}: {error.strerror or error}; "
                "check free space and permissions"
            ) from error
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file atomically through `write(handle)` on a binary handle."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            write(handle)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` atomically."""
    atomic_write(path, lambda handle: handle.write(data))


def to_json(value: Any) -> str:
    """Serialise to indented JSON with sorted keys, ending in a newline."""
    return json.dumps(value, indent=2, sort_keys=True, allow_nan=True) + "\n"


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as JSON to `path` atomically."""
    atomic_write_bytes(path, to_json(value).encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising a one-line error naming the file when it is invalid."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise UserError(f"file not found: {str(path)!r}") from error
    except json.JSONDecodeError as error:
        raise UserError(
            f"invalid JSON in {str(path)!r} at line {error.lineno}: {error.msg}; "
            "the file is corrupt, delete it and re-run the command that wrote it"
        ) from error


def append_json_line(path: str | os.PathLike, value: Any) -> None:
    """Append one JSON object as a line and fsync, so records are never half-lost.

    A process killed in the middle of an append leaves a last line without its
    newline, which readers skip. This function then writes a newline first, so
    the torn line cannot swallow the new one.
    """
    line = json.dumps(value, sort_keys=True, allow_nan=True) + "\n"
    try:
        with open(path, "ab+") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise UserError(
            f"failed to append to {str(path)!r}: {error.strerror or error}; "
            "check free space and permissions, then run the command again"
        ) from error
