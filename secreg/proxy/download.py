"""Blob bodies from an upstream, handed piece by piece to a sink (the fetch hashes and writes them).

A blob GET gets a connection of its own driven by the event loop (`get`): a BufferedProtocol into whose
one receive buffer asyncio decrypts the TLS records, handed to the sink whenever SINK_BYTES are in. No thread,
no queue, no copy of the body on the way to the sink.

Why on the loop (256 MiB cold pulls through the cache from the Go registry, same machine, 2 cores): a
blocking `http.client` connection in a thread whose 1 MiB reads were queued to the loop and on to a writer
thread cost 1.2-1.5 s of server CPU per pull; the thread hashing and writing itself about 1.0 s; this about
0.8 s, mostly decryption, SHA-256, the page-cache write and the TLS of the response (threads that pass the GIL
back and forth 16,000 times per 256 MiB pay for every hand-off on a busy machine).

A 404 or 5xx is final (`Answered`). Any other response that is not a 200 with a Content-Length (the 401 of an
upstream whose challenge is not known yet, or changed; a chunked body) is not read here: `get` returns None and
the caller asks through httpx (`HttpxBody`), which learns the challenge and knows every other case.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

RECEIVE_BYTES = 1024 * 1024  # the receive buffer of one download
SINK_BYTES = 512 * 1024  # the sink gets the body in pieces of about this size (hash + write calls per MiB: 2)
PROGRESS_BYTES = 2 * 1024 * 1024  # the fetch hears of progress at most this often (its readers wake as often)
IDLE_TIMEOUT = 60.0  # seconds without a byte of the body: the download is broken
CONNECT_TIMEOUT = 10.0
_MAX_HEADER = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

Sink = Callable[[memoryview], None]
Progress = Callable[[int], None]


class Answered(Exception):
    """The upstream's final answer to the GET was `status` (404, or 5xx): asking again through httpx would
    only ask twice."""

    def __init__(self, status: int) -> None:
        super().__init__(f"answered {status}")
        self.status = status


class DownloadBroken(Exception):
    """The connection failed, timed out or ended early while the body was being received (not the sink)."""


class BlobBody:
    """A blob download whose response headers are in: `size` is what the upstream announced (None: unknown)."""

    size: int | None = None

    async def copy(self, sink: Sink, progress: Progress) -> int:
        """Hands every piece of the body to `sink`, in order, and returns the number of bytes.

        The view `sink` gets is valid only during the call; an exception from `sink` ends the download and is
        raised as it is. `progress(total)` is called at least every PROGRESS_BYTES and once at the end.
        A broken download raises DownloadBroken."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class HttpxBody(BlobBody):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        value = response.headers.get("content-length", "")
        self.size = int(value) if value.isdigit() else None

    async def copy(self, sink: Sink, progress: Progress) -> int:
        total = reported = 0
        try:
            async for chunk in self.response.aiter_raw():
                sink(memoryview(chunk))
                total += len(chunk)
                if total - reported >= PROGRESS_BYTES:  # not per 16-64 KiB piece: each wakes every reader
                    reported = total
                    progress(total)
        except httpx.HTTPError as exc:
            raise DownloadBroken(type(exc).__name__) from None
        progress(total)
        return total

    async def aclose(self) -> None:
        await self.response.aclose()


async def get(url: str, headers_for: Callable[[str], dict[str, str]], context: ssl.SSLContext,
              max_redirects: int) -> LoopBody | None:
    """GET `url` on a connection of its own, following up to `max_redirects` redirects, each to HTTPS only;
    `headers_for(netloc)` gives the request headers for a host (credentials only for the upstream's own).
    The body of a 200 with a Content-Length; Answered for a 404 or 5xx; None for any other answer or a failure
    to connect (httpx asks again and deals with it)."""
    loop = asyncio.get_running_loop()
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return None
        headers = {"Host": parts.netloc, "Accept-Encoding": "identity", **headers_for(parts.netloc.lower())}
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        try:
            transport, protocol = await asyncio.wait_for(loop.create_connection(
                _Receiver, parts.hostname, parts.port or 443, ssl=context, server_hostname=parts.hostname,
            ), CONNECT_TIMEOUT)
        except (TimeoutError, OSError, ssl.SSLError):
            return None
        transport.write(request.encode("latin-1"))
        try:
            status, message = await asyncio.wait_for(asyncio.shield(protocol.head), IDLE_TIMEOUT)
        except (TimeoutError, Exception):  # noqa: BLE001 - any failure: httpx asks again and reports it
            transport.abort()
            _settle(protocol.head)
            return None
        length = message.get("content-length", "")
        if status == 200 and length.isdigit() and not message.get("transfer-encoding"):
            return LoopBody(transport, protocol, int(length))
        transport.abort()
        if status == 404 or status >= 500:
            raise Answered(status)
        location = message.get("location")
        if status not in _REDIRECTS or not location:
            return None
        url = urljoin(url, location)
    return None


