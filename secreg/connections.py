"""Bounds on connections, below HTTP: how many, from whom, how long a request's headers may take, and how much
memory an idle TLS connection holds. Installed into Hypercorn's asyncio worker by `install(limits, workers)` (from
`secreg.asgi`, in every worker process).

- **Caps**: at most `total` connections, at most `per_client` from one client address. A new connection over a
  cap first sheds the oldest *idle* connection (between requests) of that client, or of anyone for the total
  cap; only when every counted connection is busy is the new one closed at once. One client holding a thousand
  idle sockets therefore cannot lock out the others, and a busy transfer is never cut for an idle one. A trusted
  proxy (`http.trustedproxies`) carries many clients' connections: only the total cap holds for it.
- **Across workers**: the caps are the server's, not each process's. With several workers (`http.workers`), the
  counts live in one shared table (`secreg.conntable`, what nginx's `limit_conn` zone is); a worker that must
  shed asks the others for their oldest idle connection in the cap's scope (a datagram each way over Unix
  sockets in the workers' private directory) and the oldest of all is closed, wherever it is. Admission takes
  a file lock for microseconds, once per connection; nothing is shared per request. Each worker also keeps its
  own descriptor budget (the open-file limit is per process).
- **Header timeout**: once the first byte of a request arrives on an HTTP/1.1 connection, its headers must be
  complete within `header_timeout` seconds (Go's ReadHeaderTimeout); a trickler is closed. Idle keep-alive
  connections are closed after Hypercorn's `keep_alive_timeout`, and at once when the server stops, as Hypercorn
  does, but by a timer: Hypercorn started a task (with a `wait_for` and its own task inside) each time a
  connection fell idle and cancelled it when the next request came, ~7% of a small request's CPU time under
  py-spy. Neither timer is armed per request either: each request moves its connection's deadlines, and one
  timer per kind fires at the earliest and re-arms itself for a later one. Request bodies are bounded by
  `secreg.requestlimits.BodyTimeout` at the ASGI level.
- **Memory**: asyncio's TLS protocol allocates a 256 KiB read buffer per connection at creation
  (`SSLProtocol.max_size`) and keeps it for the connection's life: 2,000 idle TLS connections held ~580 MiB,
  and glibc kept most of it after they closed. The buffer is filled and drained in one synchronous step
  (`get_buffer`, `recv_into`, `buffer_updated`) on the one event-loop thread, so every connection of a process
  can share one buffer per thread: ~33 KiB per idle connection instead of ~290.
- **Read size**: with the buffer shared, a socket read may be larger than asyncio's 256 KiB at no cost per
  connection: TLS_READ_BYTES. A blob push is receive-bound on the event loop, and each socket read travels
  through sslproto, the reader, h11, Hypercorn and the ASGI queue as one piece: 512 KiB reads took a 256 MiB push
  from 1,289 to 767 `recvfrom` and 1,061 to 553 loop wake-ups, the event loop's CPU time from 0.62 to 0.48 s and
  the worker's from 0.89 to 0.74 s (interleaved, 8 rounds, load 10-12). 1 MiB reads saved no more (0.47 s) and
  raised the peak RSS of a 1 GiB push (bench row, auth on, 2 workers) from 138 to 145 MiB; 512 KiB: 138.
  Decrypting stays at asyncio's `max_size` per record read: 1 MiB there as well saved nothing more and took that
  peak (auth off) from ~104 to ~144 MiB. An HTTP/2 connection reads H2_READ_BYTES instead, one transport read's
  worth: its DATA payloads are joined once more by the h2 path (`secreg.hypercorn_h2_receive`), so joining two
  transport reads into one first was a copy of every pushed byte for nothing (a 256 MiB h2 push's server CPU,
  one worker, interleaved, 8 pairs at load ~2: h2load 0.95x, curl 0.99x; with the gathering below and the runs
  of full frames taken by one comparison each, 6 pairs: 0.95x and 0.93x).
- **Paced bodies**: a client that sends a request body slower than it is received (docker pushes each layer as
  it compresses it, one chunk of 32 KiB at a time) made every piece its own socket read, decryption, loop wake-up
  and trip up to the upload's write. After GATHER_AFTER (4) small reads in a row that each had to wait for the
  client, the socket is left unread for 8 ms before the next (`LimitedTCPServer._gather_more`): the pieces gather in the
  kernel and are received as one. A docker push of 5 x 20 MiB: server CPU 1.29 -> 0.89 s. The same holds for a
  stream of an HTTP/2 connection receiving a long body (`secreg.hypercorn_h2_receive.expects_more_body`): a fast
  h2 push whose client paused for a few ms (a busy CPU) went on in lockstep with the server, every 16 KiB frame
  (curl: and its 9-byte tail record) read, parsed and handed to the upload on its own, at half the rate, until
  the push ended or a stall let reads grow again (traced: 6-15 MiB of a 256 MiB push, 750-940 reads of one
  record); the gather breaks that. Other streams of the connection wait for it too, 8 ms at most per gather.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import functools
import ipaddress
import json
import logging
import resource
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from ssl import SSLError
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
import hypercorn.asyncio.tcp_server as tcp_server
from hypercorn.events import Closed, Event, RawData, Updated

from secreg import forwarded
from secreg import hypercorn_h2_receive as h2_receive
from secreg import workers as worker_processes
from secreg.bodyreads import PieceReader, expects_more_body
from secreg.conntable import SharedCounts, TableFull, capacity_for

log = logging.getLogger("secreg.connections")
# A read of a request body smaller than this, which had to wait for the client, counts as a paced one; from the
# GATHER_AFTER-th in a row on, the socket is left unread for GATHER_SECONDS before the next read (`_gather_more`).
# A fast client's body starts with a few such reads too (and one when the machine is busy): 2 in a row made
# ~2 gathers per 256 MiB of the chunked push row, each filled past GATHER_BELOW; docker's have hundreds.
# docker push (5 layers of 20 MiB, fresh image per round, interleaved with the old code, 4 rounds): server CPU
# per push 1.26 s before, 0.96 s gathering for 4 ms, 0.83 s for 8 ms (0.80 s for 16 ms, but a slower push in
# two rounds of four); push time 2.20 -> 1.93 s (README, Performance notes).
GATHER_BELOW = 128 * 1024
GATHER_AFTER = 4
GATHER_SECONDS = 0.008
# A timer may fire this much before its deadline (the loop's clock resolution, uvloop's milliseconds): then it is due.
TIMER_SLACK = 0.002
GATHER_RECEIVE_BUFFER = 4 * 1024 * 1024  # the least SO_RCVBUF a gathering socket is given (`gather_receive_buffer`)
# What an HTTP/2 connection hands h2 per read: one transport read (TLS_READ_BYTES, `secreg.tlstransport.READ_BYTES`).
H2_READ_BYTES = 512 * 1024


def gather_receive_buffer(rmem_max: int, tcp_rmem_max: int) -> int:
    """The SO_RCVBUF `_gather_more` gives a connection's socket, or 0 to leave the socket's own. What a client can
    send while the socket is unread is the receive window, and a new connection's (128 KiB, a 64 KiB window)
    holds a gather to 8 MB/s. But setting SO_RCVBUF also ends the kernel's autotuning of that socket: its window
    stays at what was set, where autotuning would grow it up to tcp_rmem's maximum for a client far away (with
    Debian's net.core.rmem_max of 208 KiB, a 416 KiB buffer: 8 MB/s at a 50 ms round trip). So the buffer is set
    to what autotuning could reach (half of tcp_rmem's maximum: the kernel doubles an SO_RCVBUF), within
    net.core.rmem_max, and only when that is at least GATHER_RECEIVE_BUFFER (8 MiB of buffer, 160 MB/s at 50 ms);
    otherwise the socket keeps autotuning, and `gather_kept_up` stops gathering for a client that fills it."""
    size = min(rmem_max, tcp_rmem_max // 2)
    return size if size >= GATHER_RECEIVE_BUFFER else 0


@functools.cache
def _gather_receive_buffer() -> int:
    try:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        tcp_rmem_max = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 0
    return gather_receive_buffer(rmem_max, tcp_rmem_max)


def gather_kept_up(gathered: int, receive_buffer: int) -> bool:
    """Whether a gather shows a client as fast as the socket lets it be, so that gathering would slow it:
    GATHER_BELOW bytes or more, or a quarter of the socket's receive buffer (half the window the kernel offers
    for it) when that is less."""
    return gathered >= min(GATHER_BELOW, receive_buffer // 4)
FD_RESERVE = 64  # descriptors kept for files, the listening socket and logs when capping by RLIMIT_NOFILE


@dataclass(frozen=True)
class Limits:
    total: int
    per_client: int
    header_timeout: float
    # `http.trustedproxies`: many clients' connections arrive from one of these; only `total` holds for them.
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def per_client_applies(self, client: str) -> bool:
        if not self.exempt:
            return True
        address = forwarded.parse_address(client)  # as the request layer reads it (an IPv4-mapped IPv6 is the IPv4)
        return address is None or not any(address in network for network in self.exempt)


class _Tracker:
    """The live connections of this process, in arrival order, and (with several workers) the server's counts."""

    SHED_ROUNDS = 4  # of offers gathered by one shed (see `_shed`)

    def __init__(self, limits: Limits, local_total: int | None = None, shared: SharedCounts | None = None,
                 peers: _Peers | None = None) -> None:
        self.limits = limits
        self.local_total = limits.total if local_total is None else local_total
        self.shared = shared
        self.peers = peers
        self.live: dict[LimitedTCPServer, None] = {}
        self.by_client: dict[str, dict[LimitedTCPServer, None]] = {}
        self.refused = 0
        self._last_report = 0.0

    async def admit(self, conn: LimitedTCPServer) -> bool:
        if self.shared is None:
            return self._admit_here(conn)
        shared = self.shared
        key = conn.client_key = shared.key(conn.client_address)
        try:
            with shared.locked():
                client, totals = shared.client(key), shared.totals()
                over_client = sum(client) >= self.limits.per_client and self.limits.per_client_applies(
                    conn.client_address)
                over_total = sum(totals) >= self.limits.total
                over_local = len(self.live) >= self.local_total
                # Counted at once, also when over a cap: the place of the idle connection shed below is this
                # one's. (Counted only after the shed, the victim's end freed its place first, and a third
                # connection arriving in between was admitted without a shed: one over the cap.)
                shared.add(key)
            if not (over_client or over_total or over_local):
                self._count(conn)
                return True
            shed = False
            try:
                if over_client:
                    why = f"{sum(client)} connections from this client (http.limits.perclient)"
                    shed = await self._shed(key, [w for w, n in enumerate(client) if n])
                elif over_total:
                    why = f"{sum(totals)} connections in all (http.limits.connections)"
                    shed = await self._shed(None, [w for w, n in enumerate(totals) if n])
                else:
                    why = f"{len(self.live)} connections in this worker (its open-file limit)"
                    shed = await self._shed(None, [shared.index])
            finally:
                if not shed:
                    with shared.locked():
                        shared.remove(key)
            if not shed:
                return self._refuse(conn, why)
        except TableFull:
            return self._refuse(conn, "the connection table is full")
        self._count(conn)
        return True

    def _admit_here(self, conn: LimitedTCPServer) -> bool:
        peers = self.by_client.setdefault(conn.client_address, {})
        if (len(peers) >= self.limits.per_client and self.limits.per_client_applies(conn.client_address)
                and not _shed_oldest_idle(peers)):
            return self._refuse(conn, f"{len(peers)} connections from this client (http.limits.perclient)")
        if len(self.live) >= self.limits.total and not _shed_oldest_idle(self.live):
            return self._refuse(conn, f"{len(self.live)} connections in all (http.limits.connections)")
        self._count(conn)
        return True

    def _count(self, conn: LimitedTCPServer) -> None:
        self.by_client.setdefault(conn.client_address, {})[conn] = None
        self.live[conn] = None
        conn.counted = True

    def oldest_idle(self, key: bytes | None) -> LimitedTCPServer | None:
        """This worker's oldest idle connection of the client `key` (None: of anyone)."""
        idle = [c for c in self.live if c.idle and not c.shed and (key is None or c.client_key == key)]
        return min(idle, key=lambda c: c.idle_since) if idle else None

    async def _shed(self, key: bytes | None, holders: list[int]) -> bool:
        """Close the oldest idle connection in scope among the workers `holders`, wherever it is. The one asked to
        shed does so only if its oldest is still the one it offered: another admission may have taken that one in
        the meantime, and its next oldest may be newer than another worker's. Then the offers are gathered again
        (the last round sheds whatever is oldest by then)."""
        assert self.shared is not None
        here = self.shared.index
        others = [w for w in holders if w != here and self.peers is not None]
        for round_ in range(self.SHED_ROUNDS):
            answers = await asyncio.gather(*(self.peers.ask(w, "oldest", key) for w in others)) if self.peers else []
            offers = [(since, w) for w, since in zip(others, answers, strict=True) if isinstance(since, float)]
            local = self.oldest_idle(key) if here in holders or key is None else None
            if local is not None:
                offers.append((local.idle_since, here))
            if not offers:
                return False
            last = round_ == self.SHED_ROUNDS - 1
            for since, worker in sorted(offers):
                bound = None if last else since
                if worker == here:
                    victim = self.oldest_idle(key)  # still idle after the wait?
                    if victim is not None and (bound is None or victim.idle_since <= bound):
                        victim.shed_now()
                        return True
                elif self.peers is not None and await self.peers.ask(worker, "shed", key, bound) is True:
                    return True
                if not last:
                    break  # taken meanwhile: ask everyone again
        return False

    def remove(self, conn: LimitedTCPServer) -> None:
        self.live.pop(conn, None)
        peers = self.by_client.get(conn.client_address)
        if peers is not None:
            peers.pop(conn, None)
            if not peers:
                del self.by_client[conn.client_address]
        if conn.counted and self.shared is not None:
            with self.shared.locked():
                self.shared.remove(conn.client_key)
        conn.counted = False

    def _refuse(self, conn: LimitedTCPServer, why: str) -> bool:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_report >= 10:  # an attack is a flood of these: one line per 10 s
            self._last_report = now
            log.warning("refusing connections from %s: %s, all busy (%d refused so far)", conn.client_address,
                        why, self.refused)
        return False


