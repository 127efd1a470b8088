"""Bounds on connections, below HTTP: how many, from whom, how long a request's headers may take, and how much
memory an idle TLS connection holds. Installed into Hypercorn's asyncio worker by `install(limits)` (from
`secreg.asgi`, in every worker process; each worker counts its own connections).

- **Caps**: at most `total` connections, at most `per_client` from one client address. A new connection over a
  cap first sheds the oldest *idle* connection (between requests) of that client, or of anyone for the total
  cap; only when every counted connection is busy is the new one closed at once. One client holding a thousand
  idle sockets therefore cannot lock out the others, and a busy transfer is never cut for an idle one.
- **Header timeout**: once the first byte of a request arrives on an HTTP/1.1 connection, its headers must be
  complete within `header_timeout` seconds (Go's ReadHeaderTimeout); a trickler is closed. Idle keep-alive
  connections are closed by Hypercorn's `keep_alive_timeout`. Request bodies are bounded by
  `secreg.requestlimits.BodyTimeout` at the ASGI level.
- **Memory**: asyncio's TLS protocol allocates a 256 KiB read buffer per connection at creation
  (`SSLProtocol.max_size`) and keeps it for the connection's life: 2,000 idle TLS connections held ~580 MiB,
  and glibc kept most of it after they closed. The buffer is filled and drained in one synchronous step
  (`get_buffer`, `recv_into`, `buffer_updated`) on the one event-loop thread, so every connection of a process
  can share one buffer per thread: same read size, ~33 KiB per idle connection instead of ~290.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import logging
import resource
import threading
import time
from dataclasses import dataclass
from ssl import SSLError
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
import hypercorn.asyncio.tcp_server as tcp_server
from hypercorn.events import Closed, Event, RawData, Updated

log = logging.getLogger("secreg.connections")
FD_RESERVE = 64  # descriptors kept for files, the listening socket and logs when capping by RLIMIT_NOFILE


@dataclass(frozen=True)
class Limits:
    total: int
    per_client: int
    header_timeout: float


class _Tracker:
    """The live connections of this process, in arrival order."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.live: dict[LimitedTCPServer, None] = {}
        self.by_client: dict[str, dict[LimitedTCPServer, None]] = {}
        self.refused = 0
        self._last_report = 0.0

    def admit(self, conn: LimitedTCPServer) -> bool:
        peers = self.by_client.setdefault(conn.client_address, {})
        if len(peers) >= self.limits.per_client and not _shed_oldest_idle(peers):
            return self._refuse(conn, f"{len(peers)} connections from this client (http.limits.perclient)")
        if len(self.live) >= self.limits.total and not _shed_oldest_idle(self.live):
            return self._refuse(conn, f"{len(self.live)} connections in all (http.limits.connections)")
        peers[conn] = None
        self.live[conn] = None
        return True

    def remove(self, conn: LimitedTCPServer) -> None:
        self.live.pop(conn, None)
        peers = self.by_client.get(conn.client_address)
        if peers is not None:
            peers.pop(conn, None)
            if not peers:
                del self.by_client[conn.client_address]

    def _refuse(self, conn: LimitedTCPServer, why: str) -> bool:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_report >= 10:  # an attack is a flood of these: one line per 10 s
            self._last_report = now
            log.warning("refusing connections from %s: %s, all busy (%d refused so far)", conn.client_address,
                        why, self.refused)
        return False


def _shed_oldest_idle(connections: dict[LimitedTCPServer, None]) -> bool:
    idle = [c for c in connections if c.idle and not c.shed]
    if not idle:
        return False
    victim = min(idle, key=lambda c: c.idle_since)
    victim.shed_now()
    return True


_tracker: _Tracker | None = None


class LimitedTCPServer(tcp_server.TCPServer):
    """Hypercorn's connection, counted by `_Tracker` and with a header timeout."""

    client_address: str = "?"
    idle: bool = True
    idle_since: float = 0.0
    shed: bool = False
    _header_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        tracker = _tracker
        peer = self.writer.get_extra_info("peername")
        self.client_address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.idle_since = time.monotonic()
        if tracker is not None and not tracker.admit(self):
            self.writer.transport.abort()
            return
        try:
            await super().run()
        finally:
            self._cancel_header_timer()
            if tracker is not None:
                tracker.remove(self)

    def shed_now(self) -> None:
        """Close this idle connection to make room for a new one."""
        self.shed = True
        log.info("closing an idle connection from %s to admit a new one", self.client_address)
        self.writer.transport.abort()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            self.idle = event.idle
            if event.idle:
                self.idle_since = time.monotonic()
            else:
                self._cancel_header_timer()
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        # Hypercorn's loop (tcp_server.TCPServer._read_data) with one addition: the header timer.
        h11 = self.writer.get_extra_info("ssl_object") is None or (
            self.writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2")
        while not self.reader.at_eof():
            try:
                data = await asyncio.wait_for(self.reader.read(tcp_server.MAX_RECV), self.config.read_timeout)
            except (ConnectionError, OSError, TimeoutError, SSLError):
                break
            else:
                if data and h11 and self.idle and self._header_timer is None and _tracker is not None:
                    self._header_timer = self.loop.call_later(_tracker.limits.header_timeout, self._header_expired)
                await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())

    def _header_expired(self) -> None:
        self._header_timer = None
        if self.idle:
            log.info("closing a connection from %s: request headers incomplete after %.0f s (http.timeouts.header)",
                     self.client_address, _tracker.limits.header_timeout if _tracker else 0)
            self.writer.transport.abort()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


def raise_descriptor_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (Linux starts many services at 1,024); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return int(soft)


def share_tls_read_buffer() -> None:
    """One TLS read buffer per thread (so per event loop: a connection lives on the loop, and so the thread, that
    created it) instead of one per connection (see the module docstring)."""
    protocol: Any = sslproto.SSLProtocol
    if getattr(protocol, "_secreg_shared_buffer", False):
        return
    local = threading.local()
    original_init = protocol.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if getattr(local, "view", None) is None:
            local.buffer = bytearray(protocol.max_size)
            local.view = memoryview(local.buffer)
        self._ssl_buffer = local.buffer
        self._ssl_buffer_view = local.view

    protocol.__init__ = __init__
    protocol._secreg_shared_buffer = True


def install(limits: Limits) -> Limits:
    """Count connections in this worker under `limits` (the total capped by the descriptor limit)."""
    global _tracker
    descriptors = raise_descriptor_limit()
    total = max(1, min(limits.total, descriptors - FD_RESERVE))
    if total < limits.total:
        log.warning("http.limits.connections lowered from %d to %d: the open-file limit is %d", limits.total,
                    total, descriptors)
    limits = Limits(total, min(limits.per_client, total), limits.header_timeout)
    _tracker = _Tracker(limits)
    hypercorn_run.TCPServer = LimitedTCPServer  # type: ignore[attr-defined]
    share_tls_read_buffer()
    return limits
