"""`secreg user add | passwd | del | revoke | list | groups`: manage the htpasswd and group files.

Changes take effect in a running registry within a second (it re-reads the files); no restart. `passwd`, `del`
and `revoke` also revoke the user's refresh tokens (docker logins) in the revocation list: in Redis when the
config sets `redis.addr` (every replica at once), else in the auth directory (`secreg.auth.revocation`).
Passwords are read from a terminal prompt (asked twice), from stdin (`--password-stdin`) or generated
(`--generate`, printed once) and never echoed or passed as an argument.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secreg.auth.accounts import AccountError, Accounts, RevocationFailed, generate_password
from secreg.auth.groups import GroupStore, groups_file, validate_group_name
from secreg.auth.revocation import Revocations, revocations_from_settings
from secreg.auth.users import UserStore, validate_password, validate_user_name
from secreg.cli.main import CliError
from secreg.config import AuthSettings, ConfigError, RedisSettings, load_settings
from secreg.observability.logconfig import configure_audit_file


@dataclass(frozen=True)
class AuthFiles:
    htpasswd: Path
    groups: Path
    policy: Path
    audit_file: Path | None = None
    auth: AuthSettings | None = None
    redis: RedisSettings | None = None

    def revocations(self) -> Revocations | None:
        return None if self.auth is None else revocations_from_settings(self.auth, self.redis)


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth-dir", help="directory of htpasswd, groups and policy.yaml (default ./auth)")
    parser.add_argument("--config", help="YAML config file (uses its auth.* settings)")


def auth_files(args: argparse.Namespace) -> AuthFiles:
    """The files `secreg serve` would use with the same --config / --auth-dir / SECREG_* environment."""
    overrides = {"auth": {"directory": str(Path(args.auth_dir).resolve())}} if args.auth_dir else None
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    auth = settings.auth
    return AuthFiles(auth.htpasswd, groups_file(auth), auth.policy, settings.audit_file, auth, settings.redis)


def register(sub: Any) -> None:
    parser = sub.add_parser("user", help="add, remove and list users; change passwords and groups")
    users = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = users.add_parser("add", help="create a user")
    add.add_argument("name")
    _password_arguments(add)
    add.add_argument(
        "--group", action="append", default=[], metavar="GROUP", help="also join GROUP (repeatable)"
    )
    add_location_arguments(add)
    add.set_defaults(func=_add)

    passwd = users.add_parser("passwd", help="change a user's password (revokes its refresh tokens)")
    passwd.add_argument("name")
    _password_arguments(passwd)
    add_location_arguments(passwd)
    passwd.set_defaults(func=_passwd)

    delete = users.add_parser("del", help="delete a user (and its group memberships; revokes its refresh tokens)")
    delete.add_argument("name")
    add_location_arguments(delete)
    delete.set_defaults(func=_delete)

    revoke = users.add_parser("revoke", help="revoke a user's refresh tokens (every docker login), keep the password")
    revoke.add_argument("name")
    add_location_arguments(revoke)
    revoke.set_defaults(func=_revoke)

    listing = users.add_parser("list", help="list users and their groups")
    add_location_arguments(listing)
    listing.set_defaults(func=_list)

    groups = users.add_parser("groups", help="show or change a user's groups")
    groups.add_argument("name")
    groups.add_argument("--add", action="append", default=[], metavar="GROUP", help="join GROUP (repeatable)")
    groups.add_argument(
        "--remove", action="append", default=[], metavar="GROUP", help="leave GROUP (repeatable)"
    )
    add_location_arguments(groups)
    groups.set_defaults(func=_groups)


def _password_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    source.add_argument("--generate", action="store_true", help="generate a password and print it once")


def _operator() -> str:
    """Who ran the command, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _name(name: str) -> str:
    try:
        return validate_user_name(name)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated)."""
    if args.generate:
        return generate_password(), True
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n")
        password = password.removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CliError("the passwords do not match")
    else:
        raise CliError("stdin is not a terminal: pass --password-stdin (and pipe the password) or --generate")
    try:
        validate_password(password)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return password, False


def _stores(args: argparse.Namespace, *, create: bool = False) -> tuple[UserStore, GroupStore, AuthFiles]:
    files = auth_files(args)
    configure_audit_file(files.audit_file)
    if create:
        files.htpasswd.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.groups.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return UserStore(files.htpasswd), GroupStore(files.groups), files
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _accounts(users: UserStore, groups: GroupStore, files: AuthFiles) -> Accounts:
    try:
        return Accounts(users, groups, files.revocations())
    except ValueError as exc:  # a broken revocation file
        raise CliError(str(exc)) from None


def _add(args: argparse.Namespace) -> int:
    name = _name(args.name)
    for group in args.group:
        _group_name(group)
    users, groups, files = _stores(args, create=True)
    if name in users:
        raise CliError(f"user {name!r} already exists (change its password with `secreg user passwd {name}`)")
    password, generated = _read_password(args)
    try:
        _accounts(users, groups, files).add(name, password, args.group, by=_operator())
    except AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"created user {name}" + (f" (groups: {', '.join(args.group)})" if args.group else ""))
    if generated:
        print(f"password (shown only this once): {password}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    name = _name(args.name)
    users, groups, files = _stores(args)
    if name not in users:
        raise CliError(f"no user {name!r} (create it with `secreg user add {name}`)")
    password, generated = _read_password(args)
    failed: RevocationFailed | None = None
    try:
        _accounts(users, groups, files).set_password(name, password, by=_operator())
    except RevocationFailed as exc:
        failed = exc  # the password did change: still show it
    except AccountError as exc:
        raise CliError(str(exc)) from None
    if failed is None:
        print(f"changed the password of {name}; its refresh tokens (docker logins) no longer work")
    if generated:
        print(f"password (shown only this once): {password}")
    if failed is not None:
        print(f"secreg: error: {failed}", file=sys.stderr)
        return 1
    return 0


def _delete(args: argparse.Namespace) -> int:
    users, groups, files = _stores(args)
    try:
        left = _accounts(users, groups, files).delete(args.name, by=_operator())
    except AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"deleted user {args.name}" + (f" (removed from {', '.join(sorted(left))})" if left else ""))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    users, groups, files = _stores(args)
    try:
        _accounts(users, groups, files).revoke(args.name, by=_operator())
    except AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"revoked the refresh tokens of {args.name}: its docker logins must log in again")
    return 0


def _list(args: argparse.Namespace) -> int:
    users, groups, _ = _stores(args)
    names = users.users()
    if not names:
        print("no users", file=sys.stderr)
        return 0
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {', '.join(sorted(groups.groups_of(name))) or '-'}")
    return 0


def _group_name(group: str) -> str:
    try:
        return validate_group_name(group)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _groups(args: argparse.Namespace) -> int:
    users, groups, files = _stores(args)
    name = args.name
    for group in args.add:
        _group_name(group)
    try:
        not_member = _accounts(users, groups, files).change_groups(name, args.add, args.remove, by=_operator())
    except AccountError as exc:
        raise CliError(str(exc)) from None
    for group in not_member:
        print(f"{name} was not in group {group}", file=sys.stderr)
    print(f"{name}: {', '.join(sorted(groups.groups_of(name))) or '-'}")
    return 0
