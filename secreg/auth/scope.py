"""Token-auth scopes: `repository:NAME:pull,push`, `registry:catalog:*`.

Shared by the token server (what was asked, what is granted) and the registry middleware (what a route
needs). Grammar from the Docker token-auth spec (scope.md):
    scope := resourcetype ":" resourcename ":" action [ "," action ]*
    resourcetype := resourcetypevalue [ "(" resourcetypevalue ")" ]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TYPE = re.compile(r"^[a-z0-9]+(?:\([a-z0-9]+\))?\Z")
_ACTION = re.compile(r"^[a-z*]+\Z")

PULL, PUSH, DELETE = "pull", "push", "delete"


class ScopeError(ValueError):
    """A scope string does not follow the grammar."""


@dataclass(frozen=True)
class Access:
    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def repository(cls, name: str, *actions: str) -> Access:
        return cls("repository", name, frozenset(actions))

    def format(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}

    @property
    def base_type(self) -> str:
        """`repository(plugin)` -> `repository`."""
        return self.type.split("(", 1)[0]


def parse_scope(text: str) -> Access:
    """Parse one scope. The name may itself hold `:` (a registry host with a port), so split at both ends."""
    resource_type, sep, rest = text.partition(":")
    name, sep2, actions_text = rest.rpartition(":")
    if not sep or not sep2 or not name or not _TYPE.match(resource_type):
        raise ScopeError(f"invalid scope {text!r}")
    actions = [a for a in actions_text.split(",") if a]
    if not actions or not all(_ACTION.match(a) for a in actions):
        raise ScopeError(f"invalid actions in scope {text!r}")
    return Access(resource_type, name, frozenset(actions))


def parse_scopes(values: list[str]) -> list[Access]:
    """Several `scope` parameters, each possibly space-separated (OAuth2 form), merged per resource."""
    merged: dict[tuple[str, str], set[str]] = {}
    for value in values:
        for item in value.split():
            access = parse_scope(item)
            merged.setdefault((access.type, access.name), set()).update(access.actions)
    return [Access(t, n, frozenset(a)) for (t, n), a in merged.items()]


def format_challenge_scope(accesses: list[Access]) -> str:
    return " ".join(a.format() for a in accesses)
