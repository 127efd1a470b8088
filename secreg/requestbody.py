"""Reading what is left of a request body before an early answer, so an HTTP/1.1 connection stays usable.

Hypercorn closes an HTTP/1.1 connection whose request body was not read to the end, without saying so in the
response, so a client that reuses it (a chunk refused with 416 or 401, then the request that recovers) finds it
closed. Up to DRAIN_LIMIT bytes are read and dropped to keep the connection usable, as Go's server does (up to
256 KiB); past that the answer says `Connection: close`. HTTP/2 ends just the stream (and forbids that header).

This module serves the layers below the routes (the auth middleware answers before any handler runs); handlers
settle their bodies through `secreg.api.base`, which knows what Starlette has already read.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secreg.errors import ErrorCode, error_body

log = logging.getLogger("secreg")

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


class BodyTimedOut(Exception):
    """No piece of the request body arrived within the body timeout."""


class BodyTimeout:
    """Pure ASGI: a request body that pauses longer than `timeout` seconds between two pieces ends the request
    with 408 and `Connection: close` (one INFO line). Only while a body is still expected: once it is complete,
    `receive()` (then waiting for a disconnect during a long download) is not timed."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not announces_body(scope):
            await self.app(scope, receive, send)
            return
        complete = False
        started = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise BodyTimedOut() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except BodyTimedOut:
            client = scope.get("client")
            log.info("closing a request from %s: no body data for %.0f s (http.timeouts.body) on %s %s",
                     client[0] if client else "?", self.timeout, scope.get("method"), str(scope.get("path"))[:300])
            if started:
                return  # the answer is under way: ending the request ends the connection
            body = error_body(ErrorCode.UNKNOWN, f"no request body data for {self.timeout:.0f} s; closing")
            await send({"type": "http.response.start", "status": 408, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"), (b"docker-distribution-api-version", b"registry/2.0")]})
            await send({"type": "http.response.body", "body": body})
