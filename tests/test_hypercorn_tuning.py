"""The Hypercorn tunings (applied by secreg/hypercorn_tuning.py; in hypercorn_h11.py and hypercorn_h2_frames.py)
through a real server over TLS: responses whose head and body go out in one write, HTTP/2 with wider windows,
batched frames and merged DATA events, and connections that are not closed after 1,000 requests."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ci_mode
from tests.oci import sha256
from tests.server import need_event_loop, run_secreg

OPEN = {"auth": {"enabled": False}, "http": {"workers": 1}}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if ci_mode():
            pytest.fail(f"{name} is not installed (CI is set: failing instead of skipping)", pytrace=False)
        pytest.skip(f"{name} is not installed")
    return path


def test_every_tuning_finds_what_it_changes() -> None:
    """Each tuning reaches into Hypercorn, h2 or hyperframe internals: this fails when an upgrade moves one."""
    from secreg import hypercorn_tuning

    assert hypercorn_tuning.apply()
    assert hypercorn_tuning.apply()  # applying twice wraps nothing twice


def test_the_cached_date_header_is_the_one_hypercorn_would_write() -> None:
    import wsgiref.handlers

    import hypercorn.config

    from secreg import hypercorn_h11

    assert hypercorn_h11.cache_date_header()
    cached = hypercorn.config.format_date_time  # type: ignore[attr-defined]
    for stamp in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0, 1_699_999_999.5, 1_700_000_001.2):
        assert cached(stamp) == wsgiref.handlers.format_date_time(int(stamp))
    assert cached(None) in {wsgiref.handlers.format_date_time(time.time() + d) for d in (-1, 0)}


def test_h11_headers_iterate_as_the_sequence_they_are() -> None:
    from collections.abc import Sequence

    import h11

    from secreg import hypercorn_h11

    assert hypercorn_h11.iterate_h11_headers()
    request = h11.Request(method="GET", target="/v2/", headers=[
        ("Host", "example.org"), ("X-Two", "a"), ("x-two", "b"), ("Authorization", "Bearer t")])
    generic = list(Sequence.__iter__(request.headers))
    assert list(request.headers) == generic == [
        (b"host", b"example.org"), (b"x-two", b"a"), (b"x-two", b"b"), (b"authorization", b"Bearer t")]
    assert request.headers == generic and [name for name, _ in request.headers] == [n for n, _ in generic]


@pytest.mark.parametrize("framing", ["content-length", "chunked", "head"])
def test_h11_response_writes_head_with_first_piece_and_no_empty_writes(framing: str) -> None:
    """The wrapped `_send_h11_event` on a real h11 connection: what reaches the socket, write by write."""
    import asyncio

    import h11
    from hypercorn.protocol.h11 import H11Protocol

    from secreg import hypercorn_h11

    assert hypercorn_h11.coalesce_h11_responses()
    writes: list[bytes] = []

    class Protocol:
        _send_h11_event = H11Protocol._send_h11_event

        def __init__(self) -> None:
            self.connection = h11.Connection(h11.SERVER)
            method = b"HEAD" if framing == "head" else b"GET"
            self.connection.receive_data(method + b" /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert isinstance(self.connection.next_event(), h11.Request)

        async def send(self, event: Any) -> None:
            writes.append(event.data)

    async def respond() -> None:
        protocol = Protocol()
        length = [] if framing == "chunked" else [(b"content-length", b"2")]
        await protocol._send_h11_event(h11.Response(status_code=200, headers=length))
        assert writes == []  # the head waits for the body
        if framing != "head":
            await protocol._send_h11_event(h11.Data(data=b"{}"))
        await protocol._send_h11_event(h11.EndOfMessage())

    asyncio.run(respond())
    assert all(writes), writes  # never an empty write
    assert writes[0].startswith(b"HTTP/1.1 200 ")
    if framing == "content-length":
        assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n{}")
    elif framing == "chunked":
        assert len(writes) == 2 and writes[0].endswith(b"\r\n\r\n2\r\n{}\r\n") and writes[1] == b"0\r\n\r\n"
    else:
        assert len(writes) == 1 and writes[0].endswith(b"content-length: 2\r\n\r\n")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_response_body_views_reach_the_protocol_uncopied(method: str) -> None:
    """A memoryview body piece (a blob GET's view of the file's pages) goes from Hypercorn's stream to the
    protocol as that very object, and through the h11 framing as well; bytes pieces and the end of the body
    take Hypercorn's path (a HEAD's body is dropped on both)."""
    import asyncio

    import h11
    import hypercorn.config
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.protocol.events import Body, EndBody, Response, StreamClosed
    from hypercorn.protocol.http_stream import HTTPStream

    from secreg import hypercorn_tuning

    assert hypercorn_tuning.apply()
    events: list[Any] = []

    async def send(event: Any) -> None:
        events.append(event)

    view = memoryview(bytearray(b"abcdef"))[1:5]

    async def respond() -> None:
        stream = HTTPStream(None, hypercorn.config.Config(), WorkerContext(None), None,  # type: ignore[arg-type]
                            True, None, None, send, 1)
        stream.scope = {"method": method, "type": "http", "http_version": "1.1"}  # type: ignore[typeddict-item]
        stream.start_time = 0.0
        await stream.app_send({"type": "http.response.start", "status": 200, "headers": []})
        await stream.app_send({"type": "http.response.body", "body": view, "more_body": True})
        await stream.app_send({"type": "http.response.body", "body": b"fg", "more_body": True})
        await stream.app_send({"type": "http.response.body", "body": view, "more_body": False})

    asyncio.run(respond())
    kinds = [type(e) for e in events]
    if method == "HEAD":
        assert kinds == [Response, EndBody, StreamClosed]
    else:
        assert kinds == [Response, Body, Body, Body, EndBody, StreamClosed]
        assert events[1].data is view and events[3].data is view and events[2].data == b"fg"

    from hypercorn.protocol.h11 import H11Protocol

    writes: list[Any] = []

    class Protocol:
        _send_h11_event = H11Protocol._send_h11_event

        def __init__(self) -> None:
            self.connection = h11.Connection(h11.SERVER)
            self.connection.receive_data(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert isinstance(self.connection.next_event(), h11.Request)

        async def send(self, event: Any) -> None:
            writes.append(event.data)

    async def frame() -> None:
        protocol = Protocol()
        await protocol._send_h11_event(h11.Response(status_code=200, headers=[(b"content-length", b"8")]))
        await protocol._send_h11_event(h11.Data(data=view))
        await protocol._send_h11_event(h11.Data(data=view))
        await protocol._send_h11_event(h11.EndOfMessage())

    asyncio.run(frame())
    assert writes[0].endswith(b"\r\n\r\nbcde") and writes[1] is view and len(writes) == 2


def test_http11_heads_bodies_and_keep_alive(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    digest = sha256(data)
    with run_secreg(tmp_path, OPEN) as server, server.client() as client:
        r = client.post("/v2/t/a/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201
        for _ in range(3):  # one connection throughout: every response was framed right
            head = client.head(f"/v2/t/a/blobs/{digest}")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
            assert head.content == b""
            assert client.get(f"/v2/t/a/blobs/{digest}").content == data
            assert client.get("/v2/").json() == {}
            assert client.get("/v2/t/a/blobs/sha256:" + "0" * 64).status_code == 404


def test_expect_100_continue_still_answers_first(tmp_path: Path) -> None:
    curl = _tool("curl")
    payload = tmp_path / "blob"
    payload.write_bytes(os.urandom(200_000))
    with run_secreg(tmp_path, OPEN) as server:
        done = subprocess.run(
            [curl, "-sS", "--http1.1", "--cacert", str(server.ca), "-H", "Expect: 100-continue", "-X", "POST",
             "--data-binary", f"@{payload}", "-H", "Content-Type: application/octet-stream", "-o", "/dev/null",
             "-w", "%{http_code}", f"https://{server.host_port}/v2/t/c/blobs/uploads/?digest={sha256(payload.read_bytes())}"],
            capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout == "201", done.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_http2_push_and_pull_come_back_intact(tmp_path: Path, loop: str) -> None:
    need_event_loop(loop)
    curl = _tool("curl")
    data = os.urandom(5 * 1024 * 1024 + 123)  # many 16 KiB frames, more than one window of 64 KiB
    digest = sha256(data)
    payload = tmp_path / "blob"
    payload.write_bytes(data)
    config = {**OPEN, "http": {**OPEN["http"], "eventloop": loop}}
    with run_secreg(tmp_path, config, args=["--http2"]) as server:
        base = f"https://{server.host_port}"
        common = [curl, "-sS", "--http2", "--cacert", str(server.ca), "-w", "%{http_code} %{http_version}"]
        pushed = subprocess.run(
            [*common, "-o", "/dev/null", "-X", "POST", "--data-binary", f"@{payload}",
             "-H", "Content-Type: application/octet-stream", f"{base}/v2/t/h2/blobs/uploads/?digest={digest}"],
            capture_output=True, text=True, timeout=120, check=False)
        assert pushed.stdout == "201 2", pushed.stderr
        pulled = subprocess.run([*common, "-o", str(tmp_path / "back"), f"{base}/v2/t/h2/blobs/{digest}"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert pulled.stdout == "200 2", pulled.stderr
        assert (tmp_path / "back").read_bytes() == data


def test_one_http2_connection_serves_more_than_a_thousand_requests(tmp_path: Path) -> None:
    h2load = _tool("h2load")
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        done = subprocess.run([h2load, "-n1500", "-c1", "-m10", f"https://{server.host_port}/v2/"],
                              capture_output=True, text=True, timeout=120, check=False)
    assert "Application protocol: h2" in done.stdout, done.stdout
    assert re.search(r"requests: 1500 total, 1500 started, 1500 done, 1500 succeeded", done.stdout), done.stdout


def test_httpx_over_http2_reuses_one_connection(tmp_path: Path) -> None:
    pytest.importorskip("h2")
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        with httpx.Client(base_url=f"https://{server.host_port}", verify=server.ssl_context(), http2=True) as c:
            for _ in range(5):
                r = c.get("/v2/")
                assert r.status_code == 200 and r.http_version == "HTTP/2"


def test_concurrent_http2_streams_interleave_intact(tmp_path: Path) -> None:
    """Several blob answers on one HTTP/2 connection at once: their DATA frames (built a write at a time,
    `hypercorn_h2_frames._bulk_data_framer`) interleave and each body comes back whole."""
    pytest.importorskip("h2")
    import asyncio

    blobs = [os.urandom(3 * 1024 * 1024 + n) for n in range(3)]
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server, server.client() as c:
        for blob in blobs:
            r = c.post("/v2/t/many/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
            assert r.status_code == 201

        async def pull_all() -> list[bytes]:
            async with httpx.AsyncClient(base_url=f"https://{server.host_port}", verify=server.ssl_context(),
                                         http2=True, timeout=120) as client:
                answers = await asyncio.gather(*(client.get(f"/v2/t/many/blobs/{sha256(b)}") for b in blobs))
                assert {a.http_version for a in answers} == {"HTTP/2"}
                return [a.content for a in answers]

        assert asyncio.run(pull_all()) == blobs


def _h2_socket(server: Any, receive_buffer: int | None = None) -> ssl.SSLSocket:
    context = server.ssl_context()
    context.set_alpn_protocols(["h2"])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting, so the window the kernel advertises stays small
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(60)
    raw.connect((server.host, server.port))
    sock = context.wrap_socket(raw, server_hostname=server.host)
    assert sock.selected_alpn_protocol() == "h2"
    return sock


def test_http2_slow_reader_gets_a_large_blob_within_its_windows(tmp_path: Path) -> None:
    """A client that reads a little at a time and widens no window (64 KiB for the connection, 16 KiB per
    stream): the server's batched frames and gathered flushes must wait for its WINDOW_UPDATEs and for the socket
    (h2 on the client side refuses a DATA frame past its window), and the blob arrives whole."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    blob = os.urandom(3 * 1024 * 1024 + 11)
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        with server.client() as c:
            assert c.post("/v2/t/slow/blobs/uploads/", params={"digest": sha256(blob)}, content=blob).status_code == 201
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        connection.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 * 1024})
        connection.initiate_connection()
        with _h2_socket(server, receive_buffer=16 * 1024) as sock:
            sock.sendall(connection.data_to_send())
            stream = connection.get_next_available_stream_id()
            connection.send_headers(stream, [(b":method", b"GET"), (b":scheme", b"https"),
                                             (b":authority", server.host_port.encode()),
                                             (b":path", f"/v2/t/slow/blobs/{sha256(blob)}".encode())], end_stream=True)
            sock.sendall(connection.data_to_send())
            body, status, ended = bytearray(), None, False
            while not ended:
                data = sock.recv(4096)
                assert data, "the server closed the connection"
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                    elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                        raise AssertionError(f"the server gave up: {event}")
                sock.sendall(connection.data_to_send())
                time.sleep(0.0005)  # a slow reader (not a measurement)
    assert status == b"200"
    assert sha256(bytes(body)) == sha256(blob) and len(body) == len(blob)


