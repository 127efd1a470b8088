"""Failed-login throttling: after `attempts` failures within `window` seconds a key is locked out for
`lockout` seconds; `factors` multiply `attempts` for keys by their prefix. Logins (`secreg.auth.login`) count
each failure three times: against the account from that address (`pair:NAME@IP`, `attempts`), the address
(`addr:IP`, 4x: an office behind one NAT address shares it) and the account from anywhere (`user:NAME`, 10x:
the ceiling against guessing from many addresses). So a stranger's wrong guesses do not lock the owner out
from another address, nor everyone behind the stranger's address, while guessing still gets nowhere fast.

With one worker process the state is in memory (`RateLimiter`). With several, every worker must count the same
failures (connections are spread over them, so a per-process count would multiply the limit by the number of
workers): `secreg serve` then creates a directory the workers share (`secreg.workers`) and the same rules run
on one SQLite file in it (`SharedRateLimiter`). `limiter_from_settings` picks the right one.
"""

from __future__ import annotations

import fcntl
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from secreg import workers
from secreg.config import RateLimitSettings, RedisSettings

__all__ = ["LoginLimiter", "RateLimiter", "SharedRateLimiter", "limiter_from_settings"]
SHARED_FILE = "ratelimit.sqlite"


class LoginLimiter(Protocol):
    def retry_after(self, *keys: str) -> int: ...
    def failure(self, *keys: str) -> int: ...
    def success(self, *keys: str) -> None: ...


LOGIN_FACTORS = {"pair": 1, "addr": 4, "user": 10}


def limiter_from_settings(settings: RateLimitSettings, store: RedisSettings | None = None) -> LoginLimiter:
    """In Redis when `redis.addr` is set (replicas share it); else in memory with one worker, or on the workers'
    shared SQLite file when `secreg serve` runs several."""
    if store is not None:
        from secreg.auth.ratelimit_redis import RedisRateLimiter

        return RedisRateLimiter.from_settings(settings, store, LOGIN_FACTORS)
    shared = workers.shared_directory()
    if shared is None:
        return RateLimiter(settings.attempts, settings.window, settings.lockout, factors=LOGIN_FACTORS)
    return SharedRateLimiter(shared / SHARED_FILE, settings.attempts, settings.window, settings.lockout,
                             factors=LOGIN_FACTORS)


def _threshold(attempts: int, factors: Mapping[str, int], key: str) -> int:
    return attempts * factors.get(key.partition(":")[0], 1)


