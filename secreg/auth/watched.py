"""A file parsed into a value and re-read when it changes, and read-modify-write of such a file under a lock:
what the user, group and policy files share. Nothing here knows what the files hold."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from secreg.files import atomic_write

__all__ = ["WatchedFile", "locked", "read_locked_edit"]

log = logging.getLogger("secreg.auth")

T = TypeVar("T")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `<path>.lock` (a sidecar: the data file itself is replaced on write)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_locked_edit(path: Path, edit: Callable[[bytes], tuple[bytes, T]]) -> T:
    """Read-modify-write `path` under its lock; `edit(old) -> (new, result)`. A missing file reads as b""."""
    if not path.parent.is_dir():
        new, result = edit(b"")
        if new:  # an edit that writes something needs the directory; one that changes nothing does not
            raise FileNotFoundError(f"directory {path.parent} does not exist")
        return result
    with locked(path):
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = b""
        new, result = edit(old)
        if new != old:
            atomic_write(path, new)
    return result


@dataclass
class WatchedFile(Generic[T]):
    """A file parsed into a value, parsed again when its (inode, size, mtime) changes.

    `parse(None)` is called for a missing file. The first load raises on a parse error; later ones log
    the error and keep the last good value. By default every `get` stats the file (a microsecond), so once
    a change is on disk no caller sees the old value: a caller that finds the file changed while another
    thread is re-reading it waits for that reload instead of taking the previous value (a login with a
    password `secreg user passwd` just replaced must fail). `interval` > 0 stats at most that often.
    """

    path: Path
    parse: Callable[[bytes | None], T]
    interval: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _value: T = field(init=False)
    _signature: object = field(init=False, default=None)
    _checked: float = field(init=False, default=float("-inf"))
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._value = self._load(initial=True)

    def get(self) -> T:
        if self.interval > 0:
            now = self.clock()
            if now - self._checked < self.interval:
                return self._value
            self._checked = now
        if self._stat() == self._signature:
            return self._value
        with self._lock:  # every caller that saw the change waits for the one reload
            self._value = self._load(initial=False)
            return self._value

    def _stat(self) -> object:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError:
            return "unreadable"  # _load reports it
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def invalidate(self) -> None:
        """Check the file on the next `get` (after this process wrote it)."""
        self._checked = float("-inf")

    def _load(self, *, initial: bool) -> T:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                signature: object = (st.st_ino, st.st_size, st.st_mtime_ns)
                if signature == self._signature and not initial:
                    return self._value
                data: bytes | None = fh.read()
        except FileNotFoundError:
            signature, data = None, None
            if signature == self._signature and not initial:
                return self._value
        except OSError as exc:  # unreadable (permissions, a directory...): like a parse error
            if initial:
                raise ValueError(f"{self.path}: cannot read: {exc.strerror}") from None
            log.error("%s: cannot read: %s; keeping the previous version", self.path, exc.strerror)
            return self._value
        try:
            value = self.parse(data)
        except (ValueError, UnicodeDecodeError) as exc:
            if initial:
                raise
            log.error("%s: %s; keeping the previous version", self.path, exc)
            self._signature = signature
            return self._value
        if not initial:
            log.info("%s: reloaded", self.path)
        self._signature = signature
        return value
