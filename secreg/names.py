"""Repository name, tag and reference grammar from the OCI distribution spec.

Validated before anything touches a path: a valid name has no `..`, no leading `/`, no component that starts
with `_` (our own directories inside a repository start with `_`), and no character outside [a-z0-9._/-].
"""

from __future__ import annotations

import re

from secreg.digest import Digest, is_digest
from secreg.errors import ErrorCode, RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
MAX_NAME_LENGTH = 255
# A Host header that may go into a URL we build (the token realm, the UI's pull commands): a host name or an IP
# literal and an optional port; [0-9], not \d, which takes any script's digits.
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.\-]+(?::[0-9]{1,5})?\Z|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?\Z")


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            "invalid repository name",
            {"name": name[:300], "rule": "lowercase components [a-z0-9] separated by . _ __ - and /, at most 255"},
        )
    return name


def validate_tag(tag: str) -> str:
    if not TAG_PATTERN.match(tag):
        raise RegistryError(ErrorCode.TAG_INVALID, "invalid tag", {"tag": tag[:200], "rule": TAG_PATTERN.pattern})
    return tag


def parse_reference(reference: str) -> str | Digest:
    """A manifest reference is a tag or a digest."""
    if is_digest(reference):
        return Digest.parse(reference)
    try:
        return validate_tag(reference)
    except RegistryError:
        raise RegistryError(ErrorCode.MANIFEST_INVALID, "invalid manifest reference: not a tag or a digest",
                            {"reference": reference[:200]}, status=400) from None
