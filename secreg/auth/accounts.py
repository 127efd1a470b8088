"""Account changes as the CLI (`secreg user ...`) and the web UI both make them: validate, write the htpasswd
and group files through `UserStore` / `GroupStore` (atomic, locked, re-read by every worker within a second),
and record one audit event naming who made the change (`by`). Errors are `AccountError` with a message meant
for the person who asked.

A password change and a deletion also revoke the user's refresh tokens in the revocation list (when one is
given): the password fingerprint inside a token revokes it only where the changed `htpasswd` has arrived, the
list (Redis, with replicas) on every replica at once. `revoke` does that alone, without a password change.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from secreg.auth.groups import GroupStore, validate_group_name
from secreg.auth.revocation import Revocations, RevocationUnavailable
from secreg.auth.users import UserStore, validate_password, validate_user_name
from secreg.observability import audit

__all__ = ["AccountError", "Accounts", "RevocationFailed", "generate_password"]


class AccountError(ValueError):
    """A change that cannot be made: an invalid name or password, an unknown or existing user, or a revocation
    that could not be recorded (the rest of the change is made: see the message)."""


class RevocationFailed(AccountError):
    """The change was made but the revocation list could not record the revocation of the refresh tokens."""


def generate_password() -> str:
    """A random password (24 URL-safe characters) for `--generate` and the UI's "generate"."""
    return secrets.token_urlsafe(18)


def _checked(check: Callable[[str], object], value: str) -> str:
    try:
        check(value)
    except ValueError as exc:
        raise AccountError(str(exc)) from None
    return value


@dataclass
class Accounts:
    users: UserStore
    groups: GroupStore
    revocations: Revocations | None = None

    def add(self, name: str, password: str, groups: Iterable[str], *, by: str) -> None:
        name = _checked(validate_user_name, name)
        wanted = [_checked(validate_group_name, g) for g in dict.fromkeys(groups)]
        _checked(validate_password, password)
        if name in self.users:
            raise AccountError(f"user {name!r} already exists (change its password with `secreg user passwd {name}`)")
        if not self.users.add(name, password):
            raise AccountError(f"user {name!r} already exists")
        for group in wanted:
            self.groups.add(name, group)
        audit.event("user.add", user=name, groups=sorted(wanted), by=by)

    def set_password(self, name: str, password: str, *, by: str) -> None:
        name = _checked(validate_user_name, name)
        _checked(validate_password, password)
        if name not in self.users or not self.users.set_password(name, password):
            raise AccountError(f"no user {name!r} (create it with `secreg user add {name}`)")
        audit.event("user.passwd", user=name, by=by)
        self._revoke(name, by, "the password was changed")

    def revoke(self, name: str, *, by: str) -> None:
        """Revoke every refresh token (docker login) `name` holds; the password stays."""
        name = _checked(validate_user_name, name)
        if name not in self.users:
            raise AccountError(f"no user {name!r}")
        if self.revocations is None:
            raise AccountError("no revocation list here (the token server is not running in this process)")
        self._revoke(name, by, "nothing was changed")

    def _revoke(self, name: str, by: str, done: str) -> None:
        if self.revocations is None:
            return
        try:
            self.revocations.revoke_user(name)
        except RevocationUnavailable as exc:
            raise RevocationFailed(f"{done}, but revoking the refresh tokens of {name!r} failed: {exc}") from None
        audit.event("refresh.revoked", user=name, tokens="all", by=by)

    def delete(self, name: str, *, by: str) -> frozenset[str]:
        """Remove the user and its group memberships; returns the groups it was in."""
        if not self.users.delete(name):
            raise AccountError(f"no user {name!r}")
        left = self.groups.remove_user(name)
        audit.event("user.delete", user=name, groups=sorted(left), by=by)
        self._revoke(name, by, "the user was deleted")
        return left

    def change_groups(self, name: str, add: Iterable[str], remove: Iterable[str], *, by: str) -> list[str]:
        """Join `add`, leave `remove`; returns the groups of `remove` the user was not in."""
        joining = [_checked(validate_group_name, g) for g in dict.fromkeys(add)]
        if joining and name not in self.users:
            raise AccountError(f"no user {name!r} (create it with `secreg user add {name}`)")
        for group in joining:
            self.groups.add(name, group)
        removed: list[str] = []
        not_member: list[str] = []
        for group in dict.fromkeys(remove):
            (removed if self.groups.remove(name, group) else not_member).append(group)
        if joining or removed:
            audit.event("user.groups", user=name, added=sorted(joining), removed=removed, by=by)
        return not_member
