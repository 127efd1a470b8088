"""Placeholder: `secreg gc` (being written)."""

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("gc", help="(not yet available)")
    p.set_defaults(func=lambda args: 1)
