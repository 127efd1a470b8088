"""Users: an Apache htpasswd file of bcrypt (`$2y$`) hashes, interchangeable with `htpasswd -B`.

The file is the only state. The registry re-reads it as soon as it changes (every check stats it),
so `secreg user add` or `htpasswd -B auth/htpasswd bob` take effect without a restart. Every write is
made under an `flock` on a sidecar lock file, to a temporary file that is fsynced and then renamed over
the original, mode 0600: a reader sees the old file or the new one, never half of one.

Only bcrypt entries can log in (as in the reference registry); other htpasswd formats (`$apr1$` MD5,
`{SHA}`, plain text) are logged and refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio.to_thread

from secreg.auth.watched import WatchedFile, read_locked_edit

__all__ = [
    "BCRYPT_ROUNDS",
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD_LENGTH",
    "UserStore",
    "validate_password",
    "validate_user_name",
]

if TYPE_CHECKING:
    from passlib.apache import HtpasswdFile

log = logging.getLogger("secreg.auth")

BCRYPT_ROUNDS = 12
CACHE_SECONDS = 60.0  # how long a verified password is remembered (VerifiedCache)
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; Apache's htpasswd silently truncates there
MIN_PASSWORD_LENGTH = 8

_USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
# Words the policy file gives a meaning of their own.
RESERVED_NAMES = frozenset({"anonymous"})

# Salt and checksum of a bcrypt hash of a password nobody knows. Verifying against it with the file's
# usual cost takes as long as a real check, so a wrong user name answers no faster than a wrong password.
_DUMMY_TAIL = "OtvhXcg4svBiCSRY17Uk3enDG/8Hehbn64p.3h6X9swJKQ/SHjLNG"
_BCRYPT_COST = re.compile(r"^\$2[abxy]?\$([0-9][0-9])\$")

T = TypeVar("T")


def validate_user_name(name: str) -> str:
    """Return `name` if it is a valid account name, else raise ValueError saying why."""
    if not _USER_NAME.match(name):
        raise ValueError(
            f"invalid user name {name!r}: use 1-64 characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"invalid user name {name!r}: reserved by the access policy")
    return name


def validate_password(password: str) -> None:
    """Raise ValueError unless `password` can be stored: 8 characters at least, 72 UTF-8 bytes at most."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password too long: bcrypt uses at most {MAX_PASSWORD_BYTES} bytes")
    if any(c in password for c in "\x00\r\n"):
        raise ValueError("password must not contain NUL or line breaks")


@dataclass(frozen=True)
class _Htpasswd:
    hashes: Mapping[str, str]
    cost: int  # the most common bcrypt cost in the file: the dummy check runs at this cost


def _htpasswd(data: bytes) -> HtpasswdFile:
    # passlib (with bcrypt) is imported when a password file is first read: the web UI imports this module, and
    # with auth off it never reads one (a spawned worker idles at 39.0 MiB instead of 42.5).
    from passlib.apache import HtpasswdFile

    return HtpasswdFile.from_string(data)


def _parse_htpasswd(path: Path) -> Callable[[bytes | None], _Htpasswd]:
    def parse(data: bytes | None) -> _Htpasswd:
        if not data:
            return _Htpasswd({}, BCRYPT_ROUNDS)
        records = _htpasswd(data)
        hashes = {str(user): records.get_hash(user).decode("ascii", "replace") for user in records.users()}
        costs = Counter(int(m.group(1)) for h in hashes.values() if (m := _BCRYPT_COST.match(h)))
        others = sorted(user for user, h in hashes.items() if not _BCRYPT_COST.match(h))
        if others:
            log.warning("%s: not bcrypt, cannot log in (use htpasswd -B): %s", path, ", ".join(others))
        cost = costs.most_common(1)[0][0] if costs else BCRYPT_ROUNDS
        return _Htpasswd(hashes, cost)

    return parse


