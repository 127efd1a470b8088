"""The PROXY protocol (haproxy's proxy-protocol.txt, v1 text and v2 binary): `http.proxyprotocol`.

secreg terminates TLS itself, so a TCP load balancer in front (haproxy `mode tcp`, nginx `stream`, AWS NLB) passes
the TLS bytes through and cannot add X-Forwarded-For: every client looked like the balancer, one brute-forcing
client tripped the login rate limit for all, the per-client connection cap was shared, and the logs named the
balancer. With `send-proxy` / `send-proxy-v2` the balancer writes one header naming the client before the first
byte of TLS. A connection from a peer in `http.proxyprotocol` must begin with one (the spec forbids guessing
whether it is there); from any other peer nothing is read here: the bytes go to TLS (or HTTP), for which a header
is garbage, so a client reaching the server directly cannot name its own address.

The header is read in the event loop's accept step, before any transport exists (`install`): with MSG_PEEK, and
only the header's own bytes are consumed, so OpenSSL (or h11) then reads the socket from the ClientHello on. A v1
line is taken whole once its CRLF is seen (everything peeked before a CRLF is header, so it is consumed as it
comes and nothing is peeked twice); a v2 header is 16 bytes that give its length. Anything that cannot begin a
header closes the connection at once, unread; so does a header longer than V1_MAX / V2_MAX, one not complete
within `http.timeouts.header` seconds, or the client's end before it. The client it names becomes the socket's
`getpeername()` (`ProxiedSocket`) and the transport's `peername`: Hypercorn's ASGI `client` (access and audit logs,
login rate limits, the `/metrics` loopback check, what `secreg.forwarded` does with X-Forwarded-For) and the
connection caps (`secreg.connections`) all read it there. v2 LOCAL (health checks), v1 UNKNOWN and v2 UNSPEC
keep the real peer, as the spec says.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events as selector_events
import functools
import inspect
import ipaddress
import logging
import socket
import time
from asyncio import trsock
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from secreg.forwarded import Network

log = logging.getLogger("secreg.proxyprotocol")

V1_MAX = 107  # "PROXY UNKNOWN <39> <39> 65535 65535\r\n", the spec's longest line
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 16 + 4096  # the 16 fixed bytes and at most this much address block and TLVs (the spec allows 64 KiB)
_PEEK = V2_MAX
_V2_ADDRESSES = {0x11: 12, 0x21: 36}  # TCP over IPv4, over IPv6: addresses and ports
_V2_OTHERS = {0x00: 0, 0x12: 12, 0x22: 36, 0x31: 216, 0x32: 216}  # UNSPEC, UDP, UNIX: the real peer is used
_DIGITS = frozenset(b"0123456789")
_MAPPED = bytes(10) + b"\xff\xff"


class HeaderError(ValueError):
    """Not a PROXY header the spec allows: the connection is closed."""


@dataclass(frozen=True)
class Header:
    version: int
    client: tuple[str, int] | None  # None: LOCAL, UNKNOWN, UNSPEC and the like: the connection's own peer


def _port(text: bytes) -> int:
    if not text or not set(text) <= _DIGITS or (len(text) > 1 and text[0] == 0x30) or int(text) > 65535:
        raise HeaderError(f"bad port {text[:8]!r}")
    return int(text)


def _address(family: int, packed: bytes) -> str:
    if family == socket.AF_INET6 and packed[:12] == _MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])  # as secreg.forwarded reads an IPv4-mapped address
    return socket.inet_ntop(family, packed)


def parse_v1(line: bytes) -> Header:
    """`line`: one whole v1 header, CRLF included."""
    if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n") or len(line) > V1_MAX:
        raise HeaderError("not a v1 line")
    fields = line[6:-2].split(b" ")
    if fields[0] == b"UNKNOWN":  # the rest of the line is to be ignored
        return Header(1, None)
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise HeaderError(f"v1: expected TCP4, TCP6 or UNKNOWN and four fields, got {line[:60]!r}")
    family = socket.AF_INET if fields[0] == b"TCP4" else socket.AF_INET6
    try:
        # inet_pton (glibc) refuses leading zeros in IPv4 (the spec forbids them: octal), an IPv6 zone, and
        # anything but 128 bits in IPv6; ipaddress does the same at ~4x the cost
        source = socket.inet_pton(family, fields[1].decode("ascii"))
        socket.inet_pton(family, fields[2].decode("ascii"))
    except (OSError, UnicodeDecodeError):
        raise HeaderError(f"v1: bad {fields[0].decode()} address in {line[:60]!r}") from None
    port = _port(fields[3])
    _port(fields[4])
    return Header(1, (_address(family, source), port))


def parse_v2(data: bytes) -> Header:
    """`data`: one whole v2 header (16 + its length bytes)."""
    if len(data) < 16 or data[:12] != V2_SIGNATURE or data[12] >> 4 != 2:
        raise HeaderError("not a v2 header")
    command, family, length = data[12] & 0x0F, data[13], int.from_bytes(data[14:16], "big")
    if len(data) != 16 + length:
        raise HeaderError("v2: length does not match")
    if command not in (0, 1):
        raise HeaderError(f"v2: unknown command {command}")
    need = _V2_ADDRESSES.get(family, _V2_OTHERS.get(family))
    if need is None:
        raise HeaderError(f"v2: unknown family/protocol byte {family:#04x}")
    if length < need:
        raise HeaderError(f"v2: {length} bytes of addresses for family {family:#04x}, {need} needed")
    position = 16 + need
    while position < len(data):  # TLVs: type, 2-byte length, value; contents are not used, the framing must hold
        if position + 3 > len(data) or position + 3 + int.from_bytes(data[position + 1:position + 3], "big") > len(
                data):
            raise HeaderError("v2: a TLV runs past the header")
        position += 3 + int.from_bytes(data[position + 1:position + 3], "big")
    if command == 0 or family not in _V2_ADDRESSES:  # LOCAL (health checks), or no TCP address: the real peer
        return Header(2, None)
    size, kind = (4, socket.AF_INET) if family == 0x11 else (16, socket.AF_INET6)
    port = int.from_bytes(data[16 + 2 * size:18 + 2 * size], "big")
    return Header(2, (_address(kind, data[16:16 + size]), port))


def header_bytes(have: bytes, peeked: bytes) -> int:
    """How many bytes of `peeked` (what the socket holds after the `have` already read) belong to the header: all
    of them while it is not complete. Raises HeaderError as soon as `have + peeked` cannot begin a header."""
    data = have + peeked
    if data[:1] == b"P":
        if not data.startswith(b"PROXY "[:len(data)]):
            raise HeaderError("no PROXY header")
        end = data.find(b"\r\n", max(0, len(have) - 1))
        if end < 0:
            if len(data) >= V1_MAX:
                raise HeaderError(f"v1: no CRLF in the first {V1_MAX} bytes")
            return len(peeked)
        if end + 2 > V1_MAX:
            raise HeaderError(f"v1: no CRLF in the first {V1_MAX} bytes")
        return end + 2 - len(have)
    if not data.startswith(V2_SIGNATURE[:len(data)]):
        raise HeaderError(f"no PROXY header (the connection began {data[:4]!r})")
    if len(data) > 12 and data[12] >> 4 != 2:
        raise HeaderError(f"v2: version {data[12] >> 4}")
    if len(data) < 16:
        return len(peeked)
    total = 16 + int.from_bytes(data[14:16], "big")
    if total > V2_MAX:
        raise HeaderError(f"v2: {total} bytes of header (at most {V2_MAX})")
    return min(len(peeked), total - len(have))


def parse(data: bytes) -> Header:
    return parse_v1(data) if data[:1] == b"P" else parse_v2(data)


def complete(data: bytes) -> bool:
    if data[:1] == b"P":
        return data.endswith(b"\r\n")
    return len(data) >= 16 and len(data) == 16 + int.from_bytes(data[14:16], "big")


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, deadline: float) -> None:
    """Until `fd` is readable; TimeoutError at `deadline` (the loop's clock). A timer only for a header that is not
    there at once (asyncio.timeout around every header cost 8.5 us a connection)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    def expire() -> None:
        if not ready.done():
            ready.set_exception(TimeoutError())

    loop.add_reader(fd, wake)
    timer = loop.call_at(deadline, expire)
    try:
        await ready
    finally:
        timer.cancel()
        loop.remove_reader(fd)


async def read_header(loop: asyncio.AbstractEventLoop, conn: socket.socket, timeout: float) -> Header:
    """The header `conn` (non-blocking) begins with, its bytes consumed and not one more, all within `timeout`
    seconds (TimeoutError)."""
    have = b""
    deadline: float | None = None
    while True:
        try:
            peeked = conn.recv(_PEEK - len(have), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if deadline is None:
                deadline = loop.time() + timeout
            await _readable(loop, conn.fileno(), deadline)
            continue
        if not peeked:
            raise HeaderError(f"the connection ended after {len(have)} bytes of header")
        take = header_bytes(have, peeked)
        have += conn.recv(take)  # what was peeked is there: the read takes exactly these bytes
        if complete(have):
            return parse(have)


class ProxiedSocket(socket.socket):
    """An accepted connection whose PROXY header named its client: `getpeername()` is that client, for every
    transport built on it (asyncio's reads `peername` and Hypercorn the ASGI `client` from it)."""

    __slots__ = ("proxied_peer",)
    proxied_peer: tuple[str, int]

    def getpeername(self) -> tuple[str, int]:
        return self.proxied_peer


class ProxiedTransportSocket(trsock.TransportSocket):
    """The transport's `socket` of `secreg.tlstransport`, which wraps a new SSLSocket around the connection (so a
    ProxiedSocket's own `getpeername` is gone by then)."""

    __slots__ = ("_peer",)

    def __init__(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        super().__init__(sock)
        self._peer = peer

    def getpeername(self) -> tuple[str, int]:
        return self._peer


def proxied(conn: socket.socket, client: tuple[str, int]) -> ProxiedSocket:
    sock = ProxiedSocket(conn.family, conn.type, conn.proto, fileno=conn.detach())
    sock.setblocking(False)
    sock.proxied_peer = client
    return sock


class Acceptor:
    """What the accept step does with a new connection: the header from a listed peer, nothing from others."""

    REPORT_EVERY = 10.0

    def __init__(self, networks: Sequence[Network], timeout: float) -> None:
        self.networks = tuple(networks)
        self.timeout = timeout
        self._listed = functools.lru_cache(maxsize=4096)(self._in_networks)  # 3 us a parse; peers repeat
        self.rejected = 0
        self._last_report = float("-inf")

    def listed(self, conn: socket.socket, peer: Any) -> bool:
        if conn.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(peer, tuple) or not peer:
            return False
        return self._listed(peer[0])

    def _in_networks(self, host: str) -> bool:
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    async def accept(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, extra: dict[str, Any]
                     ) -> socket.socket | None:
        """`conn` to build the transport on (a ProxiedSocket when a client was named), or None: closed."""
        if not self.listed(conn, extra.get("peername")):
            return conn
        try:
            header = await read_header(loop, conn, self.timeout)
        except (HeaderError, TimeoutError, OSError) as exc:
            why = f"no complete PROXY header within {self.timeout:g} s (http.timeouts.header)" if isinstance(
                exc, TimeoutError) else str(exc)
            self._reject(extra.get("peername"), why)
            conn.close()
            return None
        except BaseException:
            conn.close()
            raise
        if header.client is None:
            return conn
        extra["peername"] = header.client
        return proxied(conn, header.client)

    def _reject(self, peer: Any, why: str) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_report >= self.REPORT_EVERY:  # a misconfigured balancer is a line per connection
            self._last_report = now
            log.warning("closing a connection from %s (listed in http.proxyprotocol): %s (%d so far)",
                        peer[0] if isinstance(peer, tuple) and peer else peer, why, self.rejected)


_loop_class: Any = selector_events.BaseSelectorEventLoop
_asyncio_accept: Any = _loop_class._accept_connection2
_EXPECTED_PARAMETERS = ("self", "protocol_factory", "conn", "extra", "sslcontext", "server", "ssl_handshake_timeout",
                        "ssl_shutdown_timeout")
_acceptor: Acceptor | None = None


def supported() -> bool:
    """This interpreter's selector loop hands each accepted connection to `_accept_connection2` as 3.11-3.14 do."""
    return tuple(inspect.signature(_asyncio_accept).parameters) == _EXPECTED_PARAMETERS


async def _accept_connection2(self: Any, protocol_factory: Any, conn: socket.socket, extra: dict[str, Any],
                              sslcontext: Any = None, server: Any = None, *args: Any) -> None:
    acceptor = _acceptor
    if acceptor is not None:
        accepted = await acceptor.accept(self, conn, extra)
        if accepted is None:
            return
        if server is not None and not server.is_serving():  # stopped while the header was awaited
            accepted.close()
            return
        conn = accepted
    await _asyncio_accept(self, protocol_factory, conn, extra, sslcontext, server, *args)


def install(networks: Sequence[Network], timeout: float) -> None:
    """Read a PROXY header from every connection this process's selector loops accept from `networks` (none:
    uninstalled). uvloop accepts in its own code: the settings refuse it with `http.proxyprotocol`."""
    global _acceptor
    if not networks:
        _acceptor = None
        _loop_class._accept_connection2 = _asyncio_accept
        return
    if not supported():
        raise RuntimeError("http.proxyprotocol: this Python's asyncio accepts connections differently; it cannot "
                           "read PROXY headers")
    _acceptor = Acceptor(networks, timeout)
    _loop_class._accept_connection2 = _accept_connection2
