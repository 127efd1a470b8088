"""What a server's h2 connection receives, taken in bulk (secreg/hypercorn_h2_receive.py): the same client bytes
fed to h2 frame by frame and to the bulk path, cut at random places, give the same events, windows, streams,
answers and refusals."""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import h2.exceptions
import h2.settings
import pytest


def _upload_connections(fast: bool) -> tuple[object, object]:
    """A client and a server h2 connection past the handshake, the server's as Hypercorn's H2Protocol sets it up
    with the tunings applied (the DATA frame path of `fast_h2_data_frames` included, or h2's own `receive_data`
    when not `fast`), with 1 MiB stream windows."""
    import h2.config
    import h2.connection
    import h2.settings
    import hypercorn.config
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.protocol.h2 import H2Protocol

    from secreg import hypercorn_tuning

    async def send(event: object) -> None:
        pass

    hypercorn_tuning.apply()
    protocol = H2Protocol(None, hypercorn.config.Config(), WorkerContext(None), None, None,  # type: ignore[arg-type]
                          True, None, None, send)
    server = protocol.connection
    assert "receive_data" in vars(server)  # the tuning's install, by the real H2Protocol.__init__
    if not fast:
        del server.receive_data  # h2's own, as the class has it
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.initiate_connection()
    server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    server.increment_flow_control_window((1 << 22) - 65535)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return client, server


def _summary(events: list[object]) -> list[object]:
    """What the application and flow control see: per stream the bytes and their flow-controlled length in
    order (DATA events merged as Hypercorn's merge does), every other event as itself."""
    import h2.events

    out: list[object] = []
    for event in events:
        if isinstance(event, h2.events.DataReceived):
            if out and isinstance(out[-1], list) and out[-1][0] == event.stream_id:
                out[-1][1] += event.data
                out[-1][2] += event.flow_controlled_length
                continue
            out.append([event.stream_id, bytes(event.data), event.flow_controlled_length])
        elif isinstance(event, h2.events.StreamEnded):
            out.append(("ended", event.stream_id))
        else:
            out.append((type(event).__name__, getattr(event, "stream_id", None)))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_data_frames_taken_in_bulk_are_what_h2_makes_of_them(seed: int) -> None:
    """The same client bytes (two uploads interleaved, padded frames, a PING, stream ends) fed to h2 in one piece
    and to the fast DATA path cut at random places (a frame's header or payload split across reads, reads of a
    few bytes): the same data per stream, flow-controlled lengths, events, windows and answers."""
    import random

    chance = random.Random(seed)
    client, plain = _upload_connections(False)
    _, fast = _upload_connections(True)
    head = [(":method", "PUT"), (":path", "/v2/a/blobs/uploads/x"), (":scheme", "https"), (":authority", "x")]
    wire = bytearray()
    for stream in (1, 3):
        client.send_headers(stream, head)
    wire += client.data_to_send()
    for turn in range(40):
        stream = (1, 3)[chance.random() < 0.3]
        size = chance.choice((1, 100, 16384, 16384, 16384, 5000))
        padding = chance.choice((None, None, None, 7)) if size < 16384 else None
        client.send_data(stream, os.urandom(size), pad_length=padding)
        if turn % 13 == 0:
            client.ping(b"12345678")
        wire += client.data_to_send()
    client.end_stream(1)
    client.send_data(3, os.urandom(16384), end_stream=True)
    wire += client.data_to_send()

    events = plain.receive_data(bytes(wire))
    expected = _summary(events)
    got: list[object] = []
    position = 0
    while position < len(wire):
        step = chance.choice((1, 5, 9, 10, 4096, 16393, 65536, 200_000))
        got += fast.receive_data(bytes(wire[position:position + step]))
        position += step
    assert _summary(got) == expected
    data_events = [e for e in got if type(e).__name__ == "DataReceived"]
    assert len(data_events) < len([e for e in events if type(e).__name__ == "DataReceived"])  # taken in bulk
    assert fast.data_to_send() == plain.data_to_send()
    assert (fast._inbound_flow_control_window_manager.current_window_size
            == plain._inbound_flow_control_window_manager.current_window_size)
    for stream in (1, 3):
        assert (fast.streams[stream]._inbound_window_manager.current_window_size
                == plain.streams[stream]._inbound_window_manager.current_window_size)