def test_many_small_http2_streams_on_one_connection_each_get_their_answer(tmp_path: Path) -> None:
    """64 small answers at once on one connection (their flushes gathered into shared writes), next to a large
    pull on the same connection; then 3,000 requests 32 at a time from h2load, every one answered."""
    h2load = _tool("h2load")
    pytest.importorskip("h2")
    import asyncio

    smalls = [os.urandom(100 + n) for n in range(64)]
    large = os.urandom(4 * 1024 * 1024 + 5)
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        with server.client() as c:
            for blob in [*smalls, large]:
                assert c.post("/v2/t/small/blobs/uploads/", params={"digest": sha256(blob)},
                              content=blob).status_code == 201

        async def pull_all() -> list[bytes]:
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(base_url=f"https://{server.host_port}", verify=server.ssl_context(),
                                         http2=True, timeout=120, limits=limits) as client:
                answers = await asyncio.gather(*(client.get(f"/v2/t/small/blobs/{sha256(b)}")
                                                 for b in [large, *smalls]))
                assert {a.http_version for a in answers} == {"HTTP/2"}
                assert {a.status_code for a in answers} == {200}
                return [a.content for a in answers]

        assert asyncio.run(pull_all()) == [large, *smalls]
        done = subprocess.run([h2load, "-n3000", "-c1", "-m32", f"https://{server.host_port}/v2/"],
                              capture_output=True, text=True, timeout=300, check=False)
    assert "Application protocol: h2" in done.stdout, done.stdout
    assert re.search(r"requests: 3000 total, 3000 started, 3000 done, 3000 succeeded", done.stdout), done.stdout
    assert re.search(r"status codes: 3000 2xx", done.stdout), done.stdout


