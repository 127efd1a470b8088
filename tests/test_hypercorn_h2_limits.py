"""What a hostile HTTP/2 client can make one connection cost (secreg/hypercorn_h2_frames.py): streams opened and
reset in a loop ("rapid reset", CVE-2023-44487) end the connection with GOAWAY(ENHANCE_YOUR_CALM), a client that
resets some of its streams keeps its connection, and the limits h2 and Hypercorn already enforce (concurrent
streams, header lists, CONTINUATION frames) answer with GOAWAY. Raw frames over a real server's TLS."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import h2.errors
import h2.events
import h2.settings
import hyperframe.frame

from secreg import hypercorn_h2_frames
from tests.server import run_secreg
from tests.test_hypercorn_tuning import OPEN, _RawH2


def _until_closed(client: _RawH2) -> list[Any]:
    """Every event the server sends until it closes the connection."""
    events: list[Any] = []
    while True:
        try:
            data = client.sock.recv(65536)
        except OSError:
            return events
        if not data:
            return events
        events.extend(client.connection.receive_data(data))


def _head(server: Any, path: str = "/v2/") -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", server.host_port.encode()),
            (b":path", path.encode())]


def _goaway(events: list[Any]) -> Any:
    return next((e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)), None)


def test_rapid_reset_closes_the_connection_with_enhance_your_calm(tmp_path: Path) -> None:
    """1,000 streams opened and reset at once (each a request started): the server ends the connection with
    GOAWAY(ENHANCE_YOUR_CALM) once the client has reset `H2_RESETS_AHEAD` more than it let finish, without a
    traceback, and serves the next connection. Before, every reset stream's buffer stayed until the 1,001st
    killed the connection with TooManyStreamsError."""
    streams = 1000
    assert streams > 2 * hypercorn_h2_frames.H2_RESETS_AHEAD
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            for n in range(streams):
                stream = 2 * n + 1
                client.connection.send_headers(stream, _head(server), end_stream=True)
                client.connection.reset_stream(stream)
            try:
                client.flush()
            except OSError:
                pass  # closed before it read everything
            events = _until_closed(client)
        finally:
            client.close()
        assert _goaway(events) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        again = _RawH2(server)
        try:
            stream = again.request("GET", "/v2/")
            assert again.answers({stream}) == {stream: b"200"}
        finally:
            again.close()
        log = server.log()
    assert "Traceback" not in log, log[-3000:]


def test_a_client_resetting_half_its_streams_keeps_its_connection(tmp_path: Path) -> None:
    """1,200 requests answered and 1,200 reset as soon as sent, on one connection: every answer comes, the
    connection stays (more resets than the scheduler's 1,000 streams: each reset stream's entry is dropped)."""
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            for _ in range(1200):
                answered = client.connection.get_next_available_stream_id()
                client.connection.send_headers(answered, _head(server), end_stream=True)
                reset = client.connection.get_next_available_stream_id()
                client.connection.send_headers(reset, _head(server), end_stream=True)
                client.connection.reset_stream(reset)
                client.flush()
                assert client.answers({answered}) == {answered: b"200"}
        finally:
            client.close()
        log = server.log()
    assert "Traceback" not in log, log[-3000:]


def test_streams_past_max_concurrent_streams_end_the_connection(tmp_path: Path) -> None:
    """The server advertises SETTINGS_MAX_CONCURRENT_STREAMS (Hypercorn's 100) and h2 enforces it: a client
    opening more (uploads left open) gets GOAWAY(PROTOCOL_ERROR)."""
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            limit = client.connection.remote_settings.max_concurrent_streams
            assert limit == 100
            head = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", server.host_port.encode()),
                    (b":path", b"/v2/t/x/blobs/uploads/"), (b"content-length", b"10")]
            frames = b""
            for n in range(limit + 1):
                frame = hyperframe.frame.HeadersFrame(2 * n + 1)
                frame.data = client.connection.encoder.encode(head)
                frame.flags.add("END_HEADERS")
                frames += frame.serialize()
            client.sock.sendall(frames)
            events = _until_closed(client)
        finally:
            client.close()
    assert _goaway(events) == h2.errors.ErrorCodes.PROTOCOL_ERROR


def test_header_floods_end_the_connection(tmp_path: Path) -> None:
    """A header list past the advertised SETTINGS_MAX_HEADER_LIST_SIZE once decoded (an HPACK bomb: one large
    header repeated) gets GOAWAY(ENHANCE_YOUR_CALM); a header block continued without end (CONTINUATION frames,
    CVE-2024-27316) is cut off by h2 after 64 frames, GOAWAY(PROTOCOL_ERROR): neither is kept growing."""
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            limit = client.connection.remote_settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE]
            assert limit == 64 * 1024
            bomb = hyperframe.frame.HeadersFrame(1)
            bomb.data = client.connection.encoder.encode(_head(server) + [(b"x-a", b"a" * 4000)] * 20)
            bomb.flags.add("END_HEADERS")
            bomb.flags.add("END_STREAM")
            assert len(bomb.data) < 8000  # the repeats are one byte each on the wire
            client.sock.sendall(bomb.serialize())
            assert _goaway(_until_closed(client)) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        finally:
            client.close()
        client = _RawH2(server)
        try:
            first = hyperframe.frame.HeadersFrame(1)
            first.data = client.connection.encoder.encode(_head(server))
            client.sock.sendall(first.serialize())
            more = hyperframe.frame.ContinuationFrame(1)
            more.data = b"\x00" * 16_000
            try:
                for _ in range(200):
                    client.sock.sendall(more.serialize())
            except OSError:
                pass  # closed before it read everything
            assert _goaway(_until_closed(client)) == h2.errors.ErrorCodes.PROTOCOL_ERROR
        finally:
            client.close()
        log = server.log()
    assert "Traceback" not in log, log[-3000:]


def _control_floods(stream: int) -> dict[str, bytes]:
    """5,000 frames of each kind that carries no request, one write each (`stream`: an upload left open)."""
    frame = hyperframe.frame
    settings = frame.SettingsFrame(0)
    settings.settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}
    unknown = struct.pack(">BHBBL", 0, 1, 0xFA, 0, 0) + b"x"  # hyperframe's ExtensionFrame serializes no body
    return {
        "PING": b"".join(frame.PingFrame(0, opaque_data=b"%08d" % n).serialize() for n in range(5000)),
        "SETTINGS": settings.serialize() * 5000,
        "SETTINGS ACK": frame.SettingsFrame(0, flags=["ACK"]).serialize() * 5000,
        "WINDOW_UPDATE": frame.WindowUpdateFrame(0, window_increment=1).serialize() * 5000,
        "WINDOW_UPDATE of a stream": frame.WindowUpdateFrame(stream, window_increment=1).serialize() * 5000,
        "PRIORITY": frame.PriorityFrame(stream, depends_on=0, stream_weight=10).serialize() * 5000,
        "empty DATA": frame.DataFrame(stream).serialize() * 5000,
        "unknown type": unknown * 5000,
    }


def test_control_frame_floods_end_the_connection(tmp_path: Path) -> None:
    """5,000 PING, SETTINGS, WINDOW_UPDATE, PRIORITY, empty DATA or unknown frames on a connection that made one
    request: GOAWAY(ENHANCE_YOUR_CALM) after about `H2_CONTROL_AHEAD`, at most that many answers (PING and
    SETTINGS ACKs) sent, no traceback, the next connection served. Before, every one was handled (a PING flood
    read back: ~16 us of server CPU and one ACK each, a SETTINGS flood ~32 us)."""
    limit = hypercorn_h2_frames.H2_CONTROL_AHEAD + hypercorn_h2_frames.H2_CONTROL_PER_REQUEST
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        for kind in _control_floods(1):
            client = _RawH2(server)
            try:
                upload = client.request("POST", "/v2/t/x/blobs/uploads/", [(b"content-length", b"100")])
                flood = _control_floods(upload)[kind]
                try:
                    client.sock.sendall(flood)
                except OSError:
                    pass  # closed before it read everything
                events = _until_closed(client)
            finally:
                client.close()
            assert _goaway(events) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, kind
            answers = [e for e in events if isinstance(e, (h2.events.PingAckReceived, h2.events.SettingsAcknowledged))]
            assert len(answers) <= limit + 1, (kind, len(answers))
        again = _RawH2(server)
        try:
            stream = again.request("GET", "/v2/")
            assert again.answers({stream}) == {stream: b"200"}
        finally:
            again.close()
        log = server.log()
    assert "Traceback" not in log, log[-3000:]


def test_clients_pinging_and_reading_in_small_steps_keep_their_connection(tmp_path: Path) -> None:
    """What normal clients send keeps the connection: 300 requests with 5 PINGs each (1,500: more than the free
    `H2_CONTROL_AHEAD`), SETTINGS twice, a PRIORITY frame naming 1,200 streams never opened (the scheduler kept
    each one: the 1,001st killed the connection with TooManyStreamsError), and an 8 MiB pull read as Go's client
    reads, a WINDOW_UPDATE for the stream and one for the connection per 4 KiB (4,096 of them)."""
    import hashlib
    import os

    blob = os.urandom(8 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        with server.client() as http:
            assert http.post(f"/v2/t/z/blobs/uploads/?digest={digest}", content=blob).status_code == 201
        client = _RawH2(server)
        try:
            for n in range(300):
                for ping in range(5):
                    client.connection.ping(b"%04d%04d" % (n, ping))
                stream = client.request("GET", "/v2/")
                assert client.answers({stream}) == {stream: b"200"}
                if n in (100, 200):
                    client.connection.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384 + n})
            client.sock.sendall(b"".join(hyperframe.frame.PriorityFrame(1001 + 2 * n, depends_on=0).serialize()
                                         for n in range(1200)))
            stream = client.request("GET", f"/v2/t/z/blobs/{digest}")

            def ended_in(events: list[Any]) -> bool:
                return any(isinstance(event, h2.events.StreamEnded) for event in events)

            body = bytearray()
            ended = False
            while not ended:
                data = client.sock.recv(65536)
                assert data, "closed"
                events = client.connection.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.DataReceived):
                        body += event.data
                        for offset in range(0, event.flow_controlled_length, 4096):
                            step = min(4096, event.flow_controlled_length - offset)
                            if not ended_in(events):  # else the stream is closed on this side
                                client.connection.increment_flow_control_window(step, stream)
                            client.connection.increment_flow_control_window(step)
                    ended = ended or isinstance(event, h2.events.StreamEnded)
                    assert not isinstance(event, h2.events.ConnectionTerminated), event
                client.flush()
            assert body == blob
            last = client.request("GET", "/v2/")
            assert client.answers({last}) == {last: b"200"}
        finally:
            client.close()
        log = server.log()
    assert "Traceback" not in log, log[-3000:]


def _anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon")


def test_a_client_that_never_opens_its_windows_holds_little_memory(tmp_path: Path) -> None:
    """50 pulls of a 2 MiB blob on one connection whose client set its stream window to 0: the connection's stream
    buffers stop at `H2_ANSWER_BUFFER` (2 MiB; the rest stays a view of the page cache), not a copy of a whole 1 MiB
    piece per stream (+51 MiB of the server's anonymous memory) nor 256 KiB per stream (+14 MiB; ~+4 MiB now);
    opened, every stream gets the whole blob intact."""
    import hashlib
    import os
    import time

    blob = os.urandom(2 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        with server.client() as http:
            assert http.post(f"/v2/t/z/blobs/uploads/?digest={digest}", content=blob).status_code == 201
        client = _RawH2(server)
        try:
            client.connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            client.flush()
            before = _anon_kib(server.process.pid)
            streams = {client.request("GET", f"/v2/t/z/blobs/{digest}") for _ in range(50)}
            assert set(client.answers(streams).values()) == {b"200"}
            held = [before]
            # until the buffers stop growing (the app waits); at most ~30 s, then the bound below decides
            while len(held) < 150 and (len(held) < 4 or held[-1] != held[-4]):
                time.sleep(0.2)
                held.append(_anon_kib(server.process.pid))
            assert held[-1] - before < 8 * 1024, held
            bodies = {stream: bytearray() for stream in streams}
            client.connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
            client.flush()
            ended: set[int] = set()
            while ended != streams:
                for event in client.connection.receive_data(client.sock.recv(1 << 20)):
                    if isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        client.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                client.flush()
            assert all(body == blob for body in bodies.values())
        finally:
            client.close()


def test_answers_waiting_for_a_client_that_left_are_released(tmp_path: Path) -> None:
    """100 blob pulls on a connection whose client set its stream window to 0, then closed the connection (or reset
    the streams), three times: every answer waiting for the window ends, its file closed and its buffer freed.
    Before, Hypercorn closed no stream buffer when a connection closed, so an answer waiting at a buffer's
    high-water mark waited forever, with its connection: +200 file descriptors and +27 MiB of the server's memory
    kept per connection."""
    import hashlib
    import os
    import time

    blob = os.urandom(2 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        pid = server.process.pid
        with server.client() as http:
            assert http.post(f"/v2/t/z/blobs/uploads/?digest={digest}", content=blob).status_code == 201
        descriptors = len(os.listdir(f"/proc/{pid}/fd"))
        before = _anon_kib(pid)
        for leaving in ("closes", "resets its streams", "closes"):
            client = _RawH2(server)
            try:
                client.connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
                client.flush()
                streams = {client.request("GET", f"/v2/t/z/blobs/{digest}") for _ in range(100)}
                assert set(client.answers(streams).values()) == {b"200"}
                if leaving == "resets its streams":
                    for stream in streams:
                        client.connection.reset_stream(stream)
                    last = client.request("GET", "/v2/")
                    assert client.answers({last}) == {last: b"200"}
            finally:
                if leaving == "closes":
                    client.close()
            held = [len(os.listdir(f"/proc/{pid}/fd"))]
            while held[-1] > descriptors and len(held) < 150:  # at most ~30 s, then the assertion decides
                time.sleep(0.2)
                held.append(len(os.listdir(f"/proc/{pid}/fd")))
            assert held[-1] <= descriptors + (leaving != "closes"), (leaving, held)
            client.close()
        assert _anon_kib(pid) - before < 16 * 1024
        log = server.log()
    assert "Traceback" not in log, log[-3000:]
