"""Reusing a just-issued access token: CI jobs, podman and containerd send their password to `GET /auth/token`
on every pull, and signing a fresh token each time (ECDSA, JSON, base64) was a third of that request's work.

A token is handed out again only to a caller who has just been checked exactly as for a fresh one (password
with the rate limiter and the verified-credentials cache, or anonymous), for the same subject and exactly the
same grant (the policy is asked on every request: a policy or group change that alters the grant alters the
key), while the user's password hash and the refresh-token revocation list are unchanged (a password change,
a deletion or `secreg user revoke` gives a fresh token), and only within `auth.token.reuse` seconds of its
issue (at most the token's lifetime less the 60 s token.md asks a token to have left). The answer keeps the
token's own `issued_at` with its full `expires_in`: token.md counts `expires_in` from `issued_at`, so
clients that follow it (docker, containerd, containers/image) see the true expiry; one that counted from the
response would overestimate it by at most the reuse window, well inside the 60 s leeway verifiers allow.

At most `max_entries` grants are kept (a token and its answer, `x5c` chain included, are ~4 KiB: ~4 MiB at most), so a
caller asking for thousands of distinct scopes pushes out only what would have been signed again anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from secreg.auth.scope import Access
from secreg.auth.tokens import MIN_LIFETIME, IssuedToken

__all__ = ["TokenReuse"]

Key = tuple[str, str | None, tuple[Access, ...]]


@dataclass(frozen=True)
class _Entry:
    issued: IssuedToken
    body: bytes  # the GET answer without a refresh token
    until: float  # handed out again before this time (the issuer's clock)
    revocations: object  # the revocation list's generation it was issued under (compared by identity)


class TokenReuse:
    def __init__(self, seconds: float, lifetime: int, *, max_entries: int = 1_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.seconds = max(0.0, min(seconds, lifetime - MIN_LIFETIME))
        self._max = max_entries
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}

    @staticmethod
    def key(subject: str, fingerprint: str | None, granted: Sequence[Access]) -> Key:
        """`fingerprint`: the user's password-hash fingerprint (None for anonymous)."""
        return subject, fingerprint, tuple(granted)

    def get(self, key: Key, revocations: object) -> tuple[IssuedToken, bytes] | None:
        """The token and answer issued for `key`, while reusable; `revocations`: the list's generation now
        (None when it cannot be known cheaply: never reuse then)."""
        if revocations is None or self.seconds <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.revocations is not revocations or self._clock() >= entry.until:
            del self._entries[key]
            return None
        return entry.issued, entry.body

    def put(self, key: Key, revocations: object, issued: IssuedToken, body: bytes) -> None:
        if revocations is None or self.seconds <= 0:
            return
        if len(self._entries) >= self._max:
            now = self._clock()
            for stale in [k for k, e in self._entries.items() if e.until <= now]:
                del self._entries[stale]
            if len(self._entries) >= self._max:
                for oldest in list(self._entries)[: self._max // 2]:
                    del self._entries[oldest]
        self._entries[key] = _Entry(issued, body, issued.issued_at.timestamp() + self.seconds, revocations)
