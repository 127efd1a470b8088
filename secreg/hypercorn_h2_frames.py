"""Hypercorn's HTTP/2 transport: wider flow-control windows, DATA frames built in bulk, several frames per write,
the flushes of one loop iteration gathered into one and a stream's end flagged on its last frame (what is received
is parsed in bulk by `secreg.hypercorn_h2_receive`, the per-request costs are in `secreg.hypercorn_h2`). Applied by
`secreg.hypercorn_tuning.apply`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from h2.connection import ConnectionInputs
from h2.stream import StreamInputs
from priority.priority import MissingStreamError

log = logging.getLogger("secreg.serve")
_SEND_DATA, _SEND_END_STREAM = ConnectionInputs.SEND_DATA, StreamInputs.SEND_END_STREAM

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
                end_stream(self.connection, stream_id)
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

    def send(connection: Any, stream_id: int, data: bytes, before: bytes | None = None) -> bytes | None:
        """Into h2's outbound buffer; or, given `before` (what h2 holds to send, taken out), returned as `before`
        and the frames in one bytes object, for the caller to write."""
        total = len(data)
        if total > connection.local_flow_control_window(stream_id):
            raise h2.exceptions.FlowControlError(f"cannot send {total} bytes: past the flow-control window")
        stream = connection._get_stream_by_id(stream_id)
        connection.state_machine.process_input(send_connection)
        stream.state_machine.process_input(send_stream)  # raises StreamClosedError as h2's send_data does
        frame = connection.max_outbound_frame_size
        view = memoryview(data)
        joined = None
        if before is None:
            out = connection._data_to_send
            for offset in range(0, total, frame):
                piece = view[offset:offset + frame]
                size = len(piece)
                flags_at = len(out) + 4
                out += header.pack(size >> 8, size & 0xFF, 0, 0, stream_id & 0x7FFF_FFFF)
                out += piece
            if total:
                mark_tail(connection, out, flags_at, stream_id)
        else:
            # Every full frame of the stream has the same header: it is the separator of one join over the
            # payloads, so the frames cost a slice each, not a header built and two appends (a 256 MiB pull:
            # 16,384 frames, ~20 -> ~11 ms in isolation, most of what is left the copy itself).
            sid = stream_id & 0x7FFF_FFFF
            full, rest = divmod(total, frame)
            pieces: list[Any] = [before]
            pieces += [view[offset:offset + frame] for offset in range(0, full * frame, frame)]
            if rest:
                pieces[-1] = b"".join((pieces[-1], header.pack(rest >> 8, rest & 0xFF, 0, 0, sid), view[full * frame:]))
            joined = header.pack(frame >> 8, frame & 0xFF, 0, 0, sid).join(pieces) if full else bytes(pieces[0])
        stream.outbound_flow_control_window -= total
        connection.outbound_flow_control_window -= total
        return joined

    return send


# --- the end of a stream ---------------------------------------------------------------------------------

_END_STREAM = 0x1
_EMPTY_DATA = struct.Struct(">HBBBL")  # 24-bit length (16 + 8), type 0 (DATA), flags, stream id


def mark_tail(connection: Any, out: bytearray, flags_at: int, stream_id: int) -> None:
    """Remember that the last frame in h2's outbound buffer `out` is a HEADERS or DATA frame of `stream_id` whose
    flags byte is at `flags_at`, so that ending the stream right after can set END_STREAM on it (`end_stream`)."""
    connection._secreg_tail = (out, len(out), flags_at, stream_id)


def end_stream(connection: Any, stream_id: int) -> None:
    """h2's `end_stream` (the same state machines, the same errors, in the same order), without its frame object,
    flag set and serialization: when the last frame h2 holds to send is this stream's DATA or HEADERS frame
    (`mark_tail`; nothing was added or taken since), END_STREAM is set on it, as h2's own `send_data(...,
    end_stream=True)` and `send_headers(..., end_stream=True)` would have sent it; else an empty DATA frame
    with END_STREAM follows, as h2's `end_stream` sends."""
    connection.state_machine.process_input(_SEND_DATA)
    stream = connection._get_stream_by_id(stream_id)
    stream.state_machine.process_input(_SEND_END_STREAM)
    out = connection._data_to_send
    tail = getattr(connection, "_secreg_tail", None)
    connection._secreg_tail = None
    if tail is not None and tail[0] is out and tail[1] == len(out) and tail[3] == stream_id:
        out[tail[2]] |= _END_STREAM
    else:
        out += _EMPTY_DATA.pack(0, 0, 0, _END_STREAM, stream_id & 0x7FFF_FFFF)


def merge_h2_data_events() -> bool:
    """h2 turns each 16 KiB DATA frame into its own event, and Hypercorn hands each to the application as its
    own body message: a 256 MiB push over h2 was ~16,000 trips through the ASGI queue and the upload loop
    against ~1,000 over HTTP/1.1. Consecutive DATA events of one stream from one socket read (at most
    `READ_BYTES`) are merged into one before Hypercorn sees them; flow control is acknowledged for the sum."""
    import h2.events
    from hypercorn.protocol import h2 as h2_protocol
    from hypercorn.protocol.events import Body as body

    protocol = h2_protocol.H2Protocol
    data_received, stream_reset = h2.events.DataReceived, h2.events.StreamReset
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
        # Hypercorn indexes `self.streams` for every DATA event: a stream answered and closed before its request
        # body was all received (an early 400, 401 or 416) raised KeyError there, which killed the connection and
        # every other request on it. The body is dropped and its flow control acknowledged (as for any DATA).
        pending: list[Any] = []
        reset: list[int] = []
        for event in merged:
            if not isinstance(event, data_received):
                pending.append(event)
                if type(event) is stream_reset:
                    reset.append(event.stream_id)
                continue
            if pending:
                await original(self, pending)
                pending = []
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                await stream.handle(body(stream_id=event.stream_id, data=event.data))
            self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        await original(self, pending)  # also with none left: it sends what the events produced
        if reset:
            await _drop_reset_streams(self, reset)

    _handle_events._secreg_tuned = True  # type: ignore[attr-defined]
    protocol._handle_events = _handle_events  # type: ignore[method-assign]
    return True


# A client may reset this many streams more than it let run to their end (answered, or still running) before
# the connection is closed with GOAWAY(ENHANCE_YOUR_CALM): each reset stream still cost a request's work (its head
# parsed, the application started), so "rapid reset" (CVE-2023-44487: open and reset streams in a loop, never
# hitting SETTINGS_MAX_CONCURRENT_STREAMS) would be unbounded work per connection. A client reset for every
# stream it completes pays a request for each one it resets, no worse than sending two requests.
H2_RESETS_AHEAD = 200


async def _drop_reset_streams(protocol: Any, stream_ids: list[int]) -> None:
    """After Hypercorn handled the client's RST_STREAM of `stream_ids`: their response buffers and scheduler
    entries go too (Hypercorn keeps both until the send task finishes a stream, which a reset stream never
    does: each one leaked a buffer and, at the scheduler's 1,000th, killed the connection with
    TooManyStreamsError), and past `H2_RESETS_AHEAD` the connection is closed."""
    for stream_id in stream_ids:
        buffer = protocol.stream_buffers.pop(stream_id, None)
        if buffer is not None:
            await buffer.close()  # wakes an application waiting to push more
        _forget(protocol, stream_id)
    resets = getattr(protocol, "_secreg_resets", 0) + len(stream_ids)
    protocol._secreg_resets = resets
    if resets - (protocol.keep_alive_requests - resets) > H2_RESETS_AHEAD and not protocol.closed:
        import h2.errors
        from hypercorn.events import Closed

        log.info("h2: client reset %d of %d streams, closing the connection", resets, protocol.keep_alive_requests)
        protocol.connection.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        await protocol.send(Closed())  # what h2 holds (the GOAWAY) is written first (`coalesce_h2_flushes`)


# A connection may send this many frames that carry no request (PING, SETTINGS, PRIORITY, WINDOW_UPDATE,
# RST_STREAM, GOAWAY, ALTSVC, unknown types, DATA without payload or END_STREAM), plus `H2_CONTROL_PER_REQUEST` per
# request it opened and one WINDOW_UPDATE per `H2_WINDOW_UPDATE_BYTES` of DATA it was sent, before it is closed with
# GOAWAY(ENHANCE_YOUR_CALM). Each costs 1-30 us of h2's frame-by-frame path and PING and SETTINGS queue an answer
# each (CVE-2019-9512 ping flood, -9515 settings flood, -9518 empty frames): unbounded, a flood kept a core busy
# answering. Go's client sends a WINDOW_UPDATE pair per read of at least 4 KiB, curl and h2load one per 16 MiB or
# fewer; PING and SETTINGS a few per connection.
H2_CONTROL_AHEAD = 1000
H2_CONTROL_PER_REQUEST = 10
H2_WINDOW_UPDATE_BYTES = 2048


class ControlBudget:
    """The frames of one connection that carry no request, counted against what the client did (`H2_CONTROL_AHEAD`);
    `charge` raises h2's DenialOfServiceError (GOAWAY ENHANCE_YOUR_CALM, the connection closed) past it. Clock-free,
    as the rapid-reset rule: a client doing requests or reading answers keeps earning, a flood of frames does not."""

    __slots__ = ("protocol", "spent", "window_updates", "granted")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.spent = 0  # every charged frame but WINDOW_UPDATEs
        self.window_updates = 0
        self.granted = 0  # the connection-level WINDOW_UPDATE increments: what was sent follows from the window

    def charge(self, frames: int = 1) -> None:
        self.spent += frames
        self.check()

    def check(self) -> None:
        protocol = self.protocol
        allowed = H2_CONTROL_AHEAD + H2_CONTROL_PER_REQUEST * protocol.keep_alive_requests
        updates = self.window_updates
        if self.spent + updates <= allowed:
            return
        sent = 65535 + self.granted - protocol.connection.outbound_flow_control_window
        if self.spent + max(0, updates - sent // H2_WINDOW_UPDATE_BYTES) <= allowed:
            return
        import h2.exceptions

        log.info("h2: client sent %d control frames and %d WINDOW_UPDATEs for %d requests and %d bytes, closing "
                 "the connection", self.spent, updates, protocol.keep_alive_requests, sent)
        raise h2.exceptions.DenialOfServiceError("too many control frames")


def limit_h2_control_frames() -> bool:
    """Every frame h2 dispatches that carries no request is charged to the connection's `ControlBudget` before h2
    handles it (runs of DATA frames parsed in bulk charge their empty frames in `secreg.hypercorn_h2_receive`)."""
    import hyperframe.frame as frame

    charged = (frame.PingFrame, frame.SettingsFrame, frame.PriorityFrame, frame.RstStreamFrame, frame.GoAwayFrame,
               frame.AltSvcFrame, frame.ExtensionFrame)
    import h2.config
    import h2.connection

    probe = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    table = getattr(probe, "_frame_dispatch_table", None)
    if not isinstance(table, dict) or not all(kind in table for kind in (*charged, frame.WindowUpdateFrame,
                                                                          frame.DataFrame)):
        log.warning("h2 internals differ from the known ones: HTTP/2 control frames are not counted")
        return False

    def setup(protocol: Any) -> None:
        budget = ControlBudget(protocol)
        connection = protocol.connection
        connection._secreg_control = budget
        table = connection._frame_dispatch_table
        for kind in charged:
            table[kind] = _charging(budget, table[kind])
        receive_window_update, receive_data = table[frame.WindowUpdateFrame], table[frame.DataFrame]

        def window_update(received: Any) -> Any:
            budget.window_updates += 1
            budget.check()
            handled = receive_window_update(received)
            if not received.stream_id:
                budget.granted += received.window_increment
            return handled

        def data(received: Any) -> Any:
            if not received.data and "END_STREAM" not in received.flags:
                budget.charge()
            return receive_data(received)

        table[frame.WindowUpdateFrame], table[frame.DataFrame] = window_update, data

    on_new_connection("control frames", setup)
    return True


def _charging(budget: ControlBudget, handler: Any) -> Any:
    def charged(received: Any) -> Any:
        budget.charge()
        return handler(received)

    return charged


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
    from hypercorn.events import Closed, RawData, Updated
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
        if isinstance(event, Updated):
            # Hypercorn says "busy" for every stream opened and closed while others are open; the connection's
            # idle bookkeeping needs only the changes.
            if not event.idle and self._secreg_busy:
                return
            self._secreg_busy = not event.idle
        elif isinstance(event, Closed):
            await write(self)  # a GOAWAY (or anything) h2 still holds goes out before the close
        await self._secreg_send(event)

    def setup(self: Any) -> None:
        self._secreg_send = self.send
        self._secreg_flush_task = None
        self._secreg_busy = False
        self.send = send.__get__(self)

    _flush._secreg_tuned = True  # type: ignore[attr-defined]
    protocol._flush = _flush  # type: ignore[method-assign]
    on_new_connection("flushes", setup)
    return True


H2_DIRECT_BYTES = 16 * 1024  # a body piece up to this size skips the stream buffer and the send task
H2_PUSH_SLICE = H2_STREAM_BUFFER  # a larger piece the windows do not allow enters the stream buffer this much at a time


H2_ANSWER_BUFFER = 2 * 1024 * 1024  # what the stream buffers of one connection hold past the client's windows


async def _buffered(protocol: Any, push: Any, event: Any, buffer: Any) -> None:
    """A body piece past the client's window into the stream's buffer (Hypercorn's `stream_send`, `push`): in
    `H2_PUSH_SLICE` slices, and while the connection's buffers hold `H2_ANSWER_BUFFER` or more, only as much as the
    stream's window lets out at once, after waiting for the client to open it (`watch_h2_windows`). Hypercorn's
    buffer copies a whole piece before it waits at its high-water mark (1 MiB per blob pull stream); sliced, each
    stream still held ~256 KiB, 28 MiB for a connection of 100 streams whose client never opens its windows."""
    import h2.exceptions

    stream_id, size = event.stream_id, len(event.data)
    if size <= H2_PUSH_SLICE and _buffered_bytes(protocol) < H2_ANSWER_BUFFER:
        await push(protocol, event)
        return
    whole, kind = memoryview(event.data), type(event)
    offset = 0
    while offset < size:
        step = H2_PUSH_SLICE
        while _buffered_bytes(protocol) >= H2_ANSWER_BUFFER:
            try:
                room = protocol.connection.local_flow_control_window(stream_id) - len(buffer.buffer)
            except h2.exceptions.ProtocolError:
                return  # as Hypercorn: the stream or connection closed meanwhile
            if room > 0:
                step = min(step, room)
                break
            await _window_change(protocol)
            if (protocol.closed or protocol.stream_buffers.get(stream_id) is not buffer
                    or stream_id not in protocol.streams):
                return  # reset or closed meanwhile: the rest is not wanted
        await push(protocol, kind(stream_id=stream_id, data=whole[offset:offset + step]))
        if protocol.stream_buffers.get(stream_id) is not buffer:
            return
        offset += step


def _buffered_bytes(protocol: Any) -> int:
    return sum(len(each.buffer) for each in protocol.stream_buffers.values())


async def _window_change(protocol: Any) -> None:
    """Until the client changes a flow-control window (WINDOW_UPDATE, SETTINGS), resets a stream or the connection
    closes (`watch_h2_windows`)."""
    waiting = protocol._secreg_windows
    if waiting is None:
        waiting = protocol._secreg_windows = asyncio.Event()
    await waiting.wait()


def _windows_changed(protocol: Any) -> None:
    waiting = protocol._secreg_windows
    if waiting is not None:
        protocol._secreg_windows = None
        waiting.set()


def watch_h2_windows() -> bool:
    """Wake the streams waiting in `_buffered` when Hypercorn hears of a window change (its `_window_updated`, also
    called for a reset stream), and when the connection has closed (its send task ends then); then also close every
    stream buffer: Hypercorn closed none, so an answer waiting at a buffer's high-water mark when its client went
    away waited forever, its connection's task group with it (100 zero-window pulls on a connection, closed:
    +27 MiB and 200 file descriptors kept, for every such connection)."""
    from hypercorn.protocol import h2 as h2_protocol

    protocol = h2_protocol.H2Protocol
    original_updated = getattr(protocol, "_window_updated", None)
    original_send_task = getattr(protocol, "send_task", None)
    if original_updated is None or original_send_task is None:
        return False
    if getattr(original_send_task, "_secreg_tuned", False):
        return True

    async def _window_updated(self: Any, stream_id: int | None) -> None:
        _windows_changed(self)
        await original_updated(self, stream_id)

    async def send_task(self: Any) -> None:
        try:
            await original_send_task(self)  # until the connection is closed
        finally:
            buffers = list(self.stream_buffers.values())
            self.stream_buffers.clear()
            for buffer in buffers:
                await buffer.close()  # wakes an application waiting to push more
            _windows_changed(self)

    send_task._secreg_tuned = True  # type: ignore[attr-defined]
    protocol._secreg_windows = None  # type: ignore[attr-defined]  # each connection's own once one waits
    protocol._window_updated = _window_updated  # type: ignore[method-assign]
    protocol.send_task = send_task  # type: ignore[method-assign]
    return True


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
                        end_stream(self.connection, stream_id)
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
                        framed = bulk(self.connection, stream_id, data, self.connection.data_to_send())
                        await self._secreg_send(RawData(data=framed))
                        return
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    return  # as Hypercorn: the connection or stream closed meanwhile
            if buffer is not None and not isinstance(event, EndBody):
                await _buffered(self, original, event, buffer)
                return
        await original(self, event)

    stream_send._secreg_tuned = True  # type: ignore[attr-defined]
    protocol.stream_send = stream_send  # type: ignore[method-assign]
    return True
