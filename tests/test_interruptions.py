"""Runs killed, frozen, starved of disk space or fed corrupt inputs.

Each test drives the real command line. Kills happen at named points through
$BENCHMARK_FAULT (see benchmark/faults.py), so no test depends on timing, and
every interrupted run, once resumed, must end with the same bits as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from benchmark.cli import main
from benchmark.faults import FAULT_VARIABLE
from benchmark.fileio import read_json

TINY_PROTOCOL = """
name = "tiny"
version = 1
description = "kurach2019's pipeline on 6 reals vs 6 fakes, for tests only."
resize = "tf1_bilinear"
image_size = 299
inception_batch = 50
fake_seed = 42
quantize_fakes = false
kid_block_size = 1024
is_splits = 1

[extractor]
name = "tf-inception-2015-12-05"
sha256 = ["7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"]

[datasets.cifar10]
real_split = "test"
real_count = 6
fake_count = 6
"""

# Checkpoints at steps 2 and 4, one evaluation at step 4: every evaluation
# costs a 64-image sample grid and Inception passes, slow on a CPU.
SHORT_RUN = ["--steps", "4", "--batch-size", "4", "--checkpoint-every", "2"]
SHORT_RUN += ["--eval-every", "4", "--seeds", "1", "--device", "cpu", "--no-progress"]
# How long a child process may take to reach a fault point on a loaded CPU.
CHILD_TIMEOUT = 600


@pytest.fixture(scope="module")
def tiny_protocol(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("protocols") / "tiny.toml"
    path.write_text(TINY_PROTOCOL)
    return path


@pytest.fixture(scope="module")
def setting(synthetic_store, extractor_file, tiny_protocol, tmp_path_factory):
    """Arguments shared by every run here, with a feature cache per module."""
    cache = tmp_path_factory.mktemp("cache")
    return [
        "run", "baseline", "resnetcifar-ns-sn", "--dataset", "cifar10",
        "--root", str(synthetic_store), "--protocol", str(tiny_protocol),
        "--cache", str(cache), "--extractor", str(extractor_file), *SHORT_RUN,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference_run(setting, tmp_path_factory) -> Path:
    """One uninterrupted run, the bits every interrupted run must reach."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main([*setting, "--out", str(out)]) == 0
    return out


def launch(arguments: list[str], fault: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != FAULT_VARIABLE}
    if fault:
        env[FAULT_VARIABLE] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark", *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_until_killed(arguments: list[str], fault: str) -> None:
    process = launch(arguments, fault)
    _, err = process.communicate(timeout=CHILD_TIMEOUT)
    assert process.returncode == -signal.SIGKILL, f"not killed at {fault}: {err}"