class VerifiedCache:
    """Credentials bcrypt accepted in the last `seconds`, as Apache's mod_authn_socache keeps them: keyed by the
    user and an HMAC of the password under a key that lives only in this process's memory (neither the password
    nor a hash an attacker could test guesses against is kept), and tied to the parsed htpasswd it was checked
    against, so a changed password, a deleted user or any rewrite of the file drops it. Only successes are kept:
    a wrong password always costs a full bcrypt check and counts against the rate limit."""

    def __init__(self, seconds: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._max = max_entries
        self._clock = clock
        self._key = os.urandom(32)
        self._snapshot: object = None
        self._entries: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self._lock = threading.Lock()

    def identify(self, user: str, password: str) -> tuple[str, bytes]:
        """The user and an HMAC of the password under this process's key (no password is kept)."""
        return self._id(user, password)

    def _id(self, user: str, password: str) -> tuple[str, bytes]:
        secret = password.encode("utf-8", "surrogatepass")[:MAX_PASSWORD_BYTES]
        return user, hmac.new(self._key, secret, hashlib.sha256).digest()

    def hit(self, snapshot: object, user: str, password: str) -> bool:
        if self.seconds <= 0:
            return False
        key = self._id(user, password)
        with self._lock:
            if snapshot is not self._snapshot:
                self._entries.clear()
                self._snapshot = snapshot
                return False
            until = self._entries.get(key)
            if until is None:
                return False
            if until <= self._clock():
                del self._entries[key]
                return False
            return True

    def remember(self, snapshot: object, user: str, password: str) -> None:
        if self.seconds <= 0:
            return
        key = self._id(user, password)
        with self._lock:
            if snapshot is not self._snapshot:
                self._entries.clear()
                self._snapshot = snapshot
            self._entries[key] = self._clock() + self.seconds
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class UserStore:
    """Accounts and their bcrypt hashes in one htpasswd file."""

    def __init__(self, path: Path, *, rounds: int = BCRYPT_ROUNDS, check_interval: float = 0.0,
                 cache_seconds: float = CACHE_SECONDS) -> None:
        from passlib.context import CryptContext

        self.path = Path(path)
        self._context = CryptContext(
            schemes=["bcrypt"], default="bcrypt", bcrypt__ident="2y", bcrypt__rounds=rounds
        )
        self._file = WatchedFile(self.path, _parse_htpasswd(self.path), check_interval)
        self._cache = VerifiedCache(cache_seconds)
        self._checks: dict[tuple[object, int, tuple[str, bytes]], asyncio.Future[bool]] = {}

    def users(self) -> list[str]:
        return sorted(self._file.get().hashes)

    def __contains__(self, user: object) -> bool:
        return user in self._file.get().hashes

    def fingerprint(self, user: str) -> str | None:
        """A short digest of the user's current hash: changes when the password does (refresh tokens)."""
        stored = self._file.get().hashes.get(user)
        return None if stored is None else hashlib.sha256(stored.encode()).hexdigest()[:16]

    def verify(self, user: str, password: str) -> bool:
        """Check a password. Slow on purpose (bcrypt) unless recently verified: call `verify_async` from the
        event loop."""
        return self._verify(self._file.get(), user, password)

    def _verify(self, snapshot: _Htpasswd, user: str, password: str) -> bool:
        if self._cache.hit(snapshot, user, password):
            return True
        if self._check(snapshot, user, password):
            self._cache.remember(snapshot, user, password)
            return True
        return False

    def _check(self, snapshot: _Htpasswd, user: str, password: str) -> bool:
        stored = snapshot.hashes.get(user)
        try:
            secret = password.encode("utf-8")[:MAX_PASSWORD_BYTES]
        except UnicodeEncodeError:
            secret = b""
            stored = None
        if stored is None or not _BCRYPT_COST.match(stored):
            self._context.verify(b"not the password", f"$2y${snapshot.cost:02d}${_DUMMY_TAIL}")
            return False
        try:
            return bool(self._context.verify(secret, stored))
        except ValueError:  # a malformed hash, or NUL in the password
            return False

    async def verify_async(self, user: str, password: str) -> bool:
        """`verify`, with bcrypt on a worker thread: it must never block the event loop.

        Concurrent checks of the same credentials against the same file share one bcrypt run: a client with
        32 connections whose cached verification just expired would otherwise start 32 at once (seconds of
        CPU time, requests timing out). A check never joins one begun against an older file."""
        snapshot = self._file.get()
        if self._cache.hit(snapshot, user, password):
            return True
        key = (asyncio.get_running_loop(), id(snapshot), self._cache.identify(user, password))
        task = self._checks.get(key)
        if task is None:
            # The task holds `snapshot`, so its id is not reused while the key exists.
            task = asyncio.ensure_future(anyio.to_thread.run_sync(self._verify, snapshot, user, password))
            self._checks[key] = task
            task.add_done_callback(lambda _: self._checks.pop(key, None))
        return await asyncio.shield(task)  # a caller that goes away leaves the check to the others

    def add(self, user: str, password: str, *, only_if_empty: bool = False) -> bool:
        """Create `user`; False (and no change) if it exists, or with `only_if_empty` if any user exists."""
        validate_user_name(user)
        validate_password(password)
        new_hash = self._context.hash(password)  # outside the lock: bcrypt takes a while

        def edit(old: bytes) -> tuple[bytes, bool]:
            records = _htpasswd(old)
            if records.get_hash(user) is not None or (only_if_empty and records.users()):
                return old, False
            records.set_hash(user, new_hash)
            return records.to_string(), True

        return self._write(edit)

    def set_password(self, user: str, password: str) -> bool:
        """Change an existing user's password; False if there is no such user."""
        validate_password(password)
        new_hash = self._context.hash(password)

        def edit(old: bytes) -> tuple[bytes, bool]:
            records = _htpasswd(old)
            if records.get_hash(user) is None:
                return old, False
            records.set_hash(user, new_hash)
            return records.to_string(), True

        return self._write(edit)

    def delete(self, user: str) -> bool:
        """Remove the user; False if there was no such user."""

        def edit(old: bytes) -> tuple[bytes, bool]:
            records = _htpasswd(old)
            removed = records.delete(user)
            return records.to_string(), removed

        return self._write(edit)

    def _write(self, edit: Callable[[bytes], tuple[bytes, bool]]) -> bool:
        changed = read_locked_edit(self.path, edit)
        self._file.invalidate()
        return changed
