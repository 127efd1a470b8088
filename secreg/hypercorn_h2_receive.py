"""What a server's h2 connection receives, parsed where the socket read lies instead of frame by frame through
h2's frame buffer: runs of plain DATA frames (a push) and request HEADERS frames (many small requests on one
connection) take the same checks and state machines as in h2, once per run or per head, without h2's frame
objects, flag sets and copies. Anything else goes to h2 itself. Applied by `secreg.hypercorn_tuning.apply`.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import h2.config
import h2.connection
import h2.exceptions
import h2.stream

from secreg.hypercorn_h2_frames import on_new_connection

log = logging.getLogger("secreg.serve")

_FRAME = struct.Struct(">BHBBL")  # length (8 + 16 bits), type, flags, reserved bit + stream id
_DATA, _HEADERS = 0x0, 0x1
_END_STREAM, _END_HEADERS = 0x1, 0x4


_RECEIVING = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)


def _knows_stream_lengths() -> bool:
    probe = h2.stream.H2Stream(1, h2.config.H2Configuration(client_side=False), 65535, 65535)
    return (isinstance(getattr(probe, "_actual_content_length", None), int)
            and hasattr(probe, "_expected_content_length") and hasattr(probe, "state_machine"))


_STREAM_LENGTHS = _knows_stream_lengths()  # checked once, at import


def expects_more_body(protocol: Any, data: bytes, at_least: int) -> bool:
    """Whether the HTTP/2 connection of `protocol` (Hypercorn's protocol wrapper) has a stream still receiving a
    request body that `data`, just read, does not end: one with no declared length, or with at least `at_least`
    bytes of its content-length still to come after `data` (the frames' own 9 bytes each counted as body: a
    little early at the end only). What `secreg.bodyreads.expects_more_body` says of an HTTP/1.1 request, for
    `secreg.connections` to gather a paced body's reads. Always False when this h2 lacks the stream state read."""
    connection = getattr(getattr(protocol, "protocol", None), "connection", None)
    if not _STREAM_LENGTHS or not isinstance(connection, h2.connection.H2Connection):
        return False
    for stream in connection.streams.values():
        if stream.state_machine.state in _RECEIVING:
            expected = stream._expected_content_length
            if expected is None or expected - stream._actual_content_length - len(data) >= at_least:
                return True
    return False


def receive_request_head(connection: Any, stream_id: int, block: bytes, ended: bool, events: list[Any]) -> None:
    """What h2's `_receive_headers_frame` does with a HEADERS frame (END_HEADERS set, no padding, no priority)
    that opens client stream `stream_id` on a server connection, the caller having checked what h2 checks first
    (a new stream id above every one seen, the concurrent-streams limit): the block decoded, the connection's
    state machine, the stream begun, its state machine, content length and header validation
    (`H2Stream.receive_headers`), the same events appended to `events` and the same errors raised."""
    headers = h2.connection._decode_headers(connection.decoder, block)
    events.extend(connection.state_machine.process_input(h2.connection.ConnectionInputs.RECV_HEADERS))
    stream = connection._begin_new_stream(stream_id, h2.connection.AllowedStreamIDs.ODD)
    frames, stream_events = stream.receive_headers(headers, ended, connection.config.header_encoding)
    if frames:
        connection._prepare_for_sending(frames)
    events.extend(stream_events)


def fast_h2_data_frames() -> bool:
    """h2 parses every 16 KiB DATA frame on its own (a frame object, two copies, the connection's and the
    stream's state machines and windows, an event; ~15 us each): 16,000 frames for a 256 MiB push, more CPU than
    its SHA-256 under py-spy. A run of complete DATA frames of one stream in a socket read (no padding, no flag
    but END_STREAM) is instead taken as one: the same checks done once for the sum (state of the connection and
    of the stream, both flow-control windows, the frame size limit, the declared content length) and one
    DataReceived event with the payloads joined (one copy); the frames after one with its very header (a push's
    full frames) cost a comparison each. A request HEADERS frame opening a new stream (one
    block, no padding or priority) goes to `receive_request_head`: h2's frame buffer, frame object, flag set,
    dispatch and trace repr were a quarter of what 32 small requests on one connection cost to receive, and h2
    counted the open streams (a walk over all of them) for every head, here once per read. Anything else, or a
    run one of those checks would refuse, is left to h2 itself, frame by frame, so its errors and their
    GOAWAY/RST_STREAM stay h2's. None of h2's behaviour changes but the number of events (Hypercorn's merge did
    that already)."""
    connection_class = h2.connection.H2Connection
    probe = connection_class(h2.config.H2Configuration(client_side=False))
    stream_probe = h2.stream.H2Stream(1, h2.config.H2Configuration(client_side=False), 65535, 65535)
    known = (hasattr(probe, "incoming_buffer")
             and all(hasattr(probe.incoming_buffer, name) for name in ("_data", "_preamble_len", "_headers_buffer"))
             and isinstance(probe.incoming_buffer._data, bytearray)
             and hasattr(probe, "_inbound_flow_control_window_manager") and hasattr(probe, "streams")
             and all(hasattr(probe, name) for name in ("_begin_new_stream", "highest_inbound_stream_id",
                                                       "_prepare_for_sending", "open_inbound_streams"))
             and callable(getattr(h2.connection, "_decode_headers", None))
             and hasattr(h2.connection, "AllowedStreamIDs")
             and hasattr(stream_probe, "_inbound_window_manager") and hasattr(stream_probe, "state_machine")
             and hasattr(stream_probe, "receive_headers"))
    if not known:
        log.warning("h2 internals differ from the known ones: HTTP/2 frames are parsed one by one")
        return False
    # IDLE: before the first head (which h2's state machine takes from there to SERVER_OPEN)
    open_connection = (h2.connection.ConnectionState.IDLE, h2.connection.ConnectionState.CLIENT_OPEN,
                       h2.connection.ConnectionState.SERVER_OPEN)
    receiving = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)
    recv_data = h2.connection.ConnectionInputs.RECV_DATA
    header = _FRAME
    end_stream_flag, data_type = _END_STREAM, _DATA
    head_flags = _END_STREAM | _END_HEADERS

    def scan(connection: Any, source: Any, position: int, events: list[Any],
             carry: tuple[int, list[Any], int, bool] | None = None) -> int:
        """Take the runs of plain DATA frames and the request heads in `source` from `position` on, each run as
        one event appended to `events`; returns where the first frame it leaves to h2 begins (or the end).
        `carry`: a run begun before `source` (stream id, payload pieces, their length, whether its last frame
        ended the stream), continued by `source`'s first frames unless ended: when that run fails a check,
        nothing is taken and -1 returned (the caller hands everything to h2)."""
        size, limit = len(source), connection.max_inbound_frame_size
        window = connection._inbound_flow_control_window_manager
        server = not connection.config.client_side
        opened = -1  # the open inbound streams, counted (by h2) at the first head of this read
        with memoryview(source) as view:
            while True:
                if carry is None and position + 9 <= size:
                    high, low, kind, flags, sid = header.unpack_from(source, position)
                    if kind == _HEADERS:
                        length, sid = (high << 16) | low, sid & 0x7FFF_FFFF
                        if (not server or flags & ~head_flags or not flags & _END_HEADERS or length > limit
                                or position + 9 + length > size or not sid & 1 or sid in connection.streams
                                or sid <= connection.highest_inbound_stream_id):
                            return position
                        if opened < 0:
                            opened = connection.open_inbound_streams
                        if opened + 1 > connection.local_settings.max_concurrent_streams:
                            return position  # h2 refuses it
                        receive_request_head(connection, sid, bytes(view[position + 9:position + 9 + length]),
                                             bool(flags & _END_STREAM), events)
                        opened += 1
                        position += 9 + length
                        continue
                pieces: list[Any] = []
                start, stream_id, total, ended = position, None, 0, False
                if carry is not None:
                    stream_id, pieces, total, ended = carry
                while not ended and position + 9 <= size:
                    high, low, kind, flags, sid = header.unpack_from(source, position)
                    length, sid = (high << 16) | low, sid & 0x7FFF_FFFF
                    if (kind != data_type or flags & ~end_stream_flag or length > limit or sid == 0
                            or (stream_id is not None and sid != stream_id) or position + 9 + length > size):
                        break
                    stream_id = sid
                    step = 9 + length
                    pieces.append(view[position + 9:position + step])
                    total += length
                    ended = bool(flags & end_stream_flag)
                    if not ended and length:
                        # The frames after it with this very header (a push's full frames) pass the same checks:
                        # one comparison each instead of the unpacking and the tests (~1 us per frame saved).
                        frame_header = source[position:position + 9]
                        position += step
                        taken = len(pieces)
                        while position + step <= size and source.startswith(frame_header, position):
                            pieces.append(view[position + 9:position + step])
                            position += step
                        total += (len(pieces) - taken) * length
                    else:
                        position += step
                stream = connection.streams.get(stream_id) if pieces else None
                if (stream is None or stream.state_machine.state not in receiving
                        or total > window.current_window_size
                        or total > stream._inbound_window_manager.current_window_size):
                    pieces.clear()
                    if carry is not None:
                        return -1
                    return start  # h2 takes it from here (and answers any error as it does)
                carry = None
                if total <= (len(pieces) - 1) * limit:  # not all full frames: some may carry nothing
                    empty = sum(1 for piece in pieces if not piece) - (ended and not pieces[-1])
                    if empty and hasattr(connection, "_secreg_control"):
                        connection._secreg_control.charge(empty)  # `hypercorn_h2_frames.ControlBudget`
                payload = b"".join(pieces)  # the one copy: the frames' payloads are not contiguous
                pieces.clear()  # the views go before `source` may change
                connection.state_machine.process_input(recv_data)
                window.window_consumed(total)
                _, stream_events = stream.receive_data(payload, ended, total)
                events.extend(stream_events)

    def buffered_run(connection: Any, buffer: bytearray, data: bytes) -> tuple[int, tuple[Any, ...] | None]:
        """Complete the frame the last read left incomplete in `buffer` (all it holds) with the first bytes of
        `data`; returns how many of them it took and, when `buffer` is then exactly one whole plain DATA frame,
        that frame as the `carry` of a run for `scan` (its payload a view of `buffer`)."""
        position = 0
        need = 9 - len(buffer)
        if need > 0:
            buffer += data[:need]
            position = min(need, len(data))
        if len(buffer) < 9:
            return position, None
        high, low, kind, flags, sid = header.unpack_from(buffer, 0)
        length = (high << 16) | low
        need = 9 + length - len(buffer)
        if need > 0:
            buffer += data[position:position + need]
            position = min(position + need, len(data))
        if (kind != data_type or flags & ~end_stream_flag or length > connection.max_inbound_frame_size
                or sid & 0x7FFF_FFFF == 0 or len(buffer) != 9 + length):
            return position, None
        return position, (sid & 0x7FFF_FFFF, [memoryview(buffer)[9:]], length, bool(flags & end_stream_flag))

    def fast(connection: Any, data: bytes, position: int, events: list[Any],
             carry: tuple[Any, ...] | None = None) -> int:
        """`scan`, answering its protocol errors (a declared content length exceeded, a head h2 refuses) as h2
        does: the connection terminated (GOAWAY) and the error raised."""
        try:
            return scan(connection, data, position, events, carry)
        except h2.exceptions.ProtocolError as exc:
            if carry is not None:
                carry[1].clear()
            del connection.incoming_buffer._data[:]
            connection._terminate_connection(exc.error_code)
            raise

    def receive(connection: Any, slow: Any, data: bytes) -> list[Any]:
        incoming = connection.incoming_buffer
        if incoming._preamble_len or connection.state_machine.state not in open_connection:
            return slow(data)  # type: ignore[no-any-return]
        buffer: bytearray = incoming._data
        events: list[Any] = []
        position = 0
        if buffer:
            # The frame the last read left incomplete, completed with this read's first bytes: a plain DATA frame
            # starts the run the scan of this read continues (the rest of the read is parsed where it lies
            # instead of being appended whole: a copy of each ~200 KiB read fewer); any other frame goes to h2
            # alone. A run one of scan's checks refuses takes the buffer and h2 as before.
            position, carry = buffered_run(connection, buffer, data)
            if carry is not None and not incoming._headers_buffer:
                done = fast(connection, data, position, events, carry)
                carry[1].clear()  # the view of `buffer` goes before it changes
                if done < 0:
                    buffer += data[position:]
                    events.extend(slow(b""))
                    return events
                del buffer[:]
                position = done
            else:
                if carry is not None:
                    carry[1].clear()
                events.extend(slow(b""))  # h2's own errors: it has terminated the connection and raises
                if buffer:
                    return events  # still incomplete: this read is all in it
        # Where the scan stops at a frame it leaves to h2 (a WINDOW_UPDATE, a PING, a SETTINGS ack, trailers, a
        # padded frame, a header block in several frames...), h2 takes that one complete frame alone, then the
        # scan goes on after it (after the last frame of a header block).
        while connection.state_machine.state in open_connection:
            if not incoming._headers_buffer:
                position = fast(connection, data, position, events)
            if position + 9 > len(data):
                break
            high, low, _, _, _ = header.unpack_from(data, position)
            end = position + 9 + ((high << 16) | low)
            if end > len(data):
                break
            buffer += data[position:end]
            events.extend(slow(b""))
            position = end
        buffer += data[position:]  # the incomplete frame at the end, or what h2 takes
        if len(buffer) >= 9:
            events.extend(slow(b""))
        return events

    def install(connection: Any) -> None:
        slow = connection.receive_data
        connection.receive_data = lambda data: receive(connection, slow, data)

    on_new_connection("data frames", lambda self: install(self.connection))
    return True
