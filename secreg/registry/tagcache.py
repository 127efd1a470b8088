"""Tag -> (digest, media type) in memory, so a manifest GET or HEAD by tag reads nothing from storage; the
same for a manifest by digest (keyed by the digest's text, which no tag can spell: the revision's media type,
and that its link exists), bumped when the revision is pushed or deleted.

Correct across the worker processes of one server: every tag write or deletion bumps a change counter after it,
in an array the workers share (a memory-mapped file in their private directory, `secreg.workers`; in memory
with one worker). A counter slot is picked by a hash of repository and tag; a cached entry remembers the slot's
value read *before* the tag was read from storage, and is used only while the slot still has that value. So a
change made by any worker is seen by every other one at its next request (two tags sharing a slot only cost a
needless re-read). Counters are bumped under a file lock (writes are rare); reads are one aligned 8-byte load.

Writers this server does not see (another replica on the same bucket, the reference registry or a tool on the
same tree) are seen after `max_age` seconds (`storage.cache.tagmaxage`, default 1; 0 turns the cache off).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from secreg.digest import Digest

SLOTS = 1 << 16
ENTRIES = 100_000  # tags kept (LRU): ~200 bytes each
SHARED_FILE = "tags.counters"


class Counters:
    """`SLOTS` change counters: in this process, or in `path` shared with the other workers."""

    def __init__(self, path: Path | None = None) -> None:
        self._fd: int | None = None
        self._lock = threading.Lock()
        if path is None:
            self._buffer: bytearray | mmap.mmap = bytearray(8 * SLOTS)
        else:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                if os.fstat(self._fd).st_size != 8 * SLOTS:
                    os.ftruncate(self._fd, 8 * SLOTS)
                self._buffer = mmap.mmap(self._fd, 8 * SLOTS)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._words = memoryview(self._buffer).cast("Q")

    @staticmethod
    def slot(name: str, tag: str) -> int:
        digest = hashlib.blake2b(f"{name}\0{tag}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & (SLOTS - 1)

    def value(self, slot: int) -> int:
        return int(self._words[slot])

    def bump(self, slot: int) -> None:
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                self._words[slot] = (self._words[slot] + 1) & 0xFFFF_FFFF_FFFF_FFFF
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Resolved:
    digest: Digest
    media_type: str


@dataclass(frozen=True)
class _Entry:
    resolved: Resolved
    stamp: int
    filled: float
    slot: int  # of (repository, tag): hashed once, when the entry is made


class TagCache:
    def __init__(self, counters: Counters, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counters = counters
        self.max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, tag: str) -> Resolved | None:
        if self.max_age <= 0:
            return None
        with self._lock:
            entry = self._entries.get((name, tag))
        if entry is None:
            return None
        if entry.stamp != self.counters.value(entry.slot) or self._clock() - entry.filled >= self.max_age:
            return None
        return entry.resolved

    def stamp(self, name: str, tag: str) -> int:
        """Read before reading the tag from storage; give it to `put` with what was read."""
        return self.counters.value(self.counters.slot(name, tag))

    def put(self, name: str, tag: str, stamp: int, resolved: Resolved) -> None:
        if self.max_age <= 0:
            return
        entry = _Entry(resolved, stamp, self._clock(), self.counters.slot(name, tag))
        with self._lock:
            self._entries[(name, tag)] = entry
            self._entries.move_to_end((name, tag))
            while len(self._entries) > ENTRIES:
                self._entries.popitem(last=False)

    def changed(self, name: str, tag: str) -> None:
        """After a write or deletion of `tag` in storage: every worker re-reads it."""
        with self._lock:
            self._entries.pop((name, tag), None)
        self.counters.bump(self.counters.slot(name, tag))


_shared: dict[Path | None, Counters] = {}
_shared_lock = threading.Lock()


def counters_for(directory: Path | None) -> Counters:
    """The counters of this server: in `directory` (the workers' shared one) or, without one, in memory. One
    object per process, so every store of a process bumps the same counters."""
    with _shared_lock:
        counters = _shared.get(directory)
        if counters is None:
            counters = _shared[directory] = Counters(directory / SHARED_FILE if directory else None)
        return counters
