"""Request bodies from the socket to the application without copying them on the way.

A pushed byte used to be copied ten times on the event loop before the upload code saw it: into OpenSSL's
input, out of the TLS record, joined into one piece per socket read (asyncio's sslproto), then three times by
asyncio's `StreamReader` (appended to its bytearray, sliced out, turned into bytes), and four more times by h11
and Hypercorn (appended to h11's buffer, sliced twice, turned into bytes again). The first three are TLS's own;
this module removes the other seven:

- `PieceReader` is the connection's `StreamReader` keeping what the transport delivers as the bytes objects
  it came in; a read hands them on whole (joined only when several are waiting), never sliced out of a buffer.
  Its limits are the base class's: reading pauses past twice `limit` bytes waiting, as before, but only once a
  second piece waits (one piece alone is one transport read, bounded by its read size).
- `pass_body_through` lets Hypercorn's HTTP/1.1 protocol hand a piece of a Content-Length body straight to the
  request's stream when h11 would only have copied it (h11's buffer is empty and it waits for body bytes):
  h11's count of what is left is kept exact, so it still finds the end of the body, refuses a short one and
  parses a pipelined request after it. The same for a piece inside the data of a chunk of a chunked body
  (what docker and other Go clients send for a layer PATCH): h11 still parses every chunk header, the CRLF
  after each chunk's data and the trailer; only the data bytes it would have copied out of its buffer are
  handed on, and its count of what is left in the chunk is kept exact. A read that holds several chunks goes
  on as one piece, not one per chunk: the CRLF after each chunk's data and each chunk header are checked here
  with h11's own pattern (`_chunk_data`), and whatever is cut off by the read or does not match (and the last
  chunk with its trailer) is left to h11. `Expect: 100-continue` before the first body byte and anything h11
  has buffered go through h11 as before.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex

import h11

if TYPE_CHECKING:
    from h11._readers import ChunkedReader, ContentLengthReader

log = logging.getLogger("secreg.serve")
# h11 refuses a chunk header past its buffer limit only; a longer one than this (extensions) is left to h11.
MAX_CHUNK_HEADER = 1024


class PieceReader(asyncio.StreamReader):
    """A `StreamReader` that keeps the bytes objects it is fed (see the module docstring). Only what Hypercorn
    uses is offered: `read` and `at_eof`; the line and exact-size reads of the base class are refused."""

    _pieces: deque[bytes]
    _size: int
    # The base class's state, used as it uses it (typeshed does not declare it).
    _buffer: bytearray
    _eof: bool
    _exception: BaseException | None
    _limit: int
    _paused: bool
    _transport: Any

    @classmethod
    def adopt(cls, reader: asyncio.StreamReader) -> None:
        """Turn a connection's reader into a PieceReader, keeping whatever it has buffered already."""
        if isinstance(reader, cls):
            return
        buffered = bytes(reader._buffer)  # type: ignore[attr-defined]
        reader._buffer.clear()  # type: ignore[attr-defined]
        reader.__class__ = cls
        assert isinstance(reader, cls)
        reader._pieces = deque([buffered] if buffered else [])
        reader._size = len(buffered)

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        piece = data if type(data) is bytes else bytes(data)  # a view of a buffer the transport reuses: copied
        self._pieces.append(piece)
        self._size += len(piece)
        self._wakeup_waiter()  # type: ignore[attr-defined]
        transport = self._transport
        # Past 2 x limit, as the base class, but not for one piece alone (one transport read, at most its read
        # size): a reader that keeps up takes each read before the next, and pausing for it only to resume at
        # once cost two epoll_ctl calls and the selector's bookkeeping per read (a 256 MiB push: ~540 of each).
        if (transport is not None and not self._paused and self._size > 2 * self._limit
                and len(self._pieces) > 1):
            try:
                transport.pause_reading()
            except NotImplementedError:
                self._transport = None
            else:
                self._paused = True

    def _maybe_resume_transport(self) -> None:
        if self._paused and self._size <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    def at_eof(self) -> bool:
        return self._eof and not self._pieces

    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._size

    async def read(self, n: int = -1) -> bytes:
        # What arrived before the connection broke is read first (the base class raises at once and drops it):
        # an upload stores whatever came (`secreg.registry.uploads`), and its offset says so.
        if self._exception is not None and not self._pieces:
            raise self._exception
        if n == 0:
            return b""
        if n < 0:
            blocks = []
            while block := await self.read(self._limit):
                blocks.append(block)
            return b"".join(blocks)
        if not self._pieces and not self._eof:
            await self._wait_for_data("read")  # type: ignore[attr-defined]
        if not self._pieces:
            return b""
        pieces = self._pieces
        first = pieces.popleft()
        if len(first) > n:
            pieces.appendleft(first[n:])
            data = first[:n]
        elif pieces and len(first) + len(pieces[0]) <= n:
            taken = [first]
            total = len(first)
            while pieces and total + len(pieces[0]) <= n:
                total += len(pieces[0])
                taken.append(pieces.popleft())
            data = b"".join(taken)
        else:
            data = first
        self._size -= len(data)
        self._maybe_resume_transport()
        return data

    async def readline(self) -> bytes:
        raise NotImplementedError("PieceReader offers read() only")

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        raise NotImplementedError("PieceReader offers read() only")

    async def readexactly(self, n: int) -> bytes:
        raise NotImplementedError("PieceReader offers read() only")


