"""The login rate limit shared by every replica through Redis (`redis.addr`): `RateLimiter`'s rules, kept in
Redis so a guesser spreading attempts over replicas behind a load balancer meets one count.

Each failure runs one Lua script (atomic on the server, on the server's clock): the key's recent failures are a
sorted set of timestamps trimmed to the window, and a lockout is a key that expires by itself. When Redis
cannot be reached the replica falls back to counting in memory (logged), so logins keep working and are still
limited, per replica, until Redis is back.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

import redis

from secreg.auth.ratelimit import RateLimiter
from secreg.auth.redisclient import redis_client
from secreg.config import RateLimitSettings, RedisSettings

log = logging.getLogger("secreg.auth.ratelimit")
PREFIX = "secreg:login:"

_FAILURE = """
local window, lockout = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS, 2 do
  local failures, locked = KEYS[i], KEYS[i + 1]
  redis.call('ZADD', failures, now, ARGV[3] .. i)
  redis.call('ZREMRANGEBYSCORE', failures, '-inf', now - window)
  redis.call('PEXPIRE', failures, math.ceil(window * 1000))
  if redis.call('ZCARD', failures) >= tonumber(ARGV[3 + (i + 1) / 2]) then
    redis.call('SET', locked, '1', 'PX', math.ceil(lockout * 1000))
    redis.call('DEL', failures)
  end
end
return 0
"""


class RedisRateLimiter:
    def __init__(self, client: Any, attempts: int, window: float, lockout: float,
                 factors: Mapping[str, int] | None = None) -> None:
        """`factors` multiply `attempts` for keys by their prefix, as in `RateLimiter`."""
        self.attempts, self.window, self.lockout = attempts, window, lockout
        self.factors = dict(factors or {})
        self._client = client
        self._failure = client.register_script(_FAILURE)
        self._fallback = RateLimiter(attempts, window, lockout, factors=self.factors)

    @classmethod
    def from_settings(cls, limits: RateLimitSettings, store: RedisSettings,
                      factors: Mapping[str, int] | None = None) -> RedisRateLimiter:
        # One quick retry, then the local fallback: a login must not wait seconds on an absent Redis.
        return cls(redis_client(store), limits.attempts, limits.window, limits.lockout, factors)

    @staticmethod
    def _keys(key: str) -> tuple[str, str]:
        return f"{PREFIX}failures:{key}", f"{PREFIX}locked:{key}"

    def retry_after(self, *keys: str) -> int:
        if not keys:
            return 0
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.pttl(self._keys(key)[1])
            waits = [int(ms) for ms in pipe.execute()]
        except redis.RedisError as exc:
            log.warning("login rate limit: Redis unavailable (%s); counting on this replica only", exc)
            return self._fallback.retry_after(*keys)
        wait = max((ms for ms in waits if ms > 0), default=0)
        return max(self._fallback.retry_after(*keys), math.ceil(wait / 1000))

    def failure(self, *keys: str) -> int:
        names = [name for key in keys for name in self._keys(key)]
        try:
            thresholds = [self.attempts * self.factors.get(key.partition(":")[0], 1) for key in keys]
            self._failure(keys=names, args=[self.window, self.lockout, uuid.uuid4().hex, *thresholds])
        except redis.RedisError as exc:
            log.warning("login rate limit: Redis unavailable (%s); counting on this replica only", exc)
            self._fallback.failure(*keys)
        return self.retry_after(*keys)

    def success(self, *keys: str) -> None:
        self._fallback.success(*keys)
        try:
            for key in keys:
                failures, locked = self._keys(key)
                if not self._client.exists(locked):
                    self._client.delete(failures)
        except redis.RedisError as exc:
            log.warning("login rate limit: Redis unavailable (%s)", exc)
