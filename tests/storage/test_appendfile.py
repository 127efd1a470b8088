"""The upload file writer: direct I/O with a staged partial block, and the page-cache fallback, on real files."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from secreg.storage.appendfile import ALIGNMENT, OVERLAP_BYTES, STAGING_BYTES, DirectIO, FileAppendWriter


@pytest.fixture(params=["direct", "page-cache"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "page-cache":
        monkeypatch.setattr(DirectIO, "enabled", False)
    else:
        monkeypatch.setattr(DirectIO, "enabled", bool(getattr(os, "O_DIRECT", 0)))
    yield request.param


def _sizes(rnd: random.Random) -> int:
    return rnd.choice([1, 100, ALIGNMENT - 1, ALIGNMENT, ALIGNMENT + 1, 65536, STAGING_BYTES + 3,
                       rnd.randint(1, 300_000)])


def test_random_appends_across_sessions_match_and_are_observed_once(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "data"
    rnd = random.Random(7)
    expected = bytearray()
    for session in range(25):
        writer = FileAppendWriter(str(path))
        assert writer.try_lock()
        observed, appended = hashlib.sha256(), hashlib.sha256()
        try:
            assert writer.size == len(expected)
            for _ in range(rnd.randint(0, 4)):
                pieces = [rnd.randbytes(_sizes(rnd)) for _ in range(rnd.randint(0, 12))]
                writer.write_pieces(pieces, observed.update)
                for piece in pieces:
                    appended.update(piece)
                    expected += piece
                assert writer.size == len(expected)
            if rnd.random() < 0.2:
                cut = rnd.randint(0, len(expected))
                writer.truncate(cut)
                del expected[cut:]
        finally:
            writer.close()
        assert observed.digest() == appended.digest(), session
        assert path.read_bytes() == bytes(expected), session


def test_flush_puts_the_partial_block_in_the_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "data"
    writer = FileAppendWriter(str(path))
    try:
        writer.write(b"x" * (ALIGNMENT + 10))
        assert writer.size == ALIGNMENT + 10
        writer.flush()
        assert path.read_bytes() == b"x" * (ALIGNMENT + 10)
        writer.write(memoryview(b"y" * 5))  # continues inside the staged block
        writer.sync()
        assert path.read_bytes() == b"x" * (ALIGNMENT + 10) + b"y" * 5
    finally:
        writer.close()


def test_resuming_an_unaligned_file_rewrites_its_last_block_intact(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "data"
    head = os.urandom(3 * ALIGNMENT + 123)
    path.write_bytes(head)
    writer = FileAppendWriter(str(path))
    try:
        assert writer.size == len(head)
        tail = os.urandom(2 * STAGING_BYTES + 77)
        writer.write_pieces([tail[:5000], tail[5000:]])
    finally:
        writer.close()
    assert path.read_bytes() == head + tail


def test_direct_io_is_used_where_the_filesystem_allows_it(tmp_path: Path) -> None:
    if not getattr(os, "O_DIRECT", 0):
        pytest.skip("no O_DIRECT on this system")
    writer = FileAppendWriter(str(tmp_path / "data"))
    try:
        writer.write(os.urandom(ALIGNMENT * 3))
        if not DirectIO.enabled:
            pytest.skip("this filesystem refuses O_DIRECT")
        assert writer._direct_fd >= 0
        assert fcntl.fcntl(writer._direct_fd, fcntl.F_GETFL) & os.O_DIRECT
    finally:
        writer.close()


def test_direct_io_can_be_turned_off(tmp_path: Path) -> None:
    """`storage.filesystem.directio: false`: the same writer, through the page cache only."""
    data = os.urandom(STAGING_BYTES + ALIGNMENT + 1)
    writer = FileAppendWriter(str(tmp_path / "data"), direct=False)
    try:
        writer.write(data)
        assert writer._direct_fd < 0
    finally:
        writer.close()
    assert (tmp_path / "data").read_bytes() == data


def test_a_filesystem_refusing_o_direct_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like tmpfs on older kernels: open(O_DIRECT) fails with EINVAL; the writer must still work."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        pytest.skip("no O_DIRECT on this system")
    monkeypatch.setattr(DirectIO, "enabled", True)
    real_open = os.open

    def refusing_open(path: str, flags: int, *args: int) -> int:
        if flags & direct:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    data = os.urandom(STAGING_BYTES + ALIGNMENT + 1)
    writer = FileAppendWriter(str(tmp_path / "data"))
    try:
        writer.write(data)
    finally:
        writer.close()
    assert DirectIO.enabled is False
    assert (tmp_path / "data").read_bytes() == data


def test_many_writers_at_once_and_a_full_pool(tmp_path: Path) -> None:
    """More concurrent uploads than idle staging buffers kept: each gets its own, extras are closed after."""
    writers = [FileAppendWriter(str(tmp_path / f"data{i}")) for i in range(8)]
    payloads = [os.urandom(ALIGNMENT * 3 + i) for i in range(8)]
    try:
        for writer, payload in zip(writers, payloads, strict=True):
            writer.write(payload)
    finally:
        for writer in writers:
            writer.close()
    for i, payload in enumerate(payloads):
        assert (tmp_path / f"data{i}").read_bytes() == payload


def test_a_large_write_goes_to_disk_in_a_helper_thread_while_the_caller_hashes(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole blocks of a large write are written by a helper thread while `observe` runs in the caller's thread
    (a direct write waits for the disk, hashing does not need it); small writes stay in the caller's thread."""
    real_pwrite = os.pwrite
    writes: list[tuple[int, int]] = []  # (thread, length) of each pwrite

    def recording_pwrite(fd: int, data: memoryview, offset: int) -> int:
        writes.append((threading.get_ident(), len(data)))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", recording_pwrite)
    caller = threading.get_ident()
    observers: set[int] = set()
    observed = hashlib.sha256()

    def observe(view: memoryview) -> None:
        observers.add(threading.get_ident())
        observed.update(view)

    data = os.urandom(STAGING_BYTES * 2 + ALIGNMENT * 5 + 17)
    small = os.urandom(ALIGNMENT * 2 + 1)
    writer = FileAppendWriter(str(tmp_path / "data"))
    try:
        writer.write_pieces([data[:1000], data[1000:]], observe)
        large = list(writes)
        writes.clear()
        writer.write(small, observe)
        assert writer.size == len(data) + len(small)
    finally:
        writer.close()
    assert observers == {caller}
    assert observed.digest() == hashlib.sha256(data + small).digest()
    assert (tmp_path / "data").read_bytes() == data + small
    assert [length for thread, length in large if thread != caller] == [STAGING_BYTES, STAGING_BYTES]
    assert all(length < OVERLAP_BYTES for thread, length in large if thread == caller)  # the last blocks
    assert writes and all(thread == caller for thread, _ in writes)  # the small write and the flush


def test_a_failed_write_in_the_helper_thread_is_the_calls_error_and_leaves_a_prefix(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the caller hashes: write_pieces raises the write's error once the hash is done, and
    the file is what was appended up to some point (a prefix), never bytes out of order."""
    real_pwrite = os.pwrite
    budget = [STAGING_BYTES]  # bytes the "disk" takes before it is full

    def filling_pwrite(fd: int, data: memoryview, offset: int) -> int:
        if len(data) > budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget[0] -= len(data)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", filling_pwrite)
    data = os.urandom(STAGING_BYTES * 3)
    observed = hashlib.sha256()
    writer = FileAppendWriter(str(tmp_path / "data"))
    try:
        with pytest.raises(OSError) as raised:
            writer.write(data, observed.update)
        assert raised.value.errno == errno.ENOSPC
    finally:
        monkeypatch.setattr(os, "pwrite", real_pwrite)
        writer.close()
    stored = (tmp_path / "data").read_bytes()
    assert len(stored) >= STAGING_BYTES  # the write before the failed one
    assert stored == data[:len(stored)]  # closing put the staged bytes after it, in place
