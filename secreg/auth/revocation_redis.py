"""Refresh-token revocations kept in Redis (`redis.addr` set, replicas): see `secreg.auth.revocation`. A module of
its own so that a server without Redis never imports the client."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis

from secreg.auth.revocation import PREFIX, SLACK, RevocationUnavailable

__all__ = ["RedisRevocations"]

log = logging.getLogger("secreg.auth")


class RedisRevocations:
    def __init__(self, client: Any, lifetime: int, clock: Callable[[], float] = time.time) -> None:
        """`lifetime`: auth.token.refreshexpiration, how long a user cutoff must be remembered."""
        self._client = client
        self.lifetime = lifetime
        self._clock = clock

    def revoke_token(self, token_id: str, expires_at: float) -> None:
        remaining = expires_at + SLACK - self._clock()
        if remaining <= 0:
            return  # expired already: nothing left to refuse
        try:
            self._client.set(f"{PREFIX}token:{token_id}", "1", px=math.ceil(remaining * 1000))
        except redis.RedisError as exc:
            raise RevocationUnavailable(f"Redis unavailable: {exc}") from None

    def revoke_user(self, subject: str) -> None:
        try:
            self._client.set(f"{PREFIX}user:{subject}", repr(self._clock()),
                             px=(self.lifetime + SLACK) * 1000)
        except redis.RedisError as exc:
            raise RevocationUnavailable(f"Redis unavailable: {exc}") from None

    def revoked(self, subject: str, token_id: str, issued_at: float) -> bool:
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(f"{PREFIX}token:{token_id}")
            pipe.get(f"{PREFIX}user:{subject}")
            token_revoked, cutoff = pipe.execute()
        except redis.RedisError as exc:
            log.warning("refresh-token revocation: Redis unavailable (%s); refusing refresh grants", exc)
            raise RevocationUnavailable(f"Redis unavailable: {exc}") from None
        return bool(token_revoked) or (cutoff is not None and issued_at <= _float(cutoff))

    def generation(self) -> object | None:
        return None  # another replica may revoke at any moment: only Redis knows


def _float(value: bytes | str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.inf  # unreadable cutoff: every token of the user is revoked (fail closed)