def _events(events: list[Any]) -> list[object]:
    """`_summary`, with each request head's stream, headers (as they reach Hypercorn) and whether it ended the
    stream, each reset's error code and each priority's weight."""
    import h2.events

    out: list[object] = []
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            out.append(("request", event.stream_id, [tuple(h) for h in event.headers], event.stream_ended is not None,
                        event.priority_updated is not None))
        elif isinstance(event, h2.events.TrailersReceived):
            out.append(("trailers", event.stream_id, [tuple(h) for h in event.headers]))
        elif isinstance(event, h2.events.StreamReset):
            out.append(("reset", event.stream_id, event.error_code))
        elif isinstance(event, h2.events.PriorityUpdated):
            out.append(("priority", event.stream_id, event.weight))
        else:
            out.extend(_summary([event]))
    return out


def _feed(server: Any, wire: bytes, chance: random.Random | None) -> tuple[list[Any], type | None]:
    """`wire` to `server` in one piece, or (`chance`) cut at random places; the events and the error that
    ended it (None)."""
    got: list[Any] = []
    position = 0
    while position < len(wire):
        step = len(wire) if chance is None else chance.choice((1, 5, 9, 10, 30, 60, 200, 200, 600, 4096, 16393))
        try:
            got += server.receive_data(bytes(wire[position:position + step]))
        except h2.exceptions.ProtocolError as exc:
            return got, type(exc)
        position += step
    return got, None


def _same(plain: Any, fast: Any) -> None:
    """The two server connections in the same state: what they would send, their streams and windows."""
    assert fast.data_to_send() == plain.data_to_send()
    assert fast.highest_inbound_stream_id == plain.highest_inbound_stream_id
    assert fast.open_inbound_streams == plain.open_inbound_streams
    assert {i: s.state_machine.state for i, s in fast.streams.items()} == {
        i: s.state_machine.state for i, s in plain.streams.items()}
    assert fast.state_machine.state == plain.state_machine.state
    assert (fast._inbound_flow_control_window_manager.current_window_size
            == plain._inbound_flow_control_window_manager.current_window_size)


