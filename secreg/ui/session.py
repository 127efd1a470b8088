"""UI sessions: a signed cookie, so any worker process (or replica sharing the auth directory) can check it.

The cookie holds base64url(JSON {s: subject, n: nonce, i: issued, e: expiry, f: password fingerprint}) and
an HMAC-SHA256 of it under a 32-byte secret kept in the auth directory (`ui-session.key`, 0600, created
once). A session lasts `ui.session.lifetime` seconds and is renewed while used; it ends early when its
user's password changes or the user is deleted (the fingerprint no longer matches), and when the user logs
out: `ui-logouts.json` beside the key records when, and every session of that user issued before is void
(a copied cookie included), in every worker within a second. Visitors who are not logged in
get an anonymous session too: its nonce is what their CSRF token is derived from, login form included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from secreg.auth.watched import WatchedFile, read_locked_edit

__all__ = ["COOKIE", "LOGOUT_FILE", "SECRET_FILE", "SECURE_COOKIE", "Logouts", "Session", "SessionSigner",
           "load_secret"]

COOKIE = "secreg_session"
# Over HTTPS the cookie carries the __Host- prefix: browsers then accept it only with Secure, Path=/ and no
# Domain, so no other host or path (a sibling subdomain, a plain-HTTP page) can set or shadow it.
SECURE_COOKIE = f"__Host-{COOKIE}"
SECRET_FILE = "ui-session.key"
LOGOUT_FILE = "ui-logouts.json"
_SECRET_BYTES = 32


def load_secret(path: Path) -> bytes:
    """The signing secret at `path`, created (0600) if missing. Workers starting together agree: the file
    is written under a temporary name and linked into place, which fails if another process won."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temp)
        data = path.read_bytes()
    if len(data) < _SECRET_BYTES:
        raise ValueError(f"{path}: the UI session secret is shorter than {_SECRET_BYTES} bytes; delete it to "
                         "have a new one made (everyone is logged out)")
    return data


@dataclass(frozen=True)
class Session:
    subject: str  # "" = not logged in
    nonce: str
    expires: float
    fingerprint: str
    issued: float = 0.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, secret: bytes, lifetime: int, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"secreg ui session\0" + secret).digest()
        self._csrf_key = hashlib.sha256(b"secreg ui csrf\0" + secret).digest()
        self.lifetime = lifetime
        self._clock = clock

    def new(self, subject: str = "", fingerprint: str = "") -> Session:
        """A fresh session (a new nonce, so a login never keeps the CSRF token of the visit before it)."""
        now = self._clock()
        return Session(subject, secrets.token_urlsafe(16), now + self.lifetime, fingerprint, now)

    def renewed(self, session: Session) -> Session | None:
        """The same session with a later expiry, once half its lifetime has passed; None if not due yet."""
        if session.expires - self._clock() > self.lifetime / 2:
            return None
        return Session(session.subject, session.nonce, self._clock() + self.lifetime, session.fingerprint,
                       session.issued)

    def encode(self, session: Session) -> str:
        payload = json.dumps(
            {"s": session.subject, "n": session.nonce, "i": round(session.issued, 3), "e": int(session.expires),
             "f": session.fingerprint},
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        return f"{body}.{_b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())}"

    def decode(self, value: str | None) -> Session | None:
        """The session in a cookie value, or None if it is missing, forged, malformed or expired."""
        if not value or len(value) > 1024:
            return None
        body, _, signature = value.partition(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(str(data["s"]), str(data["n"]), float(data["e"]), str(data["f"]), float(data["i"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        return session if session.expires > self._clock() else None

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.nonce.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())


class Logouts:
    """When each user last logged out: that user's sessions issued earlier are void. One small JSON file in
    the auth directory, written under its lock (`read_locked_edit`) and re-read when it changes."""

    def __init__(self, path: Path, lifetime: int, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.lifetime = lifetime
        self._clock = clock
        self._file = WatchedFile(path, _parse_logouts)

    def record(self, subject: str) -> None:
        now = self._clock()

        def edit(old: bytes) -> tuple[bytes, None]:
            times = _parse_logouts(old or None)
            # Entries older than a session's lifetime void nothing any more.
            kept = {user: at for user, at in times.items() if at > now - self.lifetime}
            kept[subject] = now
            return json.dumps(kept, sort_keys=True).encode(), None

        read_locked_edit(self.path, edit)
        self._file.invalidate()

    def voids(self, session: Session) -> bool:
        return bool(session.subject) and session.issued <= self._file.get().get(session.subject, float("-inf"))


def _parse_logouts(data: bytes | None) -> dict[str, float]:
    try:
        value = json.loads(data) if data else {}
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}