class _Peers:
    """The other workers, reached by datagrams on Unix sockets in the workers' private directory: "what is your
    oldest idle connection in this scope" (answered with its idle-since time, a monotonic clock every process
    shares) and "shed it" (answered with whether one was shed)."""

    TIMEOUT = 5.0  # a worker busy for longer does not get asked again: it is skipped

    def __init__(self, directory: Path, index: int) -> None:
        self.directory = directory
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = self._path(index)
        path.unlink(missing_ok=True)  # a crashed predecessor in this seat
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next = 0

    def _path(self, index: int) -> Path:
        return self.directory / f"conn-{index}.sock"

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer the others from this event loop (on the first connection: the loop runs by then)."""
        if self._loop is not loop:
            loop.add_reader(self.sock.fileno(), self._readable)
            self._loop = loop

    async def ask(self, worker: int, op: str, key: bytes | None, since: float | None = None) -> Any:
        """The answer of `worker` to `op` for scope `key` (for "shed": only a connection idle since `since` or
        longer, if given); None when it does not answer in time."""
        loop = asyncio.get_running_loop()
        self.attach(loop)
        self._next += 1
        ident = self._next
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting[ident] = future
        message = {"op": op, "key": key.hex() if key is not None else None, "id": ident, "since": since}
        try:
            self.sock.sendto(json.dumps(message).encode(), str(self._path(worker)))
            return await asyncio.wait_for(future, self.TIMEOUT)
        except (OSError, TimeoutError):  # not started yet, restarting, or busy
            return None
        finally:
            self._waiting.pop(ident, None)

    def _readable(self) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if "reply" in message:
                future = self._waiting.get(message["reply"])
                if future is not None and not future.done():
                    future.set_result(message.get("value"))
                continue
            tracker = _tracker
            key = bytes.fromhex(message["key"]) if message.get("key") else None
            victim = tracker.oldest_idle(key) if tracker is not None else None
            value: Any = None
            if message.get("op") == "oldest":
                value = victim.idle_since if victim is not None else None
            elif message.get("op") == "shed":
                since = message.get("since")
                if victim is not None and (not isinstance(since, float) or victim.idle_since <= since):
                    victim.shed_now()
                    value = True
                else:
                    value = False
            try:
                self.sock.sendto(json.dumps({"reply": message.get("id"), "value": value}).encode(), sender)
            except OSError:
                pass


def _shed_oldest_idle(connections: dict[LimitedTCPServer, None]) -> bool:
    idle = [c for c in connections if c.idle and not c.shed]
    if not idle:
        return False
    victim = min(idle, key=lambda c: c.idle_since)
    victim.shed_now()
    return True


_tracker: _Tracker | None = None


class _IdleTimer:
    """Stands in for Hypercorn's idle task (`TCPServer.idle_task`). `TCPServer.run` starts that task when a
    connection opens, and only `protocol_send` (replaced here by `_watch_idle`) stopped it when a request began: the
    task kept running and closed every connection `keep_alive_timeout` after it opened, mid-request or not (a push
    longer than that was cut: the client saw "Server disconnected"). It also kept the connection's task group, so
    `run`, open until then: a client that left at once stayed counted against the caps for that long (Hypercorn's
    h11 `handle(Closed())` without a stream sends no `Closed`, so `_close` never stopped the task). Here the start
    is `_watch_idle`'s timer instead; `_close` cancels it."""

    def __init__(self, connection: LimitedTCPServer) -> None:
        self._connection = connection

    async def restart(self, task_group: Any, action: Any) -> None:
        self._connection._watch_idle(True)

    async def stop(self) -> None:
        pass


