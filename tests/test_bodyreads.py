"""Request bodies without copies (secreg/bodyreads.py): the piece reader on its own, and bodies through a real
server over TLS sent in pieces that end mid-body, at the body's end, and with the next request right behind."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
import struct
import time
from pathlib import Path
from typing import Any

import h11
import pytest
from h11._readers import ChunkedReader, chunk_header_re

from secreg import connections
from secreg.bodyreads import H11_READERS, PieceReader, _chunk_data, expects_more_body
from tests.oci import sha256
from tests.server import RunningServer, run_secreg

OPEN = {"auth": {"enabled": False}}


class _Transport:
    """Records pause/resume calls, as a socket transport receives them from its reader."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def _reader(limit: int = 10) -> tuple[PieceReader, _Transport]:
    plain = asyncio.StreamReader(limit=limit)
    transport = _Transport()
    plain.set_transport(transport)  # type: ignore[arg-type]
    plain.feed_data(b"already")  # what came before the reader was adopted stays first
    PieceReader.adopt(plain)
    assert isinstance(plain, PieceReader)
    return plain, transport


def test_pieces_are_handed_on_as_they_came() -> None:
    async def run() -> None:
        reader, _ = _reader(limit=1000)
        piece = os.urandom(300)
        reader.feed_data(piece)
        assert await reader.read(1000) == b"already" + piece  # several waiting: joined up to n
        reader.feed_data(piece)
        got = await reader.read(1000)
        assert got is piece  # one waiting: the very object, not a copy
        reader.feed_data(bytearray(b"view"))  # a buffer the transport may reuse is copied
        assert await reader.read(1000) == b"view"
        reader.feed_data(b"0123456789")
        assert await reader.read(4) == b"0123" and await reader.read(100) == b"456789"  # split past n
        reader.feed_data(b"end")
        reader.feed_eof()
        assert not reader.at_eof()
        assert await reader.read(-1) == b"end" and reader.at_eof() and await reader.read(10) == b""

    asyncio.run(run())


