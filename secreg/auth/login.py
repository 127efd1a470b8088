"""Password logins, wherever a password arrives: the token endpoint (HTTP Basic on `GET /auth/token`, the
password grant), HTTP Basic on the registry API (`curl -u`) and `docker search`. One rate limiter (see
`secreg.auth.ratelimit` for how failures are counted), one set of audit events, and bcrypt behind the
verified-credentials cache of `UserStore`, so a client that sends its password on every request costs one
bcrypt check a minute, not one per request."""

from __future__ import annotations

import base64

from secreg.auth.ratelimit import LoginLimiter
from secreg.auth.users import UserStore
from secreg.errors import ErrorCode
from secreg.observability import audit
from secreg.observability.metrics import auth_failure

__all__ = ["LoginRefused", "PasswordLogin", "parse_basic"]


class LoginRefused(Exception):
    """Bad or malformed credentials (UNAUTHORIZED) or too many failures (TOOMANYREQUESTS, `retry_after` s)."""

    def __init__(self, code: ErrorCode, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}


def parse_basic(header: str) -> tuple[str, str]:
    """(user, password) from an `Authorization: Basic` value; LoginRefused when it is not one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise LoginRefused(ErrorCode.UNAUTHORIZED, "use HTTP Basic credentials (or none) to request a token")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and a value with characters past ASCII
        raise LoginRefused(ErrorCode.UNAUTHORIZED, "malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise LoginRefused(ErrorCode.UNAUTHORIZED, "malformed Basic credentials")
    return user, password


def _wait_words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"


class PasswordLogin:
    def __init__(self, users: UserStore, limiter: LoginLimiter) -> None:
        self.users = users
        self.limiter = limiter

    async def login(self, user: str, password: str, client: str, via: str) -> str:
        """The user name once the password is right; LoginRefused otherwise."""
        keys = (f"pair:{user}@{client}", f"addr:{client}", f"user:{user}")
        wait = self.limiter.retry_after(*keys)
        if wait:
            audit.event("login.throttled", user=user, client=client, via=via, retry_after=wait)
            auth_failure("throttled")
            raise LoginRefused(
                ErrorCode.TOOMANYREQUESTS,
                f"too many failed logins; try again in {_wait_words(wait)} (Retry-After: {wait})",
                retry_after=wait,
            )
        if not await self.users.verify_async(user, password):
            self.limiter.failure(*keys)
            audit.event("login.failed", user=user, client=client, via=via, reason="incorrect password or user")
            auth_failure("bad_credentials")
            raise LoginRefused(ErrorCode.UNAUTHORIZED, "incorrect username or password")
        self.limiter.success(keys[0], keys[2])
        audit.event("login.ok", user=user, client=client, via=via)
        return user

    async def basic(self, header: str, client: str, via: str) -> str:
        user, password = parse_basic(header)
        return await self.login(user, password, client, via)
