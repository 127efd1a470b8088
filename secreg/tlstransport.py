"""Server-side TLS with OpenSSL on the socket itself (`http.tlstransport: socket`, the default).

asyncio's TLS (`asyncio.sslproto`) runs OpenSSL over two memory BIOs: every encrypted byte is copied out of the
outgoing BIO into new bytes and then sent, every received byte is read into a buffer and written into the
incoming BIO, and each read or write passes through sslproto's state machine and its app transport (several
Python calls per piece). Here the connection is a non-blocking `ssl.SSLSocket` driven by the event loop's
`add_reader`/`add_writer`, as `openssl s_server` drives its sockets: `SSL_write` encrypts into its record and
writes it to the socket, `SSL_read` reads the socket and decrypts into the caller's buffer. Interleaved against
asyncio's TLS (one worker): a 256 MiB curl pull 0.28 -> 0.23 s of server CPU and 1.21x the rate over HTTP/1.1,
0.275 -> 0.23 s and 1.19x over h2; a 256 MiB push 5% less CPU; small requests 4-7% less (README Performance).

`SocketTLSTransport` is an `asyncio.Transport` like the one `loop.create_server(ssl=...)` gives a protocol, so
Hypercorn's `asyncio.start_server` (its `StreamReader`/`StreamWriter`), the connection limits and the
handshake timeout work unchanged: `install()` puts it in place of `_make_ssl_transport` of asyncio's selector
loops for the server side (a client-side connection, e.g. to a proxy upstream, keeps asyncio's). Extra info
as sslproto gives it: `ssl_object` (the SSLSocket: `selected_alpn_protocol()` picks h2), `peername`,
`sockname`, `socket`, `sslcontext`, `cipher`, `peercert`.

What OpenSSL's non-blocking calls require, and how it is met:
- a `SSL_write` that could not finish (SSLWantWrite, or SSLWantRead) must be retried with the same bytes:
  the piece stays at the head of the write buffer until a retry returns; pieces behind it are not tried.
  Python's SSLSocket sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER, so the retry may come from a copy.
- a `SSL_read` may need to write (a TLS 1.3 key update's answer) and a write may need to read: either waits
  for the other readiness, then retries (`_read_wants_write`, `_write_wants_read`).
- what OpenSSL holds already, a record decrypted only in part or (with read-ahead, `secreg.tls.suites`) records
  read from the socket and not yet decrypted, is where epoll cannot see it: a read that stopped at READ_BYTES,
  a resumed transport and a finished handshake read again on the next loop iteration.
Writes are buffered past what the socket takes, with asyncio's 64 KiB high-water mark for `pause_writing`.
Close sends close_notify, half-closes the socket and reads (and drops) whatever the client still sends for at
most LINGER_SECONDS before closing it (a 413 sent while the body is still arriving is not lost to a reset).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events as base_events
import asyncio.constants as asyncio_constants
import asyncio.selector_events as selector_events
import collections
import inspect
import logging
import socket
import ssl
import sys
import threading
from asyncio import trsock
from typing import Any

from secreg import proxyprotocol

READ_BYTES = 512 * 1024  # one socket read's worth, as `secreg.connections.TLS_READ_BYTES`
COALESCE = 64 * 1024  # small waiting pieces are joined into one record (and one send) up to this size
HIGH_WATER = 64 * 1024  # asyncio's default write-buffer limits
LINGER_SECONDS = 5.0
_local = threading.local()
log = logging.getLogger(__name__)
_drop = bytearray(64 * 1024)  # what a lingering close reads is thrown away (one per process is enough)


def _read_buffer() -> memoryview:
    """One read buffer per thread, as for asyncio's transport (`secreg.connections.share_tls_read_buffer`): each
    read is handed on as new bytes in the same synchronous step, so connections of one loop can share it."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(READ_BYTES))
    return view


