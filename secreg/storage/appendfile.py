"""Appending to one upload file, fast and in constant memory.

Upload data is written with O_DIRECT where the filesystem allows it: the bytes go from one page-aligned staging
buffer straight to the disk instead of being copied into freshly allocated page-cache pages first. On the
virtual machines registries run on, allocating page cache is the slow part of a buffered write (here: buffered
appends 0.4-0.9 GB/s, direct 2.3-2.5 GB/s), and a push should not evict the blobs that are being pulled.

O_DIRECT needs aligned offsets, lengths and memory. The staging buffer therefore always starts at an aligned
file offset: whole blocks go out directly, the last partial block stays staged for the next write and is
written through the page cache by `flush` (once per request, not per batch). A writer opened on a file whose
size is not aligned reads its partial last block back into the staging buffer and rewrites it whole.

Where O_DIRECT is refused (tmpfs, some network filesystems, other systems) the same code writes through the
page cache and asks the kernel to start write-back every WRITEBACK_BYTES, so the fsync at commit only waits
for the tail.

A direct write waits for the disk, and the upload's thread used to wait for it before hashing the next bytes:
in a 256 MiB push its thread was busy all the time, 0.29 s in pwrite and 0.19 s hashing, one after the other.
Now the whole blocks of a large write go to the disk from a helper thread (`_writes`) while the calling thread
hashes them (`observe`); the call returns once both are done, so the file is always a prefix of what was
appended, a write's error is the call's, and the staging buffer is never changed under a write.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

Buffer = bytes | bytearray | memoryview
Observer = Callable[[memoryview], object]

ALIGNMENT = 4096
STAGING_BYTES = 4 * 1024 * 1024  # a multiple of ALIGNMENT
# Staging buffers are reused: touching 4 MiB of fresh anonymous memory for every request costs what the
# direct writes save. Idle buffers kept per process:
_POOL_LIMIT = 4
WRITEBACK_BYTES = 8 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # start write-out of dirty pages in the range, do not wait for it
_O_DIRECT = getattr(os, "O_DIRECT", 0)
# Below this many bytes written and hashed in one step, both are done in the calling thread: a hand-over to the
# helper thread costs more than it overlaps.
OVERLAP_BYTES = 256 * 1024
_WRITE_THREADS = 8  # helper threads of a process, each writing for one upload at a time (one write in flight)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux/glibc: the fsync at commit does all the work
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


class BufferPool:
    """Page-aligned anonymous buffers of one size, reused: touching fresh memory costs what the direct writes save
    (and on a VM whose balloon reports free pages, a first touch can fault in the host). At most `limit` idle."""

    def __init__(self, size: int, limit: int) -> None:
        self.size, self._limit = size, limit
        self._idle: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return mmap.mmap(-1, self.size)  # anonymous mappings are page-aligned

    def give_back(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._idle) < self._limit:
                self._idle.append(buffer)
                return
        try:
            buffer.close()
        except BufferError:
            pass  # a view of it still lives (in an exception's traceback): it is freed with that view


_staging_pool = BufferPool(STAGING_BYTES, _POOL_LIMIT)


def open_direct(path: str) -> int:
    """A write descriptor of `path` with O_DIRECT, or -1 where the OS has none or this filesystem refuses it
    (EINVAL, e.g. tmpfs)."""
    if not _O_DIRECT:
        return -1
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | _O_DIRECT)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
        return -1


class _Writes:
    """The helper threads that write whole blocks while the caller hashes them, started at first use."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, function: Callable[..., None], *args: object) -> Future[None]:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():  # none yet, or inherited over a fork
                self._executor = ThreadPoolExecutor(_WRITE_THREADS, thread_name_prefix="secreg-append-write")
                self._pid = os.getpid()
            executor = self._executor
        return executor.submit(function, *args)


_writes = _Writes()


class DirectIO:
    """Whether O_DIRECT is used at all: on by default where the OS has it; the first refusal turns it off."""

    enabled = bool(_O_DIRECT)


