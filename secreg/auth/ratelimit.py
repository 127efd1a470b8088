"""Failed-login throttling: after `attempts` failures within `window` seconds a key is locked out for
`lockout` seconds. The token server keys it by account (`user:NAME`) and by client address
(`addr:IP`), so neither guessing one account's password from many addresses nor trying many accounts
from one address gets far. State is in memory, per process.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from secreg.config import RateLimitSettings

__all__ = ["RateLimiter"]


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
    ) -> None:
        if attempts < 1 or window <= 0 or lockout <= 0:
            raise ValueError("attempts, window and lockout must be positive")
        self.attempts = attempts
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
                if len(entry.failures) >= self.attempts:
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