def pass_body_through() -> bool:
    """Wrap Hypercorn's `H11Protocol.handle` (see the module docstring). False when this h11 or Hypercorn lacks
    what the shortcut relies on (the test suite checks ours has it); bodies then go through h11 as before."""
    from hypercorn.events import RawData
    from hypercorn.protocol import h11 as h11_protocol
    from hypercorn.protocol.events import Body

    protocol = h11_protocol.H11Protocol
    original = protocol.handle
    if getattr(original, "_secreg_pass_through", False):
        return True
    if H11_READERS is None:
        log.warning("h11 internals not as expected: request bodies go through h11's buffer")
        return False
    chunked_reader, content_length_reader, chunk_header_re = H11_READERS
    stream_id = h11_protocol.STREAM_ID

    async def handle(self: Any, event: Any) -> None:
        connection = self.connection
        if (type(event) is RawData and event.data and self.stream is not None
                and type(connection) is h11.Connection and connection.their_state is h11.SEND_BODY
                and not connection._receive_buffer and not connection.they_are_waiting_for_100_continue):
            reader = connection._reader
            if type(reader) is content_length_reader and reader._remaining > 0:
                data = event.data
                count = min(len(data), reader._remaining)
                reader._remaining -= count
                await self.stream.handle(Body(stream_id=stream_id, data=data if count == len(data) else data[:count]))
                if count < len(data):
                    await original(self, RawData(data=data[count:]))  # the end of the body, then what follows
                elif reader._remaining == 0:
                    await self._handle_events()  # h11 ends the body (no new bytes: b"" would mean end of file)
                return
            if type(reader) is chunked_reader and not reader._reading_trailer:
                data = event.data
                pieces, position = _chunk_data(reader, data, chunk_header_re)
                if pieces:  # one Body for the read, not one per chunk (Go clients send chunks of 32 KiB)
                    body = data if pieces[0].nbytes == len(data) else b"".join(pieces)
                    await self.stream.handle(Body(stream_id=stream_id, data=body))
                if position < len(data):
                    await original(self, RawData(data=data[position:]))  # a chunk header cut off, the last chunk, ...
                return
        await original(self, event)

    handle._secreg_pass_through = True  # type: ignore[attr-defined]
    protocol.handle = handle  # type: ignore[method-assign]
    return True


def _chunk_data(reader: Any, data: bytes, header: re.Pattern[bytes]) -> tuple[list[memoryview], int]:
    """The data bytes of every chunk `data` holds (whole or in part), walked as h11's `ChunkedReader` would with
    `reader`'s state kept exact: the CRLF after each chunk's data and each chunk header checked with h11's own
    pattern. Returns the pieces and the position of the first byte left to h11: a CRLF or chunk header that this
    read cuts off or that does not match, or the last chunk (size 0, then the trailer)."""
    view = memoryview(data)
    pieces: list[memoryview] = []
    position, end = 0, len(data)
    while position < end:
        if reader._bytes_to_discard:
            discard = reader._bytes_to_discard
            if data[position:position + len(discard)] != discard:
                break  # cut off by this read, or malformed: h11 buffers or refuses it
            position += len(discard)
            reader._bytes_to_discard = b""
            continue
        if reader._bytes_in_chunk == 0:
            line_end = data.find(b"\r\n", position, position + MAX_CHUNK_HEADER)
            match = header.fullmatch(data, position, line_end + 2) if line_end >= 0 else None
            if match is None:
                break
            size = int(match["chunk_size"], 16)
            if size == 0:
                break  # the last chunk: h11 reads the trailer and ends the message
            reader._bytes_in_chunk = size
            position = line_end + 2
        count = min(end - position, reader._bytes_in_chunk)
        if count:
            pieces.append(view[position:position + count])
        position += count
        reader._bytes_in_chunk -= count
        if reader._bytes_in_chunk == 0:
            reader._bytes_to_discard = b"\r\n"  # as h11 does at a chunk's end
    return pieces, position



def expects_more_body(protocol: Any, data: bytes, at_least: int) -> bool:
    """Whether the HTTP/1.1 request on `protocol` (Hypercorn's protocol wrapper) is inside a request body that
    `data`, just read, does not end: a chunked body whose last chunk is not in `data`, or a Content-Length body
    with at least `at_least` bytes still to come after it (a small body that was cut is not waited for).
    Always False when this h11 lacks what `H11_READERS` checks (reads are then not gathered)."""
    if H11_READERS is None:
        return False
    connection = getattr(getattr(protocol, "protocol", None), "connection", None)
    if type(connection) is not h11.Connection or connection.their_state is not h11.SEND_BODY:
        return False
    reader = connection._reader
    if type(reader) is H11_READERS.chunked:
        return not data.endswith(b"0\r\n\r\n")  # the last chunk (without a trailer) ends the read
    if type(reader) is H11_READERS.content_length:
        return reader._remaining - len(data) >= at_least
    return False


class _H11Readers(NamedTuple):
    chunked: type[ChunkedReader]
    content_length: type[ContentLengthReader]
    chunk_header: re.Pattern[bytes]


def _h11_readers() -> _H11Readers | None:
    """h11's private body readers and the state of theirs (and of its connection) that `pass_body_through` and
    `expects_more_body` read and keep, or None when this h11 lacks any of it."""
    try:
        from h11._readers import ChunkedReader, ContentLengthReader, chunk_header_re
    except ImportError:
        return None
    probe, chunked = h11.Connection(h11.SERVER), ChunkedReader()
    if not all(hasattr(probe, name) for name in ("_reader", "_receive_buffer", "their_state")) or not hasattr(
            ContentLengthReader(1), "_remaining") or not all(
            hasattr(chunked, name) for name in ("_bytes_in_chunk", "_bytes_to_discard", "_reading_trailer")):
        return None
    return _H11Readers(ChunkedReader, ContentLengthReader, chunk_header_re)


H11_READERS = _h11_readers()  # checked once, at import
