"""HTTP/1.1 response heads written by secreg (`secreg.hypercorn_h11.direct_h11_response_heads`) instead of h11:
the same bytes and the same h11 connection state as h11's own `send`, checked against h11 on real h11
connections; then through Hypercorn's protocol and stream with an ASGI app, and through a real server over TLS
(pipelined requests, HEAD, `Connection: close`, a streamed body)."""

from __future__ import annotations

import array
import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secreg import hypercorn_h11, hypercorn_tuning
from tests.h11protocol import h11_config, serve_h11
from tests.oci import sha256
from tests.server import run_secreg

GET = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n"
BASE = [(b"docker-distribution-api-version", b"registry/2.0"), (b"content-length", b"2"),
        (b"content-type", b"application/json"), (b"x-request-id", b"0123456789abcdef")]
EXTRA = [(b"date", b"Fri, 04 Dec 2026 04:00:00 GMT"), (b"server", b"hypercorn-h11")]


def _connection(request: bytes) -> h11.Connection:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(request)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    while connection.their_state is h11.SEND_BODY and not connection.they_are_waiting_for_100_continue:
        if connection.next_event() is h11.NEED_DATA:  # a body not all here yet: the client stays in SEND_BODY
            break
    return connection


class _Held:
    """What `finish_response` uses of Hypercorn's protocol: its h11 connection, the held head, its send."""

    def __init__(self, connection: h11.Connection) -> None:
        self.connection = connection
        self._secreg_head = b"head"
        self.writes: list[bytes] = []

    async def send(self, event: Any) -> None:
        self.writes.append(event.data)


def _state(connection: h11.Connection) -> tuple[Any, ...]:
    writer = connection._writer
    return (connection.states, connection._cstate.keep_alive, connection.client_is_waiting_for_100_continue,
            type(writer), getattr(writer, "_length", None), type(connection._reader),
            connection._cstate.pending_switch_proposals)


