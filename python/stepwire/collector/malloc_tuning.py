"""The collector's allocator, tuned so that its resident memory follows what it holds.

Worker threads decode batches of megabytes each. With glibc's defaults every thread that contends gets an arena
of its own (up to 8 per core), and blocks above the dynamic mmap threshold (which grows to 32 MiB once such a
block is freed) come from those arenas, whose freed middles are never returned: the collector's RSS drifted
130 MiB above what it held with 48 clients. Two arenas, and every block of 1 MiB or more mapped and unmapped
on its own, keep RSS within what is held (measured: 564 -> 435 MiB peak, 48 clients, 64 MiB DuckDB limit).
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def tune() -> bool:
    """Apply the settings through glibc's ``mallopt``; False where there is no such allocator (nothing done)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