class _RawH2:
    """A client-side h2 connection over TLS to `server` (the h2 library), with raw frames when a test needs
    to send what a correct client would not."""

    def __init__(self, server: Any) -> None:
        import h2.config
        import h2.connection

        self.server = server
        self.connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.connection.initiate_connection()
        self.sock = _h2_socket(server)
        self.flush()
        import h2.events

        settings = False  # the server's SETTINGS (its stream window) and its connection WINDOW_UPDATE first
        while not settings or self.connection.outbound_flow_control_window <= 65535:
            for event in self.connection.receive_data(self.sock.recv(65536)):
                settings = settings or isinstance(event, h2.events.RemoteSettingsChanged)
            self.flush()

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
        stream = int(self.connection.get_next_available_stream_id())
        self.connection.send_headers(stream, [(b":method", method.encode()), (b":scheme", b"https"),
                                              (b":authority", self.server.host_port.encode()),
                                              (b":path", path.encode()), *(headers or [])],
                                     end_stream=method == "GET")
        self.flush()
        return stream

    def answers(self, streams: set[int]) -> dict[int, Any]:
        """Status per stream (b"200", ...), or the GOAWAY/RST_STREAM event that ended it."""
        import h2.events

        done: dict[int, Any] = {}
        while set(done) < streams:
            data = self.sock.recv(65536)
            if not data:
                return done
            for event in self.connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    done[event.stream_id] = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    done[event.stream_id] = event
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return {stream: event for stream in streams} | done
            self.flush()
        return done

    def close(self) -> None:
        self.sock.close()


