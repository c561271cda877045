"""Resumable streaming prepare: SIGKILL mid-run, interrupted assembly, changed requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FACE_COUNT

from benchmark.data import streaming
from benchmark.data.celebahq import plan_source
from benchmark.data.prepare import prepare_dataset
from benchmark.data.store import MANIFEST_NAME, is_complete, open_split, store_lock
from benchmark.data.streaming import JOURNAL_NAME, prepare_streaming, work_path
from benchmark.errors import UserError
from benchmark.specs import load_dataset

TEST_COUNT = 3
STORE_FILES = ("train.h5", "test.h5", MANIFEST_NAME)

# Prepares CelebA-HQ with one image per block, so a kill lands between blocks.
PREPARE_SCRIPT = """
import sys
from benchmark.data.celebahq import plan_source
from benchmark.data.store import store_lock
from benchmark.data.streaming import prepare_streaming
from benchmark.specs import load_dataset

root, source, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = load_dataset("celebahq")
with store_lock(root, spec.name):
    prepare_streaming(
        root, spec, plan_source(source, spec), count, partial=True,
        workers=1, progress=False, block_images=1,
    )
"""


@pytest.fixture(scope="module")
def spec():
    return load_dataset("celebahq")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, face_folder, spec) -> Path:
    """An uninterrupted store, with the default block size and two workers."""
    root = tmp_path_factory.mktemp("reference")
    prepare_dataset(
        spec, face_folder, root, progress=False, test_count=TEST_COUNT, workers=2
    )
    return root / "celebahq"


def resume(root: Path, source: Path, spec, count: int = TEST_COUNT) -> Path:
    with store_lock(root, spec.name):
        return prepare_streaming(
            root,
            spec,
            plan_source(source, spec),
            count,
            partial=True,
            workers=1,
            progress=False,
            block_images=1,
        )


def journal_lines(root: Path) -> int:
    path = work_path(root, "celebahq") / JOURNAL_NAME
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_after_blocks(root: Path, source: Path, blocks: int) -> None:
    """Run the prepare in a child process and SIGKILL it after `blocks` journal lines."""
    process = subprocess.Popen(
        [sys.executable, "-c", PREPARE_SCRIPT, str(root), str(source), str(TEST_COUNT)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while journal_lines(root) < blocks:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the prepare ended or stalled before {blocks} blocks")
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def assert_same_store(store: Path, reference: Path) -> None:
    for name in STORE_FILES:
        assert (store / name).read_bytes() == (reference / name).read_bytes(), name


def test_resume_after_sigkill(tmp_path, face_folder, spec, reference):
    """Check that a run killed mid-prepare resumes to the uninterrupted bytes."""
    root = tmp_path / "data"
    kill_after_blocks(root, face_folder, blocks=2)
    assert not is_complete(root / "celebahq")
    assert not (root / "celebahq").exists()
    done_before = journal_lines(root)
    assert 2 <= done_before < 8

    # A different request does not touch the unfinished work.
    with pytest.raises(UserError, match="differing: ranked_count"):
        resume(root, face_folder, spec, count=TEST_COUNT + 1)
    assert journal_lines(root) == done_before

    store = resume(root, face_folder, spec)
    assert_same_store(store, reference)
    assert not work_path(root, "celebahq").exists()


def test_resume_drops_torn_journal_line(tmp_path, face_folder, spec, reference):
    """Check that a half-written journal line is dropped and its block redone."""
    root = tmp_path / "data"
    kill_after_blocks(root, face_folder, blocks=3)
    journal = work_path(root, "celebahq") / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    store = resume(root, face_folder, spec)
    assert_same_store(store, reference)


def test_interrupted_assembly_resumes(
    tmp_path, face_folder, spec, reference, monkeypatch
):
    """Check that an interruption while copying into a split file loses nothing."""
    root = tmp_path / "data"
    monkeypatch.setattr(streaming, "COPY_BYTES", 128 * 128 * 3 * 2)
    real_copy = streaming._copy_range
    calls = []

    def copy_then_stop(*arguments):
        calls.append(arguments)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        real_copy(*arguments)

    monkeypatch.setattr(streaming, "_copy_range", copy_then_stop)
    with pytest.raises(KeyboardInterrupt):
        resume(root, face_folder, spec)
    work = work_path(root, "celebahq")
    assert (work / "train.h5").exists()
    # Train's scratch file lost the two images of the one finished copy step.
    copied = 2
    remaining = FACE_COUNT - TEST_COUNT - copied
    assert (work / "train.raw").stat().st_size == remaining * 128 * 128 * 3
    assert not (root / "celebahq").exists()

    monkeypatch.setattr(streaming, "_copy_range", real_copy)
    store = resume(root, face_folder, spec)
    assert_same_store(store, reference)


def test_finished_work_is_published(
    tmp_path, face_folder, spec, reference, monkeypatch
):
    """Check that a run stopped after its manifest only renames the folder."""
    root = tmp_path / "data"
    monkeypatch.setattr(streaming, "_publish", lambda work, final: final)
    resume(root, face_folder, spec)
    assert (work_path(root, "celebahq") / MANIFEST_NAME).exists()
    monkeypatch.undo()
    store = resume(root, face_folder, spec)
    assert_same_store(store, reference)
    with open_split(root, "celebahq", "test") as reader:
        assert len(reader) == TEST_COUNT


@pytest.mark.slow
def test_resume_after_repeated_sigkills(tmp_path, face_folder, spec, reference):
    """Check a prepare killed after every block in turn still ends with the same bytes."""
    root = tmp_path / "data"
    for blocks in range(1, 8):
        if (root / "celebahq").exists():
            break
        if journal_lines(root) >= blocks:
            continue
        kill_after_blocks(root, face_folder, blocks)
    store = resume(root, face_folder, spec)
    assert_same_store(store, reference)
