"""`secreg policy check USER REPOSITORY ACTION | show`: ask the access policy, or print it."""

from __future__ import annotations

import argparse
from typing import Any

from secreg.auth.groups import GroupStore
from secreg.auth.policy import ACTIONS, PolicyError, PolicyStore
from secreg.cli.main import CliError
from secreg.cli.user import add_location_arguments, auth_files


def register(sub: Any) -> None:
    parser = sub.add_parser("policy", help="check or show the access policy")
    policy = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    check = policy.add_parser(
        "check",
        help="may USER do ACTION on REPOSITORY? (exit status 0 allow, 1 deny)",
        description="Print allow or deny and the rule that decides. USER 'anonymous' means a client that "
        "has not logged in; REPOSITORY '_catalog' asks about listing the catalog.",
    )
    check.add_argument("user")
    check.add_argument("repository")
    check.add_argument("action", nargs="?", default="pull", choices=(*ACTIONS, "*"))
    add_location_arguments(check)
    check.set_defaults(func=_check)

    show = policy.add_parser("show", help="print the rules in force")
    add_location_arguments(show)
    show.set_defaults(func=_show)


def _load(args: argparse.Namespace) -> tuple[PolicyStore, GroupStore]:
    files = auth_files(args)
    try:
        return PolicyStore(files.policy), GroupStore(files.groups)
    except (PolicyError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _check(args: argparse.Namespace) -> int:
    store, groups = _load(args)
    subject = "" if args.user == "anonymous" else args.user
    member_of = groups.groups_of(subject) if subject else frozenset()
    verdict = store.current.explain(subject, args.repository, args.action, member_of)
    what = "list the catalog" if args.repository == "_catalog" else f"{args.action} {args.repository}"
    who = args.user + (f" (groups: {', '.join(sorted(member_of))})" if member_of else "")
    print(f"{who} may {what}? {verdict}")
    return 0 if verdict.startswith("allow") else 1


def _show(args: argparse.Namespace) -> int:
    store, _ = _load(args)
    policy = store.current
    print(f"# {store.path}: {len(policy.rules)} rule(s); anything not granted is denied")
    for rule in policy.rules:
        print(rule.describe())
    return 0