def test_reading_pauses_and_resumes_at_the_stream_readers_limits() -> None:
    async def run() -> None:
        reader, transport = _reader(limit=10)
        reader.feed_data(b"x" * 13)  # 20 waiting: not past 2 x limit
        assert transport.calls == []
        reader.feed_data(b"y")
        assert transport.calls == ["pause"]
        assert await reader.read(7) == b"already"  # 14 left: above the limit, still paused
        assert transport.calls == ["pause"]
        assert await reader.read(13) == b"x" * 13
        assert transport.calls == ["pause", "resume"]
        waiting = asyncio.ensure_future(reader.read(5))
        await asyncio.sleep(0)
        assert await waiting == b"y"
        exploded = asyncio.ensure_future(reader.read(5))
        await asyncio.sleep(0)
        reader.set_exception(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await exploded
        with pytest.raises(NotImplementedError):
            await reader.readexactly(1)

    asyncio.run(run())


def test_one_read_alone_does_not_pause_the_transport_a_second_waiting_does() -> None:
    """A piece past 2 x limit with nothing else waiting is one transport read, bounded by its read size: no pause
    (a reader that keeps up would resume at once, two epoll_ctl calls per read). A second piece waiting behind
    it pauses, and reading down to the limit resumes, as before."""
    async def run() -> None:
        reader, transport = _reader(limit=10)
        assert await reader.read(100) == b"already"
        big = os.urandom(500)
        reader.feed_data(big)
        assert transport.calls == []
        assert await reader.read(1000) is big
        reader.feed_data(big)
        reader.feed_data(b"more")
        assert transport.calls == ["pause"]
        reader.feed_data(b"still more")  # paused once only
        assert transport.calls == ["pause"]
        assert await reader.read(1000) == big + b"more" + b"still more"
        assert transport.calls == ["pause", "resume"]

    asyncio.run(run())


def test_what_arrived_before_the_connection_broke_is_read_first() -> None:
    """A connection lost with an error (connection_lost(exc) sets the reader's exception) while pieces are
    still waiting: they are read, then the error is raised (asyncio's StreamReader raises at once)."""
    async def main() -> None:
        reader, _ = _reader(limit=1 << 20)
        reader.feed_data(b"body")
        reader.set_exception(ConnectionResetError("reset"))
        assert await reader.read(1 << 20) == b"alreadybody"
        with pytest.raises(ConnectionResetError):
            await reader.read(1 << 20)
        assert not reader.at_eof()  # an error, not an end of stream

    asyncio.run(main())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with run_secreg(tmp_path_factory.mktemp("bodyreads"), OPEN) as running:
        yield running


def _tls(server: RunningServer) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    return server.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def _responses(sock: ssl.SSLSocket, count: int) -> list[bytes]:
    """`count` response heads (every answer here has Content-Length 0 or a short JSON body)."""
    data = b""
    heads: list[bytes] = []
    while len(heads) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {heads}"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(data) < length:
            data += sock.recv(65536)
        heads.append(head + b"\r\n\r\n" + data[:length])
        data = data[length:]
    return heads


def _put_request(repo: str, body: bytes, length: int | None = None) -> bytes:
    return (f"POST /v2/{repo}/blobs/uploads/?digest={sha256(body)} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body) if length is None else length}"
            "\r\n\r\n").encode()


def test_a_body_in_odd_pieces_with_the_next_request_behind_it(server: RunningServer) -> None:
    body = os.urandom(3 * 1024 * 1024 + 12345)
    second = os.urandom(70_000)
    stream = _put_request("pieces/a", body) + body + _put_request("pieces/b", second) + second + (
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    with _tls(server) as sock:
        position = 0
        for size in (100, 1, 65536, 999_999, 7, 2 * 1024 * 1024, 123_457):  # ends mid-body and mid-head
            sock.sendall(stream[position:position + size])
            position += size
        sock.sendall(stream[position:])
        first, following, v2 = _responses(sock, 3)
    assert first.startswith(b"HTTP/1.1 201 ") and following.startswith(b"HTTP/1.1 201 ")
    assert v2.startswith(b"HTTP/1.1 200 ")
    with server.client() as client:
        assert client.get(f"/v2/pieces/a/blobs/{sha256(body)}").content == body
        assert client.get(f"/v2/pieces/b/blobs/{sha256(second)}").content == second


def _chunked_request(repo: str, body: bytes) -> bytes:
    return (f"POST /v2/{repo}/blobs/uploads/?digest={sha256(body)} HTTP/1.1\r\nHost: x\r\n"
            "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


def _framed(body: bytes, size: int, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n" + trailer + b"\r\n"


def test_a_chunked_body_in_odd_pieces_with_the_next_request_behind_it(server: RunningServer) -> None:
    # Pieces end inside chunk data, inside a chunk header, between the data and its CRLF, inside the CRLF and
    # inside the trailer: h11 parses the framing, the data inside a chunk is passed through.
    body = os.urandom(2 * 1024 * 1024 + 4321)
    second = os.urandom(70_001)
    stream = (_chunked_request("chunked/a", body) + _framed(body, 70_001, b"X-Trailer: yes\r\n")
              + _chunked_request("chunked/b", second) + _framed(second, 32768)
              + b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    with _tls(server) as sock:
        position = 0
        for size in (150, 3, 70_000, 1, 1, 1, 5, 65536, 999_999, 7, 300_000, 123_457):
            sock.sendall(stream[position:position + size])
            position += size
        while position < len(stream):  # the rest in pieces of a prime size, ending anywhere in the framing
            sock.sendall(stream[position:position + 40_009])
            position += 40_009
        first, following, v2 = _responses(sock, 3)
    assert first.startswith(b"HTTP/1.1 201 ") and following.startswith(b"HTTP/1.1 201 ")
    assert v2.startswith(b"HTTP/1.1 200 ")
    with server.client() as client:
        assert client.get(f"/v2/chunked/a/blobs/{sha256(body)}").content == body
        assert client.get(f"/v2/chunked/b/blobs/{sha256(second)}").content == second


@pytest.mark.parametrize("split", [False, True])
def test_a_chunk_longer_than_its_header_says_is_refused(server: RunningServer, split: bool) -> None:
    # A chunk announcing 1000 bytes followed by 1010: the bytes after the 1000th are not the chunk's CRLF.
    body = os.urandom(1010)
    framed = b"%x\r\n" % 1000 + body + b"\r\n0\r\n\r\n"
    head = _chunked_request(f"chunked/long{int(split)}", body)
    with _tls(server) as sock:
        if split:  # the header alone, then the data in one piece: the over-long piece is passed through
            sock.sendall(head + framed[:5])
            sock.sendall(framed[5:])
        else:
            sock.sendall(head + framed)
        answer = _responses(sock, 1)[0]
    assert answer.startswith(b"HTTP/1.1 400 ")
    with server.client() as client:
        assert client.head(f"/v2/chunked/long{int(split)}/blobs/{sha256(body)}").status_code == 404
        assert client.get("/v2/").status_code == 200


def test_a_chunked_body_cut_short_stores_nothing(server: RunningServer) -> None:
    body = os.urandom(300_000)
    with _tls(server) as sock:
        sock.sendall(_chunked_request("chunked/short", body) + b"%x\r\n" % len(body) + body[:200_000])
    with server.client() as client:
        assert client.head(f"/v2/chunked/short/blobs/{sha256(body)}").status_code == 404


def test_a_body_cut_short_stores_nothing_and_the_server_goes_on(server: RunningServer) -> None:
    body = os.urandom(2 * 1024 * 1024)
    with _tls(server) as sock:
        sock.sendall(_put_request("short/a", body) + body[: len(body) // 2])
    with server.client() as client:
        assert client.head(f"/v2/short/a/blobs/{sha256(body)}").status_code == 404
        r = client.post(f"/v2/short/a/blobs/uploads/?digest={sha256(body)}", content=body)
        assert r.status_code == 201
        assert client.get(f"/v2/short/a/blobs/{sha256(body)}").content == body


def test_bytes_past_the_content_length_are_the_next_request(server: RunningServer) -> None:
    body = os.urandom(1024 * 1024)
    with _tls(server) as sock:  # the body is followed by garbage in the same write: h11 sees it as a request
        sock.sendall(_put_request("over/a", body) + body + b"NOT HTTP AT ALL\r\n\r\n")
        first, refused = _responses(sock, 2)
    assert first.startswith(b"HTTP/1.1 201 ") and refused.startswith(b"HTTP/1.1 400 ")
    wrong = os.urandom(1024 * 1024)
    with _tls(server) as sock:  # the digest is checked on the bytes that came: a mismatch stores nothing
        sock.sendall(_put_request("over/b", body) + wrong)
        assert b"DIGEST_INVALID" in _responses(sock, 1)[0]
    with server.client() as client:
        assert client.get(f"/v2/over/a/blobs/{sha256(body)}").content == body
        assert client.head(f"/v2/over/b/blobs/{sha256(body)}").status_code == 404


def test_chunk_ranges_are_still_checked(server: RunningServer, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    with server.client() as client:
        start = client.post("/v2/ranges/a/blobs/uploads/")
        location = start.headers["location"]
        r = client.patch(location, content=data[:1024 * 1024],
                         headers={"Content-Range": "0-1048575", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        location = r.headers["location"]
        wrong = client.patch(location, content=data[1024 * 1024:],
                             headers={"Content-Range": "5-2097156", "Content-Type": "application/octet-stream"})
        assert wrong.status_code == 416
        r = client.patch(location, content=data[1024 * 1024:],
                         headers={"Content-Range": f"1048576-{len(data) - 1}",
                                  "Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        done = client.put(r.headers["location"], params={"digest": sha256(data)})
        assert done.status_code == 201
        assert client.get(f"/v2/ranges/a/blobs/{sha256(data)}").content == data


# --- the chunked walk (one Body per read) against h11's own parser --------------------------------------------

_HEAD = b"POST /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def _parse(stream: bytes, cuts: list[int], walk: bool) -> tuple[bytes, str]:
    """`stream` fed to a real h11 server connection in the pieces `cuts` make; with `walk`, every piece that
    arrives while h11 has nothing buffered inside a chunked body goes through `_chunk_data` first (as
    `pass_body_through` does) and only what it leaves goes to h11. The body's bytes and how it ended."""
    connection = h11.Connection(h11.SERVER)
    body = bytearray()
    bounds = [0, *cuts, len(stream)]
    try:
        for start, stop in zip(bounds, bounds[1:], strict=False):
            piece = stream[start:stop]
            reader = connection._reader
            if (walk and piece and connection.their_state is h11.SEND_BODY and not connection._receive_buffer
                    and type(reader) is ChunkedReader and not reader._reading_trailer):
                pieces, position = _chunk_data(reader, piece, chunk_header_re)
                body += b"".join(pieces)
                piece = piece[position:]
            if piece:
                connection.receive_data(piece)
            while (event := connection.next_event()) is not h11.NEED_DATA:
                if type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    return bytes(body), f"end {event.headers}"
    except h11.RemoteProtocolError:  # its message quotes what it had buffered: that depends on the pieces
        return bytes(body), "refused"
    return bytes(body), "incomplete"


def _chunks(*parts: bytes) -> bytes:
    return _HEAD + b"".join(parts)


_STREAMS = {
    "plain": _chunks(*(b"%x\r\n%s\r\n" % (n, bytes([n % 251]) * n) for n in (1, 7, 32768, 70001, 3)), b"0\r\n\r\n"),
    "extensions, upper case, spaces, trailer": _chunks(b"1A;name=value\r\n", b"a" * 26, b"\r\n",
                                                       b"00010 \t\r\n", b"b" * 16, b"\r\n",
                                                       b"0;last\r\nX-Trailer: yes\r\n\r\n"),
    "bad size": _chunks(b"10\r\n", b"c" * 16, b"\r\n", b"zz\r\n", b"d" * 10, b"\r\n0\r\n\r\n"),
    "data longer than its size": _chunks(b"10\r\n", b"e" * 20, b"\r\n0\r\n\r\n"),
    "size too long": _chunks(b"5\r\n", b"f" * 5, b"\r\n", b"1" * 21 + b"\r\n", b"g", b"\r\n0\r\n\r\n"),
    "long extension": _chunks(b"4;" + b"x" * 2000 + b"\r\n", b"h" * 4, b"\r\n", b"4\r\n", b"i" * 4, b"\r\n0\r\n\r\n"),
    "cut off": _chunks(b"8000\r\n", b"j" * 20000),
}


@pytest.mark.parametrize("name", list(_STREAMS))
def test_the_chunked_walk_reads_what_h11_reads(name: str) -> None:
    # Pieces that begin and end anywhere: in chunk data, in a header, in the CRLF after data, in the trailer.
    stream = _STREAMS[name]
    rng = random.Random(name)
    expected = _parse(stream, [], walk=False)
    for cuts in [[], [len(_HEAD)], list(range(len(_HEAD), len(stream)))[:400]] + [
            sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12))) for _ in range(300)]:
        assert _parse(stream, cuts, walk=True) == expected, cuts
    assert _parse(stream, [len(_HEAD)], walk=False) == expected


def test_a_read_of_many_chunks_is_one_piece() -> None:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(_HEAD)
    assert type(connection.next_event()) is h11.Request and connection.next_event() is h11.NEED_DATA
    data = b"".join(b"8000\r\n%s\r\n" % (bytes([i]) * 32768) for i in range(8)) + b"8000\r\n" + b"z" * 100
    pieces, position = _chunk_data(connection._reader, data, chunk_header_re)
    assert position == len(data) and b"".join(pieces) == b"".join(bytes([i]) * 32768 for i in range(8)) + b"z" * 100
    assert connection._reader._bytes_in_chunk == 32768 - 100


# --- paced bodies: a client slower than the server (what docker does) -------------------------------------------


def _paced(sock: ssl.SSLSocket, pieces: list[bytes], pause: float = 0.002) -> None:
    for piece in pieces:
        sock.sendall(piece)
        time.sleep(pause)  # each piece reaches the server on its own: its reads are small and wait for the client


@pytest.fixture(scope="module")
def asyncio_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with run_secreg(tmp_path_factory.mktemp("bodyreads-asyncio"),
                    {**OPEN, "http": {"tlstransport": "asyncio"}}) as running:
        yield running


@pytest.mark.parametrize("transport", ["socket", "asyncio"])
@pytest.mark.parametrize("chunked", [True, False])
def test_a_paced_body_of_small_pieces_is_stored_whole(request: pytest.FixtureRequest, server: RunningServer,
                                                      chunked: bool, transport: str) -> None:
    """A PATCH body sent as 600 pieces of 4-32 KiB with pauses between them (reads the server gathers in the
    kernel before passing them on), then the upload completed: the digest and the committed size are right.
    Over the socket's own TLS (the default) and asyncio's."""
    if transport == "asyncio":
        server = request.getfixturevalue("asyncio_tls_server")
    _paced_patch(server, f"paced/{int(chunked)}", chunked)


def _paced_patch(server: RunningServer, repo: str, chunked: bool) -> None:
    rng = random.Random(7)
    sizes = [rng.choice((4096, 16384, 32768, 1000)) for _ in range(600)]
    data = os.urandom(sum(sizes))
    with server.client() as client:
        location = client.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    pieces, position = [], 0
    for size in sizes:
        piece = data[position:position + size]
        pieces.append(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        position += size
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(data)}"
    with _tls(server) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
        _paced(sock, pieces + ([b"0\r\n\r\n"] if chunked else []))
        answer = _responses(sock, 1)[0]
    assert answer.startswith(b"HTTP/1.1 202 ") and f"Range: 0-{len(data) - 1}".lower().encode() in answer.lower()
    with server.client() as client:
        location = location.split("?")[0]
        assert client.get(location).headers["Range"] == f"0-{len(data) - 1}"
        assert client.put(location, params={"digest": sha256(data)}).status_code == 201
        assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_expects_more_body_reads_h11s_state() -> None:
    """On a real h11 connection: inside a chunked body until a read ends with the last chunk; inside a
    Content-Length body while at least `at_least` bytes are still to come; never outside a body."""
    assert H11_READERS is not None  # the pinned h11 has what the body shortcuts read

    class Wrapper:  # Hypercorn's protocol wrapper holds the H11Protocol, which holds the h11 connection
        def __init__(self, head: bytes) -> None:
            self.protocol = type("H11Protocol", (), {})()
            self.protocol.connection = h11.Connection(h11.SERVER)
            self.protocol.connection.receive_data(head)
            assert type(self.protocol.connection.next_event()) is h11.Request

    chunked = Wrapper(b"PATCH /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert expects_more_body(chunked, b"1000\r\n" + b"x" * 4096 + b"\r\n", 1)
    assert not expects_more_body(chunked, b"1\r\nx\r\n0\r\n\r\n", 1)
    length = Wrapper(b"PATCH /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    assert expects_more_body(length, b"x" * 40, 60) and not expects_more_body(length, b"x" * 41, 60)
    idle = Wrapper(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not expects_more_body(idle, b"", 1) and not expects_more_body(object(), b"x", 1)


# Run in the server's processes (sitecustomize): h11 keeps the readers it was built with (its READERS table), but
# `h11._readers` no longer has the names secreg imports, as an h11 that reorganised its internals would.
_H11_WITHOUT_READERS = """\
import h11
import h11._readers
del h11._readers.ChunkedReader, h11._readers.ContentLengthReader
"""


@pytest.mark.parametrize("chunked", [True, False])
def test_an_h11_without_the_readers_secreg_uses_still_serves_paced_bodies(
        tmp_path: Path, chunked: bool) -> None:
    """With an h11 whose private readers are not where secreg looks: the server starts, says once that bodies go
    through h11's buffer, and a paced PATCH body (whose small reads ask whether more body is to come, the
    question `expects_more_body` answers from those readers) is stored whole. Before the shared guarded import
    the server did not start (`pass_body_through` imported them unguarded; `expects_more_body` would have raised
    in the read loop)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_H11_WITHOUT_READERS)
    path = os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])])
    with run_secreg(tmp_path / "server", OPEN, env={"PYTHONPATH": path}) as server:
        _paced_patch(server, "paced/old-h11", chunked)
        assert "request bodies go through h11's buffer" in server.log()


@pytest.mark.parametrize("reset", [False, True])
def test_a_paced_body_whose_client_goes_away_commits_what_is_stored(server: RunningServer, reset: bool) -> None:
    """The client of a paced chunked PATCH goes away mid-body, closing TLS and the connection (everything it sent
    arrives) or resetting it (what it sent last may be lost): the status shows what is stored, those bytes are
    the body's first (the digest of the completed upload is right), and the upload continues from there."""
    data = os.urandom(400 * 4096)
    sent = 300 * 4096
    with server.client() as client:
        location = client.post(f"/v2/paced/gone{int(reset)}/blobs/uploads/").headers["Location"].split("?")[0]
    sock = _tls(server)
    sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    _paced(sock, [b"1000\r\n%s\r\n" % data[i:i + 4096] for i in range(0, sent, 4096)])
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    else:
        sock.unwrap().close()  # TLS's close_notify, then the socket's
    with server.client() as client:
        deadline = time.monotonic() + 30
        while True:  # the server commits what it stored once it sees the connection go, then lets go of the data
            stored = int(client.get(location).headers.get("Range", "0--1").split("-")[1]) + 1
            if stored == sent or reset:
                r = client.patch(location, content=data[stored:],
                                 headers={"Content-Range": f"{stored}-{len(data) - 1}"})
                if r.status_code == 202:
                    break
                # 416 while the old request still holds the upload, or when it committed more between the status
                # and this PATCH (its offset is then the upload's): ask again
                assert r.status_code == 416 and ("another request" in r.text or "RANGE_INVALID" in r.text), r.text
            assert time.monotonic() < deadline, f"stored {stored} of {sent}"
            time.sleep(0.05)
        assert r.headers["Range"] == f"0-{len(data) - 1}" and stored > 0
        assert client.put(location, params={"digest": sha256(data)}).status_code == 201


def test_a_gathering_socket_keeps_the_window_autotuning_could_reach() -> None:
    """Setting SO_RCVBUF ends the kernel's autotuning of a socket: it is set only to what autotuning could reach
    (half of tcp_rmem's maximum, within rmem_max) and only when that is at least GATHER_RECEIVE_BUFFER; Debian's
    default rmem_max (208 KiB) leaves the socket autotuning."""
    MiB = 1024 * 1024
    assert connections.GATHER_RECEIVE_BUFFER == 4 * MiB
    assert connections.gather_receive_buffer(212992, 6 * MiB) == 0  # Debian's defaults
    assert connections.gather_receive_buffer(4 * MiB, 32 * MiB) == 4 * MiB  # this machine's
    assert connections.gather_receive_buffer(64 * MiB, 32 * MiB) == 16 * MiB  # never past what autotuning reaches
    assert connections.gather_receive_buffer(64 * MiB, 6 * MiB) == 0  # autotuning would give less than 4 MiB


def test_a_client_that_fills_the_window_during_a_gather_stops_the_gathering() -> None:
    """A gather that got GATHER_BELOW, or a quarter of the socket's receive buffer (half its window) when that is
    less, shows a client the pause held back: the reads go on as they come."""
    below = connections.GATHER_BELOW
    assert connections.gather_kept_up(below, 8 * 1024 * 1024)
    assert not connections.gather_kept_up(below - 1, 8 * 1024 * 1024)
    assert connections.gather_kept_up(32 * 1024, 128 * 1024)  # a new connection's buffer: 64 KiB of window
    assert not connections.gather_kept_up(32 * 1024 - 1, 128 * 1024)
    assert connections.gather_kept_up(1, 0)  # a buffer that could not be read: no gathering held on to
