"""Handing memory that the process has freed back to the operating system.

glibc's allocator keeps freed blocks inside the process for reuse and
returns only the free top of its heap. After feature extraction, the
network's activations and the per-batch outputs are free but still count
towards the resident size. On 2 CPU cores (torch 2.14.1), 3 passes of 40
images at batch 10 left 925 MiB resident; `malloc_trim(0)` brought that to
624 MiB. The metrics that follow then start from the lower figure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """Return the C library's `malloc_trim`, or None where it has none (not glibc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Collect garbage and return the allocator's free memory to the system.

    Changes no value that the process holds. Returns False where the C
    library offers no way to do it, in which case only the garbage
    collection ran.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
