"""Claim files: which of the worker processes sharing a staging directory does one piece of upstream work.

A claim is a file, `<staging>/<key>.claim`; the process holding its flock owns the work and appends lines
saying how it goes; the others follow those lines. The kernel drops a dead process's flock, so a claim that
nobody holds and that has no outcome line is a dead owner's. Used for blob fetches (`secreg.proxy.fetch`)
and for manifests and tag lists (`secreg.proxy.flight`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class Claim:
    """Who does one piece of work among the processes sharing a staging directory: the one holding the flock
    of the claim file. The owner appends newline-terminated lines as the work goes (a blob fetch: `fetch <id>
    <pid>`, `size <n>` (or `size -`), then `verified`, `committed` or `failed <0|1 not found> <reason>`); then
    it removes the file and lets go. Others read the complete lines (a half-written last one is ignored)."""

    def __init__(self, path: str, fd: int, owned: bool) -> None:
        self.path = path
        self.fd = fd
        self.owned = owned

    @classmethod
    def take(cls, path: str) -> Claim:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return cls(path, fd, owned=False)
            except BaseException:
                os.close(fd)
                raise
            try:
                current: int | None = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                return cls(path, fd, owned=True)
            os.close(fd)  # its owner removed it between our open and our lock: a new claim, from the start

    def lines(self) -> dict[str, str]:
        """The complete lines so far, by their first word."""
        data = os.pread(self.fd, max(os.fstat(self.fd).st_size, 64 * 1024), 0).decode("utf-8", "replace")
        found: dict[str, str] = {}
        for line in data.split("\n")[:-1]:
            word, _, rest = line.partition(" ")
            found[word] = rest
        return found

    def append(self, word: str, rest: str = "") -> None:
        line = f"{word} {' '.join(rest.split())}".rstrip() + "\n"  # one line, whatever the reason says
        os.write(self.fd, line.encode())

    def append_verbatim(self, word: str, rest: str) -> None:
        """One line with `rest` as it is (a JSON document: no newline in it)."""
        if "\n" in rest:
            raise ValueError("a claim line cannot hold a newline")
        data = f"{word} {rest}\n".encode()
        while data:  # one O_APPEND write in practice; a reader ignores the line until its newline is there
            data = data[os.write(self.fd, data):]

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)  # a dead owner's lines (its staging directory is gone already)

    def owner_alive(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False

    def release(self) -> None:
        """The owner's end: the path goes first, so nobody new follows finished work."""
        with contextlib.suppress(FileNotFoundError):
            if self.owned:
                os.unlink(self.path)
        os.close(self.fd)