def test_interleaved_and_padded_http2_uploads_arrive_intact(tmp_path: Path) -> None:
    """Two uploads on one connection, their 16 KiB DATA frames interleaved, every third one padded: runs of
    plain DATA frames of one stream are taken together (`fast_h2_data_frames`), padded frames and stream
    switches through h2 itself; both blobs are stored whole under their digests."""
    blobs = [os.urandom(2 * 1024 * 1024 + 333), os.urandom(1024 * 1024 + 77)]
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            streams = [client.request("POST", f"/v2/t/mixed/blobs/uploads/?digest={sha256(b)}",
                                      [(b"content-type", b"application/octet-stream")]) for b in blobs]
            offsets = [0, 0]
            frame = 0
            while any(offsets[i] < len(blobs[i]) for i in range(2)):
                for i in range(2):
                    if offsets[i] >= len(blobs[i]):
                        continue
                    # runs of four frames per stream, so both paths are taken
                    for _ in range(4):
                        piece = blobs[i][offsets[i]:offsets[i] + 16000]
                        if not piece:
                            break
                        offsets[i] += len(piece)
                        frame += 1
                        client.connection.send_data(streams[i], piece, end_stream=offsets[i] >= len(blobs[i]),
                                                    pad_length=7 if frame % 3 == 0 else None)
                    client.flush()
            answers = client.answers(set(streams))
        finally:
            client.close()
        assert answers == {streams[0]: b"201", streams[1]: b"201"}, answers
        with server.client() as c:
            for blob in blobs:
                assert c.get(f"/v2/t/mixed/blobs/{sha256(blob)}").content == blob


