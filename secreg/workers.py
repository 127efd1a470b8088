"""State the Hypercorn worker processes of one `secreg serve` share (login rate limits, metrics): a private
directory, created by the serving parent before the workers start and named to them in the environment (they
are spawned, not forked). With one worker there is none and everything stays in memory."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "_SECREG_SHARED_DIR"
SOCKETS_ENV = "_SECREG_WORKER_SOCKETS"  # set in workers 1..N-1 (secreg.supervisor): the inherited sockets
INDEX_ENV = "_SECREG_WORKER_INDEX"  # set in workers 1..N-1: the seat a worker takes (a restarted one keeps it)


def prepare(workers: int) -> Path | None:
    """For `workers` > 1: a new 0700 directory, removed when `secreg serve` exits."""
    if workers <= 1:
        os.environ.pop(ENV, None)
        return None
    directory = Path(tempfile.mkdtemp(prefix="secreg-workers-"))
    os.environ[ENV] = str(directory)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def shared_directory() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def spawned() -> bool:
    """True in a worker `secreg serve` spawned (not in the serving process itself, worker 0). Events that
    describe the server rather than a request (the policy file loaded) are logged by worker 0 alone."""
    return bool(os.environ.get(SOCKETS_ENV))


def index() -> int:
    """This process's worker number: 0 for the serving process, 1..N-1 for the ones it spawned."""
    return int(os.environ.get(INDEX_ENV) or 0) if spawned() else 0
