"""`secreg` command line: serve | certs | user | policy | gc. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

SUBCOMMANDS = ("serve", "certs", "user", "policy", "gc")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secreg", description="A secure private container registry.")
    parser.add_argument("--version", action="version", version=f"secreg {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"secreg.cli.{name}").register(sub)
    return parser


def version() -> str:
    try:
        return importlib.metadata.version("secreg")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
