"""HTTP/1.1 request heads without a body read by secreg instead of h11: `direct_h11_request_heads()`, applied by
`secreg.hypercorn_tuning.apply`.

h11 takes each request head through a pattern for the request line and one per header line (the ~500-byte
`Authorization: Bearer` line the dearest), their group dicts, an `h11.Request` whose headers are looked through
again for Host, Content-Length and Transfer-Encoding, its state machine twice (the request, then the end of its
empty body as an event of its own) and a reader and writer looked up per change; Hypercorn then scans the headers
twice more (`_check_protocol`, `_create_stream`) and hands the end of the body on as an event of its own: ~30% of
a token `GET /v2/`'s CPU time in the event loop under py-spy.

`read_simple_request` reads only the plainest heads, and all of them as h11 would: GET, HEAD or DELETE in upper
case, `HTTP/1.1`, every line ended by CRLF, a target of visible ASCII, header names that are tokens, values with
no NUL, CR, LF, VT or FF, exactly one Host, no Content-Length, Transfer-Encoding, Upgrade, Expect or
HTTP2-Settings, and Connection only as `keep-alive`, on a connection waiting for its next request. h11's state
then moves as its `next_event` would move it for that request and the end of its (empty) body. Anything else
(an obs-fold, a bare LF, a bad byte anywhere, a second Host, a body, HTTP/1.0, a lower-case method, ...) is left
whole in h11's buffer for h11 to read or refuse: what is read here is a subset of what h11 accepts, read the same
way (tests compare both on the same bytes), so no request is framed differently from what h11 would make of it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple
from urllib.parse import unquote

import h11
from h11 import _readers as h11_readers
from h11 import _writers as h11_writers

from secreg.hypercorn_h11 import lowered_name

log = logging.getLogger("secreg.serve")

SIMPLE_METHODS = {b"GET": "GET", b"HEAD": "HEAD", b"DELETE": "DELETE"}
# Header names that mean a body, a switch of protocol or an interim response (h11's path), and the two read
# specially: Host (exactly one) and Connection (only `keep-alive`, so h11's keep-alive stays on).
_SPECIAL = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"expect", b"http2-settings", b"host",
                      b"connection"})
# Visible ASCII (h11's `request_target`): deleted from a target, nothing may be left.
_VCHAR = bytes(range(0x21, 0x7F))
_CLIENT, _SERVER = h11.CLIENT, h11.SERVER
_IDLE, _DONE, _SEND_RESPONSE = h11.IDLE, h11.DONE, h11.SEND_RESPONSE
# What h11's state changes pick for a server whose client is DONE and which is to SEND_RESPONSE.
_DONE_READER: Any = getattr(h11_readers, "READERS", {}).get((_CLIENT, _DONE))
_RESPONSE_WRITER: Any = getattr(h11_writers, "WRITERS", {}).get((_SERVER, _SEND_RESPONSE))


class SimpleRequest(NamedTuple):
    method: str  # as Hypercorn hands it on: decoded, upper case
    target: bytes
    headers: list[tuple[bytes, bytes]]  # (lower-case name, value), as h11's `Request.headers` iterates


def read_simple_request(connection: Any) -> SimpleRequest | None:
    """The request whose head is complete at the start of h11 `connection`'s receive buffer, taken out of it with
    h11's state moved as its `next_event()` would move it, twice (the `Request`, then the `EndOfMessage` of a
    request without a body): None, and nothing changed, unless the head is one of the plain ones this reads (see
    the module docstring) and the connection waits for a new request."""
    cstate = connection._cstate
    states = cstate.states
    if (states[_CLIENT] is not _IDLE or states[_SERVER] is not _IDLE or not cstate.keep_alive
            or cstate.pending_switch_proposals or connection._receive_buffer_closed
            or connection.client_is_waiting_for_100_continue):
        return None
    buffer = connection._receive_buffer
    data = buffer._data
    # h11 remembers how far it looked for the end of a head in vain (all of it but the last two bytes): a head sent
    # in many pieces is searched once in all, here as by h11.
    end = data.find(b"\r\n\r\n", max(0, buffer._multiple_lines_search - 1))
    if end <= 0:
        return None
    head = bytes(data[:end])
    if b"\x00" in head or b"\x0b" in head or b"\x0c" in head:
        return None
    lines = head.split(b"\r\n")
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        return None  # a bare LF or CR: h11 splits or refuses such heads its own way
    method, _, rest = lines[0].partition(b" ")
    target, _, version = rest.partition(b" ")
    decoded = SIMPLE_METHODS.get(method)
    if decoded is None or version != b"HTTP/1.1" or not target or target.translate(None, _VCHAR):
        return None
    headers: list[tuple[bytes, bytes]] = []
    host = False
    for index in range(1, len(lines)):
        name, colon, value = lines[index].partition(b":")
        lowered = lowered_name(name) if colon else None
        if lowered is None:
            return None
        value = value.strip(b" \t")
        if lowered in _SPECIAL:
            if lowered == b"host" and not host:
                host = True
            elif lowered != b"connection" or value.lower() != b"keep-alive":
                return None
        headers.append((lowered, value))
    if not host:
        return None
    del data[:end + 4]
    buffer._next_line_search = 0
    buffer._multiple_lines_search = 0
    # IDLE -> SEND_BODY -> DONE for the client, IDLE -> SEND_RESPONSE for the server; nothing else fires (keep-alive
    # on, no switch proposed, no 100-continue), and h11 picks the reader and writer of those states.
    states[_CLIENT] = _DONE
    states[_SERVER] = _SEND_RESPONSE
    connection._request_method = method
    connection.their_http_version = b"1.1"
    connection._reader = _DONE_READER
    connection._writer = _RESPONSE_WRITER
    return SimpleRequest(decoded, target, headers)


def http_scope(request: SimpleRequest, scheme: str, root_path: str, client: Any, server: Any,
               state: Any) -> dict[str, Any]:
    """The ASGI scope Hypercorn's `HTTPStream` builds for the HTTP/1.1 `request` (its `handle(Request(...))`;
    tests compare the two)."""
    path, _, query_string = request.target.partition(b"?")
    return {
        "type": "http",
        "http_version": "1.1",
        "asgi": {"spec_version": "2.1", "version": "3.0"},
        "method": request.method,
        "scheme": scheme,
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": request.headers,
        "client": client,
        "server": server,
        "state": state.copy(),
        "extensions": {},
    }


def _h11_as_known() -> bool:
    if _DONE_READER is None or _RESPONSE_WRITER is None:
        return False
    connection = h11.Connection(h11.SERVER)
    buffer = getattr(connection, "_receive_buffer", None)
    return (all(hasattr(connection, n) for n in ("_cstate", "_request_method", "their_http_version", "_reader",
                                                 "_writer", "_receive_buffer_closed",
                                                 "client_is_waiting_for_100_continue"))
            and isinstance(getattr(connection._cstate, "states", None), dict)
            and hasattr(connection._cstate, "keep_alive") and hasattr(connection._cstate, "pending_switch_proposals")
            and isinstance(getattr(buffer, "_data", None), bytearray)
            and all(hasattr(buffer, n) for n in ("_next_line_search", "_multiple_lines_search")))


def direct_h11_request_heads() -> bool:
    """Hypercorn's `H11Protocol._handle_events` with a plain request head read here first (`read_simple_request`)
    and handed on as Hypercorn would hand on h11's `Request` and `EndOfMessage`: idle no more, a new `HTTPStream`
    with the scope it would build (`http_scope`) and its app started, the request counted, the end of the (empty)
    body sent to the app. No Upgrade header and no `PRI` method are read here, so
    Hypercorn's `_check_protocol` (h2c, prior-knowledge h2) and its WebSocket test have nothing to find. A request
    pipelined behind it waits for this one's response to end, as h11's PAUSED makes Hypercorn wait, and is then
    read the same way; any other head takes Hypercorn's own loop (which reads what follows through h11). False when
    h11 or Hypercorn lack what this relies on."""
    from hypercorn.events import Updated
    from hypercorn.protocol import h11 as h11_protocol
    from hypercorn.protocol.events import EndBody, Request
    from hypercorn.protocol.http_stream import HTTPStream

    protocol = h11_protocol.H11Protocol
    original = getattr(protocol, "_handle_events", None)
    stream_id = getattr(h11_protocol, "STREAM_ID", None)
    if original is None or stream_id is None or not _h11_as_known():
        log.warning("h11 or Hypercorn internals differ from the known ones: HTTP/1.1 request heads take h11's path")
        return False
    if getattr(original, "_secreg_direct", False):
        return True
    idle_no_more = Updated(idle=False)
    end_body = EndBody(stream_id=stream_id)

    async def handle_events(self: Any) -> None:
        connection = self.connection
        config = self.config
        while self.stream is None and type(connection) is h11.Connection and not config.h11_pass_raw_headers:
            request = read_simple_request(connection)
            if request is None:
                break
            await self.send(idle_no_more)
            stream = self.stream = HTTPStream(self.app, config, self.context, self.task_group, self.ssl,
                                              self.client, self.server, self.stream_send, stream_id)
            if config.server_names:  # Hypercorn's own check of the Host (a 404 when it is not one of them)
                await stream.handle(Request(stream_id=stream_id, headers=request.headers, http_version="1.1",
                                            method=request.method, raw_path=request.target,
                                            state=self.connection_state))
            else:
                stream.start_time = time.time()
                scope: Any = http_scope(request, stream.scheme, config.root_path, self.client, self.server,
                                        self.connection_state)
                stream.scope = scope
                stream.app_put = await self.task_group.spawn_app(self.app, config, scope, stream.app_send)
            self.keep_alive_requests += 1
            await self.context.mark_request()
            if config.server_names:
                await stream.handle(end_body)
            else:  # what the stream does with EndBody
                await stream.app_put({"type": "http.request", "body": b"", "more_body": False})
            if not connection._receive_buffer:
                return  # h11's next event would be NEED_DATA
            # A pipelined request: h11 would say PAUSED, and Hypercorn waits for this response to end first.
            await self.can_read.clear()
            await self.can_read.wait()
            connection = self.connection
        await original(self)

    handle_events._secreg_direct = True  # type: ignore[attr-defined]
    protocol._handle_events = handle_events  # type: ignore[method-assign]
    return True
