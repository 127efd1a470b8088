"""State the Hypercorn worker processes of one `secreg serve` share (login rate limits, metrics): a private
directory, created by the serving parent before the workers start and named to them in the environment (they
are spawned, not forked). With one worker there is none and everything stays in memory."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

ENV = "_SECREG_SHARED_DIR"
SOCKETS_ENV = "_SECREG_WORKER_SOCKETS"  # set in workers 1..N-1 (secreg.supervisor): the inherited sockets
INDEX_ENV = "_SECREG_WORKER_INDEX"  # set in workers 1..N-1: the seat a worker takes (a restarted one keeps it)


PREFIX = "secreg-workers-"
_LOCK = "server.lock"  # flock'd by the serving process while it lives: a directory nobody locks is a dead one's
_held: list[int] = []


def prepare(workers: int) -> Path | None:
    """For `workers` > 1: a new 0700 directory in the temp directory, removed when `secreg serve` exits
    (`remove`, also at exit). One a killed server left (SIGKILL gives it no chance) is removed by the next
    multi-worker start of the same user: it is the one whose lock file nobody holds."""
    if workers <= 1:
        os.environ.pop(ENV, None)
        return None
    drop_abandoned()
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _held.append(fd)
    os.environ[ENV] = str(directory)
    atexit.register(remove, directory)
    return directory


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def drop_abandoned() -> None:
    """Remove this user's worker directories in the temp directory whose server is gone (none holds the lock,
    and the directory is older than a server takes to lock it)."""
    base = Path(tempfile.gettempdir())
    for entry in base.glob(f"{PREFIX}*"):
        try:
            info = entry.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or time.time() - info.st_mtime < 10:
                continue
            fd = os.open(entry / _LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            remove(entry)  # half-made, or an older version's
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its server is alive
        finally:
            os.close(fd)
        remove(entry)


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