def _check_limits(attempts: int, window: float, lockout: float) -> None:
    if attempts < 1 or window <= 0 or lockout <= 0:
        raise ValueError("attempts, window and lockout must be positive")


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class RateLimiter:
    """Counts failures per key; `retry_after(*keys)` says how long a caller must still wait."""

    def __init__(
        self,
        attempts: int,
        window: float,
        lockout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        factors: Mapping[str, int] | None = None,
    ) -> None:
        _check_limits(attempts, window, lockout)
        self.attempts = attempts
        self.factors = dict(factors or {})
        self.window = window
        self.lockout = lockout
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimiter:
        return cls(settings.attempts, settings.window, settings.lockout)

    def retry_after(self, *keys: str) -> int:
        """Whole seconds until every key is unlocked; 0 when none is locked."""
        now = self._clock()
        with self._lock:
            wait = max((e.locked_until - now for k in keys if (e := self._entries.get(k))), default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    def failure(self, *keys: str) -> int:
        """Record one failure against each key; returns `retry_after` afterwards."""
        now = self._clock()
        with self._lock:
            if len(self._entries) >= self._max_keys:
                self._prune(now)
            for key in keys:
                entry = self._entries.setdefault(key, _Entry())
                entry.failures.append(now)
                while entry.failures and entry.failures[0] <= now - self.window:
                    entry.failures.popleft()
                if len(entry.failures) >= _threshold(self.attempts, self.factors, key):
                    entry.locked_until = now + self.lockout
                    entry.failures.clear()
        return self.retry_after(*keys)

    def success(self, *keys: str) -> None:
        """Forget the failures of `keys` (a correct password clears its account, not its address)."""
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is not None and entry.locked_until <= self._clock():
                    del self._entries[key]

    def _prune(self, now: float) -> None:
        stale = [
            k
            for k, e in self._entries.items()
            if e.locked_until <= now and (not e.failures or e.failures[-1] <= now - self.window)
        ]
        for key in stale:
            del self._entries[key]
        # Still full (an attack from very many addresses): drop the oldest keys rather than grow forever.
        excess = len(self._entries) - self._max_keys // 2
        if excess > 0:
            for key in list(self._entries)[:excess]:
                del self._entries[key]


class SharedRateLimiter:
    """`RateLimiter`'s rules on one SQLite file that every worker process opens (WAL, no fsync: the state only
    has to outlive a request, not a crash). Each failure is one short write transaction; the file keeps at
    most `max_rows` recent failures."""

    def __init__(
        self,
        path: Path,
        attempts: int,
        window: float,
        lockout: float,
        *,
        clock: Callable[[], float] = time.time,  # one clock for every process
        max_rows: int = 100_000,
        factors: Mapping[str, int] | None = None,
    ) -> None:
        _check_limits(attempts, window, lockout)
        self.path = path
        self.attempts = attempts
        self.factors = dict(factors or {})
        self.window = window
        self.lockout = lockout
        self._clock = clock
        self._max_rows = max_rows
        self._local = threading.local()  # sqlite3 connections stay in their thread
        self._db()  # create the tables now: a bad path fails at start-up, not at the first login

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # Workers start together, and switching a new file to WAL while another process does the same
            # fails at once ("database is locked", no busy wait): set the file up under an exclusive lock.
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                db.execute("CREATE TABLE IF NOT EXISTS failures (key TEXT NOT NULL, at REAL NOT NULL)")
                db.execute("CREATE INDEX IF NOT EXISTS failures_by_key ON failures (key)")
                db.execute("CREATE INDEX IF NOT EXISTS failures_by_time ON failures (at)")
                db.execute("CREATE TABLE IF NOT EXISTS lockouts (key TEXT PRIMARY KEY, until REAL NOT NULL)")
            self._local.db = db
        return db

    def retry_after(self, *keys: str) -> int:
        if not keys:
            return 0
        marks = ",".join("?" * len(keys))
        row = self._db().execute(f"SELECT max(until) FROM lockouts WHERE key IN ({marks})", keys).fetchone()
        wait = (row[0] or 0.0) - self._clock()
        return math.ceil(wait) if wait > 0 else 0

    def failure(self, *keys: str) -> int:
        now = self._clock()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM failures WHERE at <= ?", (now - self.window,))
            db.execute("DELETE FROM lockouts WHERE until <= ?", (now,))
            for key in keys:
                db.execute("INSERT INTO failures (key, at) VALUES (?, ?)", (key, now))
                (count,) = db.execute("SELECT count(*) FROM failures WHERE key = ?", (key,)).fetchone()
                if count >= _threshold(self.attempts, self.factors, key):
                    db.execute("INSERT OR REPLACE INTO lockouts (key, until) VALUES (?, ?)", (key, now + self.lockout))
                    db.execute("DELETE FROM failures WHERE key = ?", (key,))
            # An attack from very many addresses: keep the newest rows rather than grow forever.
            db.execute("DELETE FROM failures WHERE rowid <= (SELECT max(rowid) FROM failures) - ?", (self._max_rows,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.retry_after(*keys)

    def success(self, *keys: str) -> None:
        now = self._clock()
        db = self._db()
        for key in keys:
            db.execute(
                "DELETE FROM failures WHERE key = ? AND NOT EXISTS "
                "(SELECT 1 FROM lockouts WHERE key = ? AND until > ?)",
                (key, key, now),
            )
