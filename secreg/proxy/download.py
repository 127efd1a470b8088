"""Blob bodies from an upstream, handed piece by piece to a sink (the fetch hashes and writes them).

A blob GET gets a connection of its own driven by the event loop (`get`): a non-blocking `ssl.SSLSocket`
(`_Connection`), OpenSSL reading the socket itself, read when the loop says it is readable, each record
decrypted straight into the sink's buffer (the fetch's ring: `Sink.buffer`), up to READ_STEP per callback. No
thread, no queue, no copy of the body on the way to the sink. While the sink has no room (a reader of this
process would lose bytes it has not sent yet) the socket is left unread for PACE_POLL: the upstream waits.

Why on the loop (256 MiB cold pulls through the cache from the Go registry, same machine, 2 cores): a
blocking `http.client` connection in a thread whose 1 MiB reads were queued to the loop and on to a writer
thread cost 1.2-1.5 s of server CPU per pull; the thread hashing and writing itself about 1.0 s; asyncio's
TLS (two memory BIOs: the socket read into bytes, copied into the BIO, into OpenSSL's record buffer, and
the plaintext into a receive buffer, then into the ring) 0.78-0.89 s; this 0.68-0.73 s (README "Speed").
Threads that pass the GIL back and forth 16,000 times per 256 MiB pay for every hand-off on a busy machine.

A 404 or 5xx is final (`Answered`). Any other response that is not a 200 with a Content-Length (the 401 of an
upstream whose challenge is not known yet, or changed; a chunked body) is not read here: `get` returns None and
the caller asks through httpx (`HttpxBody`), which learns the challenge and knows every other case.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

READ_STEP = 256 * 1024  # at most this much is decrypted per readiness callback (then the loop's turn)
PACE_POLL = 0.002  # seconds between two looks at a sink that has no room
PROGRESS_BYTES = 2 * 1024 * 1024  # the fetch hears of progress at most this often (its readers wake as often)
IDLE_TIMEOUT = 60.0  # seconds without a byte of the body: the download is broken
CONNECT_TIMEOUT = 10.0
_MAX_HEADER = 64 * 1024
_HEAD_READ = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Sink(Protocol):
    """Where a body goes: `buffer()` is the memory the next bytes are written into, `received(count)` says that
    its first `count` bytes are in (before anything else runs on the loop: the sink hashes and stores them);
    `room()` is how many bytes it takes now (0: ask again in a moment)."""

    def buffer(self) -> memoryview: ...

    def room(self) -> int: ...

    def received(self, count: int) -> None: ...


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
                piece = memoryview(chunk)
                while piece:
                    buffer = sink.buffer()
                    count = min(len(buffer), len(piece))
                    buffer[:count] = piece[:count]
                    sink.received(count)
                    piece = piece[count:]
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
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return None
        headers = {"Host": parts.netloc, "Accept-Encoding": "identity", **headers_for(parts.netloc.lower())}
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        request = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        try:
            connection = await asyncio.wait_for(_Connection.open(parts.hostname, parts.port or 443, context),
                                                CONNECT_TIMEOUT)
        except (TimeoutError, OSError, ssl.SSLError):
            return None
        try:
            status, message, rest = await asyncio.wait_for(connection.exchange(request.encode("latin-1")),
                                                           IDLE_TIMEOUT)
        except (TimeoutError, Exception):  # noqa: BLE001 - any failure: httpx asks again and reports it
            connection.close()
            return None
        length = message.get("content-length", "")
        if status == 200 and length.isdigit() and not message.get("transfer-encoding"):
            return LoopBody(connection, int(length), rest)
        connection.close()
        if status == 404 or status >= 500:
            raise Answered(status)
        location = message.get("location")
        if status not in _REDIRECTS or not location:
            return None
        url = urljoin(url, location)
    return None


class _Connection:
    """A non-blocking TLS socket driven by the event loop's readiness callbacks, OpenSSL on the socket itself."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.read: Any = sock._sslobj.read  # type: ignore[attr-defined]  # the _ssl object's: no wrapper per call
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext) -> _Connection:
        loop = asyncio.get_running_loop()
        failure: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            raw = socket.socket(family, kind, proto)
            try:
                raw.setblocking(False)
                await loop.sock_connect(raw, address)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
            except OSError as exc:
                raw.close()
                failure = exc
                continue
            except BaseException:
                raw.close()
                raise
            connection = cls(sock)
            try:
                while True:
                    try:
                        sock.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await connection._ready(True)
                    except ssl.SSLWantWriteError:
                        await connection._ready(False)
            except BaseException:
                connection.close()
                raise
            return connection
        raise failure

    async def _ready(self, readable: bool) -> None:
        waiter = self.loop.create_future()
        if readable:
            self.loop.add_reader(self.fd, _wake, waiter)
        else:
            self.loop.add_writer(self.fd, _wake, waiter)
        try:
            await waiter
        finally:
            if readable:
                self.loop.remove_reader(self.fd)
            else:
                self.loop.remove_writer(self.fd)

    async def exchange(self, request: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
        """Sends `request`, returns the response's status, header fields and what of the body came with them."""
        pending = memoryview(request)
        while pending:
            try:
                pending = pending[self.sock.send(pending):]
            except ssl.SSLWantWriteError:
                await self._ready(False)
            except ssl.SSLWantReadError:
                await self._ready(True)
        head = bytearray()
        buffer = bytearray(_HEAD_READ)
        while (end := head.find(b"\r\n\r\n")) < 0:
            if len(head) > _MAX_HEADER:
                raise DownloadBroken("response head too long")
            try:
                count = self.sock.recv_into(buffer)
            except ssl.SSLWantReadError:
                await self._ready(True)
                continue
            except ssl.SSLWantWriteError:
                await self._ready(False)
                continue
            if not count:
                raise DownloadBroken("connection closed early")
            head += buffer[:count]
        status_line, _, fields = bytes(head[: end + 2]).partition(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
            message = http.client.parse_headers(io.BytesIO(fields))
        except (ValueError, IndexError, http.client.HTTPException):
            raise DownloadBroken("unreadable response head") from None
        return status, message, bytes(head[end + 4:])

    def close(self) -> None:
        """Closes at once (an abort: no close_notify; one response per connection, the upstream may keep the rest)."""
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)
            self.sock.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class LoopBody(BlobBody):
    """The body of a 200 on a `_Connection`: decrypted by OpenSSL straight into the sink's buffer, on the loop."""

    def __init__(self, connection: _Connection, size: int, rest: bytes) -> None:
        self.connection = connection
        self.size = size
        self._rest = rest  # what of the body came with the head
        self._sink: Sink | None = None
        self._progress: Progress | None = None
        self._ended: asyncio.Future[None] = connection.loop.create_future()
        self.remaining = size
        self.total = 0
        self._reported = 0
        self._again = False

    async def copy(self, sink: Sink, progress: Progress) -> int:
        self._sink, self._progress = sink, progress
        connection = self.connection
        ended = self._ended
        try:
            rest = memoryview(self._rest)[:self.remaining]
            while rest:
                buffer = sink.buffer()
                count = min(len(buffer), len(rest))
                buffer[:count] = rest[:count]
                self._delivered(count)
                rest = rest[count:]
            if not self.remaining and not ended.done():
                self._delivered(0)
        except BaseException:
            connection.close()
            raise
        if not ended.done():
            connection.loop.add_reader(connection.fd, self._on_readable)
            self._readable()
        seen = -1
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(ended), IDLE_TIMEOUT)
                    break
                except TimeoutError:
                    if self.total == seen:  # not one byte for IDLE_TIMEOUT
                        raise DownloadBroken(f"no data for {IDLE_TIMEOUT:.0f} s") from None
                    seen = self.total
        finally:
            connection.close()
            _settle(ended)
        return self.total

    def _on_readable(self) -> None:
        if not self._again:  # else a call is queued already: one step per loop iteration, as for any connection
            self._readable()

    def _readable(self) -> None:
        """What OpenSSL can decrypt now, into the sink's buffer, up to READ_STEP bytes; handed to the sink."""
        self._again = False
        ended, sink, connection = self._ended, self._sink, self.connection
        if ended.done() or sink is None or connection.closed:
            return
        read = connection.read
        done = 0
        try:
            while done < READ_STEP and self.remaining:
                room = sink.room()
                if not room:  # a reader of the sink is behind: a moment for it, the upstream's bytes wait
                    connection.loop.remove_reader(connection.fd)
                    connection.loop.call_later(PACE_POLL, self._resume)
                    return
                buffer = sink.buffer()
                want = min(len(buffer), self.remaining, room)
                got = 0
                try:
                    while got < want:
                        count = read(want - got, buffer[got:want])
                        if not count:
                            raise DownloadBroken("connection closed early")
                        got += count
                finally:
                    if got:
                        self._delivered(got)
                        done += got
            if self.remaining and not ended.done():
                self._again = True  # OpenSSL may hold what epoll does not see
                connection.loop.call_soon(self._readable)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:  # a TLS 1.3 key update to answer: on when the socket takes it
            connection.loop.add_writer(connection.fd, self._writable)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self._broken(DownloadBroken("connection closed early"))
        except (ssl.SSLError, OSError) as exc:
            self._broken(DownloadBroken(type(exc).__name__))
        except BaseException as exc:  # noqa: BLE001 - the sink's error ends the download, raised by `copy`
            self._broken(exc)

    def _resume(self) -> None:
        connection = self.connection
        if not (connection.closed or self._ended.done()):
            connection.loop.add_reader(connection.fd, self._on_readable)
            self._readable()

    def _writable(self) -> None:
        self.connection.loop.remove_writer(self.connection.fd)
        self._readable()

    def _delivered(self, count: int) -> None:
        assert self._sink is not None and self._progress is not None
        self._sink.received(count)
        self.remaining -= count
        self.total += count
        if not self.remaining or self.total - self._reported >= PROGRESS_BYTES:
            self._reported = self.total
            self._progress(self.total)
        if not self.remaining and not self._ended.done():
            self._ended.set_result(None)
            self.connection.close()

    def _broken(self, exc: BaseException) -> None:
        if not self._ended.done():
            self._ended.set_exception(exc)
        self.connection.close()

    async def aclose(self) -> None:
        self.connection.close()
        _settle(self._ended)


def _settle(future: asyncio.Future[Any]) -> None:
    """Nobody will await `future`: its exception, if any, counts as seen (no "never retrieved" in the log)."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()
