"""HTTP/1.1 request heads read by secreg (`secreg.hypercorn_h11_requests`) instead of h11: on the same bytes, either
the request h11 reads, with h11's connection state moved as its `next_event` moves it (the request, then the end of
its empty body), or nothing read and nothing changed, for h11 to read or refuse; random heads from hypothesis as
well as the refusals h11 makes (obs-fold, bad bytes, a second Host, ...). Then through Hypercorn's protocol with an
ASGI app (the scope, the body, pipelined requests, a head in pieces), and through a real server over TLS."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from secreg import hypercorn_h11_requests
from secreg.hypercorn_h11_requests import read_simple_request
from tests.h11protocol import h11_config, serve_h11
from tests.server import run_secreg

BEARER = b"Bearer " + b"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9." + b"x" * 420 + b".sig-_"


def _state(connection: h11.Connection) -> tuple[Any, ...]:
    return (connection.states, connection._cstate.keep_alive, connection._cstate.pending_switch_proposals,
            connection.client_is_waiting_for_100_continue, connection._request_method, connection.their_http_version,
            connection._reader, type(connection._reader), getattr(connection._reader, "_remaining", None),
            connection._writer, bytes(connection._receive_buffer), connection._receive_buffer_closed)


def _h11_reads(data: bytes) -> tuple[Any, h11.Connection]:
    """What h11 alone makes of `data`: ("request", method, target, headers) after the request and the end of its
    body, with the connection; ("refused", status) when it refuses the head; ("other", event) otherwise."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    try:
        event = connection.next_event()
        if not isinstance(event, h11.Request):
            return ("other", event), connection
        end = connection.next_event()
    except h11.RemoteProtocolError as error:
        return ("refused", error.error_status_hint), connection
    if not isinstance(end, h11.EndOfMessage):
        return ("other", end), connection
    return ("request", event.method.decode("ascii").upper(), event.target, list(event.headers)), connection


def _compare(data: bytes) -> bool:
    """Both readers on `data`; True when secreg read the request. Fails when they differ in what they read or in
    the state they leave, or when secreg read nothing but changed something."""
    theirs, h11_connection = _h11_reads(data)
    ours = h11.Connection(h11.SERVER)
    ours.receive_data(data)
    before = _state(ours)
    request = read_simple_request(ours)
    if request is None:
        assert _state(ours) == before
        return False
    assert theirs == ("request", request.method, request.target, request.headers)
    assert _state(ours) == _state(h11_connection)
    assert all(type(part) is bytes for pair in request.headers for part in pair) and type(request.target) is bytes
    return True


PLAIN = {
    "wrk": b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nAccept: application/json\r\nAuthorization: %s\r\n\r\n"
           % BEARER,
    "docker": b"HEAD /v2/library/alpine/manifests/latest HTTP/1.1\r\nHost: registry.example:5000\r\n"
              b"User-Agent: docker/27.5.1 go/go1.22.11 git-commit/4c9b3b0 kernel/6.1.0 os/linux arch/amd64\r\n"
              b"Accept: application/vnd.oci.image.manifest.v1+json\r\n"
              b"Accept: application/vnd.docker.distribution.manifest.v2+json\r\nAuthorization: %s\r\n"
              b"Accept-Encoding: gzip\r\n\r\n" % BEARER,
    "delete": b"DELETE /v2/a/manifests/sha256:%s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"0" * 64),
    "keep-alive": b"GET /v2/ HTTP/1.1\r\nhost: x\r\nConnection: Keep-Alive\r\n\r\n",
    "ows-obs-text-controls": b"GET /v2/?n=1&last=a%20b HTTP/1.1\r\nHost:x\r\nX-A: \t a \t b\x01\xe9 \t\r\n"
                             b"x-empty:\r\nX-Odd_Name!~: v\r\n\r\n",
    "target-forms": b"GET http://x/v2/%7e?a=b#c HTTP/1.1\r\nHost: x\r\n\r\n",
    "pipelined": b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "followed-by-a-bad-one": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x00",
}