@pytest.mark.parametrize("seed", range(12))
def test_request_heads_taken_in_bulk_are_what_h2_makes_of_them(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many request heads (GETs ending their streams, uploads with bodies and trailers, a head with a priority,
    a head long enough for CONTINUATION frames, cookies, repeated heads that the decoder remembers) between
    PINGs, WINDOW_UPDATEs, a reset and SETTINGS, fed to h2 in one piece and to the bulk path cut at random
    places: the same events in the same order, streams, windows and answers."""
    from secreg import hypercorn_h2_receive

    taken: list[int] = []
    original = hypercorn_h2_receive.receive_request_head
    monkeypatch.setattr(hypercorn_h2_receive, "receive_request_head",
                        lambda connection, sid, *rest: taken.append(sid) or original(connection, sid, *rest))
    chance = random.Random(seed)
    client, plain = _upload_connections(False)
    _, fast = _upload_connections(True)
    wire = bytearray()
    stream = 1
    for turn in range(60):
        head = [(":method", "GET"), (":scheme", "https"), (":authority", "r.example"),
                (":path", f"/v2/a/manifests/{chance.choice((1, 1, 2, turn))}")]
        kind = chance.choice(("get",) * 8 + ("put", "put", "priority", "long", "cookie"))
        if kind == "put":
            client.send_headers(stream, [*head[1:], (":method", "PUT"), ("content-length", "5")])
            client.send_data(stream, b"12345")
            client.send_headers(stream, [("x-trailer", "t")], end_stream=True)
        elif kind == "priority":
            client.send_headers(stream, head, end_stream=True, priority_weight=chance.choice((1, 16, 200)))
        elif kind == "long":
            client.send_headers(stream, [*head, ("x-long", "v" * 20_000)], end_stream=True)
        elif kind == "cookie":
            client.send_headers(stream, [*head, ("cookie", "a=b"), ("cookie", "c=d")], end_stream=True)
        else:
            client.send_headers(stream, head, end_stream=True)
        if turn % 11 == 3:
            client.ping(b"12345678")
        if turn % 17 == 5:
            client.increment_flow_control_window(1000)
        if turn % 23 == 7:
            client.reset_stream(stream)
        if turn == 30:
            client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100_000})
        wire += client.data_to_send()
        stream += 2
    expected, error = _feed(plain, bytes(wire), None)
    got, fast_error = _feed(fast, bytes(wire), chance)
    assert error is None and fast_error is None
    assert _events(got) == _events(expected)
    assert len([e for e in expected if type(e).__name__ == "RequestReceived"]) == 60
    _same(plain, fast)
    _, whole = _upload_connections(True)  # the same bytes in one read, as a client writes a burst of requests
    taken.clear()
    got, fast_error = _feed(whole, bytes(wire), None)
    assert fast_error is None and _events(got) == _events(expected)
    assert len(taken) >= 40  # all but the heads with a priority or CONTINUATION frames went the bulk path


def test_request_heads_taken_in_bulk_are_refused_as_h2_refuses() -> None:
    """Heads h2 refuses (past the concurrent-streams limit, a name in capitals, a stream id below one seen, an
    even stream id, a stream id of 0, an undecodable block), each after good ones in the same read: the same
    events, the same error, the same GOAWAY."""
    import h2.settings

    def raw_head(client: Any, stream_id: int, head: list[tuple[str, str]], block: bytes | None = None) -> bytes:
        data = client.encoder.encode(head) if block is None else block  # HEADERS, END_HEADERS | END_STREAM:
        return struct.pack(">BHBBL", 0, len(data), 0x1, 0x5, stream_id) + data

    good = [(":method", "GET"), (":scheme", "https"), (":authority", "r.example"), (":path", "/v2/")]
    cases: dict[str, Any] = {
        "too many streams": lambda c: b"".join(raw_head(c, n, good) for n in range(1, 21, 2)),
        "capital name": lambda c: raw_head(c, 1, good) + raw_head(c, 3, [*good, ("X-Upper", "1")]),
        "id too low": lambda c: raw_head(c, 5, good) + raw_head(c, 3, good),
        "even id": lambda c: raw_head(c, 1, good) + raw_head(c, 4, good),
        "stream 0": lambda c: raw_head(c, 1, good) + raw_head(c, 0, good),
        "bad block": lambda c: raw_head(c, 1, good) + raw_head(c, 3, good, block=b"\xff\xff\xff\xff"),
    }
    for name, build in cases.items():
        outcomes = []
        for fast in (False, True):
            client, server = _upload_connections(fast)
            server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 4})
            server.receive_data(client.data_to_send())  # the client's SETTINGS ack
            client.receive_data(server.data_to_send())
            server.receive_data(client.data_to_send())
            events, error = _feed(server, build(client), None)
            outcomes.append((_events(events), error, server.data_to_send(), server.state_machine.state))
        assert outcomes[0] == outcomes[1], name
        assert outcomes[0][1] is not None or name == "id too low", name


def test_a_remembered_request_head_is_checked_once() -> None:
    """The decoder hands a remembered block back with the verdict of its check: a repeated valid head is vouched
    for once and then taken as it is; one the check leaves to h2 (a cookie) goes to h2's chain every time."""
    import h2.config
    import h2.connection
    import hpack

    from secreg import hypercorn_h2, hypercorn_tuning

    hypercorn_tuning.apply()
    calls: list[int] = []
    original = hypercorn_h2.request_head

    def counting(headers: Any) -> Any:
        calls.append(1)
        return original(headers)

    client = hpack.Encoder()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.decoder = hypercorn_h2.Decoder()
    server.initiate_connection()
    plain = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    plain.initiate_connection()
    server.receive_data(plain.data_to_send())
    server.data_to_send()
    hypercorn_h2.request_head = counting
    try:
        for stream, extra in enumerate([[]] * 4 + [[(b"cookie", b"a=b")]] * 3):
            head = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"r.example"),
                    (b":path", b"/v2/"), *extra]
            block = client.encode(head)
            (event, _) = server.receive_data(struct.pack(">BHBBL", 0, len(block), 0x1, 0x5, 2 * stream + 1) + block)
            assert [tuple(h) for h in event.headers] == head
    finally:
        hypercorn_h2.request_head = original
    # Each head's first block adds to the table (not remembered), its second is remembered and checked, with
    # the verdict kept: vouched for the GET, left to h2 for the cookies. The rest are not checked again.
    assert len(calls) == 4