class LimitedTCPServer(tcp_server.TCPServer):
    """Hypercorn's connection, counted by `_Tracker` and with a header timeout."""

    client_address: str = "?"
    client_key: bytes = b""
    counted: bool = False
    idle: bool = True
    idle_since: float = 0.0
    shed: bool = False
    _header_timer: asyncio.TimerHandle | None = None
    _idle_timer: asyncio.TimerHandle | None = None
    # Loop times the timers above check when they fire (`_header_due`, `_idle_due`); None: nothing is due.
    _header_deadline: float | None = None
    _idle_deadline: float | None = None
    _gather_buffer = False  # whether the socket's receive buffer was set for gathering (`_gather_more`)

    async def run(self) -> None:
        tracker = _tracker
        peer = self.writer.get_extra_info("peername")
        self.client_address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.idle_since = time.monotonic()
        if tracker is not None and tracker.peers is not None:
            tracker.peers.attach(self.loop)
        if tracker is not None and not await tracker.admit(self):
            self.writer.transport.abort()
            return
        self.idle_task = _IdleTimer(self)  # type: ignore[assignment]
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
                self._header_deadline = None  # the headers are in: an armed header timer finds nothing due
            self._watch_idle(event.idle)  # in place of Hypercorn's idle task (see the module docstring)
            return
        await super().protocol_send(event)

    def _watch_idle(self, idle: bool) -> None:
        # A timer armed and cancelled per request was ~2% of a small request's CPU time: the deadline moves
        # instead, and a timer armed once fires at the earliest deadline and re-arms itself for a later one.
        idle_set = _idle_connections(self.context, self.loop)
        if not idle:
            self._idle_deadline = None
            idle_set.pop(self, None)
        elif self.context.terminated.is_set():
            self._idle_expired()
        else:
            idle_set[self] = None
            self._idle_deadline = deadline = self.loop.time() + self.config.keep_alive_timeout
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_at(deadline, self._idle_due)

    def _idle_due(self) -> None:
        self._idle_timer = None
        deadline = self._idle_deadline
        if deadline is None:
            return  # in use: its next idle spell arms the timer again
        if deadline > self.loop.time() + TIMER_SLACK:
            self._idle_timer = self.loop.call_at(deadline, self._idle_due)  # used and idle again since
        else:
            self._idle_expired()

    def _idle_expired(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._idle_deadline = None
        _idle_connections(self.context, self.loop).pop(self, None)
        task = self.loop.create_task(self._initiate_server_close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        _idle_connections(self.context, self.loop).pop(self, None)
        await super()._close()

    async def _read_data(self) -> None:
        # Hypercorn's loop (tcp_server.TCPServer._read_data) with three additions: the header timer, a reader that
        # hands on what the transport delivered without copying it (secreg.bodyreads; for h2, one transport read
        # at a time: H2_READ_BYTES), and paced request bodies gathered into fewer reads (`_gather_more`).
        PieceReader.adopt(self.reader)
        reader = self.reader
        assert isinstance(reader, PieceReader)
        h11 = self.writer.get_extra_info("ssl_object") is None or (
            self.writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2")
        expects_more = expects_more_body if h11 else h2_receive.expects_more_body
        read_size = tcp_server.MAX_RECV if h11 else H2_READ_BYTES
        slow_reads = 0  # small reads in a row, in a long request body, that each waited for the client
        while not self.reader.at_eof():
            waited = not reader.buffered()
            try:
                if self.config.read_timeout is None:  # (the default) no wait_for coroutine per read
                    data = await self.reader.read(read_size)
                else:
                    data = await asyncio.wait_for(self.reader.read(read_size), self.config.read_timeout)
            except (ConnectionError, OSError, TimeoutError, SSLError):
                break
            else:
                if data and h11 and self.idle and self._header_deadline is None and _tracker is not None:
                    self._header_deadline = deadline = self.loop.time() + _tracker.limits.header_timeout
                    if self._header_timer is None:  # else it fires at an earlier deadline and re-arms for this
                        self._header_timer = self.loop.call_at(deadline, self._header_due)
                if len(data) >= GATHER_BELOW or not waited or self.idle:
                    slow_reads = 0
                elif expects_more(self.protocol, data, GATHER_BELOW):
                    slow_reads += 1
                    if slow_reads >= GATHER_AFTER:
                        data = await self._gather_more(data)
                        if gather_kept_up(len(data), self._receive_buffer()):
                            slow_reads = 0  # the client kept up with a gather: read as it comes until it is slow again
                else:
                    slow_reads = 0
                await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())

    async def _gather_more(self, data: bytes) -> bytes:
        """`data` is a small piece of a long request body, and the client sends slower than the body is received:
        the read before this one was small too and had to wait (docker sends a layer as fast as it compresses it,
        in chunks of 32 KiB). Each piece read as it comes costs a wake-up of the event loop, a socket read, a
        decryption and the whole path up to the upload's write; with the socket left unread for GATHER_SECONDS
        the next pieces gather in the kernel and take that path once. The client is not slowed: it was being
        waited for, and it keeps sending into the socket's buffer meanwhile; the body ends at most that much later.
        """
        # Under TLS, the socket's own transport: pausing asyncio's TLS transport only stops decryption, the socket
        # would still be read (and the loop woken) for every piece.
        transport: Any = self.writer.transport
        raw: Any = getattr(getattr(transport, "_ssl_protocol", None), "_transport", transport)
        if raw is None or not raw.is_reading():
            return data  # paused already (flow control): nothing to gather
        if not self._gather_buffer:
            self._gather_buffer = True
            # What a client can send while the socket is unread is the receive window (`gather_receive_buffer`).
            sock = self.writer.get_extra_info("socket")
            size = _gather_receive_buffer()
            try:
                if sock is not None and size and sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            except OSError:
                pass
        raw.pause_reading()
        try:
            await asyncio.sleep(GATHER_SECONDS)
        finally:
            raw.resume_reading()
        read_queued = getattr(raw, "read_queued", None)
        if read_queued is not None:  # secreg.tlstransport: read at once what gathered
            read_queued()
        try:
            async with asyncio.timeout(GATHER_SECONDS):  # normally at once: what gathered waits in the socket
                return data + await self.reader.read(tcp_server.MAX_RECV)
        except (ConnectionError, OSError, TimeoutError, SSLError):
            return data  # nothing came, or the connection broke: the loop's next read finds out

    def _receive_buffer(self) -> int:
        """The socket's receive buffer now (autotuned, or as `_gather_more` set it); 0 when it cannot be read."""
        sock = self.writer.get_extra_info("socket")
        try:
            return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) if sock is not None else 0
        except OSError:
            return 0

    def _header_due(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline is None:
            return  # the headers came in time: the next request's first bytes arm the timer again
        if deadline > self.loop.time() + TIMER_SLACK:
            self._header_timer = self.loop.call_at(deadline, self._header_due)
            return
        self._header_deadline = None
        if self.idle:
            log.info("closing a connection from %s: request headers incomplete after %.0f s (http.timeouts.header)",
                     self.client_address, _tracker.limits.header_timeout if _tracker else 0)
            self.writer.transport.abort()

    def _cancel_header_timer(self) -> None:
        self._header_deadline = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


_closing: set[asyncio.Task[None]] = set()  # idle connections being closed (a task needs a reference)
# Per Hypercorn worker context (one per serving loop): the idle connections, and the task that closes them all
# once the server stops (its `terminated` event, which Hypercorn's idle tasks waited on).
_idle_by_context: dict[int, tuple[Any, dict[LimitedTCPServer, None], asyncio.Task[None]]] = {}


def _idle_connections(context: Any, loop: asyncio.AbstractEventLoop) -> dict[LimitedTCPServer, None]:
    entry = _idle_by_context.get(id(context))
    if entry is None or entry[0] is not context:
        idle: dict[LimitedTCPServer, None] = {}

        async def close_idle_when_stopped() -> None:
            try:
                await context.terminated.wait()
                for conn in list(idle):
                    conn._idle_expired()
            finally:
                _idle_by_context.pop(id(context), None)

        entry = (context, idle, loop.create_task(close_idle_when_stopped()))
        _idle_by_context[id(context)] = entry
    return entry[1]


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


TLS_READ_BYTES = 512 * 1024


def share_tls_read_buffer() -> None:
    """One TLS read buffer of TLS_READ_BYTES per thread (so per event loop: a connection lives on the loop, and so
    the thread, that created it) instead of one of 256 KiB per connection (see the module docstring)."""
    protocol: Any = sslproto.SSLProtocol
    if getattr(protocol, "_secreg_shared_buffer", False):
        return
    local = threading.local()
    original_init = protocol.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if getattr(local, "view", None) is None:
            local.buffer = bytearray(TLS_READ_BYTES)
            local.view = memoryview(local.buffer)
        self._ssl_buffer = local.buffer
        self._ssl_buffer_view = local.view  # `get_buffer` hands the whole buffer to `recv_into`

    protocol.__init__ = __init__
    protocol._secreg_shared_buffer = True


SHARED_FILE = "connections.table"


def install(limits: Limits, workers: int = 1) -> Limits:
    """Count connections under `limits`: in this process alone with one worker, else in the table the `workers`
    processes of this server share (each one's own total also capped by its descriptor limit)."""
    global _tracker
    descriptors = raise_descriptor_limit()
    local_total = max(1, min(limits.total, descriptors - FD_RESERVE))
    directory = worker_processes.shared_directory()
    if workers <= 1 or directory is None:
        if local_total < limits.total:
            log.warning("http.limits.connections lowered from %d to %d: the open-file limit is %d", limits.total,
                        local_total, descriptors)
        limits = replace(limits, total=local_total, per_client=min(limits.per_client, local_total))
        _tracker = _Tracker(limits)
    else:
        index = worker_processes.index()
        shared = SharedCounts(directory / SHARED_FILE, workers, capacity_for(limits.total), index)
        limits = replace(limits, per_client=min(limits.per_client, limits.total))
        _tracker = _Tracker(limits, local_total, shared, _Peers(directory, index))
    hypercorn_run.TCPServer = LimitedTCPServer  # type: ignore[attr-defined]
    share_tls_read_buffer()
    return limits
