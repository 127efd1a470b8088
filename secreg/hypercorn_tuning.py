"""Hypercorn settings its Config does not expose.

Hypercorn reads each connection in pieces of at most `hypercorn.asyncio.tcp_server.MAX_RECV` (64 KiB), and every
piece then travels through h11, Hypercorn's stream and the ASGI receive queue as its own Python-level event. A
blob push is hundreds of MiB of such pieces: reading up to 1 MiB at a time (what the TLS layer has decrypted,
usually 128-256 KiB) cut the server CPU time of a 256 MiB push by ~10% and its wall time from 0.46 to 0.41 s in
A/B runs here. Memory does not grow: a read returns what is already buffered, it never allocates the maximum.
"""

from __future__ import annotations

import logging

import hypercorn.asyncio.tcp_server as tcp_server

READ_BYTES = 1024 * 1024
log = logging.getLogger("secreg.serve")


def apply() -> bool:
    """Called in every worker process before it serves (from `secreg.asgi`). False when this Hypercorn has no
    such constant (the test suite checks that ours does); serving works either way, only slower."""
    if not isinstance(getattr(tcp_server, "MAX_RECV", None), int):
        log.warning("hypercorn.asyncio.tcp_server.MAX_RECV not found: blob pushes use Hypercorn's default reads")
        return False
    tcp_server.MAX_RECV = READ_BYTES
    quiet_tls_close()
    return True


def quiet_tls_close() -> None:
    """A client that keeps sending after the server's TLS close_notify (a body refused with 413 and
    `Connection: close`) makes `wait_closed()` raise ssl.SSLError APPLICATION_DATA_AFTER_CLOSE_NOTIFY, which
    Hypercorn's close does not expect: it surfaced as a 40-line traceback through the response being sent. The
    connection is over either way."""
    original = tcp_server.TCPServer._close
    if getattr(original, "_secreg_quiet", False):
        return

    async def close(self: tcp_server.TCPServer) -> None:
        try:
            await original(self)
        except OSError:  # ssl.SSLError is one
            pass

    close._secreg_quiet = True  # type: ignore[attr-defined]
    tcp_server.TCPServer._close = close  # type: ignore[method-assign]
