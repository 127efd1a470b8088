"""Filesystem driver: every small write is temp file + fsync + os.replace, so a crash leaves old or new."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISDIR, S_ISLNK
from typing import BinaryIO

from secreg.files import atomic_write, atomic_write_stages, fsync_dirs, make_dirs
from secreg.storage.appendfile import FileAppendWriter
from secreg.storage.driver import FileInfo, IncompleteWrite, InvalidPath, PathNotFound

_TEMP_SUFFIX = ".tmp-secreg"
# A transient file (`write_transient`) starts with this, the kernel's boot id (or DURABLE_MARK when it was
# fsynced) and a newline. Written in this boot, it is what the page cache holds, like the files beside it; from
# an earlier boot it may be a leftover of a crash (empty, or describing data that never reached the disk).
_TRANSIENT_MAGIC = b"secreg-transient-1"
_DURABLE_MARK = b"-"
# A transient file rewritten in place: "<magic> <boot id> <length> <crc32>\n<data>". A reader that meets it
# half rewritten (a rewrite is one pwrite, but a read may overlap it) finds the length or checksum wrong and
# reads again.
_REWRITTEN_MAGIC = b"secreg-transient-2"
_TORN_READS = 3  # then the file reads as absent, like any other leftover it cannot trust
_IN_PLACE_BYTES = 4096  # one page at offset 0: a rewrite is one copy into one page, never cut by a signal


def _read_boot_id() -> bytes:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
            return handle.read().strip()
    except OSError:
        return b""  # not Linux: transient files are written durably


BOOT_ID = _read_boot_id()


class FilesystemDriver:
    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        """`direct_io`: write upload data with O_DIRECT where the filesystem allows it (see appendfile.py)."""
        self.root = Path(root).resolve()
        self.direct_io = direct_io
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)

    def _full(self, path: str) -> str:
        # Paths come from layout.py with validated parts; this is a second fence, not the first.
        if path.startswith("/") or "\\" in path or "\x00" in path or ".." in path.split("/"):
            raise InvalidPath(path)
        return f"{self._root_text}/{path}"

    def local_path(self, path: str) -> str | None:
        return self._full(path)

    def redirect_url(self, path: str) -> str | None:
        return None

    def stale_writes(self, path: str, before: float) -> list[IncompleteWrite]:
        return []  # upload data is a file under _uploads/, purged with its session

    def abort_write(self, write: IncompleteWrite) -> None:
        return None

    def open_staged(self, path: str) -> None:
        return None  # an open file is visible as it grows: uploads are written under _uploads/ and renamed

    def stat(self, path: str) -> FileInfo:
        try:
            st = os.stat(self._full(path))
        except FileNotFoundError:
            raise PathNotFound(path) from None
        except NotADirectoryError:
            raise PathNotFound(path) from None
        return FileInfo(path, st.st_size, st.st_mtime, os.path.isdir(self._full(path)))

    def exists(self, path: str) -> bool:
        return os.path.exists(self._full(path))

    def read_bytes(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    def write_bytes(self, path: str, data: bytes, *, durable: bool = True) -> None:
        full = self._full(path)
        created = make_dirs(os.path.dirname(full))
        atomic_write(full, data, 0o644, _TEMP_SUFFIX, durable=durable)
        if durable and created:
            fsync_dirs(created)  # the new directories' entries, or a crash may lose the file with them

    def write_files(self, stages: Sequence[Sequence[tuple[str, bytes]]]) -> None:
        """Every temporary file fsynced side by side, then each stage renamed and its directories fsynced side by
        side (`secreg.files.atomic_write_stages`): a manifest push's five files cost three waits for the disk
        here, not ten."""
        full = [[(self._full(path), data) for path, data in stage] for stage in stages]
        created: dict[str, None] = {}
        for directory in dict.fromkeys(os.path.dirname(target) for stage in full for target, _ in stage):
            created.update(dict.fromkeys(make_dirs(directory)))
        atomic_write_stages(full, 0o644, _TEMP_SUFFIX, new_directories=list(created))

    def write_transient(self, path: str, data: bytes) -> None:
        """No fsync (two fsyncs saved per PATCH of a chunked push), tagged with the boot id so that
        `read_transient` refuses it after a crash of the machine; without a boot id, durably (temp file, rename).
        An existing file is rewritten in place (one pwrite): a new file per write cost ext4 an inode allocation
        and the rename freeing the old one, ~0.3 ms of CPU each (a chunked push writes two records per PATCH).
        A first write goes through a temp file and a rename, so the file never exists empty."""
        full = self._full(path)
        if not BOOT_ID:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            atomic_write(full, b"%s %s\n%s" % (_TRANSIENT_MAGIC, _DURABLE_MARK, data), 0o644, _TEMP_SUFFIX)
            return
        record = b"%s %s %d %08x\n%s" % (_REWRITTEN_MAGIC, BOOT_ID, len(data), zlib.crc32(data), data)
        if len(record) <= _IN_PLACE_BYTES:
            try:
                fd = os.open(full, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
            else:
                try:
                    if os.pwrite(fd, record, 0) != len(record):
                        raise OSError(errno.EIO, f"short write rewriting {path}")
                    if os.fstat(fd).st_size > len(record):
                        os.ftruncate(fd, len(record))  # a crash before this leaves bytes the length excludes
                finally:
                    os.close(fd)
                return
        os.makedirs(os.path.dirname(full), exist_ok=True)
        atomic_write(full, record, 0o644, _TEMP_SUFFIX, durable=False)

    def read_transient(self, path: str) -> bytes:
        for _attempt in range(_TORN_READS):
            head, newline, data = self.read_bytes(path).partition(b"\n")
            fields = head.split(b" ")
            if not newline or fields[0] not in (_TRANSIENT_MAGIC, _REWRITTEN_MAGIC) or len(fields) < 2 or \
                    fields[1] not in (BOOT_ID or _DURABLE_MARK, _DURABLE_MARK):
                break  # from an earlier boot, or a crash's leftover: not to be trusted
            if fields[0] == _TRANSIENT_MAGIC:
                if len(fields) == 2:
                    return data
                break
            if len(fields) == 4 and fields[2].isdigit():
                data = data[:int(fields[2])]
                if len(data) == int(fields[2]) and f"{zlib.crc32(data):08x}".encode() == fields[3]:
                    return data
        raise PathNotFound(path)

    def open_read(self, path: str) -> BinaryIO:
        try:
            return open(self._full(path), "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    def open_append(self, path: str) -> FileAppendWriter:
        full = self._full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return FileAppendWriter(full, direct=self.direct_io)

    def list(self, path: str) -> list[str]:
        try:
            return [name for name in os.listdir(self._full(path)) if not name.endswith(_TEMP_SUFFIX)]
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    def walk_files(self, path: str, only: Callable[[str], str | None] | None = None) -> Iterator[FileInfo]:
        """Every file below `path` (symlinks followed for files, never into directories), in no set order.
        One `scandir` per directory and one stat per file (`os.walk` also lstat()s every directory and joins
        every path anew); a big tree's subtrees are walked in `WALK_THREADS` threads, which overlap their
        syscalls (most of a walk's time). A directory `only` names a file for is not listed: that file is
        stat()ed (one syscall where a listing costs four, and Python per entry)."""
        return self._walk(path, True, None, only)  # type: ignore[return-value]

    def walk_paths(self, path: str, prune: Callable[[str], bool] | None = None,
                   only: Callable[[str], str | None] | None = None) -> Iterator[str]:
        """`walk_files`' paths without a stat per file (the directory entry says what is a file), never
        entering a directory `prune` is true for; a directory `only` names a file for costs one lstat."""
        return self._walk(path, False, prune, only)  # type: ignore[return-value]

    def _walk(self, path: str, stat: bool, prune: Callable[[str], bool] | None = None,
              only: Callable[[str], str | None] | None = None) -> Iterator[FileInfo | str]:
        prefix = len(self._root_text) + 1
        files: list[FileInfo | str] = []
        walk = _Walk(prefix, stat, prune, only)
        level = walk.level([self._full(path)], files)
        while level and len(level) < _SUBTREES:
            level = walk.level(level, files)
        yield from files
        if not level:
            return
        share = -(-len(level) // (WALK_THREADS * 4))  # a few tasks per thread: one per directory cost more
        groups = [level[i:i + share] for i in range(0, len(level), share)]
        with ThreadPoolExecutor(WALK_THREADS, thread_name_prefix="walk") as pool:
            for found in pool.map(walk.tree, groups):
                yield from found

    def move(self, source: str, destination: str) -> None:
        src, dst = self._full(source), self._full(destination)
        directory = os.path.dirname(dst)
        created = make_dirs(directory)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            raise PathNotFound(source) from None
        # The rename, and the entries of directories made for it (a new blob's own directory): one wait.
        fsync_dirs([directory, *created])

    def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                # Rename first so readers never see a half-deleted tree, then remove at leisure.
                doomed = f"{full}.{uuid.uuid4().hex}.deleting{_TEMP_SUFFIX}"
                os.rename(full, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                os.unlink(full)
        except FileNotFoundError:
            raise PathNotFound(path) from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise PathNotFound(path) from None
            raise


WALK_THREADS = 2
_SUBTREES = 32  # walk the top levels alone until a level has this many directories, then share those out


class _Walk:
    def __init__(self, prefix: int, stat: bool, prune: Callable[[str], bool] | None,
                 only: Callable[[str], str | None] | None = None) -> None:
        self.prefix, self.stat, self.prune, self.only = prefix, stat, prune, only

    def level(self, directories: list[str], files: list[FileInfo | str]) -> list[str]:
        """List each of `directories`: their files into `files` (a FileInfo each, or without `stat` the
        path); their subdirectories (except pruned ones) returned."""
        prefix, stat, prune, only = self.prefix, self.stat, self.prune, self.only
        below: list[str] = []
        for directory in directories:
            try:
                listing = os.scandir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone meanwhile, or not a directory
            with listing:
                for entry in listing:
                    try:
                        if entry.is_dir():
                            if entry.is_symlink():
                                continue
                            relative = entry.path[prefix:]
                            name = None if only is None else only(relative)
                            if name is not None:
                                self.one(f"{entry.path}/{name}", files)
                            elif prune is None or not prune(relative):
                                below.append(entry.path)
                            continue
                        if not stat:
                            files.append(entry.path[prefix:])
                            continue
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    files.append(FileInfo(entry.path[prefix:], st.st_size, st.st_mtime, False))
        return below

    def one(self, full: str, files: list[FileInfo | str]) -> None:
        """The file at `full` into `files` as a listing of its directory would give it (nothing if it is
        missing or a directory, or without `stat` a symlink to one)."""
        try:
            st = os.stat(full) if self.stat else os.lstat(full)
            if self.stat:
                if not S_ISDIR(st.st_mode):
                    files.append(FileInfo(full[self.prefix:], st.st_size, st.st_mtime, False))
            elif not S_ISDIR(st.st_mode) and not (S_ISLNK(st.st_mode) and os.path.isdir(full)):
                files.append(full[self.prefix:])
        except (FileNotFoundError, NotADirectoryError):
            pass

    def tree(self, tops: list[str]) -> list[FileInfo | str]:
        files: list[FileInfo | str] = []
        pending = tops
        while pending:
            pending = self.level(pending, files)
        return files