def wait_until_stopped(process: subprocess.Popen) -> None:
    """Wait until the child has frozen itself with SIGSTOP."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        assert process.poll() is None, "the child exited before its stop point"
        with open(f"/proc/{process.pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        assert time.monotonic() < deadline, "the child never reached its stop point"
        time.sleep(0.05)


def comparable(record: dict) -> dict:
    """Drop what differs between identical runs: times, environment, sessions."""
    kept = {
        key: value
        for key, value in record.items()
        if key not in ("wall_seconds_last_session", "environment", "sessions")
    }
    kept["evaluations"] = [
        {k: v for k, v in entry.items() if k != "seconds"}
        for entry in record["evaluations"]
    ]
    return kept


def train_log(seed_dir: Path) -> list[dict]:
    entries = [json.loads(line) for line in (seed_dir / "train.jsonl").open()]
    for entry in entries:
        entry.pop("session_seconds")
    return entries


def assert_same_bits(resumed: Path, reference: Path) -> None:
    """Check record, checkpoint bytes and training log against the reference."""
    seed = "seed-0"
    assert comparable(read_json(resumed / seed / "record.json")) == comparable(
        read_json(reference / seed / "record.json")
    )
    final = f"{seed}/checkpoints/step-000000004.pt"
    assert (resumed / final).read_bytes() == (reference / final).read_bytes()
    assert train_log(resumed / seed) == train_log(reference / seed)
    leftovers = [p.name for p in (resumed / seed).rglob("*.tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_kills_at_every_point_then_resume(setting, reference_run, tmp_path):
    """Check that a run interrupted three times still ends bit-equal.

    It is killed during a checkpoint write, frozen during an evaluation while
    a second run into the same folder is rejected, then killed, and killed
    again just before its record. A torn log line is added in between.
    """
    out = tmp_path / "out"
    arguments = [*setting, "--out", str(out)]
    seed_dir = out / "seed-0"
    checkpoints = seed_dir / "checkpoints"

    # 1. Killed while the step-2 checkpoint is written, before its rename.
    run_until_killed(arguments, "kill:checkpoint-write@1")
    assert not (checkpoints / "step-000000002.pt").exists()
    assert list(checkpoints.glob(".step-000000002.pt.*.tmp"))
    assert (checkpoints / "step-000000002.pt.sha256").is_file()

    # A session line cut short, as by a kill in the middle of an append.
    with open(seed_dir / "sessions.jsonl", "a") as handle:
        handle.write('{"started_utc": "2026-')

    # 2. Frozen after the step-4 evaluation is computed, before it is logged.
    frozen = launch(arguments, "stop:evaluation@1")
    try:
        wait_until_stopped(frozen)
        assert main(arguments) == 2  # the folder is locked by the frozen run
    finally:
        frozen.kill()
        frozen.wait()
    assert (checkpoints / "step-000000004.pt").is_file()
    assert not (seed_dir / "evals.jsonl").exists()
    assert list(checkpoints.glob("*.tmp")) == []

    # 3. Killed after the evaluation, before record.json is written.
    run_until_killed(arguments, "kill:record-write@1")
    assert [e["step"] for e in map(json.loads, open(seed_dir / "evals.jsonl"))] == [4]
    assert not (seed_dir / "record.json").exists()

    # 4. Uninterrupted to the end.
    assert main(arguments) == 0
    assert_same_bits(out, reference_run)
    sessions = read_json(seed_dir / "record.json")["sessions"]
    assert [s["start_step"] for s in sessions] == [0, 0, 4, 4]


@pytest.mark.slow
def test_corrupt_checkpoint_stops_resume(setting, reference_run, tmp_path, capsys):
    """Check that a flipped byte in the checkpoint a run would resume from is
    caught in one line naming the file, and that deleting it resumes bit-equal."""
    out = tmp_path / "out"
    shutil.copytree(reference_run, out)
    seed_dir = out / "seed-0"
    (seed_dir / "record.json").unlink()
    (out / "summary.json").unlink()
    latest = seed_dir / "checkpoints" / "step-000000004.pt"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x01
    latest.write_bytes(bytes(data))

    assert main([*setting, "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: corrupt checkpoint")
    assert str(latest) in message

    latest.unlink()
    (seed_dir / "checkpoints" / "step-000000004.pt.sha256").unlink()
    # With no checkpoint left the run starts again from step 0.
    assert main([*setting, "--out", str(out)]) == 0
    assert_same_bits(out, reference_run)


def corrupt_store(store: Path, damage: str) -> Path:
    """Apply one kind of damage to a copy of a store; return the damaged file."""
    manifest_path = store / "cifar10" / "manifest.json"
    if damage == "truncated-h5":
        path = store / "cifar10" / "train.h5"
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
        return path
    if damage == "flipped-pixel":
        path = store / "cifar10" / "train.h5"
        with h5py.File(path, "r+") as handle:
            handle["images"][0, 0, 0, 0] ^= 1
        return path
    manifest = json.loads(manifest_path.read_text())
    if damage == "manifest-digest":
        manifest["splits"]["train"]["digest"] = "0" * 64
    elif damage == "manifest-type":
        manifest["splits"]["train"]["count"] = "48"
    elif damage == "manifest-missing":
        del manifest["splits"]["test"]["index_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    return manifest_path


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncated-h5", "truncated or corrupt"),
        ("flipped-pixel", "does not match its manifest hash"),
        ("manifest-digest", "do not give the manifest's digest"),
        ("manifest-type", "field 'splits.train.count': expected an integer"),
        ("manifest-missing", "field 'splits.test.index_sha256': expected 64"),
    ],
)
def test_corrupt_store_rejected_before_training(
    setting, synthetic_store, tmp_path, capsys, damage, expected
):
    """Check a one-line error naming the damaged file, and no run folder written
    beyond its config."""
    store = tmp_path / "data"
    shutil.copytree(synthetic_store, store)
    damaged = corrupt_store(store, damage)
    arguments = [*setting, "--root", str(store), "--out", str(tmp_path / "out")]
    assert main(arguments) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: ")
    assert expected in message
    assert str(damaged) in message or str(damaged.parent) in message
    assert not (tmp_path / "out" / "seed-0").exists()


def test_wrong_extractor_rejected(setting, tmp_path, capsys):
    """Check that an extractor file with another SHA-256 is named and rejected."""
    fake = tmp_path / "inception.pt"
    fake.write_bytes(b"not the pinned network")
    arguments = [*setting, "--extractor", str(fake), "--out", str(tmp_path / "out")]
    assert main(arguments) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(fake) in message
    assert "sha256" in message.lower()


def namespaces_available() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size=1m tmpfs "$MOUNT"
"$PYTHON" -m benchmark "$@" --out "$MOUNT/run" 2> "$HOST/full.err"
echo $? > "$HOST/full.rc"
cp -a "$MOUNT/run" "$HOST/after-full"
mount -o remount,ro "$MOUNT"
"$PYTHON" -m benchmark "$@" --out "$MOUNT/run" 2> "$HOST/readonly.err"
echo $? > "$HOST/readonly.rc"
mount -o remount,rw,size=1g "$MOUNT"
"$PYTHON" -m benchmark "$@" --out "$MOUNT/run" 2> "$HOST/resumed.err"
echo $? > "$HOST/resumed.rc"
cp -a "$MOUNT/run" "$HOST/resumed"
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not namespaces_available(),
    reason="needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs",
)
def test_full_then_read_only_disk(setting, reference_run, tmp_path):
    """Check a run on a 1 MiB tmpfs: a one-line ENOSPC error naming the file,
    then a one-line error on the read-only folder, then a resume with space
    that ends bit-equal. The tmpfs lives in a private mount namespace."""
    mount = tmp_path / "mnt"
    host = tmp_path / "host"
    mount.mkdir()
    host.mkdir()
    env = {**os.environ, "MOUNT": str(mount), "HOST": str(host)}
    env["PYTHON"] = sys.executable
    env.pop(FAULT_VARIABLE, None)
    subprocess.run(
        ["unshare", "-rm", "bash", "-c", DISK_SCRIPT, "disk", *setting],
        env=env,
        check=True,
        timeout=CHILD_TIMEOUT,
    )

    def outcome(name: str) -> tuple[int, list[str]]:
        rc = int((host / f"{name}.rc").read_text())
        lines = (host / f"{name}.err").read_text().strip().splitlines()
        return rc, [line for line in lines if line.startswith("error: ")]

    rc, errors = outcome("full")
    assert rc == 2
    assert len(errors) == 1
    assert "No space left on device" in errors[0]
    assert str(mount / "run") in errors[0]
    after_full = host / "after-full" / "seed-0"
    assert not (after_full / "record.json").exists()
    assert [p.name for p in after_full.rglob("*.tmp")] == []

    rc, errors = outcome("readonly")
    assert rc == 2
    assert len(errors) == 1
    assert "Read-only file system" in errors[0]
    assert str(mount / "run") in errors[0]

    rc, _ = outcome("resumed")
    assert rc == 0
    assert_same_bits(host / "resumed", reference_run)
