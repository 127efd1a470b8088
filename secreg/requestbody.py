"""Reading what is left of a request body before an early answer, so an HTTP/1.1 connection stays usable.

Hypercorn closes an HTTP/1.1 connection whose request body was not read to the end, without saying so in the
response, so a client that reuses it (a chunk refused with 416 or 401, then the request that recovers) finds it
closed. Up to DRAIN_LIMIT bytes are read and dropped to keep the connection usable, as Go's server does (up to
256 KiB); past that the answer says `Connection: close`. HTTP/2 ends just the stream (and forbids that header).

All draining is here: `drain_unread` for the layers below the routes (the auth middleware answers before any
handler runs), `settle_before_error` for a handler or the router answering early (it reads through Starlette's
`Request`, which knows what has been read already). `secreg.api.base.settles_body` applies it to the routes.
`SettleUnreadBody` is the net under all of them (the web UI's form checks included):
an answer that starts before the body was read to its end drains it first, whoever sent it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secreg.errors import ErrorCode, RegistryError
from secreg.httperrors import error_response
from secreg.numbers import parse_count

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


async def _drop(chunks: AsyncIterator[bytes], limit: int) -> bool:
    """Read `chunks` to the end; False as soon as more than `limit` bytes came."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            return False
    return True


async def _messages(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def drain_unread(scope: Scope, receive: Receive, limit: int = DRAIN_LIMIT) -> bool:
    """Read and drop a body nobody has read yet. False when more than `limit` bytes were left: the answer must
    then close the connection."""
    if not keeps_connection(scope) or not announces_body(scope):
        return True
    return await _drop(_messages(receive), limit)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length when it is a plain number (`secreg.numbers`), else None."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return parse_count(value.decode("latin-1"))
    return None


async def settle_before_error(request: Request, error: RegistryError, limit: int = DRAIN_LIMIT) -> None:
    """Drain the rest of a request's body (up to `limit`), or mark `error` to close the connection. A body
    declared larger than that is not waited for: the answer goes out at once (a client may not send more
    before it)."""
    if not keeps_connection(request.scope):
        return
    declared = declared_length(request.scope)
    if declared is not None and declared > limit:
        drained = False
    else:
        try:
            drained = await _drop(request.stream(), limit)
        except (RuntimeError, ClientDisconnect):  # RuntimeError: Starlette says the body was read to the end
            drained = True
    if not drained:
        error.headers.setdefault("Connection", "close")


class SettleUnreadBody:
    """Pure ASGI: when an HTTP/1.x answer starts while the request body is not read to its end, read and drop
    the rest first (up to DRAIN_LIMIT), or add `Connection: close` when there is more (a body declared larger
    is not waited for, nor one under an answer that already says `Connection: close`). Without this, Hypercorn
    closes the connection after such an answer without saying so, and a client that sends its next request on
    it gets no response ("server disconnected")."""

    def __init__(self, app: ASGIApp, limit: int = DRAIN_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not keeps_connection(scope) or not announces_body(scope):
            await self.app(scope, receive, send)
            return
        complete = False

        async def tracked_receive() -> Message:
            nonlocal complete
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def settling_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                headers = list(message.get("headers", []))
                closing = any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers)
                declared = declared_length(scope)
                # An answer that closes anyway (a layer chose not to wait for the body) goes out at once.
                if not closing and not ((declared is None or declared <= self.limit)
                                        and await _drop(_messages(tracked_receive), self.limit)):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracked_receive, settling_send)


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
                # asyncio.timeout, not wait_for: wait_for wraps every receive in a new Task (two more loop
                # iterations per body piece, a few hundred per pushed blob).
                async with asyncio.timeout(self.timeout):
                    message = await receive()
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
            timed_out = RegistryError(ErrorCode.UNKNOWN, f"no request body data for {self.timeout:.0f} s; closing",
                                      status=408, headers={"Connection": "close"})
            await error_response(timed_out)(scope, receive, send)
