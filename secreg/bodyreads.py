"""Request bodies from the socket to the application without copying them on the way.

A pushed byte used to be copied ten times on the event loop before the upload code saw it: into OpenSSL's
input, out of the TLS record, joined into one piece per socket read (asyncio's sslproto), then three times by
asyncio's `StreamReader` (appended to its bytearray, sliced out, turned into bytes), and four more times by h11
and Hypercorn (appended to h11's buffer, sliced twice, turned into bytes again). The first three are TLS's own;
this module removes the other seven:

- `PieceReader` is the connection's `StreamReader` keeping what the transport delivers as the bytes objects
  it came in; a read hands them on whole (joined only when several are waiting), never sliced out of a buffer.
  Its limits are the base class's: reading pauses past twice `limit` bytes waiting, as before.
- `pass_body_through` lets Hypercorn's HTTP/1.1 protocol hand a piece of a Content-Length body straight to the
  request's stream when h11 would only have copied it (h11's buffer is empty and it waits for body bytes):
  h11's count of what is left is kept exact, so it still finds the end of the body, refuses a short one and
  parses a pipelined request after it. The same for a piece inside the data of a chunk of a chunked body
  (what docker and other Go clients send for a layer PATCH): h11 still parses every chunk header, the CRLF
  after each chunk's data and the trailer; only the data bytes it would have copied out of its buffer are
  handed on, and its count of what is left in the chunk is kept exact. `Expect: 100-continue` before the
  first body byte and anything h11 has buffered go through h11 as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, SupportsIndex

log = logging.getLogger("secreg.serve")


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
        if transport is not None and not self._paused and self._size > 2 * self._limit:
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

    async def read(self, n: int = -1) -> bytes:
        if self._exception is not None:
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
    import h11
    from h11._readers import ChunkedReader, ContentLengthReader
    from hypercorn.events import RawData
    from hypercorn.protocol import h11 as h11_protocol
    from hypercorn.protocol.events import Body

    protocol = h11_protocol.H11Protocol
    original = protocol.handle
    if getattr(original, "_secreg_pass_through", False):
        return True
    probe = h11.Connection(h11.SERVER)
    chunked = ChunkedReader()
    if not all(hasattr(probe, name) for name in ("_reader", "_receive_buffer", "their_state")) or not hasattr(
            ContentLengthReader(1), "_remaining") or not all(
            hasattr(chunked, name) for name in ("_bytes_in_chunk", "_bytes_to_discard", "_reading_trailer")):
        log.warning("h11 internals not as expected: request bodies go through h11's buffer")
        return False
    stream_id = h11_protocol.STREAM_ID

    async def handle(self: Any, event: Any) -> None:
        connection = self.connection
        if (type(event) is RawData and event.data and self.stream is not None
                and type(connection) is h11.Connection and connection.their_state is h11.SEND_BODY
                and not connection._receive_buffer and not connection.they_are_waiting_for_100_continue):
            reader = connection._reader
            if type(reader) is ContentLengthReader and reader._remaining > 0:
                data = event.data
                count = min(len(data), reader._remaining)
                reader._remaining -= count
                await self.stream.handle(Body(stream_id=stream_id, data=data if count == len(data) else data[:count]))
                if count < len(data):
                    await original(self, RawData(data=data[count:]))  # the end of the body, then what follows
                elif reader._remaining == 0:
                    await self._handle_events()  # h11 ends the body (no new bytes: b"" would mean end of file)
                return
            if (type(reader) is ChunkedReader and reader._bytes_in_chunk > 0 and not reader._bytes_to_discard
                    and not reader._reading_trailer):
                data = event.data
                count = min(len(data), reader._bytes_in_chunk)
                reader._bytes_in_chunk -= count
                if reader._bytes_in_chunk == 0:
                    reader._bytes_to_discard = b"\r\n"  # as h11 does at a chunk's end: the CRLF comes next
                await self.stream.handle(Body(stream_id=stream_id, data=data if count == len(data) else data[:count]))
                if count < len(data):
                    await original(self, RawData(data=data[count:]))  # CRLF, the next chunk header, ...
                return
        await original(self, event)

    handle._secreg_pass_through = True  # type: ignore[attr-defined]
    protocol.handle = handle  # type: ignore[method-assign]
    return True