class _Receiver(asyncio.BufferedProtocol):
    """An HTTP/1.1 response: the head parsed into `head`, then the body handed to `sink` (see `start`)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[tuple[int, http.client.HTTPMessage]] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self._buffer = memoryview(bytearray(RECEIVE_BYTES))
        self._filled = 0
        self._header = bytearray()
        self._sink: Sink | None = None
        self._progress: Progress | None = None
        self.remaining = 0
        self.total = 0
        self.received = 0  # body bytes in, handed on or not
        self._reported = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer[self._filled:]

    def buffer_updated(self, nbytes: int) -> None:
        if not self.head.done():
            self._header += self._buffer[:nbytes]
            self._parse_head()
            return
        self._filled += nbytes
        self.received += nbytes
        if self._sink is not None and (self._filled >= SINK_BYTES or self._filled >= self.remaining):
            self._deliver()

    def _parse_head(self) -> None:
        end = self._header.find(b"\r\n\r\n")
        if end < 0:
            if len(self._header) > _MAX_HEADER:
                self.head.set_exception(DownloadBroken("response head too long"))
                self._abort()
            return
        status_line, _, fields = bytes(self._header[: end + 2]).partition(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
            message = http.client.parse_headers(io.BytesIO(fields))
        except (ValueError, IndexError, http.client.HTTPException):
            self.head.set_exception(DownloadBroken("unreadable response head"))
            self._abort()
            return
        rest = self._header[end + 4:]
        self._buffer[: len(rest)] = rest
        self._filled = len(rest)
        self._header = bytearray()
        assert self.transport is not None
        self.transport.pause_reading()  # until `start`: nobody takes the body yet
        self.head.set_result((status, message))

    def start(self, sink: Sink, progress: Progress, length: int) -> None:
        self._sink, self._progress, self.remaining = sink, progress, length
        if self._filled or not length:
            self._deliver()
        if self.transport is not None and not self.ended.done():
            self.transport.resume_reading()

    def _deliver(self) -> None:
        if self.ended.done() or self._sink is None or self._progress is None:
            return
        count = min(self._filled, self.remaining)
        try:
            self._sink(self._buffer[:count])
        except BaseException as exc:  # noqa: BLE001 - the sink's error ends the download, raised by `copy`
            self.ended.set_exception(exc)
            self._abort()
            return
        self._filled = 0
        self.remaining -= count
        self.total += count
        if not self.remaining or self.total - self._reported >= PROGRESS_BYTES:
            self._reported = self.total
            self._progress(self.total)
        if not self.remaining:
            self.ended.set_result(None)
            self._abort()  # one response per connection: the upstream may keep the rest

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # close: a body that is not complete yet is broken (connection_lost says so)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = type(exc).__name__ if exc else "connection closed early"
        if not self.head.done():
            self.head.set_exception(DownloadBroken(reason))
        if self._sink is None:
            self.ended.cancel()  # nobody took the body: nobody waits for its end
        elif not self.ended.done():
            self.ended.set_exception(DownloadBroken(reason))


class LoopBody(BlobBody):
    def __init__(self, transport: asyncio.Transport, protocol: _Receiver, size: int) -> None:
        self.transport = transport
        self.protocol = protocol
        self.size = size

    async def copy(self, sink: Sink, progress: Progress) -> int:
        protocol = self.protocol
        protocol.start(sink, progress, self.size or 0)
        seen = -1
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(protocol.ended), IDLE_TIMEOUT)
                break
            except TimeoutError:
                if protocol.received == seen:  # not one byte for IDLE_TIMEOUT
                    self.transport.abort()
                    raise DownloadBroken(f"no data for {IDLE_TIMEOUT:.0f} s") from None
                seen = protocol.received
        return protocol.total

    async def aclose(self) -> None:
        self.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.shield(self.protocol.ended)


def _settle(future: asyncio.Future[Any]) -> None:
    """Nobody will await `future`: its exception, if any, counts as seen (no "never retrieved" in the log)."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()
