"""`secreg.tlstransport` (`http.tlstransport: socket`, the default) under real clients: a real `secreg serve` on
loopback (one worker, so its descriptors are one process's), curl, openssl s_client, Python's ssl and httpx."""

from __future__ import annotations

import array
import asyncio
import fcntl
import hashlib
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from secreg import tlstransport
from secreg.tls.certificates import generate_certificates
from tests.oci import push_blob, sha256
from tests.server import RunningServer, run_secreg

REPO = "tls/blob"
BIG = 48 * 1024 * 1024


def _config(transport: str) -> dict[str, object]:
    return {"auth": {"enabled": False},
            "http": {"workers": 1, "tlstransport": transport, "timeouts": {"header": 2}}}


@pytest.fixture(scope="module")
def blob() -> bytes:
    return os.urandom(1024 * 1024) * (BIG // (1024 * 1024)) + os.urandom(12345)  # not a multiple of a record


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("tlsx"), _config("socket")) as running:
        with running.client(timeout=120) as client:
            assert push_blob(client, REPO, blob) == sha256(blob)  # a 48 MiB push through the transport
        yield running


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_descriptors(server: RunningServer, at_most: int) -> int:
    """The server's open descriptors once they are down to `at_most` (lingering closes end within seconds), or
    what they are after 30 s."""
    deadline = time.monotonic() + 30
    count = _descriptors(server.process.pid)
    while count > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
        count = _descriptors(server.process.pid)
    return count


def _steady_descriptors(server: RunningServer) -> int:
    """The server's open descriptors once the count has not changed for a second (at most 10 s)."""
    deadline = time.monotonic() + 10
    last, since = _descriptors(server.process.pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 1:
        time.sleep(0.1)
        count = _descriptors(server.process.pid)
        if count != last:
            last, since = count, time.monotonic()
    return last


def _tls(server: RunningServer, alpn: list[str] | None = None) -> ssl.SSLSocket:
    context = server.ssl_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


def _curl(server: RunningServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--fail", "--cacert", str(server.ca), *args], capture_output=True,
                          timeout=120, check=True)


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_large_pull_is_byte_exact_over_h1_and_h2(server: RunningServer, blob: bytes, version: str,
                                                 tmp_path: Path) -> None:
    target = tmp_path / "pulled"
    result = _curl(server, version, "-w", "%{http_version}", "-o", str(target),
                   f"{server.url}/v2/{REPO}/blobs/{sha256(blob)}")
    assert result.stdout == (b"2" if version == "--http2" else b"1.1")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()


def test_push_over_h2_and_alpn(server: RunningServer) -> None:
    data = os.urandom(5 * 1024 * 1024 + 7)
    with httpx.Client(base_url=server.url, verify=server.ssl_context(), http2=True, timeout=60) as client:
        assert push_blob(client, "tls/h2", data) == sha256(data)
        response = client.get(f"/v2/tls/h2/blobs/{sha256(data)}")
        assert response.http_version == "HTTP/2" and response.content == data
    with _tls(server, ["h2", "http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "h2"
    with _tls(server, ["http/1.1"]) as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_slow_reader_gets_every_byte(server: RunningServer, blob: bytes) -> None:
    """A client that reads in small pieces with a small receive buffer: the server's writes wait on a full socket
    over and over (SSL_write retried with the same piece, pause_writing / resume_writing)."""
    context = server.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    raw.settimeout(60)
    raw.connect(("127.0.0.1", server.port))
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(f"GET /v2/{REPO}/blobs/{sha256(blob)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received += tls.recv(4096)
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        hasher = hashlib.sha256(body)
        size = len(body)
        while size < len(blob):
            piece = tls.recv(3000)
            assert piece
            hasher.update(piece)
            size += len(piece)
        assert size == len(blob) and hasher.hexdigest() == hashlib.sha256(blob).hexdigest()


def test_openssl_s_client_request_and_close_notify(server: RunningServer) -> None:
    request = b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername",
                             "localhost", "-CAfile", str(server.ca), "-verify_return_error", "-quiet",
                             "-alpn", "http/1.1"], input=request, capture_output=True, timeout=60)
    assert result.stdout.startswith(b"HTTP/1.1 200"), result.stdout[:300] + result.stderr[-500:]
    assert result.returncode == 0, result.stderr[-500:]  # the server's close ended the session cleanly


def test_handshake_failures_leave_the_server_serving(server: RunningServer) -> None:
    baseline = _descriptors(server.process.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as plain:  # HTTP to the TLS port
        plain.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            while plain.recv(4096):  # at most a TLS alert, then the close
                pass
        except ConnectionResetError:
            pass
    untrusting = ssl.create_default_context()  # the system CAs: ours is unknown to it
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=30),
                               server_hostname="localhost")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(server.ca))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError, match="(?i)version|protocol"):
        old.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=30),
                        server_hostname="localhost")
    with server.client() as client:
        assert client.get("/v2/").status_code == 200
    assert _settled_descriptors(server, baseline) <= baseline


