"""Download a dataset's official archive and check it against the spec's MD5."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from benchmark.errors import UserError
from benchmark.fileio import atomic_path, md5_file
from benchmark.progress import progress_bar
from benchmark.specs import DatasetSpec

logger = logging.getLogger(__name__)

DOWNLOAD_CHUNK_BYTES = 1 << 20
# Seconds without data before a connection attempt or a read fails.
DEFAULT_TIMEOUT_S = 60.0


def download_official(
    spec: DatasetSpec,
    dest_dir: str | os.PathLike,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool = True,
) -> Path:
    """Download `spec.source.url` to `dest_dir/spec.source.filename`.

    An existing file with the right MD5 is reused without a request. The
    download goes to a temporary file that is renamed into place only after
    its MD5 matches, so a failed or interrupted download leaves no file under
    the final name. The SHA-256 is logged for the record.

    Args:
        spec: dataset spec with `source.url`, `source.filename` and
            `source.md5`.
        dest_dir: folder for the archive; created if missing.
        timeout: seconds to wait for the connection and for each read.
        progress: show a progress bar on stderr.

    Returns:
        Path of the checked archive.

    Raises:
        UserError: the request failed or timed out, or the MD5 differs.
    """
    destination = Path(dest_dir) / spec.source.filename
    if destination.is_file():
        if md5_file(destination) == spec.source.md5:
            logger.info("Reusing %s (MD5 matches the spec)", destination)
            return destination
        logger.warning(
            "%s exists but its MD5 differs from the spec; downloading it again",
            destination,
        )

    url = spec.source.url
    fallback = f"download {url} by hand (MD5 {spec.source.md5}) and pass --source PATH"
    logger.info("Downloading %s to %s", url, destination)
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    network_errors = (urllib.error.URLError, OSError, http.client.HTTPException)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except network_errors as error:
        raise _download_failed(url, error, fallback) from error
    # URLError and timeouts are OSErrors, which atomic_path would report as a
    # write failure, so they become UserErrors inside the block.
    with response, atomic_path(destination) as temporary:
        length = response.headers.get("Content-Length")
        bar = progress_bar(
            int(length) if length and length.isdigit() else None,
            spec.source.filename,
            "B",
            enabled=progress,
            unit_scale=True,
        )
        with bar, open(temporary, "wb") as handle:
            while True:
                try:
                    chunk = response.read(DOWNLOAD_CHUNK_BYTES)
                except network_errors as error:
                    raise _download_failed(url, error, fallback) from error
                if not chunk:
                    break
                handle.write(chunk)
                md5.update(chunk)
                sha256.update(chunk)
                bar.update(len(chunk))
        if md5.hexdigest() != spec.source.md5:
            raise UserError(
                f"downloaded {url} has MD5 {md5.hexdigest()}, expected "
                f"{spec.source.md5}; the server sent a different file, {fallback}"
            )
    logger.info(
        "Downloaded %s: MD5 %s, SHA-256 %s",
        destination,
        md5.hexdigest(),
        sha256.hexdigest(),
    )
    return destination


def _download_failed(url: str, error: BaseException, fallback: str) -> UserError:
    reason = getattr(error, "reason", None) or error
    return UserError(f"failed to download {url}: {reason}; {fallback}")
