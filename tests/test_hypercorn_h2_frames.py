"""The end of an h2 response stream and the connection's idle bookkeeping (secreg/hypercorn_h2_frames.py): what
`end_stream` sends against h2's own, what a client sees of small answers over a real connection, and a
connection that stays open while in use and is closed once idle."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import h2.events
import h2.exceptions
import pytest

from secreg import hypercorn_h2_frames
from tests.oci import sha256
from tests.server import run_secreg
from tests.test_hypercorn_h2 import _served_stream
from tests.test_hypercorn_tuning import OPEN, _RawH2

_REPLY = [(b":status", b"200"), (b"content-type", b"application/json"), (b"x-request-id", b"r")]


def _ours_and_h2s() -> tuple[Any, Any]:
    """Two identical server connections with client streams 1, 3, 5, 7 open: one sends as secreg does
    (direct heads, bulk DATA frames, `end_stream`), the other with h2's own calls."""
    ours, _ = _served_stream(True)
    theirs, _ = _served_stream(False)
    return ours, theirs


def test_end_stream_sets_end_stream_on_the_frame_just_built() -> None:
    """After a stream's DATA frame or response head, `end_stream` sends what h2's `send_data(end_stream=True)`
    and `send_headers(end_stream=True)` send: the flag on that frame, no empty DATA frame after it."""
    send = hypercorn_h2_frames._bulk_data_framer()
    ours, theirs = _ours_and_h2s()
    ours.send_headers(1, _REPLY)
    send(ours, 1, b"x" * 40_000)  # three frames: the flag goes on the last
    hypercorn_h2_frames.end_stream(ours, 1)
    ours.send_headers(3, _REPLY)  # a head alone (HEAD, an empty body)
    hypercorn_h2_frames.end_stream(ours, 3)
    theirs.send_headers(1, _REPLY)
    theirs.send_data(1, b"x" * 16384)
    theirs.send_data(1, b"x" * 16384)
    theirs.send_data(1, b"x" * (40_000 - 32768), end_stream=True)
    theirs.send_headers(3, _REPLY, end_stream=True)
    assert ours.data_to_send() == theirs.data_to_send()
    for stream in (1, 3):
        assert ours.streams[stream].state_machine.state == theirs.streams[stream].state_machine.state
    assert ours.outbound_flow_control_window == theirs.outbound_flow_control_window


def test_end_stream_sends_an_empty_data_frame_when_the_last_frame_is_not_its_own() -> None:
    """Another stream's frame after this one's, a flush in between, or nothing sent on the stream: an empty
    DATA frame with END_STREAM, as h2's `end_stream` sends; and h2's errors for closed and unknown streams."""
    send = hypercorn_h2_frames._bulk_data_framer()
    ours, theirs = _ours_and_h2s()
    for connection, data in ((ours, lambda c, s, d: send(c, s, d)), (theirs, lambda c, s, d: c.send_data(s, d))):
        connection.send_headers(1, _REPLY)
        data(connection, 1, b"a" * 10)
        connection.send_headers(3, _REPLY)  # another stream's head after stream 1's DATA
        data(connection, 3, b"b" * 10)
    hypercorn_h2_frames.end_stream(ours, 1)
    theirs.end_stream(1)
    assert ours.data_to_send() == theirs.data_to_send()
    for connection in (ours, theirs):
        connection.send_headers(5, _REPLY)  # and a flush between the DATA frame and the end
        connection.data_to_send()
    hypercorn_h2_frames.end_stream(ours, 5)
    theirs.end_stream(5)
    assert ours.data_to_send() == theirs.data_to_send()
    for stream in (1, 3, 5):
        assert ours.streams[stream].state_machine.state == theirs.streams[stream].state_machine.state
    for stream, error in ((1, h2.exceptions.StreamClosedError), (99, h2.exceptions.NoSuchStreamError)):
        with pytest.raises(error):
            theirs.end_stream(stream)
        with pytest.raises(error):
            hypercorn_h2_frames.end_stream(ours, stream)
    assert ours.data_to_send() == theirs.data_to_send() == b""


@pytest.mark.parametrize("size", [0, 5, 16383, 16384, 16385, 40_000, 49_152, 65_535])
def test_a_body_framed_into_one_write_is_what_h2_sends(size: int) -> None:
    """A large body piece framed with what h2 held before it into one bytes object (a blob pull's path): the
    bytes h2's own `send_data` frame by frame would send, full frames and a short last one, and the same
    flow-control windows after."""
    send = hypercorn_h2_frames._bulk_data_framer()
    ours, theirs = _ours_and_h2s()
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    ours.send_headers(1, _REPLY)
    framed = send(ours, 1, data, ours.data_to_send())
    theirs.send_headers(1, _REPLY)
    for offset in range(0, size, 16384):
        theirs.send_data(1, data[offset:offset + 16384])
    assert framed == theirs.data_to_send()
    assert ours.data_to_send() == b""
    assert ours.local_flow_control_window(1) == theirs.local_flow_control_window(1)
    assert ours.outbound_flow_control_window == theirs.outbound_flow_control_window