def test_stalled_handshake_is_closed(server: RunningServer) -> None:
    """A client that connects and never finishes its handshake (half a ClientHello, then silence) is closed once
    the handshake timeout (http.timeouts.header, 2 s here) passes; the server does not wait for it forever."""
    hello = bytes.fromhex("16030100c8010000c40303") + os.urandom(20)  # a record header and the start of a hello
    connections = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(hello)
        connections.append(sock)
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # nothing at all
    connections.append(idle)
    for sock in connections:
        try:
            assert sock.recv(4096) == b""  # closed by the server, well before the 30 s socket timeout
        except ConnectionResetError:
            pass
        sock.close()


def test_client_leaving_mid_body_and_many_connections_leak_no_descriptors(server: RunningServer,
                                                                           blob: bytes) -> None:
    with server.client() as client:
        assert client.get("/v2/").status_code == 200
    baseline = _steady_descriptors(server)
    path = f"/v2/{REPO}/blobs/{sha256(blob)}"
    for reset in (False, True) * 5:  # a pull dropped after its first MiB: closed, or reset (SO_LINGER 0)
        tls = _tls(server, ["http/1.1"])
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < 1024 * 1024:
            got += len(tls.recv(65536))
        if reset:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tls.close()
    push = _tls(server, ["http/1.1"])  # a push dropped mid-body
    push.sendall(f"POST /v2/tls/gone/blobs/uploads/?digest={sha256(b'x')} HTTP/1.1\r\nHost: x\r\n"
                 f"Content-Length: {BIG}\r\n\r\n".encode() + os.urandom(1024 * 1024))
    push.close()
    for _ in range(100):  # reset before the server accepts or handshakes
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    opened = [_tls(server, ["http/1.1"]) for _ in range(150)]
    for index, tls in enumerate(opened):
        if index % 3 == 0:
            tls.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
        if index % 3 == 1:
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        tls.close()
    with server.client() as client:  # still serving, and the big blob is intact
        assert client.get("/v2/").status_code == 200
        assert hashlib.sha256(client.get(path).content).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert _settled_descriptors(server, baseline) <= baseline


