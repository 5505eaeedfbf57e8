"""How many heaps glibc's allocator keeps for the server's threads (M_ARENA_MAX).

glibc gives threads their own heaps ("arenas", up to 8 per CPU) so that they need not
wait for each other's allocations. The proxy's threads take turns under one interpreter
lock anyway, and since calls' rows are written by the row writer's thread, memory one
thread allocates is freed by another: spread over many arenas, what is freed is rarely
given back, and the server's RSS crept up by about 125 bytes per call without end
(48 -> 55 MB over 64,000 calls at concurrency 1; with two arenas it levels off at 54 MB).
Two arenas keep the main thread's and one more.

Best effort: glibc only (musl has no arenas to limit, macOS no ``mallopt``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_arenas(count: int = ARENAS) -> bool:
    """Ask the C allocator for at most *count* arenas; True if it took the setting. Call
    it before the server starts threads (arenas made earlier stay)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