class SocketTLSTransport(asyncio.Transport):
    """One accepted connection: the TLS handshake (then `protocol.connection_made` and `waiter`'s result), then
    reads and writes. See the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rawsock: socket.socket, protocol: asyncio.Protocol,
                 context: ssl.SSLContext, waiter: asyncio.Future[None] | None, extra: dict[str, Any] | None,
                 server: Any, handshake_timeout: float | None) -> None:
        super().__init__()
        self._info: dict[str, Any] = dict(extra or {})
        self._loop = loop
        self._protocol = protocol
        self._waiter = waiter
        self._server = server
        if rawsock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                rawsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        client = rawsock.proxied_peer if isinstance(rawsock, proxyprotocol.ProxiedSocket) else None
        self._sock = context.wrap_socket(rawsock, server_side=True, do_handshake_on_connect=False)
        self._ssl: Any = self._sock._sslobj  # type: ignore[attr-defined]  # the _ssl object: no wrapper per call
        self._fd = self._sock.fileno()
        self._info.setdefault("socket", trsock.TransportSocket(self._sock) if client is None else
                              proxyprotocol.ProxiedTransportSocket(self._sock, client))
        self._info["sslcontext"] = context
        try:
            self._info.setdefault("sockname", self._sock.getsockname())
            self._info.setdefault("peername", self._sock.getpeername())
        except OSError:
            pass
        self._buffer: collections.deque[Any] = collections.deque()
        self._buffered = 0
        self._head_tried = False  # the buffer's first piece went to a SSL_write that has to be retried
        self._high, self._low = HIGH_WATER, HIGH_WATER // 4
        self._protocol_paused = False
        self._ready = False  # handshake done, protocol told
        self._paused = False  # pause_reading
        self._eof = False  # the client's end of stream was read
        self._closing = False
        self._lost = False
        self._socket_closed = False
        self._read_wants_write = False
        self._write_wants_read = False
        self._reader: Any = None  # the callbacks registered with the loop
        self._writer: Any = None
        self._timer: asyncio.TimerHandle | None = None
        if server is not None:
            _server_attach(server, self)
        if handshake_timeout is None:
            handshake_timeout = asyncio_constants.SSL_HANDSHAKE_TIMEOUT  # asyncio's own when none is given
        if handshake_timeout:
            self._timer = loop.call_later(handshake_timeout, self._fail_handshake, TimeoutError("TLS handshake"))
        self._set_reader(self._handshake)
        self._handshake()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._info.get(name, default)

    def __repr__(self) -> str:
        return f"<SocketTLSTransport fd={self._fd} {'closed' if self._lost else 'open'}>"

    # --- the loop's callbacks ------------------------------------------------------------------------------

    def _set_reader(self, callback: Any) -> None:
        if callback is self._reader or (callback is not None and callback == self._reader):
            return
        if callback is None:
            self._loop.remove_reader(self._fd)
        else:
            self._loop.add_reader(self._fd, callback)
        self._reader = callback

    def _set_writer(self, callback: Any) -> None:
        if callback is self._writer or (callback is not None and callback == self._writer):
            return
        if callback is None:
            self._loop.remove_writer(self._fd)
        else:
            self._loop.add_writer(self._fd, callback)
        self._writer = callback

    def _update(self) -> None:
        """Register for the readiness this connection waits for now."""
        if self._lost:
            return
        reading = (self._wants_data() and not self._read_wants_write) or self._write_wants_read
        writing = (bool(self._buffer) and not self._write_wants_read) or self._read_wants_write
        self._set_reader(self._on_readable if reading else None)
        self._set_writer(self._on_writable if writing else None)

    def _on_readable(self) -> None:
        if self._write_wants_read:
            self._write_wants_read = False
            self._flush()
        if self._wants_data() and not self._read_wants_write:
            self._read()
        self._update()

    def _on_writable(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            if self._wants_data():
                self._read()
        if self._buffer and not (self._write_wants_read or self._lost):
            self._flush()
        self._update()

    # --- handshake -----------------------------------------------------------------------------------------

    def _handshake(self) -> None:
        if self._lost:
            return
        if self._ssl is None:  # reset before it was accepted: SSLSocket saw no peer and set up no TLS
            self._fail_handshake(ConnectionResetError("the client was gone before the handshake"))
            return
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._set_writer(None)
            return
        except ssl.SSLWantWriteError:
            self._set_writer(self._handshake)
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail_handshake(exc)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._set_reader(None)
        self._set_writer(None)
        self._ready = True
        self._info["ssl_object"] = self._sock
        self._info["cipher"] = self._sock.cipher()
        self._info["compression"] = self._sock.compression()
        self._info["peercert"] = self._sock.getpeercert()
        self._protocol.connection_made(self)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None
        self._update()
        self._loop.call_soon(self._read_more)  # what came with the handshake's last flight may wait in OpenSSL

    def _fail_handshake(self, exc: BaseException) -> None:
        """Handshake failed, timed out, or the server closed meanwhile: no protocol was told of the connection."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionAbortedError(f"TLS handshake failed: {exc}"))
        self._waiter = None
        self._force_close(None)

    # --- reading -------------------------------------------------------------------------------------------

    def _read(self) -> None:
        """What the socket holds, up to READ_BYTES, read until OpenSSL needs more from the client (SSLWantRead) and
        handed on as one piece. Stopping at the first record shorter than 16 KiB instead (it usually ends what a
        client sent) saved small requests nothing measurable (4 x 8 s wrk pairs: manifest GET 0.309 vs 0.309 ms
        of CPU per request) and halved curl's HTTP/2 pushes, whose DATA frames are a 16 KiB record and a short one
        each: every read then ended after a frame (256 MiB: 232 MB/s and 1.33 s of server CPU, against 468 MB/s
        and 0.67 s reading on, and 480 MB/s, 0.64 s on asyncio's TLS)."""
        view = _read_buffer()
        read = self._ssl.read
        total = 0
        eof = False
        failure: BaseException | None = None
        try:
            while True:
                count = read(READ_BYTES - total, view[total:])
                if not count:  # the client's close_notify
                    eof = True
                    break
                total += count
                if total >= READ_BYTES:
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:
            self._read_wants_write = True
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # closed without close_notify: an end all the same
            eof = True
        except (ssl.SSLError, OSError) as exc:
            failure = exc
        if total:
            self._protocol.data_received(bytes(view[:total]))
        if self._lost:
            return
        if failure is not None:
            self._fatal(failure)
        elif eof:
            self._eof = True
            self._update()
            if not self._protocol.eof_received():
                self.close()
        elif total >= READ_BYTES:
            self._loop.call_soon(self._read_more)  # what OpenSSL holds may be all there is: epoll will not say

    def _wants_data(self) -> bool:
        """Whether what the client sends is to be read now (not paused, not ended, not closing)."""
        return not (self._paused or self._eof or self._closing or self._lost)

    def _read_more(self) -> None:
        if self._wants_data() and not self._read_wants_write:
            self._read()
            self._update()

    def read_queued(self) -> None:
        """Read what the socket holds now and hand it on in one piece (up to READ_BYTES), without waiting for the
        loop's next readiness: for a reader that left the socket unread to let a paced body gather
        (`secreg.connections`)."""
        if self._ready:
            self._read_more()

    def pause_reading(self) -> None:
        if self._paused or self._closing:
            return
        self._paused = True
        if self._ready:
            self._update()

    def resume_reading(self) -> None:
        if not self._paused or self._closing:
            return
        self._paused = False
        if self._ready:
            self._update()
            if not self._lost:
                self._loop.call_soon(self._read_more)

    def is_reading(self) -> bool:
        return self._ready and self._wants_data()

    # --- writing -------------------------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expected a bytes-like object, not {type(data).__name__}")
        if self._lost or self._closing or not data:
            return
        if self._buffer or self._write_wants_read:
            self._queue(data)
            return
        try:
            self._ssl.write(data)
            return
        except ssl.SSLWantWriteError:
            pass
        except ssl.SSLWantReadError:
            self._write_wants_read = True
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)
            return
        self._queue(data)
        self._head_tried = True
        self._update()

    def _queue(self, data: Any) -> None:
        if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
            data = bytes(data)  # the caller may reuse a bytearray once write() returns
        self._buffer.append(data)
        self._buffered += len(data)
        if not self._protocol_paused and self._buffered > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _flush(self) -> None:
        buffer = self._buffer
        write = self._ssl.write
        while buffer:
            data = buffer[0]
            if not self._head_tried and len(buffer) > 1 and len(data) < COALESCE and len(buffer[1]) < COALESCE:
                pieces = [buffer.popleft()]
                size = len(data)
                while buffer and len(buffer[0]) < COALESCE and size + len(buffer[0]) <= COALESCE:
                    size += len(buffer[0])
                    pieces.append(buffer.popleft())
                data = b"".join(pieces)
                buffer.appendleft(data)
            try:
                write(data)
            except ssl.SSLWantWriteError:
                self._head_tried = True
                break
            except ssl.SSLWantReadError:
                self._head_tried = self._write_wants_read = True
                break
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            buffer.popleft()
            self._buffered -= len(data)
            self._head_tried = False
        if self._protocol_paused and self._buffered <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()
        if not buffer and self._closing and not self._lost:
            self._shutdown()

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = HIGH_WATER if high is None else high
        low = high // 4 if low is None else low
        if not 0 <= low <= high:
            raise ValueError(f"high ({high}) must be >= low ({low}) must be >= 0")
        self._high, self._low = high, low
        if not self._protocol_paused and self._buffered > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False  # TLS 1.3 has no half close a client would understand

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot be half-closed")

    # --- closing -------------------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Send what is buffered, then close_notify, then close (lingering; see the module docstring)."""
        if self._closing or self._lost:
            return
        self._closing = True
        if not self._ready:
            self._fail_handshake(ConnectionAbortedError("closed during the handshake"))
        elif self._buffer:
            self._update()  # reading stops; writing goes on until the buffer is out, then `_shutdown`
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._ssl.shutdown()  # writes close_notify; the client's own is not waited for
        except (ssl.SSLError, OSError, ValueError):
            pass
        self._force_close(None, linger=True)

    def abort(self) -> None:
        self._force_close(None)

    def _fatal(self, exc: BaseException) -> None:
        # Hypercorn and the streams expect a broken connection as a ConnectionError (a TLS error is one too).
        self._force_close(exc if isinstance(exc, ConnectionError) else ConnectionResetError(str(exc)))

    def _force_close(self, exc: Exception | None, linger: bool = False) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._set_reader(None)
        self._set_writer(None)
        self._buffer.clear()
        self._buffered = 0
        if self._ready:
            self._loop.call_soon(self._protocol.connection_lost, exc)
        if linger and self._linger():
            return
        self._close_socket()

    def _linger(self) -> bool:
        try:
            socket.socket.shutdown(self._sock, socket.SHUT_WR)  # the raw socket's: SSLSocket's drops OpenSSL
        except OSError:
            return False
        self._loop.add_reader(self._fd, self._drain)
        self._timer = self._loop.call_later(LINGER_SECONDS, self._close_socket)
        return True

    def _drain(self) -> None:
        try:
            while socket.socket.recv_into(self._sock, _drop):
                pass
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_socket()  # end of stream, or an error

    def _close_socket(self) -> None:
        if self._socket_closed:
            return
        self._socket_closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock.close()
        server, self._server = self._server, None
        if server is not None:
            _server_detach(server, self)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]


