"""The study database on SQLite, and on a real PostgreSQL server when one can start."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.study.spec import Setting
from benchmark.study.storage import (
    COMPLETED,
    DIVERGED,
    PENDING,
    RUNNING,
    StudyStorage,
    TrialResult,
    sqlite_url,
)

SETTINGS = [Setting(2e-4, 0.5, 0.999, 1, 0.0), Setting(1e-3, 0.5, 0.9, 5, 0.0)]


def exercise(storage: StudyStorage) -> None:
    """Run the whole storage life cycle and check each step."""
    storage.register("a" * 64, {"name": storage.study})
    storage.register("a" * 64, {"name": storage.study})  # same spec: accepted
    with pytest.raises(UserError, match="another spec"):
        storage.register("b" * 64, {"name": storage.study})

    assert not storage.round_exists("sn", 0)
    storage.add_settings("sn", "grid", 0, SETTINGS, seeds=2)
    assert storage.round_exists("sn", 0)
    assert not storage.round_exists("sn", 1)
    rows = storage.settings("sn")
    assert [row.setting for row in rows] == SETTINGS
    assert [row.key for row in rows] == [s.key() for s in SETTINGS]

    trials = storage.trials()
    assert len(trials) == 4
    assert {t["status"] for t in trials} == {PENDING}
    first, second = trials[0]["id"], trials[1]["id"]
    storage.mark_running(first)
    storage.mark_running(second)
    storage.record_result(
        first, TrialResult(status=COMPLETED, fid=42.5, fid_step=4, seconds=1.0)
    )
    assert storage.reset_unfinished() == 1
    by_id = {t["id"]: t for t in storage.trials()}
    assert by_id[first]["status"] == COMPLETED
    assert by_id[first]["fid"] == 42.5
    assert by_id[second]["status"] == PENDING
    assert by_id[first]["lr"] == 2e-4
    storage.record_result(second, TrialResult(status=DIVERGED, diverged_step=3))
    assert len(storage.trials(statuses=[PENDING])) == 2
    assert len(storage.trials(statuses=[PENDING], max_round=0)) == 2
    with pytest.raises(ValueError):
        storage.record_result(first, TrialResult(status=RUNNING))

    # Another study in the same database is kept apart.
    other = StudyStorage(storage.url, storage.study + "-other")
    try:
        assert other.trials() == []
        assert other.stored_spec() is None
    finally:
        other.close()
    assert storage.stored_spec() == {"name": storage.study}


def test_sqlite_storage_life_cycle(tmp_path):
    """Check settings, trials, resets and spec checks on a SQLite file."""
    storage = StudyStorage(sqlite_url(tmp_path / "study.db"), "demo")
    try:
        exercise(storage)
    finally:
        storage.close()
    # The file keeps everything for the next process.
    reopened = StudyStorage(sqlite_url(tmp_path / "study.db"), "demo")
    try:
        assert len(reopened.trials()) == 4
    finally:
        reopened.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("nonsense", "invalid --storage URL 'nonsense'"),
        ("mysql+nosuchdriver://u@h/db", "invalid --storage URL"),
    ],
)
def test_bad_storage_url_fails_in_one_line(url, message):
    """Check an unusable URL is a one-line error naming it."""
    with pytest.raises(UserError) as raised:
        StudyStorage(url, "demo")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def postgres_binaries() -> Path | None:
    """Return Debian's PostgreSQL bin folder, or None when it is not installed."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


@pytest.fixture()
def postgres_url():
    """A PostgreSQL server on a Unix socket in a temporary folder, stopped afterwards.

    Debian's server refuses to run as root, so as root it runs as the
    `postgres` user that the package creates. The folder sits directly in
    the system's temporary folder: pytest's own is private to root, and a
    socket path must stay under about 100 characters.
    """
    pytest.importorskip("psycopg")
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="benchmark-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to switch to postgres")
        os.chmod(folder, 0o755)
        shutil.chown(folder, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, socket = folder / "data", folder
    subprocess.run(
        [
            *prefix,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "bench",
            "--auth=trust",
        ],
        check=True,
        capture_output=True,
    )
    # No TCP listener: the server is reachable through its socket file only.
    options = f"-c listen_addresses='' -c unix_socket_directories={socket} -k {socket}"
    subprocess.run(
        [
            *prefix,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(folder / "log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://bench@/postgres?host={socket}"
    finally:
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_storage_life_cycle(postgres_url):
    """Check the same life cycle against a real PostgreSQL server."""
    storage = StudyStorage(postgres_url, "demo")
    try:
        assert storage.engine.dialect.name == "postgresql"
        exercise(storage)
    finally:
        storage.close()
