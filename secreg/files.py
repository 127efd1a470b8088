"""Durable file writes, shared by storage, certificates and auth files: readers see the old file or the
whole new one, never a part, and a crash cannot lose the rename."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in `directory` durable (without it a crash may undo the rename)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: str) -> list[str]:
    """`os.makedirs(directory, exist_ok=True)`, returning the directories that gained an entry: the parent of
    each directory created here. Until those are fsynced, a crash of the machine may lose the new directories,
    and with them whatever was renamed into them, however durably."""
    created: list[str] = []
    current = directory
    while current and not os.path.isdir(current):
        created.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if not created:
        return []
    os.makedirs(directory, exist_ok=True)
    return list(dict.fromkeys(os.path.dirname(path) or "." for path in created))


def fsync_dirs(directories: Sequence[str]) -> None:
    """`fsync_dir` of each, side by side (one wait for the disk)."""
    _fsync_all([partial(fsync_dir, directory) for directory in directories])


def atomic_write(path: str | Path, data: bytes, mode: int = 0o600, temp_suffix: str = ".tmp", *,
                 durable: bool = True) -> None:
    """Temporary file beside `path` (created with `mode` from the start, so a private key is never readable
    by others, even briefly), write, fsync, rename over `path`, fsync the directory. `durable=False`: no
    fsyncs (readers still see the old file or the whole new one; a crash of the machine may lose the rename
    or leave the file empty)."""
    target = os.fspath(path)
    temp = f"{target}.{uuid.uuid4().hex}{temp_suffix}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    os.replace(temp, target)
    if durable:
        fsync_dir(os.path.dirname(target) or ".")


# Threads that wait for fsyncs side by side: the disk (or the journal) serves waits that arrive together with one
# flush, where one after the other each costs a flush of its own (~1-2 ms here, several under load). Created
# when first needed in each process (a forked worker inherits no threads).
_SYNC_THREADS = 8
_sync_pool: tuple[int, ThreadPoolExecutor] | None = None
_sync_pool_lock = threading.Lock()


def _fsync_all(calls: list[Callable[[], None]]) -> None:
    """Run every call (each an fsync), side by side when there are several; an error is raised once all have
    ended."""
    global _sync_pool
    if len(calls) <= 1:
        for call in calls:
            call()
        return
    with _sync_pool_lock:
        if _sync_pool is None or _sync_pool[0] != os.getpid():
            _sync_pool = (os.getpid(), ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="secreg-fsync"))
        pool = _sync_pool[1]
    futures = [pool.submit(call) for call in calls[1:]]
    try:
        calls[0]()  # the first one here: one thread hop fewer
    finally:
        wait(futures)
    for future in futures:
        future.result()


def atomic_write_stages(stages: Sequence[Sequence[tuple[str, bytes]]], mode: int = 0o600,
                        temp_suffix: str = ".tmp", new_directories: Sequence[str] = ()) -> None:
    """Several `atomic_write`s (durable) in `stages`: no file of a stage appears before every file of the
    stages before it is on disk, under its name, for good; the files of one stage appear in the order given.
    Every temporary file is written and fsynced first (side by side), then each stage is renamed into place and
    its directories fsynced (side by side): one wait for the disk for the data and one per stage, instead of
    two per file. Parent directories must exist; `new_directories` (directories that gained an entry when
    they were made: `make_dirs`) are fsynced with the temporary files, before any rename. A failure removes the
    temporary files not renamed yet."""
    temps: list[tuple[str, str]] = []  # (temporary, target), in stage order
    fds: list[int] = []
    renamed = 0
    try:
        for stage in stages:
            for target, data in stage:
                temp = f"{target}.{uuid.uuid4().hex}{temp_suffix}"
                fds.append(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode))
                temps.append((temp, target))
                os.fchmod(fds[-1], mode)  # the umask may have narrowed it
                view = memoryview(data)
                while view:
                    view = view[os.write(fds[-1], view):]
        syncs: list[Callable[[], None]] = [partial(os.fsync, fd) for fd in fds]
        _fsync_all(syncs + [partial(fsync_dir, directory) for directory in new_directories])
        while fds:
            os.close(fds.pop())
        for stage in stages:
            directories: dict[str, None] = {}
            for temp, target in temps[renamed:renamed + len(stage)]:
                os.replace(temp, target)
                renamed += 1
                directories[os.path.dirname(target) or "."] = None
            _fsync_all([partial(fsync_dir, directory) for directory in directories])
    except BaseException:
        for fd in fds:
            os.close(fd)
        for temp, _ in temps[renamed:]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        raise