_loop_class: Any = selector_events.BaseSelectorEventLoop
_asyncio_make_ssl_transport: Any = _loop_class._make_ssl_transport

# asyncio.Server counts its connections through private methods: `_attach()` / `_detach()` up to Python 3.12,
# `_attach(transport)` / `_detach(transport)` from 3.13 (its `_clients`, for close_clients()). Which one this
# interpreter has is read from its own signature, once.
_SERVER_TAKES_TRANSPORT = len(inspect.signature(base_events.Server._attach).parameters) > 1  # type: ignore[attr-defined]


def _server_attach(server: Any, transport: asyncio.BaseTransport) -> None:
    if _SERVER_TAKES_TRANSPORT:
        server._attach(transport)
    else:
        server._attach()


def _server_detach(server: Any, transport: asyncio.BaseTransport) -> None:
    if _SERVER_TAKES_TRANSPORT:
        server._detach(transport)
    else:
        server._detach()


# The keywords asyncio's selector loops pass to `_make_ssl_transport` (3.11 to 3.14); another interpreter's
# loop keeps its own TLS rather than have a call this module does not know.
_EXPECTED_PARAMETERS = ("self", "rawsock", "protocol", "sslcontext", "waiter", "server_side", "server_hostname",
                        "extra", "server", "ssl_handshake_timeout", "ssl_shutdown_timeout")