@pytest.mark.parametrize("case", sorted(PLAIN))
def test_plain_heads_are_read_as_h11_reads_them(case: str) -> None:
    assert _compare(PLAIN[case])


# Heads left to h11; the value is what h11 makes of them ("refused" with its status, or its own reading).
LEFT = {
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "request"),
    "fold-at-start": (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", "refused"),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "refused"),
    "no-host": (b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", "refused"),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", "refused"),
    "vt-in-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb\r\n\r\n", "refused"),
    "ff-in-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0cb\r\n\r\n", "refused"),
    "cr-in-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "refused"),
    "bare-lf-line": (b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", "request"),
    "bare-lf-end": (b"GET / HTTP/1.1\nHost: x\n\n", "request"),
    "lf-then-crlf-end": (b"GET / HTTP/1.1\r\nHost: x\n\r\nX-A: b\r\n\r\n", "request"),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "refused"),
    "no-colon": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", "refused"),
    "empty-name": (b"GET / HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n", "refused"),
    "bad-name": (b"GET / HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n", "refused"),
    "latin-name": (b"GET / HTTP/1.1\r\nHost: x\r\nX-\xe9: b\r\n\r\n", "refused"),
    "content-length": (b"DELETE / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "request"),
    "content-length-smuggle": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /", "other"),
    "two-lengths": (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "refused"),
    "chunked": (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "request"),
    "te-and-cl": (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "other"),
    "te-other": (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "refused"),
    "upgrade-h2c": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", "request"),
    "websocket": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", "request"),
    "expect": (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", "request"),
    "connection-close": (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "request"),
    "http-1.0": (b"GET / HTTP/1.0\r\n\r\n", "request"),
    "http-2.0-prior-knowledge": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "request"),
    "lower-case-method": (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", "request"),
    "post": (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", "request"),
    "connect": (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", "request"),
    "two-spaces": (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "space-at-end": (b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", "refused"),
    "tab-separator": (b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "del-in-target": (b"GET /a\x7f HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "latin-in-target": (b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "lower-case-version": (b"GET / http/1.1\r\nHost: x\r\n\r\n", "refused"),
    "version-digits": (b"GET / HTTP/11\r\nHost: x\r\n\r\n", "refused"),
    "empty-line-first": (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "no-headers-end": (b"\r\n\r\n", "refused"),
    "nul-in-target": (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", "refused"),
    "incomplete": (b"GET / HTTP/1.1\r\nHost: x\r\n\r", "other"),
}


@pytest.mark.parametrize("case", sorted(LEFT))
def test_heads_that_are_not_plain_are_left_whole_to_h11(case: str) -> None:
    data, outcome = LEFT[case]
    assert not _compare(data)
    assert _h11_reads(data)[0][0] == outcome


def test_a_request_is_read_only_on_a_connection_waiting_for_one() -> None:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(PLAIN["pipelined"])
    assert read_simple_request(connection) is not None
    before = _state(connection)
    assert read_simple_request(connection) is None  # the first is not answered yet: h11 says PAUSED
    assert _state(connection) == before
    assert connection.next_event() is h11.PAUSED
    connection.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
    connection.send(h11.EndOfMessage())
    connection.start_next_cycle()
    assert read_simple_request(connection) is not None and not connection._receive_buffer
    closed = h11.Connection(h11.SERVER)
    closed.receive_data(PLAIN["wrk"])
    closed.receive_data(b"")
    assert read_simple_request(closed) is None  # end of file already seen: h11's own path


@pytest.mark.parametrize("case", ["wrk", "docker", "ows-obs-text-controls"])
def test_a_head_in_pieces_is_read_once_whole_wherever_it_is_cut(case: str) -> None:
    """As Hypercorn's loop does it: secreg's reader first, h11's `next_event` when it reads nothing (NEED_DATA
    until the head is whole); every cut of the head into two pieces, and byte by byte."""
    data = PLAIN[case]
    expected, h11_connection = _h11_reads(data)
    cuts: list[list[bytes]] = [[data[:i], data[i:]] for i in range(1, len(data))]
    cuts.append([data[i:i + 1] for i in range(len(data))])
    for pieces in cuts:
        connection = h11.Connection(h11.SERVER)
        request = None
        for piece in pieces:
            connection.receive_data(piece)
            request = read_simple_request(connection)
            if request is None:
                assert connection.next_event() is h11.NEED_DATA
        assert request is not None
        assert expected == ("request", request.method, request.target, request.headers)
        assert _state(connection) == _state(h11_connection)


# --- random heads --------------------------------------------------------------------------------------------

_PLAIN_NAMES = [b"Accept", b"Authorization", b"User-Agent", b"X-A", b"x_b!", b"Te", b"Connection"]
_ODD_NAMES = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Upgrade", b"Expect", b"", b"X A", b"X:A", b"\xe9",
              b"HTTP2-Settings", b"X(A)"]
_PLAIN_VALUES = [b"x", b"keep-alive", b"Keep-Alive", b"a \t b", b"\x01\xe9\x7f", b"", BEARER]
_ODD_VALUES = [b"close", b"Keep-Alive, close", b"0", b"5", b"chunked", b"h2c", b"100-continue", b"a\x00", b"a\x0b",
               b"a\x0cb", b"\x1c\x1f"]


@st.composite
def _heads(draw: Any) -> bytes:
    """A request head and what follows it, each part plain or (one time in ~3, part by part when the head is
    odd) a way h11 reads differently, refuses, or reads but secreg leaves to it."""
    odd = draw(st.booleans())

    def part(plain: list[bytes], other: list[bytes], anything: Any = None) -> bytes:
        if odd and draw(st.integers(0, 2)) == 0:
            choices = st.sampled_from(other) if anything is None else st.one_of(st.sampled_from(other), anything)
            return bytes(draw(choices))
        return bytes(draw(st.sampled_from(plain)))

    method = part([b"GET", b"HEAD", b"DELETE"], [b"get", b"POST", b"PUT", b"PRI", b"CONNECT", b"OPTIONS", b"G-T", b""])
    target = part([b"/v2/", b"/", b"/a?b=c%20", b"http://x/y", b"*"], [b"", b"/a b", b"/\xe9", b"/\x7f"],
                  st.binary(max_size=8))
    version = part([b"HTTP/1.1"], [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTTP/1.10", b"", b"http/1.1"])
    separator = part([b" "], [b"  ", b"\t", b""])
    lines = [method + separator + target + separator + version]
    headers = draw(st.integers(0, 6))
    host = draw(st.integers(0, headers))  # where the one Host line goes (an odd head may have another, or none)
    for index in range(headers + 1):
        if index == host:
            lines.append(part([b"Host: x", b"host:127.0.0.1:5000", b"HOST: \t[::1] "], [b"", b"Host:", b"Host: a b"]))
            continue
        fold = part([b""], [b" ", b"\t"])
        colon = part([b":"], [b"", b" :", b"::"])
        space = part([b"", b" ", b"\t", b"  ", b" \t"], [b"\x00", b"\x0b"])
        name, value = part(_PLAIN_NAMES, _ODD_NAMES), part(_PLAIN_VALUES, _ODD_VALUES, st.binary(max_size=12))
        lines.append(fold + name + colon + space + value + part([b"", b" ", b"\t"], [b"\r", b"\x0c"]))
    head = b"".join(line + part([b"\r\n"], [b"\n", b"\r", b"\r\r\n", b"\n\r"]) for line in lines)
    return head + part([b"\r\n"], [b"\n", b""]) + part([b"", b"GET /"], [b"\x00", b"G\r\n\r\n", b"\r\n"])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_heads())
def test_random_heads_are_read_as_h11_reads_them_or_left_to_it(data: bytes) -> None:
    _compare(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=60), st.binary(max_size=20))
def test_random_bytes_around_a_plain_head_are_read_as_h11_reads_them_or_left_to_it(before: bytes,
                                                                                     after: bytes) -> None:
    _compare(before + b"\r\nHost: x\r\n\r\n" + after)
    _compare(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + before + b"\r\n\r\n" + after)
    _compare(b"GET " + before + b" HTTP/1.1\r\nHost: x\r\n\r\n")


def test_the_random_heads_have_both_kinds() -> None:
    """The generator makes heads secreg reads, and heads h11 reads that secreg leaves to it (else the comparison
    above would test little)."""
    assert _compare(find(_heads(), _compare, settings=settings(database=None, max_examples=5000)))
    left = find(_heads(), lambda data: not _compare(data) and _h11_reads(data)[0][0] == "request",
                settings=settings(database=None, max_examples=5000))
    assert _h11_reads(left)[0][0] == "request"


# --- through Hypercorn's H11Protocol and HTTPStream --------------------------------------------------------


def _serve(pieces: list[bytes]) -> tuple[list[Any], list[dict[str, Any]], int]:
    """Hypercorn's protocol reading `pieces` one by one, an ASGI app answering each request with its body length:
    what reached the socket ("idle" between requests, "closed"), each scope with the request body the app read,
    and how many client events h11 itself processed."""
    config = h11_config()
    writes: list[Any] = []
    scopes: list[dict[str, Any]] = []
    processed = [0]
    h11_process = h11.Connection._process_event

    def counted(self: h11.Connection, role: Any, event: Any) -> None:
        if role is h11.CLIENT:
            processed[0] += 1
        h11_process(self, role, event)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        scopes.append({**{k: scope[k] for k in ("method", "path", "raw_path", "query_string", "http_version",
                                                "headers")}, "body": body})
        answer = b"%d" % len(body)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    h11.Connection._process_event = counted  # type: ignore[method-assign]
    try:
        writes += serve_h11(app, config, pieces)
    finally:
        h11.Connection._process_event = h11_process  # type: ignore[method-assign]
    return writes, scopes, processed[0]


def _answer(length: int, close: bool = False, head: bool = False) -> bytes:
    body = b"%d" % length
    return b"HTTP/1.1 200 \r\ncontent-length: %d\r\nserver: hypercorn-h11\r\n%s\r\n%s" % (
        len(body), b"Connection: close\r\n" if close else b"", b"" if head else body)


def test_the_scope_is_the_one_hypercorn_builds_from_h11s_request() -> None:
    writes, scopes, processed = _serve([PLAIN["docker"]])
    assert writes == [_answer(0, head=True), "idle"] and processed == 0
    assert scopes == [{"method": "HEAD", "path": "/v2/library/alpine/manifests/latest",
                       "raw_path": b"/v2/library/alpine/manifests/latest", "query_string": b"",
                       "http_version": "1.1", "headers": _h11_reads(PLAIN["docker"])[0][3], "body": b""}]
    _, quoted, _ = _serve([b"GET /v2/a%2Fb/tags/list?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"])
    assert quoted[0]["path"] == "/v2/a/b/tags/list" and quoted[0]["raw_path"] == b"/v2/a%2Fb/tags/list"
    assert quoted[0]["query_string"] == b"n=1"


def test_pipelined_plain_requests_are_read_here_one_after_the_other() -> None:
    requests = b"".join(b"%s /%d HTTP/1.1\r\nHost: x\r\n\r\n" % (method, index)
                        for index, method in enumerate([b"GET", b"HEAD", b"DELETE", b"GET"]))
    writes, scopes, processed = _serve([requests])
    assert [s["raw_path"] for s in scopes] == [b"/0", b"/1", b"/2", b"/3"] and processed == 0
    assert writes == [_answer(0), "idle", _answer(0, head=True), "idle", _answer(0), "idle", _answer(0), "idle"]


def test_pipelined_plain_and_h11_requests_are_answered_in_order() -> None:
    requests = (b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"DELETE /3 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /4 HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"
                b"HEAD /5 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    writes, scopes, _ = _serve([requests])
    assert [s["raw_path"] for s in scopes] == [b"/1", b"/2", b"/3", b"/4", b"/5", b"/6"]
    assert [s["body"] for s in scopes] == [b"", b"abc", b"", b"", b"", b""]
    assert [h for h in scopes[3]["headers"] if h[0] == b"x-a"] == [(b"x-a", b"a b")]  # h11's obs-fold
    assert writes == [_answer(0), "idle", _answer(3), "idle", _answer(0), "idle", _answer(0), "idle",
                      _answer(0, head=True), "idle", _answer(0, close=True), "closed"]


def test_a_head_in_pieces_and_one_h11_refuses_over_hypercorn() -> None:
    data = PLAIN["wrk"]
    writes, scopes, processed = _serve([data[i:i + 7] for i in range(0, len(data), 7)])
    assert writes == [_answer(0), "idle"] and processed == 0
    assert scopes[0]["headers"][2] == (b"authorization", BEARER)
    writes, scopes, _ = _serve([b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"])
    assert not scopes and writes[-1] == "closed" and writes[0].startswith(b"HTTP/1.1 400 ")


def test_the_scope_built_here_is_the_one_hypercorns_stream_builds() -> None:
    import hypercorn.config
    from hypercorn.protocol.events import Request
    from hypercorn.protocol.http_stream import HTTPStream

    class Group:
        async def spawn_app(self, app: Any, config: Any, scope: dict[str, Any], send: Any) -> Any:
            self.scope = scope
            return None

    config = hypercorn.config.Config()
    config.root_path = "/root"
    for target in (b"/v2/", b"/v2/a%2Fb/tags/list?n=1&last=%20", b"/v2/caf%C3%A9?", b"*", b"http://x/y?z"):
        head = b"GET %s HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n" % target
        connection = h11.Connection(h11.SERVER)
        connection.receive_data(head)
        request = read_simple_request(connection)
        assert request is not None
        group = Group()
        stream = HTTPStream(None, config, None, group, True, ("127.0.0.1", 1), ("127.0.0.1", 2), None, 1)  # type: ignore[arg-type]
        state = {"a": 1}
        asyncio.run(stream.handle(Request(stream_id=1, headers=request.headers, http_version="1.1",
                                          method=request.method, raw_path=request.target, state=state)))
        ours = hypercorn_h11_requests.http_scope(request, "https", "/root", ("127.0.0.1", 1), ("127.0.0.1", 2),
                                                 state)
        assert ours == group.scope and ours["state"] is not state


# --- a real server over TLS --------------------------------------------------------------------------------


def _exchange(server: Any, data: bytes, pieces: int = 1) -> bytes:
    context = server.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", server.port)) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            sock.sendall(data[start:start + step])
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_plain_heads_whole_in_pieces_and_refused_over_tls(tmp_path: Path) -> None:
    with run_secreg(tmp_path, {"auth": {"enabled": False}, "http": {"workers": 1}}) as server:
        plain = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % BEARER
        close = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answers = _exchange(server, plain + b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n" + close)
        assert answers.count(b"HTTP/1.1 200 ") == 3 and answers.endswith(b"{}")
        assert _exchange(server, plain + close, pieces=40).count(b"HTTP/1.1 200 ") == 2
        for refused in (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
                        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: a\x00\r\n\r\n",
                        b"GET /v2/ HTTP/1.1\r\n Host: x\r\n\r\n"):
            assert _exchange(server, refused + plain).startswith(b"HTTP/1.1 400 ")  # and nothing after it
            assert _exchange(server, refused + plain).count(b"HTTP/1.1 ") == 1


def test_the_tuning_finds_what_it_changes() -> None:
    assert hypercorn_h11_requests.direct_h11_request_heads()
