"""Returning freed memory to the operating system (Linux with glibc only)."""

from __future__ import annotations

import sys

import pytest

from benchmark import memory


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line in /proc/self/status")


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or memory._malloc_trim() is None,
    reason="needs Linux with glibc's malloc_trim",
)


@needs_glibc
def test_release_returns_freed_heap():
    """Check that 190 MiB of freed heap blocks leave the resident size.

    Blocks of 64 KiB lie below glibc's mmap threshold, so they come from the
    heap. The last one stays alive. The freed ones are then not the heap's
    top, and plain `free` keeps them resident.
    """
    blocks = [bytearray(b"x" * (64 * 1024)) for _ in range(3000)]
    del blocks[:-1]
    before = _resident_mib()
    assert memory.release_free_memory() is True
    after = _resident_mib()
    assert before - after > 100, f"resident {before:.0f} MiB -> {after:.0f} MiB"
    assert len(blocks[0]) == 64 * 1024


def test_release_without_malloc_trim_only_collects(monkeypatch):
    """Check that release returns False, without raising, when malloc_trim is missing."""
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert memory.release_free_memory() is False
