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
the environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) win: `tune` leaves those alone.

Giving pages back has a price: a page handed back and used again is a page fault (~0.6 s of CPU per GiB here).
Fixing the mmap threshold also fixes glibc's trim threshold at its 128 KiB default, so the heap's top was cut
back whenever 128 KiB at its top were free, and every upload request ended with a `malloc_trim`: a 256 MiB push
faulted in ~100 MiB (monolithic) to ~230 MiB (16 PATCHes) of fresh pages, and 0.1-0.3 s of its server CPU went
to that. Now the top of the heap is cut back only past TRIM_THRESHOLD, and `trim_soon` hands everything back
once no upload request has ended for IDLE_TRIM_SECONDS: a push's requests reuse the same pages, and what a
load leaves behind still goes back to the system a second after it.

A commit (the request that ends an upload) trims at once instead: the upload is over, so nothing of its push
would fault the pages back in, and waiting the quiet second cost memory when pushes followed each other: with
2 workers the next push often lands on the other worker, which then grows while this one still holds the last
push's ~18 MiB (the bench's 1 GiB push: idle 141.7 and peak 158.1 MiB when it came 0.6 s after the previous).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time

__all__ = ["ARENA_MAX", "IDLE_TRIM_SECONDS", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "trim", "trim_soon", "tune"]

MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024
ARENA_MAX = 2
IDLE_TRIM_SECONDS = 1.0
_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
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
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
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


class _IdleTrim:
    """`trim` IDLE_TRIM_SECONDS after the last `soon`, by one timer thread at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self.trims = 0  # how many trims ran (for tests)

    def soon(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            if self._timer is None:
                self._arm(IDLE_TRIM_SECONDS)

    def _arm(self, delay: float) -> None:
        timer = threading.Timer(delay, self._fire)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _fire(self) -> None:
        with self._lock:
            left = self._last + IDLE_TRIM_SECONDS - time.monotonic()
            if left > 0:  # a request ended since: wait for the quiet second after it
                self._arm(left)
                return
            self._timer = None
        trim()
        self.trims += 1


_idle_trim = _IdleTrim()


def trim_soon() -> None:
    """An upload request's buffers are free: `trim` once no other upload request has ended for
    IDLE_TRIM_SECONDS (see the module docstring). Never blocks."""
    _idle_trim.soon()
