"""Hypercorn's HTTP/1.1 side (and what both protocols share): settings its Config does not expose and the h11
paths secreg shortens. Applied by `secreg.hypercorn_tuning.apply`.

Hypercorn reads each connection in pieces of at most `hypercorn.asyncio.tcp_server.MAX_RECV` (64 KiB), and every
piece then travels through h11, Hypercorn's stream and the ASGI receive queue as its own Python-level event. A
blob push is hundreds of MiB of such pieces: reading up to 1 MiB at a time (what the TLS layer has decrypted,
usually 128-256 KiB) cut the server CPU time of a 256 MiB push by ~10% and its wall time from 0.46 to 0.41 s in
A/B runs here. Memory does not grow: a read returns what is already buffered, it never allocates the maximum.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import hypercorn.asyncio.tcp_server as tcp_server

READ_BYTES = 1024 * 1024
log = logging.getLogger("secreg.serve")


def widen_reads() -> bool:
    if not isinstance(getattr(tcp_server, "MAX_RECV", None), int):
        log.warning("hypercorn.asyncio.tcp_server.MAX_RECV not found: blob pushes use Hypercorn's default reads")
        return False
    tcp_server.MAX_RECV = READ_BYTES
    return True


def quiet_tls_close() -> None:
    """A client that keeps sending after the server's TLS close_notify (a body refused with 413 and
    `Connection: close`) makes `wait_closed()` raise ssl.SSLError APPLICATION_DATA_AFTER_CLOSE_NOTIFY, which
    Hypercorn's close does not expect: it surfaced as a 40-line traceback through the response being sent. The
    connection is over either way."""
    original = tcp_server.TCPServer._close
    if getattr(original, "_secreg_quiet", False):
        return

    async def close(self: tcp_server.TCPServer) -> None:
        try:
            await original(self)
        except OSError:  # ssl.SSLError is one
            pass

    close._secreg_quiet = True  # type: ignore[attr-defined]
    tcp_server.TCPServer._close = close  # type: ignore[method-assign]


def cache_date_header() -> bool:
    """Hypercorn formats the `Date` header anew for every response (`wsgiref.handlers.format_date_time`, ~1.5%
    of a small request's CPU time under py-spy); the text changes once a second, so keep it for that second."""
    import hypercorn.config

    original = getattr(hypercorn.config, "format_date_time", None)
    if original is None:
        log.warning("hypercorn.config.format_date_time not found: the Date header is formatted per response")
        return False
    if getattr(original, "_secreg_cached", False):
        return True
    last: tuple[int, str] = (-1, "")

    def format_date_time(timestamp: float | None) -> str:
        nonlocal last
        second = int(time.time() if timestamp is None else timestamp)
        if last[0] != second:
            last = (second, original(second))  # one assignment: servers in threads (the tests) share it
        return last[1]

    format_date_time._secreg_cached = True  # type: ignore[attr-defined]
    hypercorn.config.format_date_time = format_date_time  # type: ignore[attr-defined]
    return True


# --- HTTP/1.1 responses: the head and the first body piece in one write -----------------------------------


def coalesce_h11_responses() -> bool:
    """Hypercorn writes a response's head and its body as two TLS records and two socket sends. For small
    responses (a manifest, `/v2/`, a token) those sends were a quarter of the server's CPU time under py-spy;
    holding the head until the first body event (or the end of the message, for HEAD and empty bodies) halves
    them. Interim responses (100 Continue) still go out at once, and the end of a Content-Length body, which h11
    frames as no bytes at all, is not written (it cost a write, the send lock and a drain per response). A body
    piece is framed without h11's join, so a memoryview (`pass_response_views_through`) is written as it is.
    False when Hypercorn's H11 protocol does not have the method this wraps."""
    import h11
    from hypercorn.events import RawData
    from hypercorn.protocol import h11 as h11_protocol

    protocol = h11_protocol.H11Protocol
    original = getattr(protocol, "_send_h11_event", None)
    if original is None:
        log.warning("hypercorn H11Protocol._send_h11_event not found: response heads are written separately")
        return False
    if getattr(original, "_secreg_coalesced", False):
        return True

    async def send_h11_event(self: Any, event: Any) -> None:
        head: bytes | None = self.__dict__.pop("_secreg_head", None)
        try:
            if type(event) is h11.Data:  # a body piece as it came (a view of a file's pages), not joined anew
                pieces = self.connection.send_with_data_passthrough(event) or [b""]
                data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            else:
                data = self.connection.send(event) or b""
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            data = b""
        if head is None:
            if isinstance(event, h11.Response):
                self._secreg_head = data
            elif data:  # the end of a Content-Length body frames as b"": no empty write, lock and drain for it
                await self.send(RawData(data=data))
            return
        await self.send(RawData(data=head + data))

    send_h11_event._secreg_coalesced = True  # type: ignore[attr-defined]
    protocol._send_h11_event = send_h11_event  # type: ignore[method-assign]
    return True


def iterate_h11_headers() -> bool:
    """h11's `Headers` is a `Sequence` without its own `__iter__`: every `for name, value in headers` (Hypercorn
    builds the ASGI scope's headers so, and looks at each request's and response's) went through the ABC's
    generic iterator, one `__getitem__` call and a tuple unpacking per header (~4% of a `GET /v2/`'s CPU time
    under py-spy). The same pairs, in the same order, straight from its list."""
    from h11._headers import Headers

    if not hasattr(Headers, "_full_items") and "_full_items" not in getattr(Headers, "__slots__", ()):
        log.warning("h11 Headers._full_items not found: headers are iterated through Sequence.__iter__")
        return False
    if "__iter__" in Headers.__dict__:
        return True

    def __iter__(self: Any) -> Any:  # noqa: N807 - the dunder it defines
        return iter([(name, value) for _, name, value in self._full_items])

    Headers.__iter__ = __iter__  # type: ignore[method-assign]
    return True


def pass_response_views_through() -> bool:
    """Hypercorn copies every response body piece into new bytes (`bytes(message["body"])`): for a blob GET,
    whose pieces are views of the file's page cache pages (`secreg.api.fileresponse.mapped`), that copy is the
    one the view exists to avoid. A memoryview piece goes to the protocol as it is (h11 frames it without a
    join, `coalesce_h11_responses`; h2 frames slices of it); everything else, and the end of the body, takes
    Hypercorn's own path."""
    from hypercorn.protocol import http_stream
    from hypercorn.protocol.events import Body

    stream_class = http_stream.HTTPStream
    original = getattr(stream_class, "app_send", None)
    state = getattr(http_stream, "ASGIHTTPState", None)
    suppress = getattr(http_stream, "suppress_body", None)
    if original is None or state is None or suppress is None or not hasattr(state, "RESPONSE"):
        log.warning("hypercorn HTTPStream.app_send not as known: response body pieces are copied")
        return False
    if getattr(original, "_secreg_views", False):
        return True
    response_state = state.RESPONSE

    async def app_send(self: Any, message: Any) -> None:
        body = message.get("body") if message is not None and message["type"] == "http.response.body" else None
        if type(body) is not memoryview or self.state != response_state:
            await original(self, message)
            return
        if body and not suppress(self.scope["method"], int(self.response["status"])):
            await self.send(Body(stream_id=self.stream_id, data=body))  # type: ignore[arg-type]
        if not message.get("more_body", False):
            await original(self, {"type": "http.response.body", "body": b"", "more_body": False})

    app_send._secreg_views = True  # type: ignore[attr-defined]
    stream_class.app_send = app_send  # type: ignore[method-assign]
    return True
