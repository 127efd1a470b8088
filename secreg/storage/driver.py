"""The storage-driver interface: moves bytes at paths, knows nothing of manifests or repositories.

Paths are `/`-separated strings relative to the driver's root, always built by `secreg.storage.layout`
from validated names and digests. A driver for an object store implements the same protocol.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol


class StorageError(Exception):
    """Base of the driver's errors."""


class PathNotFound(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class InvalidPath(StorageError):
    """A path that would leave the storage root; never reached with layout-built paths."""


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    mtime: float
    is_dir: bool


@dataclass(frozen=True)
class IncompleteWrite:
    """A write begun and never finished that the storage keeps apart from its files (an object store's
    multipart upload): invisible to reads and listings, yet it holds storage until it is aborted."""

    path: str
    write_id: str
    last_written: float  # when its last byte arrived (when it began, if none did)
    size: int


class AppendWriter(Protocol):
    """An open upload file. `size` counts every byte appended; all of them are stored after `flush` or `close`
    (durably, and readable from any process that opens the path). `sync` finishes the file: its bytes become
    durable and readable with `open_read`/`read_bytes` (an object store completes its multipart upload here),
    and nothing more is appended. `truncate` may only go back to the size at open (drop what this writer
    appended) or within bytes not yet handed to an object store. `try_lock` excludes other writers of the
    path, in any process that reaches the same storage."""

    size: int

    def write(self, data: bytes | bytearray | memoryview, observe: Callable[[memoryview], object] | None = None
              ) -> None: ...
    def write_pieces(self, pieces: Sequence[bytes | bytearray | memoryview],
                     observe: Callable[[memoryview], object] | None = None) -> None:
        """Append the pieces in order; `observe` sees every appended byte once, in order, before it is written."""
        ...
    def flush(self) -> None: ...
    def sync(self) -> None: ...
    def truncate(self, size: int) -> None: ...
    def try_lock(self) -> bool: ...
    def close(self) -> None: ...


class StagedWriter(Protocol):
    """A file written whole: nothing is visible at its path until `sync` publishes every byte at once; `abort`
    (or a crash) leaves nothing. `observe` sees every byte once, in order, before it is stored."""

    size: int

    def write_pieces(self, pieces: Sequence[bytes | bytearray | memoryview],
                     observe: Callable[[memoryview], object] | None = None) -> None: ...
    def flush(self) -> None: ...
    def sync(self) -> None: ...
    def abort(self) -> None: ...


class StorageDriver(Protocol):
    """Path-based byte storage. Every mutation of a single file is atomic: readers see old or new, never half."""

    def stat(self, path: str) -> FileInfo:
        """Raises PathNotFound."""
        ...

    def exists(self, path: str) -> bool: ...

    def read_bytes(self, path: str) -> bytes:
        """Whole small file (links, manifests). Raises PathNotFound."""
        ...

    def write_bytes(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Atomically create or replace a small file (temp, fsync, rename). `durable=False`: without waiting
        for the disk where the driver can (no fsyncs): a crash of the machine may lose the file or leave it
        empty, so only for what a reader can do without (an upload's start time: the data's mtime stands in)."""
        ...

    def write_files(self, stages: Sequence[Sequence[tuple[str, bytes]]]) -> None:
        """`write_bytes` (durable) of several small files, stage by stage: no file of a stage appears before
        every file of the stages before it is stored for good; within a stage, in the order given. For a chain
        where each write must be safe before the next shows (a manifest, its revision link, its tag): the
        driver may wait for the disk once per stage instead of once or twice per file."""
        ...

    def write_transient(self, path: str, data: bytes) -> None:
        """Atomically create or replace a small file that is worth keeping but may be lost in a crash of the
        machine (an upload's saved hash state): without waiting for the disk where the driver can tell such a
        loss afterwards. Read it with `read_transient`."""
        ...

    def read_transient(self, path: str) -> bytes:
        """What `write_transient` wrote, exactly; PathNotFound when there is nothing, or nothing trustworthy
        (written before the machine restarted, maybe not on disk, maybe not matching the files beside it)."""
        ...

    def open_read(self, path: str) -> BinaryIO:
        """Open for streaming reads; the caller seeks and closes. Raises PathNotFound."""
        ...

    def open_append(self, path: str) -> AppendWriter:
        """Open (creating) for appending: upload data only."""
        ...

    def open_staged(self, path: str) -> StagedWriter | None:
        """A StagedWriter at `path` where the storage can publish a file atomically at its final path (an
        object store completing a multipart upload), else None (the caller writes elsewhere and moves)."""
        ...

    def list(self, path: str) -> list[str]:
        """Names of the direct children of a directory; PathNotFound if it does not exist."""
        ...

    def walk_files(self, path: str, only: Callable[[str], str | None] | None = None) -> Iterator[FileInfo]:
        """Every file below `path`, recursively (empty if `path` is missing). `only(dir)` giving a name for a
        directory's path: of that directory only the file of that name is needed (a hint: a listing may still
        include the rest; on a disk it is one stat in place of listing the directory)."""
        ...

    def walk_paths(self, path: str, prune: Callable[[str], bool] | None = None,
                   only: Callable[[str], str | None] | None = None) -> Iterator[str]:
        """The paths `walk_files` gives, without sizes and times (on a disk: no stat per file). `prune(dir)`
        true for a directory's path: its files are not needed (a hint: a listing may still include them);
        `only` as for `walk_files`."""
        ...

    def move(self, source: str, destination: str) -> None:
        """Atomic rename; replaces `destination`."""
        ...

    def delete(self, path: str) -> None:
        """Delete a file or a whole directory tree; PathNotFound if missing."""
        ...

    def local_path(self, path: str) -> str | None:
        """The OS path when the driver is local (lets the hot read path use the file directly), else None."""
        ...

    def redirect_url(self, path: str) -> str | None:
        """A short-lived URL a client may fetch the file from directly (object stores with redirects on)."""
        ...

    def stale_writes(self, path: str, before: float) -> builtins.list[IncompleteWrite]:
        """Incomplete writes at or below `path` whose last byte arrived before `before` (epoch seconds); always
        empty where every write is a file (the filesystem: a crashed write leaves a file a path names)."""
        ...

    def abort_write(self, write: IncompleteWrite) -> None:
        """Discard an incomplete write (and the storage it holds); one already gone is no error."""
        ...
