"""Hypercorn's HTTP/2 transport: wider flow-control windows, DATA frames built and parsed in bulk, several frames
per write and the flushes of one loop iteration gathered into one (the per-request costs are in
`secreg.hypercorn_h2`). Applied by `secreg.hypercorn_tuning.apply`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("secreg.serve")

# What each new H2Protocol gets once Hypercorn's `__init__` is done, by tuning, in the order the tunings were
# applied (these and `secreg.hypercorn_h2`'s): one wrapper of `H2Protocol.__init__` calls them all, instead of
# one wrapper per tuning.
_CONNECTION_SETUP: dict[str, Any] = {}


def on_new_connection(name: str, setup: Any) -> None:
    """Have `setup(protocol)` run for every new H2Protocol; a tuning applied again replaces its own entry (and
    keeps its place), so applying twice wraps nothing twice."""
    from hypercorn.protocol import h2 as h2_protocol

    _CONNECTION_SETUP[name] = setup
    protocol = h2_protocol.H2Protocol
    original_init = protocol.__init__
    if getattr(original_init, "_secreg_connection_setup", False):
        return
    setups = _CONNECTION_SETUP

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        for each in setups.values():
            each(self)

    __init__._secreg_connection_setup = True  # type: ignore[attr-defined]
    protocol.__init__ = __init__  # type: ignore[method-assign]


# --- HTTP/2: wider windows, bigger frames, several frames per write ---------------------------------------

# What a client may send on one stream, and on all of a connection's streams, before we acknowledge. curl 7.88
# spins while its window is used up: with 4 MiB it spent 1.2-1.4 s of CPU on a 256 MiB h2 push (HTTP/1.1: 0.3 s),
# with 64 MiB 0.33-0.37 s.
H2_STREAM_WINDOW = 64 * 1024 * 1024
H2_CONNECTION_WINDOW = 256 * 1024 * 1024
H2_WRITE_BYTES = 512 * 1024  # DATA frames gathered before one write to the socket
H2_STREAM_BUFFER = 256 * 1024  # what a response stream buffers before the app waits (Hypercorn: 32 KiB)


def widen_h2_windows() -> bool:
    """Hypercorn's HTTP/2 keeps h2's defaults: 64 KiB flow-control windows that it never widens and 16 KiB
    frames, so a pushing client stalls every 64 KiB waiting for a WINDOW_UPDATE. Advertise wider stream and
    connection windows. What is held per stream does not grow with them: Hypercorn acknowledges DATA once the
    application's receive queue (`max_app_queue_size` messages, each at most one socket read) takes it, and
    stops reading while that queue is full, so the windows only let more bytes wait in the kernel's socket
    buffers; frames stay at 16 KiB."""
    import h2.settings
    from hypercorn.protocol import h2 as h2_protocol

    protocol = h2_protocol.H2Protocol
    original_initiate = getattr(protocol, "initiate", None)
    if original_initiate is None or getattr(original_initiate, "_secreg_tuned", False):
        return original_initiate is not None

    def setup(self: Any) -> None:
        values = {code: self.connection.local_settings[code] for code in self.connection.local_settings}
        values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = H2_STREAM_WINDOW
        self.connection.local_settings = h2.settings.Settings(client=False, initial_values=values)

    async def initiate(self: Any, headers: Any = None, settings: Any = None) -> None:
        await original_initiate(self, headers, settings)
        self.connection.increment_flow_control_window(H2_CONNECTION_WINDOW - 65535)
        await self._flush()

    initiate._secreg_tuned = True  # type: ignore[attr-defined]
    on_new_connection("windows", setup)
    protocol.initiate = initiate  # type: ignore[method-assign]
    return True


def batch_h2_sends() -> bool:
    """Hypercorn's HTTP/2 writes each 16 KiB DATA frame to the socket on its own (one TLS record, one send,
    one await) and lets a response stream buffer only 32 KiB: a blob pull over h2 ran at ~0.75x of HTTP/1.1.
    Take up to `H2_WRITE_BYTES` (within the flow-control window) from the stream's buffer at once, frame it
    (`send_data_frames`) and write it in one go; buffer up to `H2_STREAM_BUFFER` per stream instead of 32 KiB."""
    from hypercorn.protocol import h2 as h2_protocol

    protocol = h2_protocol.H2Protocol
    if not hasattr(protocol, "_send_data") or not hasattr(h2_protocol, "BUFFER_HIGH_WATER"):
        return False
    if getattr(protocol._send_data, "_secreg_tuned", False):
        return True
    h2_protocol.BUFFER_HIGH_WATER = H2_STREAM_BUFFER
    h2_protocol.BUFFER_LOW_WATER = H2_STREAM_BUFFER / 2
    import h2.exceptions

    bulk = _bulk_data_framer()

    async def _send_data(self: Any, stream_id: int) -> None:
        buffer = self.stream_buffers.get(stream_id)
        if buffer is None:  # answered directly (`direct_small_h2_bodies`) while this waited
            _forget(self, stream_id)
            return
        try:
            window = min(self.connection.local_flow_control_window(stream_id), H2_WRITE_BYTES)
            data = await buffer.pop(window) if window > 0 else b""
            if data:
                if bulk is not None:
                    bulk(self.connection, stream_id, data)
                else:
                    frame = self.connection.max_outbound_frame_size
                    for offset in range(0, len(data), frame):
                        self.connection.send_data(stream_id, data[offset:offset + frame])
                await self._flush()
            else:
                self.priority.block(stream_id)
            if buffer.complete and self.stream_buffers.get(stream_id) is buffer:
                self.connection.end_stream(stream_id)
                await self._flush()
                self.stream_buffers.pop(stream_id, None)
                _forget(self, stream_id)
        except (h2.exceptions.StreamClosedError, KeyError, h2.exceptions.ProtocolError):
            # As Hypercorn does: the stream or connection closed while waiting to send.
            await buffer.close()
            self.stream_buffers.pop(stream_id, None)
            _forget(self, stream_id)

    _send_data._secreg_tuned = True  # type: ignore[attr-defined]
    protocol._send_data = _send_data  # type: ignore[method-assign]
    return True


def _forget(protocol: Any, stream_id: int) -> None:
    from priority.priority import MissingStreamError

    try:
        protocol.priority.remove_stream(stream_id)
    except MissingStreamError:
        pass


def _bulk_data_framer() -> Any:
    """`send(connection, stream_id, data)`: what h2's `send_data` does for each `max_outbound_frame_size` piece
    of `data` (state checks, both flow-control windows, DATA frames without flags or padding), done once per
    write instead of once per 16 KiB frame: h2 built a DataFrame object, a flag set and three copies per frame,
    a quarter of an h2 pull's CPU time under py-spy. None when h2's internals are not the ones this knows (then
    h2's own `send_data` runs per frame). `data` must fit the flow-control window (the caller asks h2)."""
    import struct

    import h2.config
    import h2.connection
    import h2.exceptions
    import h2.stream

    connection_class = h2.connection.H2Connection
    needed = ("_data_to_send", "_get_stream_by_id", "state_machine", "outbound_flow_control_window")
    probe = connection_class(h2.config.H2Configuration(client_side=False))
    if not all(hasattr(probe, name) for name in needed) or not isinstance(probe._data_to_send, bytearray):
        log.warning("h2 internals differ from the known ones: HTTP/2 DATA frames are built one by one")
        return None
    send_connection = h2.connection.ConnectionInputs.SEND_DATA
    send_stream = h2.stream.StreamInputs.SEND_DATA
    header = struct.Struct(">HBBBL")  # 24-bit length (16 + 8), type 0 (DATA), flags 0, stream id

    def send(connection: Any, stream_id: int, data: bytes, parts: list[Any] | None = None) -> None:
        """Into h2's outbound buffer, or (`parts`) appended to that list for the caller to join and write."""
        total = len(data)
        if total > connection.local_flow_control_window(stream_id):
            raise h2.exceptions.FlowControlError(f"cannot send {total} bytes: past the flow-control window")
        stream = connection._get_stream_by_id(stream_id)
        connection.state_machine.process_input(send_connection)
        stream.state_machine.process_input(send_stream)  # raises StreamClosedError as h2's send_data does
        frame = connection.max_outbound_frame_size
        view = memoryview(data)
        if parts is None:
            out = connection._data_to_send
            for offset in range(0, total, frame):
                piece = view[offset:offset + frame]
                size = len(piece)
                out += header.pack(size >> 8, size & 0xFF, 0, 0, stream_id & 0x7FFF_FFFF)
                out += piece
        else:
            for offset in range(0, total, frame):
                piece = view[offset:offset + frame]
                size = len(piece)
                parts.append(header.pack(size >> 8, size & 0xFF, 0, 0, stream_id & 0x7FFF_FFFF))
                parts.append(piece)
        stream.outbound_flow_control_window -= total
        connection.outbound_flow_control_window -= total

    return send


def merge_h2_data_events() -> bool:
    """h2 turns each 16 KiB DATA frame into its own event, and Hypercorn hands each to the application as its
    own body message: a 256 MiB push over h2 was ~16,000 trips through the ASGI queue and the upload loop
    against ~1,000 over HTTP/1.1. Consecutive DATA events of one stream from one socket read (at most
    `READ_BYTES`) are merged into one before Hypercorn sees them; flow control is acknowledged for the sum."""
    import h2.events
    from hypercorn.protocol import h2 as h2_protocol

    protocol = h2_protocol.H2Protocol
    original = getattr(protocol, "_handle_events", None)
    if original is None:
        return False
    if getattr(original, "_secreg_tuned", False):
        return True

    def merge(run: list[Any]) -> Any:
        if len(run) == 1:
            return run[0]
        return h2.events.DataReceived(  # one join, not a copy of the growing whole per frame
            stream_id=run[0].stream_id,
            data=b"".join(event.data for event in run),
            flow_controlled_length=sum(event.flow_controlled_length for event in run),
            stream_ended=run[-1].stream_ended,
        )

    async def _handle_events(self: Any, events: list[Any]) -> None:
        merged: list[Any] = []
        run: list[Any] = []
        for event in events:
            if (isinstance(event, h2.events.DataReceived) and run and run[-1].stream_id == event.stream_id
                    and run[-1].stream_ended is None):
                run.append(event)
                continue
            if run:
                merged.append(merge(run))
                run = []
            if isinstance(event, h2.events.DataReceived):
                run.append(event)
            else:
                merged.append(event)
        if run:
            merged.append(merge(run))
        await original(self, merged)

    _handle_events._secreg_tuned = True  # type: ignore[attr-defined]
    protocol._handle_events = _handle_events  # type: ignore[method-assign]
    return True


def cheap_h2_frame_repr() -> bool:
    """h2 builds `repr(frame)` of every frame it receives for a trace log line that is off (the argument is
    evaluated anyway), and hyperframe's repr hex-encodes the whole payload before keeping 20 characters: 13%
    of the server's CPU time in an h2 push under py-spy. Hex-encode only the bytes that are shown."""
    import binascii

    import hyperframe.frame as frame

    if not callable(getattr(frame, "_raw_data_repr", None)):
        return False

    def _raw_data_repr(data: bytes | None) -> str:
        if not data:
            return "None"
        shown = binascii.hexlify(data[:11]).decode("ascii")  # 11 bytes: 22 hex digits, more than are kept
        return "<hex:" + (shown[:20] + "..." if len(shown) > 20 else shown) + ">"

    def data_frame_repr(self: Any) -> str:  # DataFrame had none: the default serialized the whole body first
        return f"DataFrame(stream_id={self.stream_id}, flags={sorted(self.flags)}): <{len(self.data)} bytes>"

    frame._raw_data_repr = _raw_data_repr
    frame.DataFrame.__repr__ = data_frame_repr  # type: ignore[method-assign]
    return True


# --- HTTP/2: the frames of one loop iteration in one write --------------------------------------------------

H2_FLUSH_NOW = 64 * 1024  # pending frames past this are written (and drained) by the caller at once


def coalesce_h2_flushes() -> bool:
    """Hypercorn's HTTP/2 writes h2's output buffer to the socket (one TLS record, one send, one drain) after
    every step: a response's HEADERS, its DATA, its END_STREAM, each WINDOW_UPDATE. A small answer took three
    writes where HTTP/1.1 takes one. Small flushes are instead gathered: the first one schedules a task that
    writes what h2 holds on the next loop iteration, by which time the rest of the answer (and whatever other
    streams woken in this iteration added) is there. (Waiting one iteration more, for more streams, made 32
    streams on one connection slower: 0.54-0.6 of 8 HTTP/1.1 connections against 0.83 without.)
    Backpressure stays: once more than `H2_FLUSH_NOW` bytes are pending, the caller (a stream, or the reading
    side handing events over) writes them itself and waits for the socket to drain, behind any write in
    progress: frames leave in the order h2 built them. Before the connection is closed what is pending is
    written first."""
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol import h2 as h2_protocol

    protocol = h2_protocol.H2Protocol
    original_flush = getattr(protocol, "_flush", None)
    if original_flush is None:
        return False
    if getattr(original_flush, "_secreg_tuned", False):
        return True

    async def write(self: Any) -> None:
        data = self.connection.data_to_send()
        if data:
            await self._secreg_send(RawData(data=data))

    async def later(self: Any) -> None:
        try:
            while self.connection._data_to_send:  # what was added while this one waited for the socket
                await write(self)
        except OSError:
            pass  # the connection is gone: its reader sees it
        finally:
            self._secreg_flush_task = None

    async def _flush(self: Any) -> None:
        pending = self.connection._data_to_send
        if len(pending) >= H2_FLUSH_NOW or self.closed:
            await write(self)
        elif pending and self._secreg_flush_task is None:
            self._secreg_flush_task = asyncio.get_running_loop().create_task(later(self))

    async def send(self: Any, event: Any) -> None:
        if isinstance(event, Closed):
            await write(self)  # a GOAWAY (or anything) h2 still holds goes out before the close
        await self._secreg_send(event)

    def setup(self: Any) -> None:
        self._secreg_send = self.send
        self._secreg_flush_task = None
        self.send = send.__get__(self)

    _flush._secreg_tuned = True  # type: ignore[attr-defined]
    protocol._flush = _flush  # type: ignore[method-assign]
    on_new_connection("flushes", setup)
    return True


H2_DIRECT_BYTES = 16 * 1024  # a body piece up to this size skips the stream buffer and the send task


def direct_small_h2_bodies() -> bool:
    """In Hypercorn's HTTP/2 every body piece goes into the stream's buffer, the connection's send task is woken to
    frame it on a later loop iteration, and the end of the body waits until that task has taken it: a manifest
    answer was three trips through the event loop and three writes. A piece of at most `H2_DIRECT_BYTES` for a
    stream with nothing buffered, within the flow-control windows, is framed at once instead (nothing can be
    ahead of it on that stream, so the order holds), and so is the end of a stream with nothing buffered; the
    frames then leave with the connection's next gathered flush (`coalesce_h2_flushes`). Larger pieces, and a
    stream with data waiting for its window, keep Hypercorn's path (its buffer limit is the backpressure)."""
    import h2.exceptions
    from hypercorn.events import RawData
    from hypercorn.protocol import h2 as h2_protocol
    from hypercorn.protocol.events import Body, Data, EndBody

    protocol = h2_protocol.H2Protocol
    original = getattr(protocol, "stream_send", None)
    if original is None or not hasattr(h2_protocol, "StreamBuffer"):
        return False
    if getattr(original, "_secreg_tuned", False):
        return True
    bulk = _bulk_data_framer()

    async def stream_send(self: Any, event: Any) -> None:
        if isinstance(event, (Body, Data, EndBody)):
            stream_id = event.stream_id
            buffer = self.stream_buffers.get(stream_id)
            if buffer is not None and not buffer.buffer and not buffer._complete:
                try:
                    if isinstance(event, EndBody):
                        self.connection.end_stream(stream_id)
                        buffer.set_complete()
                        await buffer.close()  # wakes anything waiting on it
                        del self.stream_buffers[stream_id]
                        _forget(self, stream_id)
                        await self._flush()
                        return
                    data = event.data
                    window = self.connection.local_flow_control_window(stream_id)
                    if len(data) <= H2_DIRECT_BYTES and len(data) <= window:
                        if bulk is not None:
                            bulk(self.connection, stream_id, data)
                        else:
                            self.connection.send_data(stream_id, data)
                        await self._flush()
                        return
                    if bulk is not None and len(data) <= window and hasattr(self, "_secreg_send"):
                        # A large piece the windows allow (a blob pull): framed straight into one write
                        # after what h2 holds, and drained as HTTP/1.1 would, without the two copies through
                        # the stream buffer, the one through h2's buffer and the send task's trip.
                        parts: list[Any] = [self.connection.data_to_send()]
                        bulk(self.connection, stream_id, data, parts)
                        await self._secreg_send(RawData(data=b"".join(parts)))
                        return
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    return  # as Hypercorn: the connection or stream closed meanwhile
        await original(self, event)

    stream_send._secreg_tuned = True  # type: ignore[attr-defined]
    protocol.stream_send = stream_send  # type: ignore[method-assign]
    return True


def fast_h2_data_frames() -> bool:
    """h2 parses every 16 KiB DATA frame on its own (a frame object, two copies, the connection's and the
    stream's state machines and windows, an event; ~15 us each): 16,000 frames for a 256 MiB push, more CPU than
    its SHA-256 under py-spy. A run of complete DATA frames of one stream in a socket read (no padding, no flag
    but END_STREAM) is instead taken as one: the same checks done once for the sum (state of the connection and
    of the stream, both flow-control windows, the frame size limit, the declared content length) and one
    DataReceived event with the payloads joined (one copy). Anything else, or a run one of those checks would
    refuse, is left to h2 itself, so its errors and their GOAWAY/RST_STREAM stay h2's. None of h2's behaviour
    changes but the number of events (Hypercorn's merge did that already)."""
    import struct

    import h2.connection
    import h2.exceptions
    import h2.stream

    connection_class = h2.connection.H2Connection
    probe = connection_class(h2.config.H2Configuration(client_side=False))
    stream_probe = h2.stream.H2Stream(1, h2.config.H2Configuration(client_side=False), 65535, 65535)
    known = (hasattr(probe, "incoming_buffer")
             and all(hasattr(probe.incoming_buffer, name) for name in ("_data", "_preamble_len", "_headers_buffer"))
             and isinstance(probe.incoming_buffer._data, bytearray)
             and hasattr(probe, "_inbound_flow_control_window_manager") and hasattr(probe, "streams")
             and hasattr(stream_probe, "_inbound_window_manager") and hasattr(stream_probe, "state_machine"))
    if not known:
        log.warning("h2 internals differ from the known ones: HTTP/2 DATA frames are parsed one by one")
        return False
    open_connection = (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN)
    receiving = (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL)
    recv_data = h2.connection.ConnectionInputs.RECV_DATA
    header = struct.Struct(">BHBBL")  # length (8 + 16 bits), type, flags, reserved bit + stream id
    end_stream_flag, data_type = 0x1, 0x0

    def scan(connection: Any, source: Any, position: int, events: list[Any],
             carry: tuple[int, list[Any], int, bool] | None = None) -> int:
        """Take the runs of plain DATA frames in `source` from `position` on, each run as one event appended
        to `events`; returns where the first frame it leaves to h2 begins (or the end). `carry`: a run begun
        before `source` (stream id, payload pieces, their length, whether its last frame ended the stream),
        continued by `source`'s first frames unless ended: when that run fails a check, nothing is taken and -1
        returned (the caller hands everything to h2)."""
        size, limit = len(source), connection.max_inbound_frame_size
        window = connection._inbound_flow_control_window_manager
        with memoryview(source) as view:
            while True:
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
                    pieces.append(view[position + 9:position + 9 + length])
                    total += length
                    position += 9 + length
                    ended = bool(flags & end_stream_flag)
                stream = connection.streams.get(stream_id) if pieces else None
                if (stream is None or stream.state_machine.state not in receiving
                        or total > window.current_window_size
                        or total > stream._inbound_window_manager.current_window_size):
                    pieces.clear()
                    if carry is not None:
                        return -1
                    return start  # h2 takes it from here (and answers any error as it does)
                carry = None
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

    def receive(connection: Any, slow: Any, data: bytes) -> list[Any]:
        incoming = connection.incoming_buffer
        if (incoming._preamble_len or incoming._headers_buffer
                or connection.state_machine.state not in open_connection):
            return slow(data)  # type: ignore[no-any-return]
        buffer: bytearray = incoming._data
        events: list[Any] = []
        position, carry = 0, None
        try:
            if buffer:
                # A DATA frame the last read left incomplete, completed with this read's first bytes, starts the
                # run the scan of this read continues: the rest of the read is parsed where it lies instead of
                # being appended whole (a copy of each ~200 KiB read fewer). Anything else, and a run one of
                # scan's checks refuses, takes the buffer and h2 as before.
                position, carry = buffered_run(connection, buffer, data)
            done = scan(connection, data, position, events, carry) if carry is not None or not buffer else -1
            if carry is not None:
                carry[1].clear()  # the view of `buffer` goes before it changes
            if done >= 0:
                del buffer[:]
                position = done
        except h2.exceptions.ProtocolError as exc:  # a declared content length exceeded: as h2 does
            if carry is not None:
                carry[1].clear()
            del buffer[:]
            connection._terminate_connection(exc.error_code)
            raise
        buffer += data[position:]  # the incomplete frame at the end, or what h2 takes
        if len(buffer) >= 9:  # a complete frame of another kind may be next
            events.extend(slow(b""))
        return events

    def install(connection: Any) -> None:
        slow = connection.receive_data
        connection.receive_data = lambda data: receive(connection, slow, data)

    on_new_connection("data frames", lambda self: install(self.connection))
    return True