@pytest.mark.parametrize("window", ["default", "smallest"])
def test_refused_body_is_answered_before_the_close(server: RunningServer, window: str) -> None:
    """A response sent with `Connection: close` while the client is still sending its body (a refused manifest,
    413 before the body is read) reaches the client, which reads only once it has sent it all, and the
    connection ends without a hang.

    Why the close lingers (half-closes, then reads and drops what still comes, for at most LINGER_SECONDS): a
    socket closed with the client's body unread makes the kernel reset the connection and throw away what it
    had not sent yet. With the client's receive window at the kernel's smallest ("smallest": its SO_RCVBUF
    set before connecting; the unread session tickets fill it), the answer is still in the server's send queue
    when the server closes: closed at once, the client's sends fail (reset) and it reads no response at all (3
    of 3 with `_linger` disabled, and on asyncio's TLS, which does not linger); lingering, it gets the 413.
    With the default window the answer is in the client's kernel before the reset, which Linux keeps."""
    too_big = 5 * 1024 * 1024  # past validation.manifests.maxsize (4 MiB)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if window == "smallest":
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # raised to the kernel's minimum
    raw.settimeout(30)
    raw.connect(("127.0.0.1", server.port))
    context = server.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(f"PUT /v2/tls/m/manifests/latest HTTP/1.1\r\nHost: x\r\nContent-Length: {too_big}\r\n"
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\r\n".encode())
        answer = b""
        try:
            for _ in range(too_big // 65536):
                tls.sendall(b"{" * 65536)
        except (ConnectionError, ssl.SSLError):
            pass
        try:
            while chunk := tls.recv(65536):
                answer += chunk
        except (ConnectionError, ssl.SSLError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_asyncio_transport_still_serves(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    with run_secreg(tmp_path, _config("asyncio")) as running, running.client() as client:
        assert push_blob(client, "tls/asyncio", data) == sha256(data)
        assert client.get(f"/v2/tls/asyncio/blobs/{sha256(data)}").content == data


# --- the asyncio private interface the transport plugs into ---------------------------------------------------


def _server_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a new certificate for localhost, and its CA's certificate."""
    files = generate_certificates(tmp_path / "certs", ["localhost"], ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context, files.ca_cert


def _serve_in_process(tmp_path: Path, handshake_timeout: float | None) -> tuple[Any, ...]:
    """A real asyncio TLS server in this process with the transport installed; returns (loop, server, port, ca)."""
    context, ca = _server_context(tmp_path)
    loop = asyncio.new_event_loop()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=handshake_timeout))
    return loop, server, server.sockets[0].getsockname()[1], ca


def test_no_handshake_timeout_given_means_asyncios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ssl_handshake_timeout=None` is asyncio's 60 s (constants.SSL_HANDSHAKE_TIMEOUT), not none at all: a client
    that never speaks is closed. The constant is shortened here so the test does not wait a minute."""
    monkeypatch.setattr(asyncio.constants, "SSL_HANDSHAKE_TIMEOUT", 0.5)
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    monkeypatch.setattr(loop_class, "_make_ssl_transport", loop_class._make_ssl_transport)  # put back after
    assert tlstransport.install(True)
    loop, server, port, ca = _serve_in_process(tmp_path, None)
    try:
        silent = socket.create_connection(("127.0.0.1", port))
        silent.setblocking(False)

        async def closed() -> bool:
            deadline = loop.time() + 10
            while loop.time() < deadline:
                try:
                    if silent.recv(1) == b"":
                        return True
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.05)
            return False

        assert loop.run_until_complete(closed())
        silent.close()

        async def echo() -> bytes:  # and the server still serves
            context = ssl.create_default_context(cafile=str(ca))
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                          server_hostname="localhost")
            writer.write(b"ping\n")
            line = await reader.readline()
            writer.close()
            return line

        assert loop.run_until_complete(echo()) == b"ping\n"
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_server_bookkeeping_matches_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio.Server counts connections with `_attach()` up to 3.12 and `_attach(transport)` from 3.13: the
    transport calls the one this interpreter has."""
    calls: list[tuple[object, ...]] = []

    class Old:
        def _attach(self) -> None:
            calls.append(("attach",))

        def _detach(self) -> None:
            calls.append(("detach",))

    class New:
        def _attach(self, transport: object) -> None:
            calls.append(("attach", transport))

        def _detach(self, transport: object) -> None:
            calls.append(("detach", transport))

    transport = object()
    monkeypatch.setattr(tlstransport, "_SERVER_TAKES_TRANSPORT", False)
    tlstransport._server_attach(Old(), transport)  # type: ignore[arg-type]
    tlstransport._server_detach(Old(), transport)  # type: ignore[arg-type]
    monkeypatch.setattr(tlstransport, "_SERVER_TAKES_TRANSPORT", True)
    tlstransport._server_attach(New(), transport)  # type: ignore[arg-type]
    tlstransport._server_detach(New(), transport)  # type: ignore[arg-type]
    assert calls == [("attach",), ("detach",), ("attach", transport), ("detach", transport)]
    monkeypatch.undo()
    assert tlstransport._SERVER_TAKES_TRANSPORT is (sys.version_info >= (3, 13))


def test_an_unknown_asyncio_keeps_its_own_tls(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A loop whose `_make_ssl_transport` takes other parameters than the ones this module passes on is left
    alone, with one warning."""
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    before = loop_class._make_ssl_transport
    original = tlstransport._asyncio_make_ssl_transport
    assert tlstransport.supported()

    def different(self: Any, rawsock: Any, protocol: Any, sslcontext: Any, waiter: Any = None, *,
                  server_side: bool = False, context: Any = None) -> Any:
        raise AssertionError("never called here")

    monkeypatch.setattr(tlstransport, "_asyncio_make_ssl_transport", different)
    try:
        assert not tlstransport.supported()
        with caplog.at_level("WARNING", logger="secreg.tlstransport"):
            assert tlstransport.install(True) is False
        assert loop_class._make_ssl_transport is different
        assert "serving with asyncio's own TLS" in caplog.text
    finally:
        monkeypatch.undo()
        loop_class._make_ssl_transport = original
    assert tlstransport.install(True) is True
    assert loop_class._make_ssl_transport is tlstransport._make_ssl_transport
    tlstransport.install(False)
    assert loop_class._make_ssl_transport is original
    loop_class._make_ssl_transport = before


def _client_records(port: int, ca: Path, records: list[bytes], done: threading.Event,
                    with_finished: bool = False) -> None:
    """A TLS client over a memory BIO: the handshake, then `records` encrypted as one TLS record each and sent in
    one `sendall`, so that they reach the server's socket together (`with_finished`: in the same `sendall` as the
    handshake's last flight)."""
    context = ssl.create_default_context(cafile=str(ca))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        if outgoing.pending and not with_finished:
            sock.sendall(outgoing.read())
        for record in records:
            tls.write(record)
        sock.sendall(outgoing.read())
        done.wait(10)


def _pieces_served(context: ssl.SSLContext, ca: Path, records: list[bytes], with_finished: bool = False) -> list[bytes]:
    """What a server on a new loop (the transport installed by the caller) is handed, piece by piece, once
    `_client_records` sent `records`."""
    pieces: list[bytes] = []
    loop = asyncio.new_event_loop()
    arrived = loop.create_future()

    class Recorder(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pieces.append(data)
            if sum(map(len, pieces)) >= sum(map(len, records)) and not arrived.done():
                arrived.set_result(None)

    server = loop.run_until_complete(loop.create_server(Recorder, "127.0.0.1", 0, ssl=context))
    done = threading.Event()
    client = threading.Thread(target=_client_records,
                              args=(server.sockets[0].getsockname()[1], ca, records, done, with_finished))
    client.start()
    try:
        loop.run_until_complete(asyncio.wait_for(arrived, 10))
    finally:
        done.set()
        client.join()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return pieces


def test_a_read_goes_on_past_short_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records that arrive together are handed on in one piece, short ones included: curl's HTTP/2 DATA frames are
    a 16 KiB record and a short one each, and a read that stopped at the first short record halved its pushes."""
    context, ca = _server_context(tmp_path)
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    monkeypatch.setattr(loop_class, "_make_ssl_transport", loop_class._make_ssl_transport)  # put back after
    assert tlstransport.install(True)
    records = [b"a" * 100, b"b" * 16384, b"c" * 9, b"d" * 16384, b"e" * 9]
    pieces = _pieces_served(context, ca, records)
    assert b"".join(pieces) == b"".join(records)
    assert len(pieces) == 1, [len(piece) for piece in pieces]


@pytest.mark.parametrize("records", [[b"a" * 100], [b"b" * 16384] * 32 + [b"c" * 100]], ids=["small", "past-a-read"])
def test_records_read_ahead_are_not_left_in_openssl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    records: list[bytes]) -> None:
    """With read-ahead (`secreg.tls.suites.read_ahead`) OpenSSL reads past the record it decrypts, so records can
    wait inside it while the socket is empty and epoll is silent: a request sent with the handshake's last flight
    (read with the client's Finished), and what is left past a read that stopped at READ_BYTES, still arrive."""
    from secreg.tls.suites import read_ahead

    context, ca = _server_context(tmp_path)
    assert read_ahead(context)
    loop_class = asyncio.selector_events.BaseSelectorEventLoop
    monkeypatch.setattr(loop_class, "_make_ssl_transport", loop_class._make_ssl_transport)  # put back after
    assert tlstransport.install(True)
    assert b"".join(_pieces_served(context, ca, records, with_finished=True)) == b"".join(records)


# --- a client that goes away without close_notify --------------------------------------------------------------

@pytest.fixture(scope="module")
def asyncio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_secreg(tmp_path_factory.mktemp("tlsx-asyncio"), _config("asyncio")) as running:
        yield running


def _unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged yet (SIOCOUTQ)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, count)
    return count[0]


def _stored(client: httpx.Client, location: str) -> int:
    return int(client.get(location).headers.get("Range", "0--1").split("-")[1]) + 1


@pytest.mark.parametrize("transport", ["socket", "asyncio"])
@pytest.mark.parametrize("close", ["ragged", "reset"])
def test_a_chunked_patch_ended_without_close_notify_stores_all_it_sent(
        request: pytest.FixtureRequest, transport: str, close: str) -> None:
    """A chunked PATCH (16 MiB fast in 32 KiB chunks, then 300 paced pieces of 4 KiB) whose client closes TCP
    without TLS's close_notify right after its last bytes, once its kernel has them acknowledged: with a FIN
    ("ragged": it read the server's session tickets first) or with the RST a close with unread data sends
    ("reset": the tickets unread, as a client that never reads). The upload's Range is then all it sent.

    Why the client waits for the acknowledgement: a close with unread data makes the client's kernel reset the
    connection and throw away what it had not sent yet (the ~20 KiB once seen lost were in the client's send
    queue, never on the server); what reached the server is stored, over both TLS transports."""
    server = request.getfixturevalue("server" if transport == "socket" else "asyncio_server")
    with server.client() as client:
        location = client.post("/v2/tls/ragged/blobs/uploads/").headers["Location"].split("?")[0]
    tls = _tls(server, ["http/1.1"])
    if close == "ragged":
        tls.setblocking(False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the session tickets come just after the handshake
            try:
                tls.recv(1)
            except ssl.SSLWantReadError:
                pass
            if not tls.pending() and not select.select([tls], [], [], 0.05)[0]:
                break
        tls.setblocking(True)
    tls.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    chunk = os.urandom(32768)
    sent = 0
    for _ in range(512):
        tls.sendall(b"8000\r\n%s\r\n" % chunk)
        sent += len(chunk)
    for index in range(300):
        tls.sendall(b"1000\r\n%s\r\n" % chunk[index:index + 4096])
        sent += 4096
        time.sleep(0.001)
    deadline = time.monotonic() + 30
    while _unsent(tls) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not _unsent(tls)
    tls.close()  # Python's SSLSocket.close sends no close_notify
    with server.client() as client:
        deadline = time.monotonic() + 30
        while (stored := _stored(client, location)) != sent and time.monotonic() < deadline:
            time.sleep(0.05)  # the server commits what it stored once it sees the connection go
        assert stored == sent
