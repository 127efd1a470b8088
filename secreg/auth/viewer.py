"""What a person browsing the web UI may do: the same policy and groups the token server grants from, asked
per repository and action. A `Viewer` is a plain value made per request; "" is the anonymous viewer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from secreg.auth.bootstrap import ADMIN_GROUP
from secreg.auth.groups import GroupStore
from secreg.auth.policy import PolicyStore
from secreg.auth.scope import DELETE, PULL, PUSH

__all__ = ["ADMIN_GROUP", "Viewer", "ViewerFactory"]


@dataclass(frozen=True)
class Viewer:
    subject: str  # "" = anonymous
    groups: frozenset[str]
    _policy: PolicyStore | None  # None: authentication is off, everyone may do everything but administer

    @property
    def is_admin(self) -> bool:
        """Members of group `admins` (the group `secreg serve` puts the first user in) manage users, see the
        policy and run garbage collection."""
        return bool(self.subject) and ADMIN_GROUP in self.groups

    def may(self, repository: str, action: str) -> bool:
        if self._policy is None:
            return True
        return self._policy.current.decide(self.subject, self.groups, "repository", repository, action).allowed

    def may_pull(self, repository: str) -> bool:
        return self.may(repository, PULL)

    def may_delete(self, repository: str) -> bool:
        return self.may(repository, DELETE)

    def may_push(self, repository: str) -> bool:
        return self.may(repository, PUSH)

    def visible(self, names: Iterable[str]) -> list[str]:
        """The repositories this viewer may pull, in the given order."""
        if self._policy is None:
            return list(names)
        policy = self._policy.current
        return [n for n in names if policy.decide(self.subject, self.groups, "repository", n, PULL).allowed]


@dataclass(frozen=True)
class ViewerFactory:
    policy: PolicyStore | None
    groups: GroupStore | None

    def __call__(self, subject: str) -> Viewer:
        member_of = self.groups.groups_of(subject) if subject and self.groups is not None else frozenset()
        return Viewer(subject, member_of, self.policy)