def supported() -> bool:
    """This interpreter's selector loop builds its TLS transports with the call `_make_ssl_transport` replaces."""
    return tuple(inspect.signature(_asyncio_make_ssl_transport).parameters) == _EXPECTED_PARAMETERS


def _make_ssl_transport(self: Any, rawsock: Any, protocol: Any, sslcontext: Any, waiter: Any = None, *,
                        server_side: bool = False, server_hostname: Any = None, extra: Any = None, server: Any = None,
                        ssl_handshake_timeout: Any = None, ssl_shutdown_timeout: Any = None) -> Any:
    if not server_side:
        return _asyncio_make_ssl_transport(
            self, rawsock, protocol, sslcontext, waiter, server_side=server_side, server_hostname=server_hostname,
            extra=extra, server=server, ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
    return SocketTLSTransport(self, rawsock, protocol, sslcontext, waiter, extra, server, ssl_handshake_timeout)


def in_place() -> bool:
    """Whether this process's selector loops serve TLS through `SocketTLSTransport` (`install`)."""
    return _loop_class._make_ssl_transport is _make_ssl_transport


def install(enabled: bool = True) -> bool:
    """Serve TLS through `SocketTLSTransport` in this process's asyncio selector loops (`enabled`), or through
    asyncio's own TLS. uvloop (`http.eventloop: uvloop`) has its own TLS and is not affected. An interpreter whose
    loop calls `_make_ssl_transport` differently (`supported`) keeps asyncio's TLS, with one warning. Returns
    whether the socket transport is in place."""
    if enabled and not supported():
        log.warning("http.tlstransport socket: this Python's asyncio (%s) builds TLS transports differently; "
                    "serving with asyncio's own TLS", ".".join(map(str, sys.version_info[:3])))
        enabled = False
    _loop_class._make_ssl_transport = _make_ssl_transport if enabled else _asyncio_make_ssl_transport
    return enabled
