"""glibc malloc settings for a server that moves big buffers through many threads.

A blob push through an object store allocates socket reads on the event loop and a part buffer
(`storage.s3.chunksize`, 10 MiB) in the upload's writer thread; driver calls run in pool threads. With glibc's
defaults the process keeps what it once used. Measured with `python -m bench.s3_rss` (a 1 GiB push on a fresh
server, then after 2 x 4 parallel 64 MiB pushes and pulls, then after as many again): peaks of 117 / 233 /
249 MiB on Swift and 116 / 211 / 267 MiB on moto, the memory staying after each push. Two causes:

- the mmap threshold is dynamic: once a 10 MiB buffer obtained by mmap is freed, glibc raises the threshold to
  10 MiB (and the trim threshold to 20 MiB), so every later part buffer comes from a heap whose freed pages
  stay in the process;
- every thread that allocates may get its own arena (up to 8 per core), and each keeps such freed buffers
  (smaps after load: ~130 MiB in anonymous ~8 MiB arena heaps).

`tune` fixes the mmap threshold at 4 MiB (part buffers are mapped when allocated and unmapped when freed, never
retained; setting it also turns the dynamic adjustment off) and caps the arenas at 2. Each alone brought the
after-load peaks on moto to ~125-137 MiB. 4 MiB rather than lower: blob reads from the bucket come in 1 MiB
pieces, and a freshly mapped block costs a page fault per 4 KiB (~0.6 s of CPU per GiB here), which a 10 MiB
part buffer pays once per upload request (~6 ms) but a 1 MiB read would pay on every read. Settings given in
the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) win: `tune` leaves those alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "trim", "tune"]

MMAP_THRESHOLD = 4 * 1024 * 1024
ARENA_MAX = 2
_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_M_ARENA_MAX = -8

log = logging.getLogger("secreg.serve")
_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (musl, macOS): its allocator's defaults stand
            return None
        _libc = libc
    return _libc


def tune() -> bool:
    """Called once per server process before it serves. False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and ok
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = bool(libc.mallopt(_M_ARENA_MAX, ARENA_MAX)) and ok
    if not ok:
        log.warning("mallopt refused a setting: memory use after load may be higher")
    return ok


def trim() -> None:
    """Hand freed heap pages back to the system (glibc `malloc_trim(0)`, which also releases free pages in the
    middle of a heap, not only at its top); a no-op elsewhere. ~0.1 ms when there is nothing to release, ~30 ms
    to release 75 MiB of fragments (measured here); ctypes releases the GIL meanwhile."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
