"""How an upload request's body reaches the file: batches for the upload's thread, the last BATCH_BYTES of a body
of known length read by read with the flush on the read that completes it, and on a local driver no hop to the
storage threads around the body."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secreg.digest import Digest
from secreg.registry.blobs import BlobStore
from secreg.registry.errors import SizeMismatch
from secreg.registry.model import ChunkRange
from secreg.registry.uploads import BATCH_BYTES, UploadStore
from secreg.storage import layout
from secreg.storage.filesystem import FilesystemDriver

SIZES = (1, 4095, 65536, 200_000, 524_288, 7)  # socket reads of all sizes, never aligned for long


async def uneven(data: bytes) -> AsyncIterator[bytes]:
    position, turn = 0, 0
    while position < len(data):
        size = SIZES[turn % len(SIZES)]
        yield data[position:position + size]
        position, turn = position + size, turn + 1


def _store(tmp_path: Path) -> tuple[FilesystemDriver, UploadStore]:
    driver = FilesystemDriver(tmp_path)
    return driver, UploadStore(driver, BlobStore(driver))


@pytest.mark.parametrize("length", [1, 4097, BATCH_BYTES - 1, BATCH_BYTES, 3 * BATCH_BYTES + 12_345])
def test_a_chunk_of_known_length_is_stored_and_hashed_whole(tmp_path: Path, length: int) -> None:
    driver, store = _store(tmp_path)
    first, second = os.urandom(length), os.urandom(BATCH_BYTES + 333)
    upload = store.start("app")
    assert asyncio.run(store.append("app", upload, uneven(first), ChunkRange(0, length - 1), length)) == length
    data_path = driver.local_path(layout.upload_data("app", upload))
    assert data_path is not None and Path(data_path).read_bytes() == first
    end = len(first) + len(second)
    assert asyncio.run(store.append("app", upload, uneven(second), ChunkRange(len(first), end - 1), len(second))) == end
    assert asyncio.run(store.complete("app", upload, Digest.of(first + second))) == end


@pytest.mark.parametrize("extra", [-1, 1, BATCH_BYTES])
def test_a_body_longer_or_shorter_than_announced_is_cut_off_again(tmp_path: Path, extra: int) -> None:
    driver, store = _store(tmp_path)
    kept = os.urandom(100_000)
    upload = store.start("app")
    asyncio.run(store.append("app", upload, uneven(kept), None, len(kept)))
    announced = 2 * BATCH_BYTES + 5
    with pytest.raises(SizeMismatch):
        asyncio.run(store.append("app", upload, uneven(os.urandom(announced + extra)), None, announced))
    data_path = driver.local_path(layout.upload_data("app", upload))
    assert data_path is not None and Path(data_path).read_bytes() == kept
    last = os.urandom(5000)
    asyncio.run(store.append("app", upload, uneven(last), None, len(last)))
    assert asyncio.run(store.complete("app", upload, Digest.of(kept + last))) == len(kept) + len(last)


def test_a_body_of_unknown_length_is_stored_whole(tmp_path: Path) -> None:
    _, store = _store(tmp_path)
    data = os.urandom(2 * BATCH_BYTES + 99)
    upload = store.start("app")
    asyncio.run(store.append("app", upload, uneven(data)))
    assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)


def test_on_a_local_driver_a_chunk_takes_no_storage_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open, lock, close and the hash state are tens of microseconds on a filesystem: inline, not a thread hop
    each (only the upload's own writer thread hashes and writes)."""
    _, store = _store(tmp_path)
    assert store.offload.inline

    async def no_hop(*_: object, **__: object) -> None:
        raise AssertionError("a storage-thread hop")

    monkeypatch.setattr(store.offload, "thread", no_hop)
    data = os.urandom(BATCH_BYTES + 1)
    upload = store.start("app")
    assert asyncio.run(store.append("app", upload, uneven(data), ChunkRange(0, len(data) - 1), len(data))) == len(data)
    monkeypatch.undo()
    assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)


def test_requests_one_after_another_share_one_upload_thread(tmp_path: Path) -> None:
    """The upload thread is kept for the next request (a thread per request cost each PATCH ~1 ms), of this
    upload or another; its batches stay in order and the hash matches."""
    driver, store = _store(tmp_path)
    data = os.urandom(3 * BATCH_BYTES + 5)
    uploads = [store.start("app"), store.start("app")]
    def upload_threads() -> set[int | None]:
        return {t.ident for t in threading.enumerate() if t.name.startswith("secreg-upload")}

    kept: set[int | None] = set()
    for start in range(0, len(data), BATCH_BYTES // 2):
        for upload in uploads:
            asyncio.run(store.append("app", upload, uneven(data[start:start + BATCH_BYTES // 2])))
            kept = kept or upload_threads()
            assert kept and upload_threads() == kept  # none started or ended for a request
    for upload in uploads:
        assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data


def test_a_request_cancelled_mid_body_leaves_no_batch_running(tmp_path: Path) -> None:
    """Cancelled while batches are queued for its thread: once the request is over, none of them touches the
    file, what reached it is committed, and the next request (on the same kept thread) continues from there."""
    driver, store = _store(tmp_path)
    data = os.urandom(8 * BATCH_BYTES)
    upload = store.start("app")

    async def cancelled() -> None:
        sent = asyncio.Event()

        async def endless() -> AsyncIterator[bytes]:
            for start in range(0, 6 * BATCH_BYTES, 65536):
                yield data[start:start + 65536]
            sent.set()
            await asyncio.sleep(3600)
            yield b""

        task = asyncio.ensure_future(store.append("app", upload, endless()))
        await sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    stored = driver.stat(layout.upload_data("app", upload)).size
    assert store.size("app", upload) == stored == 6 * BATCH_BYTES
    asyncio.run(store.append("app", upload, uneven(data[stored:]), ChunkRange(stored, len(data) - 1)))
    assert asyncio.run(store.complete("app", upload, Digest.of(data))) == len(data)
    assert driver.read_bytes(layout.blob_data(Digest.of(data))) == data
