"""JSON from clients, parsed with a bound on nesting: `json.loads` recurses once per level and raises
RecursionError (not ValueError) near Python's recursion limit, so a document 1,000 levels deep must be refused
before it is parsed. No manifest, index or image configuration comes close to the bound."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


class NestingError(ValueError):
    """The document nests arrays and objects deeper than allowed."""


def depth_exceeds(content: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether `content` opens more than `limit` arrays or objects inside each other (strings skipped)."""
    if content.count(b"[") + content.count(b"{") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", content)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def loads(content: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` of JSON as RFC 8259 has it, raising NestingError (a ValueError) for documents nested deeper
    than `max_depth`. Python's parser also takes UTF-16 and UTF-32, a byte-order mark and NaN / Infinity, which Go's
    (every container client's) refuses: stored, such a manifest could not be pulled, and a NaN copied into the
    referrers list made the whole list invalid JSON. Those are ValueError here too."""
    if depth_exceeds(content, max_depth):
        raise NestingError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(content.decode("utf-8"), parse_constant=_not_json)  # a BOM: JSONDecodeError