def _send_within_windows(client: _RawH2, stream: int, data: bytes, end: bool, frame: int = 16384) -> None:
    """`data` on `stream` in DATA frames of `frame` bytes, waiting for the server's WINDOW_UPDATEs whenever
    what it allows runs out."""
    import h2.events

    offset = 0
    while offset < len(data):
        piece = data[offset:offset + frame]
        while client.connection.local_flow_control_window(stream) < len(piece):
            client.flush()
            for event in client.connection.receive_data(client.sock.recv(65536)):
                assert not isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)), event
        offset += len(piece)
        client.connection.send_data(stream, piece, end_stream=end and offset >= len(data))
        if offset % (1024 * 1024) < frame:
            client.flush()
    client.flush()


def test_http2_push_past_the_windows_and_a_reset_push_leave_only_whole_blobs(tmp_path: Path) -> None:
    """Through the bulk DATA path (`fast_h2_data_frames`, `merge_h2_data_events`): a push larger than the stream
    window (64 MiB), which the server must reopen as it stores, arrives whole, the client never sending past
    what the server allows; a push the client resets halfway stores nothing under its digest, and the same blob
    pushed again on the same connection is stored whole."""
    big = os.urandom(1024 * 1024) * 66 + os.urandom(12_345)
    half = os.urandom(3 * 1024 * 1024 + 7)
    headers = [(b"content-type", b"application/octet-stream")]
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            stream = client.request("POST", f"/v2/t/wide/blobs/uploads/?digest={sha256(big)}", headers)
            _send_within_windows(client, stream, big, end=True)
            assert client.answers({stream}) == {stream: b"201"}
            reset = client.request("POST", f"/v2/t/wide/blobs/uploads/?digest={sha256(half)}",
                                   [*headers, (b"content-length", str(len(half)).encode())])
            _send_within_windows(client, reset, half[:len(half) // 2], end=False)
            client.connection.reset_stream(reset)
            client.flush()
            with server.client() as c:  # half a body never verifies: no blob, whether its upload ended yet or not
                assert c.head(f"/v2/t/wide/blobs/{sha256(half)}").status_code == 404
            again = client.request("POST", f"/v2/t/wide/blobs/uploads/?digest={sha256(half)}", headers)
            _send_within_windows(client, again, half, end=True)
            assert client.answers({again}) == {again: b"201"}
        finally:
            client.close()
        with server.client() as c:
            assert c.get(f"/v2/t/wide/blobs/{sha256(big)}").content == big
            assert c.get(f"/v2/t/wide/blobs/{sha256(half)}").content == half


def test_a_paced_http2_push_is_stored_whole_and_other_streams_are_answered_meanwhile(tmp_path: Path) -> None:
    """An h2 push sent as 400 DATA frames of 1-16 KiB with pauses between them (reads that are small and wait for
    the client, which the server gathers in the kernel as for HTTP/1.1), with and without a content-length, and
    a GET on another stream of the same connection halfway: the GET is answered while the push goes on, and
    the blob is stored whole."""
    import random

    chance = random.Random(5)
    sizes = [chance.choice((1000, 4096, 16384, 9000)) for _ in range(400)]
    blob = os.urandom(sum(sizes))
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            for declared in (True, False):
                length = [(b"content-length", str(len(blob)).encode())] if declared else []
                stream = client.request("POST", f"/v2/t/paced{int(declared)}/blobs/uploads/?digest={sha256(blob)}",
                                        [(b"content-type", b"application/octet-stream"), *length])
                offset = 0
                for turn, size in enumerate(sizes):
                    client.connection.send_data(stream, blob[offset:offset + size],
                                                end_stream=turn == len(sizes) - 1)
                    offset += size
                    client.flush()
                    time.sleep(0.002)  # each frame reaches the server on its own
                    if turn == len(sizes) // 2:
                        probe = client.request("GET", "/v2/")
                        assert client.answers({probe}) == {probe: b"200"}
                assert client.answers({stream}) == {stream: b"201"}
        finally:
            client.close()
        with server.client() as c:
            for declared in (True, False):
                assert c.get(f"/v2/t/paced{int(declared)}/blobs/{sha256(blob)}").content == blob


def test_http2_upload_past_its_content_length_or_frame_size_is_refused(tmp_path: Path) -> None:
    """More DATA than the request's content-length, or a DATA frame larger than the frame size the server
    allows: h2's own refusals (stream or connection error) hold on the fast path too, and nothing is stored."""
    import hyperframe.frame

    blob = os.urandom(100_000)
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        for case in ("length", "frame"):
            client = _RawH2(server)
            try:
                stream = client.request("POST", f"/v2/t/bad/blobs/uploads/?digest={sha256(blob)}",
                                        [(b"content-type", b"application/octet-stream"),
                                         (b"content-length", b"50000" if case == "length" else b"100000")])
                raw = b""
                pieces = [blob[i:i + 16384] for i in range(0, len(blob), 16384)] if case == "length" else [blob[:20000]]
                for piece in pieces:
                    f = hyperframe.frame.DataFrame(stream, data=piece)
                    raw += f.serialize()
                client.sock.sendall(raw)
                answers = client.answers({stream})
            finally:
                client.close()
            assert answers.get(stream) not in (b"201", b"202"), (case, answers)
        with server.client() as c:
            assert c.head(f"/v2/t/bad/blobs/{sha256(blob)}").status_code == 404


def _send_body(client: _RawH2, stream: int, data: bytes, end: bool = True) -> None:
    for offset in range(0, len(data), 16384):
        client.connection.send_data(stream, data[offset:offset + 16384],
                                    end_stream=end and offset + 16384 >= len(data))
    client.flush()


def test_http2_body_after_an_early_answer_leaves_the_connection_serving(tmp_path: Path) -> None:
    """A stream answered before its body arrived (400 for a bad name, 404 for an unknown upload): the DATA
    that follows is dropped, not a KeyError in Hypercorn that killed the connection with every other request on
    it (an upload in flight here), and nothing is logged as unhandled."""
    blob = os.urandom(300_000)
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            upload = client.request("POST", f"/v2/t/early/blobs/uploads/?digest={sha256(blob)}",
                                    [(b"content-type", b"application/octet-stream"),
                                     (b"content-length", str(len(blob)).encode())])
            _send_body(client, upload, blob[:100_000], end=False)
            early = [client.request(method, path, [(b"content-length", b"70000")]) for method, path in
                     [("PUT", "/v2/BAD/manifests/x"), ("PATCH", "/v2/t/early/blobs/uploads/nosuch")]]
            assert client.answers(set(early)) == {early[0]: b"400", early[1]: b"404"}
            for stream in early:
                _send_body(client, stream, b"x" * 70_000)
            _send_body(client, upload, blob[100_000:])
            assert client.answers({upload}) == {upload: b"201"}
            last = client.request("GET", "/v2/")
            assert client.answers({last}) == {last: b"200"}
        finally:
            client.close()
        with server.client() as c:
            assert c.get(f"/v2/t/early/blobs/{sha256(blob)}").content == blob
        log = server.log()
    assert "Traceback" not in log and "KeyError" not in log, log[-3000:]