DIRECT = {
    "get": (GET, 200, BASE),
    "head": (b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", 200, BASE),
    "head-404": (b"HEAD /v2/a/manifests/b HTTP/1.1\r\nHost: x\r\n\r\n", 404, BASE),
    "lowercase-head-method": (b"head /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", 200, BASE),
    "client-close": (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 401, BASE),
    "http-1.0": (b"GET /v2/ HTTP/1.0\r\n\r\n", 200, BASE),
    "http-1.0-keep-alive": (b"GET /v2/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, BASE),
    "body-unread": (b"PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", 401, BASE),
    "expect-100": (b"PUT /v2/a/blobs/uploads/u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                   b"Expect: 100-continue\r\n\r\n", 413, BASE),
    "body-read": (b"POST /v2/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab", 202, BASE),
    "204": (GET, 204, [(b"x-a", b"b")]),
    "304-with-length": (GET, 304, [(b"Content-Length", b"10"), (b"ETag", b'"x"')]),
    "cases-spaces-obs-text": (GET, 999, [(b"Content-LENGTH", b"0"), (b"X-Odd_Name!", b"a \t b\x01c"),
                                         (b"x-latin", b"caf\xe9"), (b"x-empty", b"")]),
    "big-length": (GET, 200, [(b"content-length", b"9" * 20)]),
}


@pytest.mark.parametrize("case", sorted(DIRECT))
def test_direct_heads_are_what_h11_writes_and_leave_its_state(case: str) -> None:
    request, status, headers = DIRECT[case]
    theirs, ours = _connection(request), _connection(request)
    expected = theirs.send(h11.Response(status_code=status, headers=headers + EXTRA))
    assert hypercorn_h11.response_head(ours, status, headers, EXTRA) == expected
    assert _state(ours) == _state(theirs)
    length = ours._writer._length  # type: ignore[union-attr]
    if length < 1000:  # the whole body and its end, as h11 would send them
        body = b"x" * length
        if body:
            theirs.send(h11.Data(data=body))
        theirs.send(h11.EndOfMessage())
        held = _Held(ours)
        assert asyncio.run(hypercorn_h11.finish_response(held, body))
        assert held.writes == [b"head" + body] and "_secreg_head" not in held.__dict__
        assert _state(ours) == _state(theirs)
        if theirs.our_state is h11.DONE and theirs.their_state is h11.DONE:
            theirs.start_next_cycle()
            ours.start_next_cycle()
            for connection in (theirs, ours):
                connection.receive_data(GET)
                assert isinstance(connection.next_event(), h11.Request)
            assert _state(ours) == _state(theirs)


REFUSED = {
    "no-length": (GET, 200, [(b"x-a", b"b")]),
    "head-no-length": (b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", 200, [(b"x-a", b"b")]),
    "chunked": (GET, 200, [(b"transfer-encoding", b"chunked")]),
    "connection": (GET, 200, [*BASE, (b"connection", b"close")]),
    "keep-alive": (GET, 200, [*BASE, (b"Connection", b"keep-alive")]),
    "host": (GET, 200, [*BASE, (b"host", b"x")]),
    "two-lengths": (GET, 200, [*BASE, (b"content-length", b"2")]),
    "length-list": (GET, 200, [(b"content-length", b"2, 2")]),
    "length-sign": (GET, 200, [(b"content-length", b"+2")]),
    "length-21-digits": (GET, 200, [(b"content-length", b"1" * 21)]),
    "bad-name": (GET, 200, [*BASE, (b"bad name", b"x")]),
    "colon-name": (GET, 200, [*BASE, (b"bad:", b"x")]),
    "empty-name": (GET, 200, [*BASE, (b"", b"x")]),
    "crlf-value": (GET, 200, [*BASE, (b"x-a", b"a\r\nx-b: c")]),
    "nul-value": (GET, 200, [*BASE, (b"x-a", b"a\x00")]),
    "trailing-space": (GET, 200, [*BASE, (b"x-a", b"a ")]),
    "leading-space": (GET, 200, [*BASE, (b"x-a", b" a")]),
    "leading-tab": (GET, 200, [*BASE, (b"x-a", b"\ta")]),
    "trailing-tab": (GET, 200, [*BASE, (b"x-a", b"a\t")]),
    "only-space": (GET, 200, [*BASE, (b"x-a", b" ")]),
    "vt-value": (GET, 200, [*BASE, (b"x-a", b"a\x0bb")]),
    "ff-value": (GET, 200, [*BASE, (b"x-a", b"a\x0c")]),
    "cr-value": (GET, 200, [*BASE, (b"x-a", b"a\rb")]),
    "lf-value": (GET, 200, [*BASE, (b"x-a", b"a\nb")]),
    "str-name": (GET, 200, [*BASE, ("x-a", b"a")]),
    "status-1000": (GET, 1000, BASE),
    "informational": (GET, 103, BASE),
    "upgrade": (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n", 200, BASE),
    "connect": (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 200, BASE),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_heads_h11_would_refuse_or_rewrite_are_left_to_it(case: str) -> None:
    request, status, headers = REFUSED[case]
    connection = _connection(request)
    before = _state(connection)
    assert hypercorn_h11.response_head(connection, status, headers, EXTRA) is None
    assert _state(connection) == before


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=12))
def test_a_value_is_written_here_exactly_when_h11_writes_it(value: bytes) -> None:
    headers = [*BASE, (b"x-a", value)]
    theirs, ours = _connection(GET), _connection(GET)
    try:
        expected: bytes | None = theirs.send(h11.Response(status_code=200, headers=headers + EXTRA))
    except h11.LocalProtocolError:
        expected = None
    assert hypercorn_h11.response_head(ours, 200, headers, EXTRA) == expected
    if expected is not None:
        assert _state(ours) == _state(theirs)


def test_no_head_once_one_was_sent_and_no_whole_body_that_misses_its_length() -> None:
    connection = _connection(GET)
    connection.send(h11.Response(status_code=200, headers=BASE))
    before = _state(connection)
    assert hypercorn_h11.response_head(connection, 200, BASE, EXTRA) is None
    assert _state(connection) == before
    held = _Held(connection)
    for body in (b"x", b"xyz", memoryview(array.array("H", [1, 2]))):  # the length is 2 (the view has 4 bytes)
        assert not asyncio.run(hypercorn_h11.finish_response(held, body))
        assert _state(connection) == before and held.__dict__["_secreg_head"] == b"head"
    chunked = _connection(GET)
    chunked.send(h11.Response(status_code=200, headers=[]))
    held.connection = chunked
    assert not asyncio.run(hypercorn_h11.finish_response(held, b""))


@pytest.mark.parametrize("case", sorted(DIRECT))
def test_the_next_cycle_is_h11s_or_left_to_it(case: str) -> None:
    request, status, headers = DIRECT[case]
    theirs, ours = _connection(request), _connection(request)
    for connection in (theirs, ours):
        connection.send(h11.Response(status_code=status, headers=[(b"content-length", b"0")]))
        connection.send(h11.EndOfMessage())
    before = (_state(ours), ours._request_method)
    if theirs.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
        theirs.start_next_cycle()
        assert hypercorn_h11.next_cycle(ours)
        assert (_state(ours), ours._request_method, ours._reader) == (_state(theirs), None, theirs._reader)
    else:  # a body not read, Connection: close, HTTP/1.0: h11 would refuse (or Hypercorn closes)
        assert not hypercorn_h11.next_cycle(ours)
        assert (_state(ours), ours._request_method) == before


def test_the_extra_headers_are_hypercorns_and_follow_the_date() -> None:
    import hypercorn.config

    assert hypercorn_tuning.apply()
    config, other = hypercorn.config.Config(), hypercorn.config.Config()
    other.include_server_header = False
    other.alt_svc_headers = ["h3=\":443\""]
    for current in (config, other, config):
        # (the Date of both may differ once if a second begins between the two calls)
        assert any(hypercorn_h11.extra_headers(current) == current.response_headers("h11") for _ in range(2))


# --- through Hypercorn's H11Protocol and HTTPStream --------------------------------------------------------


def _serve(requests: bytes, messages: list[dict[str, Any]], status: int = 200,
           headers: list[tuple[bytes, bytes]] | None = None) -> tuple[list[Any], list[str], int]:
    """Hypercorn's protocol on `requests` (one read), an ASGI app answering each with a start and `messages`:
    what reached the socket (bytes, "idle" between requests, "closed"), the methods the app saw and how many
    events h11 itself framed."""
    config = h11_config()
    writes: list[Any] = []
    methods: list[str] = []
    framed = [0]
    h11_send = h11.Connection.send_with_data_passthrough

    def counted(self: h11.Connection, event: Any) -> Any:
        framed[0] += 1
        return h11_send(self, event)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        methods.append(scope["method"])
        await send({"type": "http.response.start", "status": status,
                    "headers": BASE if headers is None else headers})
        for message in messages:
            await send(message)

    h11.Connection.send_with_data_passthrough = counted  # type: ignore[method-assign]
    try:
        writes += serve_h11(app, config, [requests])
    finally:
        h11.Connection.send_with_data_passthrough = h11_send  # type: ignore[method-assign]
    return writes, methods, framed[0]


def _head(status: int = 200, headers: list[tuple[bytes, bytes]] = BASE, close: bool = False) -> bytes:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n%s\r\n" % (b"Connection: close\r\n" if close else b""))
    connection.next_event()
    return connection.send(h11.Response(status_code=status, headers=[*headers, (b"server", b"hypercorn-h11")]))


def test_a_whole_body_goes_out_with_its_head_in_one_write() -> None:
    writes, _, framed = _serve(GET, [{"type": "http.response.body", "body": b"{}"}])
    assert writes == [_head() + b"{}", "idle"] and framed == 0


def test_pipelined_requests_get_their_answers_in_order() -> None:
    requests = GET + b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /v2/x HTTP/1.1\r\nHost: x\r\n\r\n"
    writes, methods, framed = _serve(requests, [{"type": "http.response.body", "body": b"{}"}])
    assert methods == ["GET", "HEAD", "GET"]
    assert writes == [_head() + b"{}", "idle", _head(), "idle", _head() + b"{}", "idle"] and framed == 0


def test_connection_close_is_said_and_done() -> None:
    writes, _, framed = _serve(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                               [{"type": "http.response.body", "body": b"{}"}])
    assert writes == [_head(close=True) + b"{}", "closed"] and framed == 0


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_in_pieces_takes_h11s_writer(framing: str) -> None:
    headers = [(b"content-length", b"6")] if framing == "content-length" else [(b"x-a", b"b")]
    pieces = [{"type": "http.response.body", "body": piece, "more_body": True} for piece in (b"ab", b"cd")]
    writes, _, framed = _serve(GET, [*pieces, {"type": "http.response.body", "body": b"ef"}], headers=headers)
    head = _head(headers=headers)
    if framing == "content-length":  # the head is secreg's, the pieces and the end h11's
        assert writes == [head + b"ab", b"cd", b"ef", "idle"] and framed == 4
    else:
        assert writes == [head + b"2\r\nab\r\n", b"2\r\ncd\r\n", b"2\r\nef\r\n", b"0\r\n\r\n", "idle"]
        assert framed == 5


def test_a_start_hypercorn_would_strip_takes_its_path() -> None:
    stripped = [(b"content-length", b"2"), (b"x-a", b"b")]
    writes, _, framed = _serve(GET, [{"type": "http.response.body", "body": b"{}"}],
                               headers=[(b"content-length", b"2"), (b" x-a", b"b \t")])
    assert writes == [_head(headers=stripped) + b"{}", "idle"] and framed == 0


def test_a_body_short_of_its_length_is_refused_by_h11_and_closes() -> None:
    writes, _, framed = _serve(GET, [{"type": "http.response.body", "body": b"{"}])
    assert writes == [_head() + b"{", "closed"] and framed == 2  # the piece, then the end refused


# --- a real server over TLS --------------------------------------------------------------------------------


def _responses(sock: socket.socket, count: int, methods: list[bytes]) -> list[tuple[h11.Response, bytes]]:
    client = h11.Connection(h11.CLIENT)
    answers: list[tuple[h11.Response, bytes]] = []
    for method in methods[:count]:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        response, body = None, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert response is not None
        answers.append((response, body))
        if client.our_state is h11.MUST_CLOSE:
            break
        client.start_next_cycle()
    return answers


def test_pipelined_requests_over_tls_with_head_close_and_a_streamed_blob(tmp_path: Path) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 5)
    digest = sha256(blob)
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "http": {"workers": 1}}) as server:
        with server.client() as client:
            assert client.post("/v2/t/a/blobs/uploads/", params={"digest": digest}, content=blob).status_code == 201
        context = server.ssl_context()
        context.set_alpn_protocols(["http/1.1"])
        paths = [(b"GET", b"/v2/"), (b"HEAD", b"/v2/"), (b"GET", f"/v2/t/a/blobs/{digest}".encode()),
                 (b"HEAD", f"/v2/t/a/blobs/{digest}".encode()), (b"GET", b"/v2/t/a/manifests/nope"),
                 (b"GET", b"/v2/")]
        requests = b"".join(b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (
            method, path, b"Connection: close\r\n" if index == len(paths) - 1 else b"")
            for index, (method, path) in enumerate(paths))
        with socket.create_connection(("127.0.0.1", server.port)) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(requests)
            answers = _responses(sock, len(paths), [method for method, _ in paths])
            assert sock.recv(1) == b""  # closed after the last, as it asked
    assert [r.status_code for r, _ in answers] == [200, 200, 200, 200, 404, 200]
    assert [body for _, body in answers][:4] == [b"{}", b"", blob, b""]
    assert b"MANIFEST_UNKNOWN" in answers[4][1] and answers[5][1] == b"{}"
    assert dict(answers[3][0].headers)[b"content-length"] == str(len(blob)).encode()
    assert (b"connection", b"close") in answers[5][0].headers
    assert all((b"connection", b"close") not in r.headers for r, _ in answers[:5])
