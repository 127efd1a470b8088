"""Groups: an Apache `AuthGroupFile` (`admins: admin alice`), one group per line, `#` comments.

Same file discipline as the htpasswd file (see `users.py`): re-read on change, atomic locked writes,
mode 0600. Edits keep comments and the order of the lines; a group left without members disappears.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from secreg.auth.watched import WatchedFile, read_locked_edit
from secreg.config import AuthSettings

__all__ = ["GROUPS_FILE", "GroupStore", "Groups", "groups_file", "parse_groups", "validate_group_name"]

GROUPS_FILE = "groups"

_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

T = TypeVar("T")


def groups_file(auth: AuthSettings) -> Path:
    """The group file: `groups` in the auth directory (there is no setting of its own)."""
    return auth.directory / GROUPS_FILE


def validate_group_name(name: str) -> str:
    if not _GROUP_NAME.match(name):
        raise ValueError(
            f"invalid group name {name!r}: use 1-64 characters A-Z, a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _parse_line(line: str, lineno: int, source: str) -> tuple[str, list[str]] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not _GROUP_NAME.match(name):
        raise ValueError(f"{source} line {lineno}: expected 'GROUP: USER USER ...', got {text!r}")
    return name, rest.split()


@dataclass(frozen=True)
class Groups:
    """Parsed group file: group -> members, and the reverse index."""

    members: Mapping[str, tuple[str, ...]]
    by_user: Mapping[str, frozenset[str]]

    def of(self, user: str) -> frozenset[str]:
        return self.by_user.get(user, frozenset())


def parse_groups(data: bytes | None, source: str = "groups") -> Groups:
    members: dict[str, list[str]] = {}
    for lineno, line in enumerate((data or b"").decode("utf-8").splitlines(), 1):
        entry = _parse_line(line, lineno, source)
        if entry:
            listed = members.setdefault(entry[0], [])
            listed.extend(u for u in entry[1] if u not in listed)
    by_user: dict[str, set[str]] = {}
    for group, users in members.items():
        for user in users:
            by_user.setdefault(user, set()).add(group)
    return Groups(
        {g: tuple(u) for g, u in members.items()},
        {u: frozenset(g) for u, g in by_user.items()},
    )


def _rewrite(old: bytes, change: Callable[[dict[str, list[str]]], T], source: str) -> tuple[bytes, T]:
    lines = old.decode("utf-8").splitlines()
    current = {g: list(u) for g, u in parse_groups(old, source).members.items()}
    result = change(current)
    out: list[str] = []
    written: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        entry = _parse_line(line, lineno, source)
        if entry is None:
            out.append(line)
            continue
        group = entry[0]
        if group in written or not current.get(group):
            continue
        out.append(f"{group}: {' '.join(current[group])}")
        written.add(group)
    out.extend(f"{g}: {' '.join(u)}" for g, u in current.items() if u and g not in written)
    return ("\n".join(out) + "\n" if out else "").encode("utf-8"), result


class GroupStore:
    """Group membership backed by one group file."""

    def __init__(self, path: Path, *, check_interval: float = 0.0) -> None:
        self.path = Path(path)
        self._source = str(self.path)
        self._file = WatchedFile(self.path, lambda data: parse_groups(data, self._source), check_interval)

    def groups_of(self, user: str) -> frozenset[str]:
        return self._file.get().of(user)

    def members(self) -> Mapping[str, tuple[str, ...]]:
        return self._file.get().members

    def _edit(self, change: Callable[[dict[str, list[str]]], T]) -> T:
        result = read_locked_edit(self.path, lambda old: _rewrite(old, change, self._source))
        self._file.invalidate()
        return result

    def add(self, user: str, group: str) -> bool:
        """Put `user` in `group`; False if already there."""
        validate_group_name(group)

        def change(groups: dict[str, list[str]]) -> bool:
            users = groups.setdefault(group, [])
            if user in users:
                return False
            users.append(user)
            return True

        return self._edit(change)

    def remove(self, user: str, group: str) -> bool:
        """Take `user` out of `group`; False if not a member."""

        def change(groups: dict[str, list[str]]) -> bool:
            users = groups.get(group, [])
            if user not in users:
                return False
            users.remove(user)
            return True

        return self._edit(change)

    def remove_user(self, user: str) -> frozenset[str]:
        """Take `user` out of every group; returns the groups it was in."""

        def change(groups: dict[str, list[str]]) -> frozenset[str]:
            left = frozenset(g for g, users in groups.items() if user in users)
            for g in left:
                groups[g].remove(user)
            return left

        return self._edit(change)
