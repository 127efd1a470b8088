"""Durable file writes, shared by storage, certificates and auth files: readers see the old file or the
whole new one, never a part, and a crash cannot lose the rename."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in `directory` durable (without it a crash may undo the rename)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
