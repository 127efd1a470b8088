"""Serving with N worker processes where the serving process is worker 0.

Hypercorn's own multi-worker mode keeps a parent that only supervises (43 MiB of RSS here with secreg's
imports) next to N spawned workers (~51 MiB each). With one worker per CPU (`http.workers: auto`), that
parent alone would put a 2-core machine over the memory budget of a 1 GiB push. Here the process that ran
`secreg serve` serves too and spawns N-1 Hypercorn workers on the same listening sockets:

- a spawned worker dies with its parent (`PR_SET_PDEATHSIG`), so no worker outlives a killed server;
- a worker that exits while the server is up is started again (at most once a second), with a warning;
- SIGTERM or SIGINT to the server stops its own worker gracefully (Hypercorn's handler), then the others.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

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
    process of ~13 MiB) and the thread that starts a dead one again."""

    def __init__(self, sockets: Any, count: int) -> None:
        self._secure = [sock.fileno() for sock in sockets.secure_sockets]
        self._insecure = [sock.fileno() for sock in sockets.insecure_sockets]
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.processes: list[subprocess.Popen[bytes]] = [self._start(seat) for seat in range(1, count + 1)]
        self._thread = threading.Thread(target=self._watch, name="secreg-workers", daemon=True)
        self._thread.start()

    def _start(self, seat: int) -> subprocess.Popen[bytes]:
        environment = dict(os.environ)
        environment[INDEX_ENV] = str(seat)
        environment[SOCKETS_ENV] = json.dumps({"secure": self._secure, "insecure": self._insecure})
        return subprocess.Popen([sys.executable, "-m", "secreg.cli.worker"], env=environment,
                                pass_fds=[*self._secure, *self._insecure], stdin=subprocess.DEVNULL)

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
    sockets = config.create_sockets()
    spawned = _Workers(sockets, workers - 1) if workers > 1 else None
    try:
        worker_function(config)(config=config, sockets=sockets)
    finally:
        if spawned is not None:
            spawned.stop(timeout=float(config.graceful_timeout) + 5.0)
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()
    return 0
