"""Integers from the request line and headers (`n`, `page`, `Range`, `Content-Range`, `Content-Length`).

`str.isdigit()` accepts characters `int()` refuses ("²", "①"), `int()` accepts what HTTP does not (" 7", "+7",
"1_000", non-ASCII digits) and refuses strings past 4,300 digits: so only ASCII digits, and a bounded length.
"""

from __future__ import annotations

import re

MAX_DIGITS = 18  # every value below 10**18 fits an int64; no size or count this registry handles is larger
DIGITS = "[0-9]"  # for regexes: `\d` matches every Unicode digit
_ASCII_DIGITS = re.compile(r"[0-9]+")


def parse_count(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The non-negative integer `text` spells in ASCII digits, or None (empty, other characters, too long)."""
    if len(text) > max_digits or not _ASCII_DIGITS.fullmatch(text):
        return None
    return int(text)
