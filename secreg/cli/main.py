"""`secreg` command line: serve | certs | user | policy | gc. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

SUBCOMMANDS = ("serve", "certs", "user", "policy", "gc")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or `only` that one: each module imports what its commands use (`certs` cryptography,
    `user` passlib and the account stores), and `secreg serve` keeps what it imported for as long as it serves
    (it is worker 0): building every subcommand cost the serving process 24 MiB, cryptography and passlib
    included, used by nothing it serves with auth off."""
    parser = argparse.ArgumentParser(prog="secreg", description="A secure private container registry.")
    parser.add_argument("--version", action="version", version=f"secreg {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS if only is None else (only,):
        importlib.import_module(f"secreg.cli.{name}").register(sub)
    return parser


def version() -> str:
    try:
        return importlib.metadata.version("secreg")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def no_world_writes() -> None:
    """Keep the "others may write" bit out of the umask, whatever the shell, container runtime or service manager
    left (it can be 0): a world-writable storage directory would let any local account plant tag links or upload
    data. Secret files are created 0600 regardless; group write stays the operator's choice."""
    os.umask(os.umask(0o022) | 0o002)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    no_world_writes()  # before anything is created; spawned workers inherit it
    # `secreg COMMAND ...`: only that command's parser (its --help included); the full one otherwise.
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"secreg: error: {exc}", file=sys.stderr)
        return 2


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


if __name__ == "__main__":
    sys.exit(main())