def test_runs_of_full_frames_are_refused_as_h2_refuses_past_a_window_or_a_length() -> None:
    """Runs of identical full DATA frames (what a push is made of, taken with one comparison per frame): past the
    stream window, past the declared content-length, and ended by a shorter frame, a frame of another stream or
    END_STREAM; in one read and cut at random places: the same events, the same error and GOAWAY as h2's own
    path, and the same windows when the connection goes on."""
    import random

    def frame(stream: int, payload: bytes, flags: int = 0) -> bytes:
        return struct.pack(">BHBBL", len(payload) >> 16, len(payload) & 0xFFFF, 0x0, flags, stream) + payload

    full = os.urandom(16384)
    head = [(":method", "PUT"), (":path", "/v2/a/blobs/uploads/x"), (":scheme", "https"), (":authority", "x")]
    cases: dict[str, Any] = {
        "past the stream window": (None, [frame(1, full)] * 70),
        "past the content-length": ("163840", [frame(1, full)] * 12),
        "ended in turns": (None, [frame(1, full)] * 20 + [frame(1, full[:100])] + [frame(3, full)] * 3
                           + [frame(1, full)] * 5 + [frame(1, full, 0x1)] + [frame(3, full)] * 2),
    }
    for name, (length, frames) in cases.items():
        for seed in (None, 1, 2, 3):
            outcomes = []
            for fast in (False, True):
                client, server = _upload_connections(fast)
                for stream in (1, 3):
                    client.send_headers(stream, [*head, *([("content-length", length)] if length else [])])
                wire = client.data_to_send() + b"".join(frames)
                events, error = _feed(server, wire, None if seed is None else random.Random(seed))
                windows = None if error is not None else (  # a terminated connection's windows matter no more
                    server._inbound_flow_control_window_manager.current_window_size,
                    {i: s._inbound_window_manager.current_window_size for i, s in server.streams.items()})
                outcomes.append((_summary(events), error, server.data_to_send(), server.state_machine.state, windows))
            assert outcomes[0] == outcomes[1], (name, seed)
        assert (outcomes[0][1] is None) == (name == "ended in turns"), name


def test_a_stream_receiving_a_long_body_is_what_the_reader_gathers_for() -> None:
    """`expects_more_body` (what `secreg.connections` gathers a paced body's reads for): an h2 connection with a
    stream still receiving a body without a length, or with at least `at_least` bytes of its content-length to
    come after the read; not once the rest is shorter, the stream ended or the connection has none; never for
    another protocol."""
    from types import SimpleNamespace

    from secreg.hypercorn_h2_receive import expects_more_body

    head = [(":method", "PUT"), (":path", "/v2/a/blobs/uploads/x"), (":scheme", "https"), (":authority", "x")]
    client, server = _upload_connections(True)
    wrapper = SimpleNamespace(protocol=SimpleNamespace(connection=server))

    def send(stream: int, size: int, end: bool = False) -> None:
        for offset in range(0, size, 16384):
            client.send_data(stream, bytes(min(16384, size - offset)), end_stream=end and offset + 16384 >= size)
        server.receive_data(client.data_to_send())

    assert not expects_more_body(wrapper, b"", 1)  # no stream yet
    client.send_headers(1, [*head, ("content-length", str(300_000))])
    server.receive_data(client.data_to_send())
    read = bytes(1000)
    assert expects_more_body(wrapper, read, 128 * 1024)
    send(1, 170_000)
    assert expects_more_body(wrapper, read, 129_000)  # 130,000 to come, less the read
    assert not expects_more_body(wrapper, read, 129_001)
    client.send_headers(3, head)  # no content-length: its end is not known
    server.receive_data(client.data_to_send())
    assert expects_more_body(wrapper, read, 1 << 30)
    client.end_stream(3)
    send(1, 130_000, end=True)
    assert not expects_more_body(wrapper, read, 1)
    assert not expects_more_body(SimpleNamespace(protocol=SimpleNamespace(connection=object())), read, 1)
    assert not expects_more_body(object(), read, 1)