class FileAppendWriter:
    """Appends to one file. `size` counts every byte appended; they are all in the file after `flush`,
    `sync` or `close` (a write may keep the last partial block staged)."""

    def __init__(self, os_path: str, *, direct: bool = True) -> None:
        """`direct=False`: always through the page cache (the `storage.filesystem.directio: false` setting)."""
        self._path = os_path
        self._direct_wanted = direct
        self._fd = os.open(os_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._direct_fd = -1
        self._staging: mmap.mmap | None = None
        self._view: memoryview | None = None
        self.size = os.fstat(self._fd).st_size
        self._base = self.size  # file offset of staging[0]; aligned once staging is set up
        self._staged = 0  # bytes in staging[0:_staged], belonging at _base..
        self._staged_on_disk = True  # whether staging[0:_staged] is in the file already
        self._written_back = self.size  # buffered mode: bytes below this were handed to the disk

    # --- writing ----------------------------------------------------------------------------------

    def write(self, data: Buffer, observe: Observer | None = None) -> None:
        self.write_pieces((data,), observe)

    def write_pieces(self, pieces: Sequence[Buffer], observe: Observer | None = None) -> None:
        """Append `pieces` in order. `observe` (e.g. a hash update) sees every appended byte exactly once, in
        order, in contiguous runs, in this thread, while the run is written (see the module docstring)."""
        view = self._staging_view()
        fresh = self._staged  # staging[fresh:_staged] is what this call copied and `observe` has not seen
        for piece in pieces:
            data = memoryview(piece) if isinstance(piece, bytes) else memoryview(piece).cast("B")
            while data:
                count = min(len(view) - self._staged, len(data))
                view[self._staged:self._staged + count] = data[:count]
                data = data[count:]
                self._staged += count
                self.size += count
                self._staged_on_disk = False
                if self._staged == len(view):
                    self._write_blocks(observe, fresh)
                    fresh = self._staged
        self._write_blocks(observe, fresh)

    def _staging_view(self) -> memoryview:
        if self._view is not None:
            return self._view
        self._staging = _staging_pool.take()
        self._view = memoryview(self._staging)
        # Staging starts at an aligned offset: read the file's partial last block back (already on disk).
        self._base = self.size - self.size % ALIGNMENT
        self._staged = self.size - self._base
        if self._staged:
            self._view[:self._staged] = os.pread(self._fd, self._staged, self._base)
        self._staged_on_disk = True
        if self._direct_wanted and DirectIO.enabled and self._direct_fd < 0:
            self._direct_fd = open_direct(self._path)
            if self._direct_fd < 0:
                DirectIO.enabled = False  # this filesystem has no O_DIRECT
        return self._view

    def _write_blocks(self, observe: Observer | None = None, fresh: int = 0) -> None:
        """`observe` staging[fresh:_staged] (the bytes copied in and not seen yet), write the whole blocks of
        staging out, keep the partial last block staged. A large write goes to the disk from a helper thread while
        `observe` runs here; it is over (and its error raised) when this returns."""
        assert self._view is not None
        view = self._view
        whole = self._staged - self._staged % ALIGNMENT
        seen = self._staged - fresh if observe is not None else 0
        if whole >= OVERLAP_BYTES and seen >= OVERLAP_BYTES:
            writing = _writes.submit(self._write_at, view[:whole], self._base)
            try:
                observe(view[fresh:self._staged])  # type: ignore[misc]
            finally:
                writing.result()  # never leave with a write in flight: the caller may change staging next
        else:
            if seen > 0:
                observe(view[fresh:self._staged])  # type: ignore[misc]
            if whole == 0:
                return
            self._write_at(view[:whole], self._base)
        rest = self._staged - whole
        if rest:
            self._view[:rest] = self._view[whole:self._staged]
        self._base += whole
        self._staged = rest
        # What stays staged came after the bytes read back at the start (those are < one block): all new.
        self._staged_on_disk = rest == 0

    def _write_at(self, data: memoryview, offset: int) -> None:
        if self._direct_fd >= 0:
            try:
                pwrite_all(self._direct_fd, data, offset)
                return
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                # Opened but refused (alignment rules stricter than ours): the page cache from now on.
                DirectIO.enabled = False
                os.close(self._direct_fd)
                self._direct_fd = -1
        pwrite_all(self._fd, data, offset)
        self._hint_writeback(offset + len(data))

    def _hint_writeback(self, end: int) -> None:
        """Buffered mode: ask the kernel to start writing what was appended since last time, without waiting."""
        if end - self._written_back < WRITEBACK_BYTES:
            return
        start, self._written_back = self._written_back, end
        if _sync_file_range is not None:
            _sync_file_range(self._fd, start, end - start, _SYNC_FILE_RANGE_WRITE)  # a hint: errors change nothing

    def flush(self) -> None:
        """Put the staged partial block in the file (through the page cache: it is smaller than a block)."""
        if self._view is not None and not self._staged_on_disk:
            pwrite_all(self._fd, self._view[:self._staged], self._base)
            self._staged_on_disk = True

    def sync(self) -> None:
        self.flush()
        os.fsync(self._fd)

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes (a discarded chunk); staged bytes past it are dropped."""
        self.flush()
        os.ftruncate(self._fd, size)
        self.size = size
        self._written_back = min(self._written_back, size)
        self._release_staging()

    # --- locking and closing ----------------------------------------------------------------------

    def try_lock(self) -> bool:
        """Exclusive advisory lock: two requests must never append to one upload at once."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if self._view is None:  # nothing staged yet: the size the last writer left (it may have ended since open)
            self.size = self._base = self._written_back = os.fstat(self._fd).st_size
        return True

    def close(self) -> None:
        try:
            if self._fd >= 0:
                self.flush()
        finally:
            self._release_staging()
            for fd in (self._direct_fd, self._fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._direct_fd = -1

    def _release_staging(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._staging is not None:
            _staging_pool.give_back(self._staging)
            self._staging = None
        self._staged = 0
        self._staged_on_disk = True


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """All of `data` at `offset` (a pwrite may write less than asked)."""
    while data:
        written = os.pwrite(fd, data, offset)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        data = data[written:]
        offset += written
