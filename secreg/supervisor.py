"""Serving with N worker processes where the serving process is worker 0.

Hypercorn's own multi-worker mode keeps a parent that only supervises (43 MiB of RSS here with secreg's
imports) next to N spawned workers (~51 MiB each). With one worker per CPU (`http.workers: auto`), that
parent alone would put a 2-core machine over the memory budget of a 1 GiB push. Here the process that ran
`secreg serve` serves too and spawns N-1 Hypercorn workers, each on listening sockets of its own seat:

- every seat has its own listening socket per address, all bound with `SO_REUSEPORT` (nginx's `reuseport`), so
  the kernel spreads new connections over the seats by a hash of the client's address and port. On one shared
  socket, asyncio's accept loop takes up to 100 queued connections per wake-up: the 32 a client opens at once
  went to one worker in every fourth wrk run here, with the other idle;
- the serving process opens and listens on every seat's sockets and keeps them open, so a worker started again
  takes over its seat's socket: connections queued while it was dead (the kernel keeps hashing to it; a restart
  takes 1-2 s) wait in the backlog and are served, not reset;
- a spawned worker dies with its parent (`PR_SET_PDEATHSIG`), so no worker outlives a killed server;
- a worker that exits while the server is up is started again (at most once a second), with a warning;
- SIGTERM or SIGINT to the server stops its own worker gracefully (Hypercorn's handler), then the others.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from hypercorn.config import Sockets

from secreg.workers import INDEX_ENV, SOCKETS_ENV

log = logging.getLogger("secreg.serve")
_RESPAWN_INTERVAL = 1.0


def worker_function(config: Any) -> Any:
    if config.worker_class == "uvloop":
        from hypercorn.asyncio.run import uvloop_worker

        return uvloop_worker
    from hypercorn.asyncio.run import asyncio_worker

    return asyncio_worker


class _Workers:
    """The spawned workers 1..N-1 (plain subprocesses: multiprocessing's spawn would add a resource-tracker
    process of ~13 MiB) and the thread that starts a dead one again. `seats[i]` are worker i+1's sockets."""

    def __init__(self, seats: list[Sockets]) -> None:
        self._seats = seats
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.processes: list[subprocess.Popen[bytes]] = [self._start(seat) for seat in range(1, len(seats) + 1)]
        self._thread = threading.Thread(target=self._watch, name="secreg-workers", daemon=True)
        self._thread.start()

    def _start(self, seat: int) -> subprocess.Popen[bytes]:
        sockets = self._seats[seat - 1]
        secure = [sock.fileno() for sock in sockets.secure_sockets]
        insecure = [sock.fileno() for sock in sockets.insecure_sockets]
        environment = dict(os.environ)
        environment[INDEX_ENV] = str(seat)
        environment[SOCKETS_ENV] = json.dumps({"secure": secure, "insecure": insecure})
        return subprocess.Popen([sys.executable, "-m", "secreg.cli.worker"], env=environment,
                                pass_fds=[*secure, *insecure], stdin=subprocess.DEVNULL)

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for index, process in enumerate(self.processes):
                    if process.poll() is None:
                        continue
                    log.warning("worker process %s exited with %s; starting another", process.pid,
                                process.returncode)
                    if self._stopping.wait(_RESPAWN_INTERVAL):
                        return
                    self.processes[index] = self._start(index + 1)

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._thread.join()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # SIGTERM: Hypercorn's graceful shutdown in that worker
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve(config: Any, workers: int) -> int:
    """Serve `config` (a Hypercorn Config with `application_path` set) with `workers` processes in all. The
    spawned ones rebuild the same config from the environment `secreg serve` prepared (see `secreg.asgi`)."""
    seats = seat_sockets(config, workers)
    spawned = _Workers(seats[1:]) if workers > 1 else None
    try:
        worker_function(config)(config=config, sockets=seats[0])
    finally:
        if spawned is not None:
            spawned.stop(timeout=float(config.graceful_timeout) + 5.0)
        for sockets in seats:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                sock.close()
    return 0


def seat_sockets(config: Any, workers: int) -> list[Sockets]:
    """The listening sockets of each of `workers` seats: Hypercorn's own for one worker; for several, one socket
    per address and seat with `SO_REUSEPORT`, listening already (connections to a seat whose worker is still
    starting wait for it). The first seat's sockets are Hypercorn's too (it parses the bind addresses, and sets
    `SO_REUSEPORT` when told of more than one worker); every other seat binds the address each of those got
    (with port 0, the port the first seat got)."""
    if workers <= 1:
        return [config.create_sockets()]
    reusing = copy.copy(config)
    reusing.workers = workers
    first = reusing.create_sockets()
    seats = [first]
    try:
        groups = [first.secure_sockets, first.insecure_sockets]
        for sock in [*groups[0], *groups[1]]:
            _check_free(sock)
            sock.listen(config.backlog)
        for _ in range(workers - 1):
            made = [[_listening(sock.family, sock.getsockname(), config.backlog) for sock in group]
                    for group in groups]
            seats.append(Sockets(secure_sockets=made[0], insecure_sockets=made[1], quic_sockets=[]))
    except BaseException:
        for sockets in seats:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
                sock.close()
        raise
    return seats


def _check_free(sock: socket.socket) -> None:
    """EADDRINUSE when anything listens on the address `sock` is bound to (not listening yet): with SO_REUSEPORT
    alone, a second server of the same user would join the first one's port and take half its connections
    instead of failing."""
    probe = socket.socket(sock.family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sock.getsockname())
    finally:
        probe.close()


def _listening(family: int, address: Any, backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock
