"""The connection counts of all worker processes of one `secreg serve`, in one shared memory-mapped file.

nginx's `limit_conn` keeps its counters in a shared memory zone under a mutex; this is the same for Hypercorn
workers that each accept from their own SO_REUSEPORT socket (the kernel spreads a client's connections over the
workers by a hash of its address and port, so a per-process count would multiply every cap by the number of
workers).

Layout (little-endian u32 words): a header (magic, workers, capacity, a 16-byte secret), one total per worker,
then an open-addressing hash table (linear probing, backward-shift deletion) of `capacity` entries. An entry is
a client address's 16-byte keyed BLAKE2b digest, a used word and one live-connection count per worker. Keys are
keyed with the file's random secret, so nobody can pick addresses that pile up in one probe run.

Every read and write happens under an exclusive `flock` of the file (a few microseconds, once when a connection
is admitted and once when it ends; nothing per request). Each worker changes only its own column, so a worker
that starts (again) zeroes its column: a crashed worker's connections died with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_MAGIC = 0x53_43_54_31  # "SCT1"
_HEADER_WORDS = 8  # magic, workers, capacity, reserved, secret (4 words)


class TableFull(Exception):
    """More distinct clients than the table was sized for (it holds twice the connection cap)."""


def capacity_for(total: int) -> int:
    """A power of two with room for `total` clients (one connection each) at a load of at most one half."""
    capacity = 64
    while capacity < 2 * (total + 64):
        capacity *= 2
    return capacity


class SharedCounts:
    """Connection counts by client address and by worker, shared by `workers` processes through `path`.
    `index` is this process's worker number (0 .. workers-1)."""

    def __init__(self, path: Path, workers: int, capacity: int, index: int) -> None:
        if not 0 <= index < workers or capacity & (capacity - 1):
            raise ValueError("index must be below workers and capacity a power of two")
        self.workers = workers
        self.capacity = capacity
        self.index = index
        self._mask = capacity - 1
        self._entry_words = 5 + workers
        self._totals = _HEADER_WORDS
        self._entries = _HEADER_WORDS + workers
        size = 4 * (self._entries + capacity * self._entry_words)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                fresh = os.fstat(self._fd).st_size == 0
                if fresh:
                    os.ftruncate(self._fd, size)
                elif os.fstat(self._fd).st_size != size:
                    raise ValueError(f"{path}: laid out for other settings")
                self._map = mmap.mmap(self._fd, size)
                self._words = memoryview(self._map).cast("I")
                if fresh:
                    self._words[0:3] = memoryview(bytearray(
                        _MAGIC.to_bytes(4, "little") + workers.to_bytes(4, "little")
                        + capacity.to_bytes(4, "little"))).cast("I")
                    self._map[16:32] = secrets.token_bytes(16)
                if tuple(self._words[0:3]) != (_MAGIC, workers, capacity):
                    raise ValueError(f"{path}: laid out for other settings")
                self._secret = bytes(self._map[16:32])
                self._reset_column()
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(self._fd)
            raise

    def key(self, address: str) -> bytes:
        return hashlib.blake2b(address.encode(), digest_size=16, key=self._secret).digest()

    @contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # The methods below expect the lock held (`with table.locked():`).
    def totals(self) -> list[int]:
        """Live connections per worker."""
        return list(self._words[self._totals:self._totals + self.workers])

    def client(self, key: bytes) -> list[int]:
        """Live connections of the client `key` per worker."""
        slot = self._find(key)
        if slot is None:
            return [0] * self.workers
        base = self._base(slot) + 5
        return list(self._words[base:base + self.workers])

    def add(self, key: bytes) -> None:
        """One more connection of `key` in this worker (raises TableFull when no entry is free)."""
        slot = self._find(key)
        if slot is None:
            slot = self._insert(key)
        self._words[self._base(slot) + 5 + self.index] += 1
        self._words[self._totals + self.index] += 1

    def remove(self, key: bytes) -> None:
        """One connection of `key` in this worker fewer."""
        slot = self._find(key)
        if slot is None:
            return
        column = self._base(slot) + 5 + self.index
        if self._words[column] == 0:
            return
        self._words[column] -= 1
        if self._words[self._totals + self.index] > 0:
            self._words[self._totals + self.index] -= 1
        counts = self._base(slot) + 5
        if not any(self._words[counts:counts + self.workers]):
            self._delete(slot)

    def close(self) -> None:
        self._words.release()
        self._map.close()
        os.close(self._fd)

    # Internals.
    def _base(self, slot: int) -> int:
        return self._entries + slot * self._entry_words

    def _home(self, key: bytes) -> int:
        return int.from_bytes(key[:8], "little") & self._mask

    def _key_at(self, slot: int) -> bytes:
        offset = 4 * self._base(slot)
        return bytes(self._map[offset:offset + 16])

    def _used(self, slot: int) -> bool:
        return bool(self._words[self._base(slot) + 4])

    def _find(self, key: bytes) -> int | None:
        slot = self._home(key)
        for _ in range(self.capacity):
            if not self._used(slot):
                return None
            if self._key_at(slot) == key:
                return slot
            slot = (slot + 1) & self._mask
        return None

    def _insert(self, key: bytes) -> int:
        slot = self._home(key)
        for _ in range(self.capacity // 2):  # a run longer than half the table: treat it as full
            if not self._used(slot):
                offset = 4 * self._base(slot)
                self._map[offset:offset + 16] = key
                self._words[self._base(slot) + 4] = 1
                return slot
            slot = (slot + 1) & self._mask
        raise TableFull(f"{self.capacity} client entries")

    def _clear(self, slot: int) -> None:
        base = self._base(slot)
        self._words[base:base + self._entry_words] = memoryview(bytearray(4 * self._entry_words)).cast("I")

    def _delete(self, slot: int) -> None:
        """Backward-shift deletion: move later entries of the probe run into the hole, so lookups never need
        tombstones."""
        hole = slot
        probe = slot
        while True:
            probe = (probe + 1) & self._mask
            if not self._used(probe):
                break
            home = self._home(self._key_at(probe))
            # The entry at `probe` may move to `hole` unless its home lies cyclically in (hole, probe].
            if (hole < probe and hole < home <= probe) or (hole > probe and (home > hole or home <= probe)):
                continue
            src, dst = self._base(probe), self._base(hole)
            self._words[dst:dst + self._entry_words] = self._words[src:src + self._entry_words]
            hole = probe
        self._clear(hole)

    def _reset_column(self) -> None:
        """Zero this worker's counts (a new process in this seat: the previous one's connections are gone)."""
        self._words[self._totals + self.index] = 0
        keep: list[tuple[bytes, list[int]]] = []
        for slot in range(self.capacity):
            if self._used(slot):
                base = self._base(slot) + 5
                counts = list(self._words[base:base + self.workers])
                counts[self.index] = 0
                if any(counts):
                    keep.append((self._key_at(slot), counts))
                self._clear(slot)
        for key, counts in keep:
            slot = self._insert(key)
            base = self._base(slot) + 5
            for worker, count in enumerate(counts):
                self._words[base + worker] = count
