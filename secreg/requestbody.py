"""Reading what is left of a request body before an early answer, so an HTTP/1.1 connection stays usable.

Hypercorn closes an HTTP/1.1 connection whose request body was not read to the end, without saying so in the
response, so a client that reuses it (a chunk refused with 416 or 401, then the request that recovers) finds it
closed. Up to DRAIN_LIMIT bytes are read and dropped to keep the connection usable, as Go's server does (up to
256 KiB); past that the answer says `Connection: close`. HTTP/2 ends just the stream (and forbids that header).

This module serves the layers below the routes (the auth middleware answers before any handler runs); handlers
settle their bodies through `secreg.api.base`, which knows what Starlette has already read.
"""

from __future__ import annotations

from starlette.types import Receive, Scope

DRAIN_LIMIT = 4 * 1024 * 1024


def keeps_connection(scope: Scope) -> bool:
    """HTTP/1.x: the only protocol where an unread body costs the connection."""
    return str(scope.get("http_version", "1.1")).startswith("1")


def announces_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


async def drain_unread(scope: Scope, receive: Receive, limit: int = DRAIN_LIMIT) -> bool:
    """Read and drop a body nobody has read yet. False when more than `limit` bytes were left: the answer must
    then close the connection."""
    if not keeps_connection(scope) or not announces_body(scope):
        return True
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return True  # the client went away
        received += len(message.get("body", b""))
        if received > limit:
            return False
        if not message.get("more_body", False):
            return True
