"""Fault injection, torn appends, checkpoint digests and leftovers of killed writes."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from benchmark import faults
from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.fileio import append_json_line
from benchmark.run import _read_json_lines
from benchmark.training import checkpoint as checkpoints


@pytest.mark.parametrize(
    "text, expected",
    [
        ("kill:step", ("kill", "step", 1)),
        ("stop:evaluation@3", ("stop", "evaluation", 3)),
        ("kill:checkpoint-write@12", ("kill", "checkpoint-write", 12)),
    ],
)
def test_fault_text_parses(text, expected):
    """Check that valid ACTION:POINT[@N] texts parse."""
    assert faults.parse_fault(text) == expected


@pytest.mark.parametrize(
    "text", ["kill", "explode:step", "kill:nowhere", "kill:step@0", "kill:step@x"]
)
def test_invalid_fault_text_is_rejected(text):
    """Check a one-line error naming the variable and the format."""
    with pytest.raises(UserError, match="BENCHMARK_FAULT") as caught:
        faults.parse_fault(text)
    assert "ACTION:POINT" in str(caught.value) or "positive integer" in str(
        caught.value
    )


def test_fault_fires_on_nth_reach_only(monkeypatch):
    """Check that the signal is sent exactly once, at the N-th reach of the point."""
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setattr(faults, "_reached", {})
    monkeypatch.setenv(faults.FAULT_VARIABLE, "stop:evaluation@2")
    faults.reach("step")
    faults.reach("evaluation")
    assert sent == []
    faults.reach("evaluation")
    assert sent == [signal.SIGSTOP]
    faults.reach("evaluation")
    assert sent == [signal.SIGSTOP]


def test_no_fault_without_variable(monkeypatch):
    """Check that reach does nothing when the variable is unset."""
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.delenv(faults.FAULT_VARIABLE, raising=False)
    for point in faults.POINTS:
        faults.reach(point)
    assert sent == []


def test_append_after_torn_line_keeps_new_line(tmp_path):
    """Check that a line appended after a cut-short one stays readable."""
    path = tmp_path / "evals.jsonl"
    append_json_line(path, {"step": 1})
    with open(path, "a") as handle:
        handle.write('{"step": 2, "metr')  # the process died mid-append
    append_json_line(path, {"step": 2, "metrics": {}})
    assert _read_json_lines(path) == [{"step": 1}, {"step": 2, "metrics": {}}]
    assert path.read_text().count("\n") == 3


def test_append_failure_names_file(tmp_path):
    """Check a one-line error naming the file when the append cannot happen."""
    folder = tmp_path / "gone"
    with pytest.raises(UserError, match="failed to append") as caught:
        append_json_line(folder / "evals.jsonl", {"step": 1})
    assert str(folder / "evals.jsonl") in str(caught.value)


def small_state() -> dict:
    return {"step": 3, "weights": torch.arange(4096, dtype=torch.float32)}


def test_checkpoint_digest_catches_flipped_byte(tmp_path):
    """Check that one flipped byte inside a tensor, which torch.load accepts,
    is reported as a corrupt checkpoint."""
    path = tmp_path / "step-000000003.pt"
    checkpoints.save_checkpoint(path, small_state())
    assert checkpoints.digest_path(path).is_file()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # torch itself notices nothing
    with pytest.raises(UserError, match="corrupt checkpoint") as caught:
        checkpoints.load_checkpoint(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_checkpoint_without_digest_still_loads(tmp_path, caplog):
    """Check that a checkpoint copied without its digest file loads with a warning."""
    path = tmp_path / "step-000000003.pt"
    checkpoints.save_checkpoint(path, small_state())
    checkpoints.digest_path(path).unlink()
    assert checkpoints.load_checkpoint(path)["step"] == 3
    assert "cannot be checked" in caught_text(caplog)


def caught_text(caplog) -> str:
    return " ".join(record.getMessage() for record in caplog.records)


def test_leftovers_of_killed_write_are_removed(tmp_path):
    """Check that temporaries and orphan digests go, and real checkpoints stay."""
    kept = tmp_path / "step-000000002.pt"
    checkpoints.save_checkpoint(kept, small_state())
    leftovers = [
        tmp_path / ".step-000000004.pt.ab12cd.tmp",
        tmp_path / ".step-000000004.pt.sha256.ef34gh.tmp",
        tmp_path / "step-000000004.pt.sha256",
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    removed = checkpoints.remove_temporary_files(tmp_path)
    assert sorted(removed) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-000000002.pt",
        "step-000000002.pt.sha256",
    ]
    assert checkpoints.load_checkpoint(kept)["step"] == 3


def test_unexpected_os_error_is_one_line(tmp_path, capsys, monkeypatch):
    """Check that an OSError no code path wrapped still ends in one line with
    the path and exit status 2."""
    import errno

    from benchmark import cli

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(cli, "command_list", full_disk)
    assert main(["list", "baselines"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    assert "No space left on device" in message
    assert str(tmp_path / "x") in message


def test_sessions_file_with_torn_line_reads(tmp_path):
    """Check that a session log with a cut-short line still gives the others."""
    path = tmp_path / "sessions.jsonl"
    path.write_text(json.dumps({"start_step": 0}) + "\n" + '{"start_st')
    append_json_line(path, {"start_step": 2})
    assert [s["start_step"] for s in _read_json_lines(path)] == [0, 2]


def test_checkpoint_on_full_disk_names_file(tmp_path, monkeypatch):
    """Check that a failed write inside torch.save becomes a one-line error with
    the path and the system's reason, and leaves no file behind."""
    import errno
    import io

    class FullDisk(io.BufferedWriter):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_full(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115
        if "w" in mode and "b" in mode:
            handle.close()
            return FullDisk(io.FileIO(path, "w"))
        return handle

    monkeypatch.setattr(checkpoints, "open", open_full, raising=False)
    path = tmp_path / "step-000000003.pt"
    with pytest.raises(UserError) as caught:
        checkpoints.save_checkpoint(path, small_state())
    message = str(caught.value)
    assert str(path) in message
    assert "No space left on device" in message
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == []
