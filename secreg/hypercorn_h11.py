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

import h11
import hypercorn.asyncio.tcp_server as tcp_server
from h11 import _headers as h11_headers
from h11 import _readers as h11_readers
from h11 import _writers as h11_writers
from hypercorn.events import RawData, Updated

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



# --- HTTP/1.1 responses: the head written here, a whole body without h11's events --------------------------

# Response headers whose framing or placement h11 rewrites or checks (a second Content-Length, Transfer-Encoding,
# the Connection tokens, Host written first): a head naming one takes h11's own path.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection", b"host"})
NAMES_KEPT = 256  # header names found to be tokens, remembered with their lower case (a few KiB)
_names: dict[bytes, bytes] = {}
# RFC 9110's tchar: what h11's field-name pattern accepts (`token`); deleted from a name, nothing may be left.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def lowered_name(name: Any) -> bytes | None:
    """`name` in lower case when it is bytes and a token (a header name h11 accepts, in a request or a response),
    else None. The names seen are remembered (up to `NAMES_KEPT`): a repeated one costs one lookup."""
    lowered = _names.get(name)
    if lowered is None:
        if type(name) is not bytes or not name or name.translate(None, _TCHAR):
            return None
        lowered = name.lower()
        if len(_names) >= NAMES_KEPT:
            _names.clear()
        _names[name] = lowered
    return lowered

# h11's own patterns and state-machine pieces (private: `direct_h11_response_heads` checks they are there).
_content_length = getattr(h11_headers, "_content_length_re", None)
_MAX_DIGITS: int = getattr(h11_headers, "CONTENT_LENGTH_MAX_DIGITS", 20)
_ContentLengthWriter: Any = getattr(h11_writers, "ContentLengthWriter", None)
_END_OF_MESSAGE = h11.EndOfMessage()


def response_head(connection: Any, status: int, headers: Any, extra: Any) -> bytes | None:
    """What h11's `connection.send(Response(status_code=status, headers=headers + extra))` writes, with the
    connection's state changed as that call changes it; None (and nothing changed) when h11 would refuse the
    head or rewrite its headers, when the body is not framed by one Content-Length (or absent by the status or
    a HEAD request), or when the connection is in any state but awaiting the response to a plain request.
    Names are checked by h11's own pattern (once per name); values as h11's pattern would check them: no NUL,
    CR, LF, VT or FF anywhere (looked for once in the whole head) and no space or tab at either end."""
    cstate = connection._cstate
    if not 200 <= status < 1000 or cstate.states[h11.SERVER] is not h11.SEND_RESPONSE \
            or cstate.pending_switch_proposals:
        return None
    lines = [b"HTTP/1.1 %d \r\n" % status]
    length: int | None = None
    for part in (headers, extra):
        for name, value in part:
            lowered = lowered_name(name)
            if lowered is None:
                return None
            if type(value) is not bytes or (value and (value[0] in _EDGES or value[-1] in _EDGES)):
                return None
            if lowered in _FRAMING:
                if (lowered != b"content-length" or length is not None or len(value) > _MAX_DIGITS
                        or _content_length.fullmatch(value) is None):  # type: ignore[union-attr]
                    return None
                length = int(value)
            lines.append(b"%s: %s\r\n" % (name, value))
    if status == 204 or status == 304:
        length = 0
    elif length is None:
        return None  # h11 frames it chunked (or by closing) and says so in the head, for HEAD as well
    elif connection._request_method == b"HEAD":
        length = 0
    if not cstate.keep_alive:
        lines.append(b"Connection: close\r\n")  # what h11's clean-up adds to a head without Connection
    lines.append(b"\r\n")
    head = b"".join(lines)
    if (b"\x00" in head or b"\x0b" in head or b"\x0c" in head or head.count(b"\n") != len(lines)
            or head.count(b"\r") != len(lines)):
        return None  # a value h11's pattern refuses: only the CRLF ending each line may be there
    # SEND_RESPONSE -> SEND_BODY, as h11's send moves it: with no switch proposed, no other transition fires.
    cstate.states[h11.SERVER] = h11.SEND_BODY
    connection.client_is_waiting_for_100_continue = False
    connection._writer = _ContentLengthWriter(length)
    return head


_EDGES = frozenset(b" \t")


async def finish_response(protocol: Any, body: bytes | bytearray | memoryview) -> bool:
    """The whole body of a response whose head is held (`coalesce_h11_responses`), written with it in one piece,
    h11's state moved as its `send(Data(body))` and `send(EndOfMessage())` would move it. False (nothing done)
    unless the connection frames the body by a Content-Length that `body` meets exactly: the events then take
    h11's path, which refuses a wrong length as before."""
    head: bytes | None = protocol.__dict__.get("_secreg_head")
    connection = protocol.connection
    if head is None or type(connection) is not h11.Connection:
        return False
    writer: Any = connection._writer
    size = body.nbytes if type(body) is memoryview else len(body)
    if type(writer) is not _ContentLengthWriter or writer._length != size \
            or connection._cstate.states[h11.SERVER] is not h11.SEND_BODY:
        return False
    del protocol._secreg_head
    writer._length = 0
    cstate = connection._cstate
    if cstate.keep_alive and cstate.states[h11.CLIENT] is h11.DONE:
        cstate.states[h11.SERVER] = h11.DONE  # what h11's EndOfMessage does then: no other transition, no writer
        connection._writer = None
    else:
        connection._process_event(h11.SERVER, _END_OF_MESSAGE)  # SEND_BODY -> DONE or MUST_CLOSE, no writer
    await protocol.send(RawData(data=head + body if body else head))
    return True


# What h11's start_next_cycle picks for a connection back in IDLE on both sides.
_IDLE_READER: Any = getattr(h11_readers, "READERS", {}).get((h11.CLIENT, h11.IDLE))
_IDLE_WRITER: Any = getattr(h11_writers, "WRITERS", {}).get((h11.SERVER, h11.IDLE))
_IDLE_AGAIN = Updated(idle=True)


def next_cycle(connection: Any) -> bool:
    """h11's `connection.start_next_cycle()` for a connection whose request and response have both ended with
    keep-alive on (DONE, DONE, no switch proposed, no 100-continue pending): both sides IDLE, no request method,
    the reader and writer of IDLE. False (nothing changed) in any other state, where h11's own call decides."""
    cstate = connection._cstate
    states = cstate.states
    if (states[h11.CLIENT] is not h11.DONE or states[h11.SERVER] is not h11.DONE or not cstate.keep_alive
            or cstate.pending_switch_proposals or connection.client_is_waiting_for_100_continue):
        return False
    states[h11.CLIENT] = states[h11.SERVER] = h11.IDLE
    connection._request_method = None
    connection._reader = _IDLE_READER
    connection._writer = _IDLE_WRITER
    return True


async def recycle(protocol: Any, stream: Any) -> None:
    """Hypercorn's `H11Protocol._maybe_recycle` after `stream`, the connection's, ended whole (its state CLOSED):
    the stream closed (the app told the client is gone, as `StreamClosed` makes it), h11 ready for the next
    request (`next_cycle`), the protocol's reading resumed and the connection idle. Anything else (the server
    stopping, a connection to be closed) takes Hypercorn's own."""
    connection = protocol.connection
    app_put = getattr(stream, "app_put", None)
    if (protocol.stream is not stream or stream.closed or app_put is None or type(connection) is not h11.Connection
            or protocol.context.terminated.is_set() or not next_cycle(connection)):
        await protocol._maybe_recycle()
        return
    stream.closed = True
    await app_put({"type": "http.disconnect"})
    protocol.stream = None
    protocol.response = None
    protocol.scope = None
    await protocol.can_read.set()
    await protocol.send(_IDLE_AGAIN)


_extra_headers: tuple[Any, int, list[tuple[bytes, bytes]]] = (None, -1, [])


def extra_headers(config: Any) -> list[tuple[bytes, bytes]]:
    """Hypercorn's `config.response_headers("h11")` (the Date, Server and Alt-Svc headers it adds to every
    response), built once per second: the Date is the only part that changes. Only read, never extended."""
    global _extra_headers
    second = int(time.time())
    cached = _extra_headers
    if cached[0] is not config or cached[1] != second:
        cached = _extra_headers = (config, second, config.response_headers("h11"))
    return cached[2]


def _h11_as_known() -> bool:
    if None in (_content_length, _ContentLengthWriter, _IDLE_READER, _IDLE_WRITER):
        return False
    connection = h11.Connection(h11.SERVER)
    return (all(hasattr(connection, n) for n in ("_cstate", "_request_method", "_writer", "_process_event",
                                                 "client_is_waiting_for_100_continue"))
            and hasattr(connection._cstate, "pending_switch_proposals") and hasattr(connection._cstate, "keep_alive")
            and hasattr(_ContentLengthWriter(0), "_length"))


def direct_h11_response_heads() -> bool:
    """h11 takes each response head through `h11.Response` (a pattern per header name and value, and the
    matches' group dicts), a clean-up that builds a second `Response` and looks for Content-Length,
    Transfer-Encoding and Connection twice, its state machine and its writer; the body and the end of the
    message then travel as two more Hypercorn events and two more h11 events. A final head whose body is framed
    by one Content-Length (or absent: HEAD, 204, 304) is written here instead (`response_head`: the same bytes,
    h11's state changed as its `send` would change it). A body then sent whole (`more_body` false: every
    Starlette `Response`) goes out with the held head without those events (`finish_response`); pieces sent one
    by one still take h11's writer, which the head set up as h11 would have. Any other head, and any h11 would
    refuse or rewrite, takes h11's path. False when h11 or Hypercorn lack what this relies on."""
    from hypercorn.protocol import h11 as h11_protocol
    from hypercorn.protocol import http_stream
    from hypercorn.protocol.events import Response, StreamClosed

    protocol = h11_protocol.H11Protocol
    stream_class = http_stream.HTTPStream
    original_send = getattr(protocol, "stream_send", None)
    original_app_send = getattr(stream_class, "app_send", None)
    state = getattr(http_stream, "ASGIHTTPState", None)
    suppress = getattr(http_stream, "suppress_body", None)
    if (original_send is None or original_app_send is None or state is None or suppress is None
            or not _h11_as_known()):
        log.warning("h11 or Hypercorn internals differ from the known ones: HTTP/1.1 response heads take h11's path")
        return False
    if getattr(original_send, "_secreg_direct", False):
        return True
    request_state, response_state, closed_state = state.REQUEST, state.RESPONSE, state.CLOSED

    async def stream_send(self: Any, event: Any) -> None:
        if (type(event) is Response and type(self.connection) is h11.Connection
                and "_secreg_head" not in self.__dict__
                and self.keep_alive_requests < self.config.keep_alive_max_requests):
            head = response_head(self.connection, event.status_code, event.headers, extra_headers(self.config))
            if head is not None:
                self._secreg_head = head  # written with the first body piece or the end (coalesce_h11_responses)
                return
        await original_send(self, event)

    async def app_send(self: Any, message: Any) -> None:
        kind = message["type"] if message is not None else None
        if kind == "http.response.body":
            if (self.state is response_state and not message.get("more_body", False)
                    and not self.response.get("trailers", False)):
                target = getattr(self.send, "__self__", None)
                body = message.get("body", b"")
                if "_secreg_head" in getattr(target, "__dict__", ()) and type(body) in _BODY_TYPES:
                    if suppress(self.scope["method"], int(self.response["status"])):
                        body = b""
                    if await finish_response(target, body):
                        self.state = closed_state
                        await self.config.log.access(self.scope, self.response, time.time() - self.start_time)
                        if type(target) is protocol:
                            await recycle(target, self)  # what its stream_send does with StreamClosed
                        else:
                            await self.send(StreamClosed(stream_id=self.stream_id))
                        return
        elif kind == "http.response.start" and self.state is request_state:
            # Hypercorn's start: its header copy (`build_and_validate_headers`: bytes, stripped), a `Response`
            # event, then `stream_send` above. A head `response_head` writes as it is needs neither: its names are
            # tokens and its values have no space at either end, which that copy would strip.
            target = getattr(self.send, "__self__", None)
            status = message["status"]
            if (type(target) is protocol and type(target.connection) is h11.Connection and type(status) is int
                    and "_secreg_head" not in target.__dict__
                    and target.keep_alive_requests < target.config.keep_alive_max_requests):
                head = response_head(target.connection, status, message.get("headers", ()),
                                     extra_headers(target.config))
                if head is not None:
                    self.response = message
                    target._secreg_head = head  # type: ignore[attr-defined]
                    self.state = response_state
                    return
        await original_app_send(self, message)

    stream_send._secreg_direct = True  # type: ignore[attr-defined]
    protocol.stream_send = stream_send  # type: ignore[method-assign]
    stream_class.app_send = app_send  # type: ignore[method-assign]
    return True


_BODY_TYPES = (bytes, bytearray, memoryview)
