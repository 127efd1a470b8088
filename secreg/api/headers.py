"""Header values the API computes in more than one place."""

from __future__ import annotations

from secreg.httperrors import API_VERSION

__all__ = ["API_VERSION", "CACHE_HEADER", "upload_range"]

# How a pull-through cache answered (hit, miss, revalidated, stale); the access log records it too.
CACHE_HEADER = "X-Cache"


def upload_range(size: int) -> str:
    """An upload session's `Range`: the Docker convention, 0-0 when empty, otherwise 0-<last byte>."""
    return f"0-{max(size - 1, 0)}"
