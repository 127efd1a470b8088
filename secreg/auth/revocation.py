"""Refresh-token revocation: one token (`POST /auth/revoke`, RFC 7009) or every token a user holds
(`secreg user revoke`, and `user passwd` / `user del` / the UI's password change and deletion).

A refresh token is a signed JWT that lives `auth.token.refreshexpiration` seconds (30 days by default) and
is checked without any lookup; revoking one means remembering, until it would have expired anyway, either its
`jti` or a per-user cutoff ("every token of this user issued at or before T"). Besides this list, a refresh
token carries a fingerprint of the user's password hash (`UserStore.fingerprint`), so a password change
revokes it wherever the changed `htpasswd` is read; the list is what makes a revocation immediate on every
replica, and what revokes without a password change.

Where the list lives:
- `redis.addr` set (replicas): in Redis, one key per revoked token (`secreg:revoked:token:<jti>`, expiring with
  the token) and one per user cutoff (`secreg:revoked:user:<name>`, expiring after the longest lifetime a
  token issued before it can have). Every token server of every replica asks it on each refresh grant.
- alone: `refresh-revocations.json` in the auth directory, written under its lock and re-read when it
  changes, so every worker process (and `secreg user revoke` from a shell) shares it; pruned as entries expire.

**Fail closed.** When Redis cannot be asked, a refresh grant is refused with 503 (`temporarily_unavailable`)
rather than granted: a revoked token must never work again because the store that remembers the revocation
is down (an attacker holding a stolen token would only have to wait for, or cause, an outage). Password
logins do not depend on the list and keep working; a revocation that cannot be recorded is an error the
caller sees (the CLI exits non-zero, the endpoint answers 503), never a silent success. The login rate limit
(`ratelimit_redis`) falls back to counting locally instead: there, failing open per replica is still a limit.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from secreg.auth.watched import WatchedFile, read_locked_edit
from secreg.config import AuthSettings, RedisSettings

__all__ = [
    "LOCAL_FILE",
    "LocalRevocations",
    "RevocationUnavailable",
    "Revocations",
    "revocations_from_settings",
]

log = logging.getLogger("secreg.auth")
LOCAL_FILE = "refresh-revocations.json"
PREFIX = "secreg:revoked:"
# Kept a little past a token's expiry: verification allows this much clock skew (tokens.LEEWAY).
SLACK = 60


class RevocationUnavailable(Exception):
    """The revocation list cannot be read or written right now: refuse the refresh, fail the revocation."""


class Revocations(Protocol):
    def revoke_token(self, token_id: str, expires_at: float) -> None:
        """Revoke one refresh token (its `jti`) until it expires."""

    def revoke_user(self, subject: str) -> None:
        """Revoke every refresh token of `subject` issued up to now."""

    def revoked(self, subject: str, token_id: str, issued_at: float) -> bool:
        """Whether this refresh token is revoked; RevocationUnavailable when that cannot be known."""

    def generation(self) -> object | None:
        """An object that is replaced whenever the list changes (compare by identity), or None when that cannot
        be known without asking a server (`secreg.auth.reuse` then issues every token fresh)."""


def revocations_from_settings(auth: AuthSettings, store: RedisSettings | None) -> Revocations:
    """In Redis when `redis.addr` is set, else the file in the auth directory."""
    lifetime = auth.token.refresh_expiration
    if store is not None:  # redis is imported only then: ~10 MiB of every worker's memory otherwise
        from secreg.auth.redisclient import redis_client
        from secreg.auth.revocation_redis import RedisRevocations

        return RedisRevocations(redis_client(store), lifetime)
    return LocalRevocations(auth.directory / LOCAL_FILE, lifetime)


class LocalRevocations:
    """The list in one JSON file: {"tokens": {jti: expires_at}, "users": {name: cutoff}}."""

    def __init__(self, path: Path, lifetime: int, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.lifetime = lifetime
        self._clock = clock
        self._file = WatchedFile(path, _parse)

    def _edit(self, change: Callable[[dict[str, dict[str, float]]], None]) -> None:
        now = self._clock()

        def edit(old: bytes) -> tuple[bytes, None]:
            current = _parse(old or None)
            state = {
                "tokens": {jti: at for jti, at in current["tokens"].items() if at + SLACK > now},
                "users": {user: at for user, at in current["users"].items()
                          if at + self.lifetime + SLACK > now},
            }
            change(state)
            return json.dumps(state, sort_keys=True).encode(), None

        try:
            read_locked_edit(self.path, edit)
        except OSError as exc:
            raise RevocationUnavailable(f"cannot write {self.path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise RevocationUnavailable(f"{self.path}: {exc}") from None
        self._file.invalidate()

    def revoke_token(self, token_id: str, expires_at: float) -> None:
        if expires_at + SLACK > self._clock():
            self._edit(lambda state: state["tokens"].__setitem__(token_id, expires_at))

    def revoke_user(self, subject: str) -> None:
        now = self._clock()
        self._edit(lambda state: state["users"].__setitem__(subject, now))

    def generation(self) -> object | None:
        return self._file.get()  # parsed anew whenever the file changes (a stat per call)

    def revoked(self, subject: str, token_id: str, issued_at: float) -> bool:
        state = self._file.get()
        return token_id in state["tokens"] or issued_at <= state["users"].get(subject, -math.inf)


def _parse(data: bytes | None) -> dict[str, dict[str, float]]:
    if not data:
        return {"tokens": {}, "users": {}}
    value = json.loads(data)  # a broken file: WatchedFile keeps the last good list (ValueError)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return {part: {str(k): float(v) for k, v in (value.get(part) or {}).items() if isinstance(v, (int, float))}
            for part in ("tokens", "users")}