def _frames(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, flags, stream id, length) of each complete frame in `data`, which must hold only whole frames."""
    out, position = [], 0
    while position < len(data):
        high, low, kind, flags, stream = struct.unpack_from(">BHBBL", data, position)
        length = (high << 16) | low
        out.append((kind, flags, stream & 0x7FFF_FFFF, length))
        position += 9 + length
    assert position == len(data)
    return out


def test_small_http2_answers_end_on_their_last_frame(tmp_path: Path) -> None:
    """Over a real connection, GETs of a small blob and HEADs of it, 10 of each at once: each answer ends with the
    END_STREAM flag on its last DATA frame (GET) or on its HEADERS frame (HEAD), with no empty DATA frame, and
    the client gets every body whole."""
    blob = b"small blob " * 50
    path = f"/v2/t/a/blobs/{sha256(blob)}"
    with run_secreg(tmp_path, OPEN, args=["--http2"]) as server:
        with server.client() as c:
            assert c.post("/v2/t/a/blobs/uploads/", params={"digest": sha256(blob)}, content=blob).status_code == 201
        client = _RawH2(server)
        try:
            methods: dict[int, str] = {}
            for method in ("GET", "HEAD") * 10:
                stream = int(client.connection.get_next_available_stream_id())
                client.connection.send_headers(stream, [
                    (b":method", method.encode()), (b":scheme", b"https"),
                    (b":authority", server.host_port.encode()), (b":path", path.encode())], end_stream=True)
                methods[stream] = method
            client.flush()
            frames: list[tuple[int, int, int, int]] = []
            bodies: dict[int, bytes] = dict.fromkeys(methods, b"")
            ended: set[int] = set()
            pending = b""
            while ended < set(methods):
                data = client.sock.recv(65536)
                assert data
                pending += data
                position = 0  # past the complete frames received so far
                while position + 9 <= len(pending):
                    high, low = struct.unpack_from(">BH", pending, position)
                    if position + 9 + ((high << 16) | low) > len(pending):
                        break
                    position += 9 + ((high << 16) | low)
                whole = position
                frames += _frames(pending[:whole])
                pending = pending[whole:]
                for event in client.connection.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        client.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                client.flush()
        finally:
            client.close()
    for stream, method in methods.items():
        own = [(kind, flags, length) for kind, flags, sid, length in frames if sid == stream]
        assert own[-1][1] & 0x1, own  # END_STREAM on the last frame
        assert all(not flags & 0x1 for _, flags, _ in own[:-1])
        if method == "GET":
            assert bodies[stream] == blob
            assert own[-1][0] == 0x0 and own[-1][2] > 0, own  # a DATA frame with the body's bytes, not an empty one
        else:
            assert bodies[stream] == b""
            assert own == [(0x1, own[0][1], own[0][2])], own  # one HEADERS frame, END_STREAM on it


def test_an_http2_connection_in_use_outlives_the_idle_timeout_and_is_closed_once_idle(tmp_path: Path) -> None:
    """With `http.timeouts.idle` at 2 s: an upload whose body trickles in over 4 s while GETs come and go on the
    same connection (streams opening and closing while another is open) is served to the end; once nothing is
    open the connection is closed."""
    body = b"y" * 40_000
    config = {"auth": {"enabled": False}, "http": {"workers": 1, "timeouts": {"idle": 2}}}
    with run_secreg(tmp_path, config, args=["--http2"]) as server:
        client = _RawH2(server)
        try:
            upload = int(client.connection.get_next_available_stream_id())
            client.connection.send_headers(upload, [
                (b":method", b"POST"), (b":scheme", b"https"), (b":authority", server.host_port.encode()),
                (b":path", f"/v2/t/idle/blobs/uploads/?digest={sha256(body)}".encode()),
                (b"content-length", str(len(body)).encode())])
            client.flush()
            for offset in range(0, len(body), 5_000):  # 8 pieces 0.5 s apart, a GET in between each
                time.sleep(0.5)
                client.connection.send_data(upload, body[offset:offset + 5_000],
                                            end_stream=offset + 5_000 >= len(body))
                client.flush()
                if offset + 5_000 < len(body):
                    get = client.request("GET", "/v2/")
                    assert client.answers({get}) == {get: b"200"}
            assert client.answers({upload}) == {upload: b"201"}
            client.sock.settimeout(60)
            terminated = False
            while not terminated:  # idle now: the server says GOAWAY and closes
                data = client.sock.recv(65536)
                if not data:
                    break
                terminated = any(isinstance(e, h2.events.ConnectionTerminated)
                                 for e in client.connection.receive_data(data))
        finally:
            client.close()
        assert "Traceback" not in server.log(), server.log()[-3000:]
